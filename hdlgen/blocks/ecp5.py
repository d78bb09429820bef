"""Helpers for blocks that instantiate ECP5 primitives (MULT18X18D, DP16KD).

A block instantiates the primitive only when elaborated for an ECP5 platform; otherwise
(simulation, cocotb on the generated Verilog, ``hdlgen verilog``) it elaborates a behavioural
equivalent with exactly the same latency, so the tested Verilog and the built netlist agree
cycle for cycle.
"""

__all__ = ["is_ecp5"]


def is_ecp5(platform) -> bool:
    """True when ``platform`` targets the Lattice ECP5 (an amaranth ``LatticePlatform`` with
    ``family == "ecp5"``, such as the ULX3S platforms or :class:`hdlgen.flow.OOCPlatform`)."""
    return platform is not None and getattr(platform, "family", None) == "ecp5"
