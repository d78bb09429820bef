"""What ``hdlgen bench blocks`` measures.

Every block module in :mod:`hdlgen.blocks` that should be benchmarked defines a function
``bench_configs()`` returning a list of :class:`BlockBench`. The bench discovers them by
importing every module of the package; adding a block adds its own entries, nothing else.
"""

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["BlockBench"]


@dataclass(frozen=True)
class BlockBench:
    """One block instance to synthesize, place and check.

    Attributes
    ----------
    name : str
        Block name as in the issue (``mac_array``, ``softmax``, ...).
    params : dict
        JSON-serialisable constructor parameters, printed in the report.
    build : callable
        Returns a fresh ``wiring.Component`` for these parameters.
    error : callable or None
        Returns ``{"metric": str, "value": float, "bound": float}``: the golden model's error
        against the float reference over the whole input range. ``None`` for blocks that are
        exact against their integer definition.
    """
    name: str
    params: dict
    build: Callable
    error: Callable | None = None
    target_mhz: float = 150.0
    extra: dict = field(default_factory=dict)
