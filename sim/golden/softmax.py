"""Golden model of the softmax block (:class:`hdlgen.blocks.softmax.Softmax`): the exact
integer definition the RTL matches bit for bit, a float reference, and the accuracy check.

Integer definition for one row ``x`` of signed ``in_width``-bit logits (real value
``x * 2**-in_frac``), length ``n`` = the packet length, clipped to ``max_len``::

    mx  = max(x)
    d   = mx - x                                         # >= 0, unsigned in_width bits
    t   = (d * LOG2E + 2**(SH_T - 1)) >> SH_T            # d * log2(e) in 1/256 units, rounded
          LOG2E = round(log2(e) * 2**15) = 47274,  SH_T = 15 + in_frac - 8
    q, r = t >> 8, t & 255                               # exp(-d) = 2**-q * 2**(-r/256)
    e   = 0                              if q >= 18
          ((EXP2[r] << 1 >> q) + 1) >> 1 otherwise       # round half up
          EXP2[r] = round(2**16 * 2**(-r/256)), EXP2[0] = 65536   (17 bits)
    S   = sum(e)                                         # >= 65536 (the max element)
    L   = bit_length(S) - 1                              # >= 16
    m   = S >> (L - 16)                                  # 17 bits, MSB set
    R   = (2**33 - 1) // m                               # 17 bits, 2**16 <= R < 2**17
    sh  = 17 + L - out_bits
    p   = min((e * R + 2**(sh - 1)) >> sh, 2**out_bits - 1)

``p`` is unsigned ``out_bits`` wide with real value ``p * 2**-out_bits`` (the row max of a
length-1 row saturates to ``2**out_bits - 1``).

Why ``out_bits = 15`` by default rather than 8: every probability is rounded once, so a row's
sum is off by up to ``n * 2**-(out_bits + 1)``. A uniform row of 300 logits has p = 1/300 =
0.85 LSB at 8 bits, which rounds to 1 LSB: the row sums to 1.17. Meeting the 0.02 row-sum
bound for rows up to 512 long needs ``out_bits >= 14`` (512 * 2**-15 = 0.016); 15 bits keep a
margin and still fit a non-negative int16. ``out_bits = 8`` meets the max-abs bound (0.012)
but not the row-sum bound beyond about 10 elements (see ``tests/test_softmax.py``).
"""

import math

import numpy as np

__all__ = ["LOG2E_FIX", "EXP2_TABLE", "softmax_golden", "softmax_float", "softmax_error",
           "check_params", "error_rows"]

LOG2E_FIX = round(math.log2(math.e) * 2 ** 15)          # 47274
EXP2_TABLE = [round(2 ** 16 * 2 ** (-r / 256)) for r in range(256)]   # EXP2_TABLE[0] == 65536
E_BITS = 17
RECIP_NUM = 2 ** 33 - 1
Q_ZERO = 18


def check_params(max_len: int, in_width: int, in_frac: int, out_bits: int) -> None:
    """Raise ``ValueError`` naming the bad parameter and the accepted range."""
    for name, v, lo, hi in (("max_len", max_len, 1, 4096), ("in_width", in_width, 4, 17),
                            ("in_frac", in_frac, 0, 16), ("out_bits", out_bits, 7, 16)):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{name}={v!r} is out of range: use an integer {lo}..{hi}")
    if in_frac > in_width:
        raise ValueError(f"in_frac={in_frac} exceeds in_width={in_width}: a logit has at most "
                         f"in_width fractional bits")


def sum_width(max_len: int) -> int:
    """Bits of the exponential sum: ``max_len`` terms of up to 2**16."""
    return (max_len * 2 ** 16).bit_length()


def exp_int(d, in_frac: int) -> np.ndarray:
    """Integer ``exp(-d * 2**-in_frac)`` scaled by 2**16 (``d >= 0``)."""
    d = np.asarray(d, dtype=np.int64)
    sh_t = 15 + in_frac - 8
    t = (d * LOG2E_FIX + (1 << (sh_t - 1))) >> sh_t
    q, r = t >> 8, t & 255
    table = np.asarray(EXP2_TABLE, dtype=np.int64)
    qc = np.minimum(q, Q_ZERO)
    v = (table[r] << 1) >> qc
    return np.where(q >= Q_ZERO, 0, (v + 1) >> 1)


def softmax_golden(x, *, max_len: int = 512, in_width: int = 16, in_frac: int = 8,
                   out_bits: int = 15) -> np.ndarray:
    """Bit-exact model of one row: integer probabilities (``p * 2**-out_bits``).

    Elements beyond ``max_len`` are dropped, as the block does."""
    check_params(max_len, in_width, in_frac, out_bits)
    x = np.asarray(x, dtype=np.int64)[:max_len]
    if x.size == 0:
        raise ValueError("a softmax row needs at least one element")
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    if x.min() < lo or x.max() > hi:
        raise ValueError(f"logit out of signed {in_width}-bit range {lo}..{hi}")
    e = exp_int(x.max() - x, in_frac)
    s = int(e.sum())
    L = s.bit_length() - 1
    m = s >> (L - 16)
    R = RECIP_NUM // m
    sh = 17 + L - out_bits
    p = (e * R + (1 << (sh - 1))) >> sh
    return np.minimum(p, (1 << out_bits) - 1)


def softmax_float(x, *, in_frac: int = 8, max_len: int = 512) -> np.ndarray:
    """Float reference on the same integer logits: ``softmax(x * 2**-in_frac)``."""
    xf = np.asarray(x, dtype=np.float64)[:max_len] * 2.0 ** -in_frac
    ex = np.exp(xf - xf.max())
    return ex / ex.sum()


def error_rows(rng: np.random.Generator, *, max_len: int, in_width: int, in_frac: int,
               rows: int = 600):
    """Rows covering the whole input range: lengths 1..max_len, logit spreads from all-equal to
    the full ``in_width`` range, uniform / normal / one-hot / two-level / extreme rows."""
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    out = []
    lengths = [1, 2, 3, max_len, max(1, max_len // 2), max(1, max_len - 1)]
    for i in range(rows):
        n = lengths[i] if i < len(lengths) else int(rng.integers(1, max_len + 1))
        kind = i % 7
        spread = float(2.0 ** rng.uniform(-2, math.log2(hi - lo)))
        centre = int(rng.integers(lo, hi + 1))
        if kind == 0:      # uniform in a window
            x = centre + rng.uniform(-spread / 2, spread / 2, n)
        elif kind == 1:    # normal
            x = centre + rng.normal(0, spread / 6, n)
        elif kind == 2:    # all equal
            x = np.full(n, centre)
        elif kind == 3:    # one hot
            x = np.full(n, centre)
            x[rng.integers(n)] = centre + spread
        elif kind == 4:    # two levels (many ties at the second level: worst rounding bias)
            x = np.where(rng.random(n) < 0.5, centre, centre - rng.uniform(0, 8) * 2 ** in_frac)
        elif kind == 5:    # full range
            x = rng.integers(lo, hi + 1, n)
        else:              # extremes only
            x = rng.choice([lo, hi], n)
        out.append(np.clip(np.round(x), lo, hi).astype(np.int64))
    return out


def softmax_error(*, max_len: int = 512, in_width: int = 16, in_frac: int = 8,
                  out_bits: int = 15, rows: int = 600, seed: int = 1) -> dict:
    """Max abs probability error and max row-sum error of the golden model against float,
    over :func:`error_rows`."""
    rng = np.random.default_rng(seed)
    worst, worst_sum = 0.0, 0.0
    for x in error_rows(rng, max_len=max_len, in_width=in_width, in_frac=in_frac, rows=rows):
        p = softmax_golden(x, max_len=max_len, in_width=in_width, in_frac=in_frac,
                           out_bits=out_bits) * 2.0 ** -out_bits
        ref = softmax_float(x, in_frac=in_frac, max_len=max_len)
        worst = max(worst, float(np.abs(p - ref).max()))
        worst_sum = max(worst_sum, abs(float(p.sum()) - 1.0))
    return {"max_abs": worst, "row_sum": worst_sum}
