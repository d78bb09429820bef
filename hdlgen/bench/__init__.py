"""Benchmarks that print figures: ``hdlgen bench blocks|model|accuracy``."""
