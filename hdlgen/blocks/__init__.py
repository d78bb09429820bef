"""Parameterized Amaranth blocks, one per module. Every block is a ``wiring.Component`` with
``amaranth.lib.stream`` ports and a bit-exact golden model in :mod:`sim.golden`."""
