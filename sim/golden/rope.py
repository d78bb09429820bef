"""Golden model of RoPE (:class:`hdlgen.blocks.rope.Rope`).

Each head of ``head_size`` elements is rotated pair by pair: pair ``i`` (elements ``2i`` and
``2i + 1`` of the head) by the angle ``pos * theta ** (-2i / head_size)``.

Fixed point: the table holds ``C = floor(cos(angle) * 2**16 + 0.5)`` and ``S`` likewise for
the sine, as signed 18-bit numbers with 16 fractional bits (``1.0 = 65536``). With ``x0, x1``
the pair (int8 or int16, the output has the same width and scale)::

    y0 = saturate((x0 * C - x1 * S + 2**15) >> 16)
    y1 = saturate((x0 * S + x1 * C + 2**15) >> 16)

(round half up). Error against the exact rotation (saturated to the output range): table
rounding adds at most ``(|x0| + |x1|) * 2**-17 <= 0.5`` LSB and the final rounding 0.5 LSB, so
at most 1 output LSB.
"""

import math

import numpy as np

__all__ = ["FRAC_BITS", "angles", "rope_tables", "rope", "rope_float", "max_lsb_error"]

#: Fractional bits of the cos/sin table entries.
FRAC_BITS = 16


def _check(head_size, theta, bits):
    if not (isinstance(head_size, int) and head_size >= 2 and head_size & (head_size - 1) == 0):
        raise ValueError(f"head_size={head_size!r}: use a power of two >= 2")
    if not (isinstance(theta, (int, float)) and theta > 1 and math.isfinite(theta)):
        raise ValueError(f"theta={theta!r}: use a finite base > 1 (LLaMA uses 10000)")
    if bits not in (8, 16):
        raise ValueError(f"bits={bits!r}: use 8 or 16")


def angles(positions, head_size, theta) -> np.ndarray:
    """Rotation angles, shape ``(positions, head_size // 2)``, float64."""
    i = np.arange(head_size // 2, dtype=np.float64)
    inv = float(theta) ** (-2.0 * i / head_size)
    return np.arange(positions, dtype=np.float64)[:, None] * inv[None, :]


def rope_tables(positions, head_size, theta) -> tuple[np.ndarray, np.ndarray]:
    """``(C, S)``: int64 arrays ``(positions, head_size // 2)`` in the table's fixed point."""
    a = angles(positions, head_size, theta)
    one = 1 << FRAC_BITS
    return (np.floor(np.cos(a) * one + 0.5).astype(np.int64),
            np.floor(np.sin(a) * one + 0.5).astype(np.int64))


def _pairs(x, head_size):
    x = np.asarray(x, dtype=np.int64)
    if x.shape[-1] % 2:
        raise ValueError(f"vector length {x.shape[-1]} is odd: RoPE rotates pairs")
    idx = np.arange(x.shape[-1] // 2) % (head_size // 2)
    return x[..., 0::2], x[..., 1::2], idx


def rope(x, pos, head_size=8, theta=10000.0, bits=8) -> np.ndarray:
    """Bit-exact RoPE of ``x`` (last axis: ``n_heads * head_size`` elements; a partial last
    head is rotated as far as it goes, as the hardware does) at position ``pos`` (int, or an
    array broadcasting against ``x.shape[:-1]``)."""
    _check(head_size, theta, bits)
    x0, x1, idx = _pairs(x, head_size)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x0.size and (min(x0.min(), x1.min()) < lo or max(x0.max(), x1.max()) > hi):
        raise ValueError(f"x out of the int{bits} range [{lo}, {hi}]")
    pos = np.asarray(pos, dtype=np.int64)
    c, s = rope_tables(int(pos.max()) + 1, head_size, theta)
    cc = c[pos[..., None], idx] if pos.ndim else c[int(pos), idx]
    ss = s[pos[..., None], idx] if pos.ndim else s[int(pos), idx]
    half = 1 << (FRAC_BITS - 1)
    y0 = np.clip((x0 * cc - x1 * ss + half) >> FRAC_BITS, lo, hi)
    y1 = np.clip((x0 * ss + x1 * cc + half) >> FRAC_BITS, lo, hi)
    y = np.empty(np.broadcast_shapes(np.shape(x)), dtype=np.int64)
    y[..., 0::2], y[..., 1::2] = y0, y1
    return y


def rope_float(x, pos, head_size=8, theta=10000.0) -> np.ndarray:
    """Float reference: the exact rotation of the integer input (not saturated)."""
    x0, x1, idx = _pairs(x, head_size)
    pos = np.asarray(pos, dtype=np.float64)
    inv = float(theta) ** (-2.0 * idx / head_size)
    a = (pos[..., None] if pos.ndim else pos) * inv
    y = np.empty(np.shape(x), dtype=np.float64)
    y[..., 0::2] = x0 * np.cos(a) - x1 * np.sin(a)
    y[..., 1::2] = x0 * np.sin(a) + x1 * np.cos(a)
    return y


def max_lsb_error(positions=512, head_size=8, theta=10000.0, bits=8, samples=64, seed=0) -> float:
    """Max ``|rope - saturate(rope_float)|`` in output LSBs over every position and pair, for
    the extreme input vectors (every sign pattern of the largest magnitudes, zero) and
    ``samples`` random ones."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    ext = [(a, b) for a in (lo, hi, lo + 1, 0, 1, -1) for b in (lo, hi, lo + 1, 0, 1, -1)]
    rng = np.random.default_rng(seed)
    rows = [np.tile(np.array(p), head_size // 2) for p in ext]
    rows += list(rng.integers(lo, hi + 1, (samples, head_size)))
    x = np.array(rows, dtype=np.int64)                       # (R, head_size)
    pos = np.arange(positions)
    xx = np.broadcast_to(x[None], (positions, *x.shape))
    pp = np.broadcast_to(pos[:, None], (positions, x.shape[0]))
    y = rope(xx, pp, head_size, theta, bits)
    ref = np.clip(rope_float(xx, pp, head_size, theta), lo, hi)
    return float(np.max(np.abs(y - ref)))
