"""hdlgen: a generator of int8 LLM inference accelerators for low-cost ECP5 FPGAs."""

__version__ = "0.1.0"
