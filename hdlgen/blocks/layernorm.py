"""LayerNorm over a vector of ``dim`` integers, integer-only, bit-exact with
:func:`sim.golden.norm.norm_golden` (integer definition and scales in :mod:`sim.golden.norm`).

The datapath is :class:`hdlgen.blocks.rmsnorm.NormEngine` with centring: the mean is never
rounded, the output pass works on ``dim * x - sum(x)`` and the variance scalar is
``dim * sum(x**2) - sum(x)**2`` (both exact), so
``y = (dim * x - S1) * gamma / sqrt(dim * S2 - S1**2 + eps * dim**2) + beta``. The ``g``
stream carries ``gamma`` and ``beta`` of each channel, in lockstep with the output.
"""

from hdlgen.blocks.rmsnorm import NormEngine, _bench

__all__ = ["LayerNorm", "bench_configs"]


class LayerNorm(NormEngine):
    """``y = (x - mean) / sqrt(var + eps) * gamma + beta`` over vectors of ``dim`` integers.

    Parameters as :class:`hdlgen.blocks.rmsnorm.NormEngine` without ``kind``.
    """

    def __init__(self, *, dim: int, in_width: int = 16, gamma_width: int = 16,
                 gamma_frac: int = 12, beta_width: int = 16, beta_frac: int | None = None,
                 out_frac: int = 4, eps: float = 0.0, steps_per_cycle: int = 1):
        super().__init__("layernorm", dim=dim, in_width=in_width, gamma_width=gamma_width,
                         gamma_frac=gamma_frac, beta_width=beta_width, beta_frac=beta_frac,
                         out_frac=out_frac, eps=eps, steps_per_cycle=steps_per_cycle)


def bench_configs():
    """GPT-2-size LayerNorm: dim 768, int16 input."""
    return [_bench("layernorm", LayerNorm, {"dim": 768, "in_width": 16, "gamma_frac": 12,
                                            "out_frac": 4, "eps": 1.0})]
