"""Golden model of the activation block (:class:`hdlgen.blocks.activation.Activation`):
SiLU, GELU (erf form, and GPT-2's tanh form) and ReLU on int8 or int16 inputs.

Real values: ``x_real = x * in_scale``, ``y_real = y * out_scale``. With
``q(v) = saturate(floor(v / out_scale + 0.5), out_bits)``:

* **int8 input**: a 256-entry table, ``y = T[x]`` with ``T[x] = q(f(x * in_scale))``.
* **int16 input**: 512 knots ``x_k = k * 128`` (``k = -256 .. 255``) with ``base[k] =
  q(f(x_k * in_scale))`` and ``delta[k] = q(f(x_{k+1} * in_scale)) - base[k]`` (the last
  knot uses ``x = 32768`` and is saturated to twice the output range only, so the top segment
  keeps its slope); ``k = x >> 7``, ``frac = x & 127``::

      y = saturate(base[k] + ((delta[k] * frac + 64) >> 7), out_bits)
 The
  hardware keeps ``(base, delta)`` as one 36-bit word (18 + 18 bits) in one DP16KD.

The tables (also the RTL's ROM contents) come from :func:`table8` and :func:`table16`.
"""

import math

import numpy as np

__all__ = ["FUNCTIONS", "reference", "table8", "table16", "activation", "max_abs_error",
           "INDEX_BITS"]

#: Knot index bits of the int16 interpolation (512 knots: one 512 x 36 DP16KD).
INDEX_BITS = 9

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x * _SQRT1_2))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _relu(x):
    return np.maximum(x, 0.0)


#: Float references by name.
FUNCTIONS = {"silu": _silu, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "relu": _relu}


def _check(function, in_bits, out_bits, in_scale, out_scale):
    if function not in FUNCTIONS:
        raise ValueError(f"function={function!r}: use one of {', '.join(FUNCTIONS)}")
    if in_bits not in (8, 16):
        raise ValueError(f"in_bits={in_bits!r}: use 8 or 16")
    if out_bits not in (8, 16):
        raise ValueError(f"out_bits={out_bits!r}: use 8 or 16")
    for name, s in (("in_scale", in_scale), ("out_scale", out_scale)):
        if not (isinstance(s, (int, float)) and s > 0 and math.isfinite(s)):
            raise ValueError(f"{name}={s!r} must be a positive finite number (real units per LSB)")


def reference(function, x_real):
    """Float reference ``f(x_real)`` (float64)."""
    return FUNCTIONS[function](np.asarray(x_real, dtype=np.float64))


def _q(v, out_scale, out_bits, margin=1):
    lo, hi = -(1 << (out_bits - 1)) * margin, (1 << (out_bits - 1)) * margin - 1
    return np.clip(np.floor(v / out_scale + 0.5), lo, hi).astype(np.int64)


def table8(function, out_bits, in_scale, out_scale) -> np.ndarray:
    """int8-input table in address order (address = ``x & 0xFF``), signed values."""
    _check(function, 8, out_bits, in_scale, out_scale)
    x = np.arange(256, dtype=np.int64)
    x = np.where(x >= 128, x - 256, x)
    return _q(reference(function, x * in_scale), out_scale, out_bits)


def table16(function, out_bits, in_scale, out_scale) -> tuple[np.ndarray, np.ndarray]:
    """int16-input knot tables ``(base, delta)`` in address order (address = ``k & 0x1FF``)."""
    _check(function, 16, out_bits, in_scale, out_scale)
    n = 1 << INDEX_BITS
    step = 1 << (16 - INDEX_BITS)
    k = np.arange(-n // 2, n // 2 + 1, dtype=np.int64)
    vals = _q(reference(function, k * step * in_scale), out_scale, out_bits)
    # the knot past the top (x = 32768) is extrapolated beyond the output range (up to twice
    # it) so the top segment keeps its slope; the result is saturated
    vals[-1] = _q(reference(function, k[-1:] * step * in_scale), out_scale, out_bits, 2)[0]
    base, delta = vals[:-1], vals[1:] - vals[:-1]
    order = np.arange(n) ^ (n // 2)                  # address a holds knot k = a - n/2 (mod n)
    return base[order], delta[order]


def activation(x, function, in_bits=8, out_bits=16, in_scale=1 / 16, out_scale=1 / 2048):
    """Bit-exact integer activation of ``x`` (int array) as the RTL computes it."""
    x = np.asarray(x, dtype=np.int64)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input out of the int{in_bits} range [{lo}, {hi}]")
    if in_bits == 8:
        return table8(function, out_bits, in_scale, out_scale)[x & 0xFF]
    base, delta = table16(function, out_bits, in_scale, out_scale)
    fb = 16 - INDEX_BITS
    a = (x >> fb) & ((1 << INDEX_BITS) - 1)
    frac = x & ((1 << fb) - 1)
    y = base[a] + ((delta[a] * frac + (1 << (fb - 1))) >> fb)
    return np.clip(y, -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1)


def max_abs_error(function, in_bits=8, out_bits=16, in_scale=1 / 16, out_scale=1 / 2048,
                  x_range=8.0) -> float:
    """Max ``|y * out_scale - f(x * in_scale)|`` over every representable input with
    ``|x * in_scale| <= x_range`` (real units)."""
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    x = np.arange(lo, hi + 1, dtype=np.int64)
    x = x[np.abs(x * in_scale) <= x_range]
    y = activation(x, function, in_bits, out_bits, in_scale, out_scale)
    return float(np.max(np.abs(y * out_scale - reference(function, x * in_scale))))
