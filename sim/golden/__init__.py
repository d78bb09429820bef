"""Bit-exact NumPy golden models of the hdlgen blocks, importable without any simulator.

Each module defines the exact integer behaviour of one block (same widths, rounding and
saturation as the RTL) and, beside it, a float reference with a stated tolerance.
"""
