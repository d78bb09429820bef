"""What ``hdlgen bench blocks`` measures.

Every block module in :mod:`hdlgen.blocks` that should be benchmarked defines a function
``bench_configs()`` returning a list of :class:`BlockBench`. The bench discovers them by
importing every module of the package; adding a block adds its own entries, nothing else.

Designs composed of several blocks (the transformer engine) are not in :mod:`hdlgen.blocks`;
:func:`system_benches` lists them, and the bench measures them after the blocks.
"""

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["BlockBench", "ENGINE_MODEL", "system_benches"]


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
    #: Seconds each tool may run (``None``: the flow's default); the engine needs more.
    timeout_s: float | None = None


#: The engine's bench model: a random LLaMA with stories260K's shapes (``dim`` 64, 5 layers,
#: 8 heads, 4 KV heads, hidden 172, vocabulary 512; see ``../shared/models/README.md``).
ENGINE_MODEL = {"spec": "random:llama", "seed": 7,
                "over": {"dim": 64, "n_layers": 5, "n_heads": 8, "n_kv_heads": 4,
                         "hidden_dim": 172, "vocab_size": 512, "seq_len": 512}}


def _engine(context: int, preload: bool):
    from hdlgen.compiler import CompileOptions, compile_model
    from hdlgen.config import AcceleratorConfig
    from hdlgen.engine.core import Engine
    from hdlgen.model import load_model
    cfg = AcceleratorConfig(context_length=context)      # the default 85F shape: 16 x 8 MACs
    model = load_model(ENGINE_MODEL["spec"], seed=ENGINE_MODEL["seed"], **ENGINE_MODEL["over"])
    comp = compile_model(model, cfg, CompileOptions(context=context))
    return Engine(cfg, comp, preload=preload)


def system_benches() -> list:
    """Entries of ``hdlgen bench blocks`` that compose several blocks.

    ``engine``: :class:`hdlgen.engine.core.Engine` compiled for :data:`ENGINE_MODEL` on the
    default accelerator config (16 lanes x 8 MACs), context 256, weights and parameters baked
    into the block RAMs (``preload``, as the SoC build uses it). Its target is the SoC's default
    system clock on the 85F, 125 MHz. Its place and route takes 30-60 minutes on a shared
    2-core machine, hence the long tool timeout.
    """
    from hdlgen.config import AcceleratorConfig
    cfg = AcceleratorConfig()
    context = 256
    params = {"model": "stories260K-shaped random:llama", "lanes": cfg.lanes,
              "macs_per_lane": cfg.macs_per_lane, "context": context, "preload": True}
    return [BlockBench("engine", params, lambda: _engine(context, True), target_mhz=125.0,
                       timeout_s=4 * 3600)]
