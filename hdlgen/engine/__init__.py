"""The transformer engine's software side: the instruction set (:mod:`hdlgen.engine.isa`)."""
