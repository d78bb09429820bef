"""Verification side of hdlgen: NumPy golden models (:mod:`sim.golden`), the cocotb
harness (:mod:`sim.harness`), reusable cocotb stream drivers/monitors (:mod:`sim.cocotb_kit`)
and the cocotb bench modules (:mod:`sim.benches`)."""
