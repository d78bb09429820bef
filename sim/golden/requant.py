"""Golden model of the requantizer (:class:`hdlgen.blocks.requant.Requant`): the exact integer
definition the RTL matches bit for bit.

Contract (shared with the model compiler)::

    x = acc + bias                                   # exact (33-bit)
    y = saturate((x * mult + (1 << (shift - 1))) >> shift, out_bits)

``mult`` is unsigned 16-bit (1..65535), ``shift`` 1..47, ``>>`` is an arithmetic (floor)
shift, so the rounding is *round half up* (towards +inf): -2.5 -> -2, 2.5 -> 3. The result is
saturated to ``[-2**(out_bits-1), 2**(out_bits-1) - 1]``. The real scale applied is
``mult / 2**shift``; :func:`quantize_multiplier` picks the most precise pair for a scale.
"""

import math

import numpy as np

__all__ = ["requantize", "quantize_multiplier", "MULT_MAX", "SHIFT_MIN", "SHIFT_MAX"]

MULT_MAX = 65535
SHIFT_MIN, SHIFT_MAX = 1, 47


def _check_range(name, arr, lo, hi):
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr[(arr < lo) | (arr > hi)].flat[0]
        raise ValueError(f"{name}={int(bad)} is out of range: use {lo}..{hi}")


def requantize(acc, mult, shift, bias=None, out_bits=8) -> np.ndarray:
    """Requantize int32 accumulators to ``out_bits`` signed integers.

    Parameters
    ----------
    acc : array_like of int
        Accumulators (int32 range).
    mult, shift : int or array_like of int
        Fixed-point multiplier (1..65535) and shift (1..47); broadcast against ``acc``
        (per-channel along the last axis, or per-tensor scalars).
    bias : array_like of int, optional
        int32 bias added exactly before the multiplication.
    out_bits : int
        8 or 16.

    Returns
    -------
    numpy.ndarray of int64
    """
    if out_bits not in (8, 16):
        raise ValueError(f"out_bits={out_bits!r}: use 8 or 16")
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    _check_range("acc", acc, -(1 << 31), (1 << 31) - 1)
    _check_range("mult", mult, 1, MULT_MAX)
    _check_range("shift", shift, SHIFT_MIN, SHIFT_MAX)
    x = acc
    if bias is not None:
        bias = np.asarray(bias, dtype=np.int64)
        _check_range("bias", bias, -(1 << 31), (1 << 31) - 1)
        x = acc + bias
    v = x * mult                                     # |v| < 2**49: exact in int64
    y = (v + (np.int64(1) << (shift - 1))) >> shift
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return np.clip(y, lo, hi)


def requantize_float(acc, real_scale, bias=None, out_bits=8) -> np.ndarray:
    """Float reference: ``round_half_up((acc + bias) * real_scale)``, saturated."""
    x = np.asarray(acc, dtype=np.float64)
    if bias is not None:
        x = x + np.asarray(bias, dtype=np.float64)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return np.clip(np.floor(x * real_scale + 0.5), lo, hi)


def quantize_multiplier(real_scale: float) -> tuple[int, int]:
    """The most precise ``(mult, shift)`` with ``mult / 2**shift ~= real_scale``.

    Takes the largest ``shift`` (at most 47) whose rounded ``mult`` still fits 16 bits.

    Raises
    ------
    ValueError
        When ``real_scale`` is not positive, is too large (>= 32768, ``shift`` would drop
        below 1) or too small (``mult`` would round to 0 even at ``shift = 47``).
    """
    real_scale = float(real_scale)
    if not (real_scale > 0 and math.isfinite(real_scale)):
        raise ValueError(f"real_scale={real_scale!r} must be a positive finite number")
    shift = math.floor(math.log2((MULT_MAX + 0.5) / real_scale))
    shift = min(shift, SHIFT_MAX)
    while True:
        if shift < SHIFT_MIN:
            raise ValueError(f"real_scale={real_scale!r} is too large for a 16-bit multiplier "
                             f"and shift >= 1 (at most {MULT_MAX / 2:.1f}); scale the input down")
        mult = math.floor(real_scale * 2.0 ** shift + 0.5)
        if mult <= MULT_MAX:
            break
        shift -= 1
    if mult < 1:
        raise ValueError(f"real_scale={real_scale!r} is below the smallest representable scale "
                         f"2**-{SHIFT_MAX + 1}; requantize in two steps or change the scales")
    return int(mult), int(shift)
