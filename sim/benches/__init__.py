"""cocotb bench modules. Each runs inside the simulator; pytest starts them through
:func:`sim.harness.run_cocotb`."""
