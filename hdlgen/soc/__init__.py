"""System on chip: bus, registers, host bridge and the top level."""
