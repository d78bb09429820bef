"""Golden model of the element-wise block (:class:`hdlgen.blocks.eltwise.Eltwise`).

* ``residual_add``: ``saturate(a + b, bits)`` (same scale on both inputs and the output).
* ``swiglu``: ``s = silu(a)`` as the activation block computes it (int16 result at
  ``silu_scale``, see :mod:`sim.golden.activation`), then ``p = s * b`` exactly and
  ``y = saturate((p * mult + (1 << (shift - 1))) >> shift, out_bits)``: the requantizer's
  arithmetic (:func:`sim.golden.requant.requantize`, round half up). The real scale of ``y`` is
  ``silu_scale * b_scale * 2**shift / mult``; the compiler picks ``mult, shift`` with
  :func:`sim.golden.requant.quantize_multiplier`.
"""

import numpy as np

from sim.golden.activation import activation, reference
from sim.golden.requant import requantize

__all__ = ["residual_add", "swiglu", "swiglu_float"]


def _check_range(name, x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name} out of the int{bits} range [{lo}, {hi}]")


def residual_add(a, b, bits=8) -> np.ndarray:
    """``saturate(a + b)`` in ``bits`` (8 or 16)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    _check_range("a", a, bits)
    _check_range("b", b, bits)
    return np.clip(a + b, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def swiglu(a, b, mult, shift, *, a_bits=8, b_bits=8, out_bits=8, a_scale=1 / 16,
           silu_scale=1 / 2048) -> np.ndarray:
    """Bit-exact ``requant(silu(a) * b)``."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    _check_range("b", b, b_bits)
    s = activation(a, "silu", a_bits, 16, a_scale, silu_scale)
    return requantize(s * b, mult, shift, None, out_bits)


def swiglu_float(a_real, b_real):
    """Float reference ``silu(a) * b``."""
    return reference("silu", a_real) * np.asarray(b_real, dtype=np.float64)
