"""Golden models of the RMSNorm and LayerNorm blocks (:mod:`hdlgen.blocks.rmsnorm`,
:mod:`hdlgen.blocks.layernorm`): the exact integer definitions the RTL matches bit for bit,
float references, and the accuracy check.

Scales. Inputs ``x`` are signed ``in_width``-bit integers (any input scale: normalisation is
scale-free except for epsilon, so ``eps`` is given in units of the input LSB squared, i.e.
``eps_real / in_scale**2``). ``gamma`` is signed ``gamma_width``-bit with ``gamma_frac``
fractional bits, ``beta`` (LayerNorm) signed ``beta_width``-bit with ``beta_frac`` fractional
bits. The output is int8 with ``out_frac`` fractional bits: ``y_real = y * 2**-out_frac``.

Integer definition for one vector of ``dim`` elements::

    S1 = sum(x), S2 = sum(x * x)                                  # exact
    RMSNorm:   v = (S2 << 8) + EPS,  EPS = max(1, round(eps * dim * 2**8)),       xt = x
    LayerNorm: v = ((dim * S2 - S1 * S1) << 8) + EPS,  EPS = max(1, round(eps * dim**2 * 2**8)),
               xt = dim * x - S1                                  # = dim * (x - mean)
    (EPS >= 1 keeps v >= 1 for an all-zero vector; it is eps = 1 / (256 dim) LSB**2 at most)
    k = the even integer with 2**32 <= m < 2**34, m = v << k (v >> -k when k < 0, floor)
    s = isqrt(m)                       # 2**16 <= s < 2**17, digit by digit
    R = NUM // s                       # restoring division, < 2**17
        RMSNorm: NUM = round(c * 2**33), sqrt(dim) = c * 2**J, 0.5 <= c < 1
        LayerNorm: NUM = 2**33 - 1, J = 0
    Q = xt * gamma * R                 # exact
    z = Q >> (SH0 - k/2)               # floor; SH0 = 33 + gamma_frac - out_frac - J - 4 - F
    b = beta << (F + out_frac - beta_frac)   (>> if negative, floor)      # LayerNorm
    y = clamp((z + b + 2**(F - 1)) >> F, -128, 127)      # round half up, saturate

``F`` (guard bits below the output LSB) is ``min(16, 17 + gamma_frac - out_frac - J - 4)``
and must be >= 1. Real meaning: ``1/sqrt(v) = 2**(k/2) / sqrt(m)``, so
``y ~ xt * gamma * 2**-gamma_frac / sqrt(mean-square + eps) * 2**out_frac``; the only
approximations are ``isqrt`` and the division (relative error < 2**-15 together), the
truncation of ``z`` (< 2**-F output LSB) and the final rounding.

Error metric ("max_rel"): for every element whose float reference ``ref`` (in output LSB)
is not saturated, ``max(0, |y - ref| - 0.5) / |ref|``: the relative error beyond the
unavoidable half LSB of the int8 output. It is bounded by the relative error of the value
before the final rounding.
"""

import math

import numpy as np

__all__ = ["NormParams", "norm_golden", "norm_float", "norm_error", "rmsnorm_golden",
           "layernorm_golden"]

EPS_BITS = 8
GUARD_MAX = 16


class NormParams:
    """Validated parameters and derived constants of one norm instance (shared by the golden
    model and the RTL, so both use the same numbers)."""

    def __init__(self, kind: str, *, dim: int, in_width: int = 16, gamma_width: int = 16,
                 gamma_frac: int = 12, beta_width: int = 16, beta_frac: int | None = None,
                 out_frac: int = 4, eps: float = 0.0):
        if kind not in ("rmsnorm", "layernorm"):
            raise ValueError(f"kind={kind!r}: use 'rmsnorm' or 'layernorm'")
        for name, v, lo, hi in (("dim", dim, 1, 4096), ("in_width", in_width, 2, 16),
                                ("gamma_width", gamma_width, 2, 18),
                                ("gamma_frac", gamma_frac, 0, 24), ("beta_width", beta_width, 2, 24),
                                ("out_frac", out_frac, -8, 16)):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name}={v!r} is out of range: use an integer {lo}..{hi}")
        if beta_frac is None:
            beta_frac = gamma_frac
        if not isinstance(beta_frac, int) or not 0 <= beta_frac <= 24:
            raise ValueError(f"beta_frac={beta_frac!r} is out of range: use an integer 0..24")
        if not (isinstance(eps, (int, float)) and 0 <= eps < 2 ** 20):
            raise ValueError(f"eps={eps!r} must be a number in [0, 2**20) (input LSB squared)")
        self.kind, self.dim, self.in_width = kind, dim, in_width
        self.gamma_width, self.gamma_frac = gamma_width, gamma_frac
        self.beta_width, self.beta_frac = beta_width, beta_frac
        self.out_frac, self.eps = out_frac, float(eps)
        ln = kind == "layernorm"
        if ln:
            self.num, self.j = 2 ** 33 - 1, 0
            self.eps_int = max(1, round(eps * dim * dim * 2 ** EPS_BITS))
        else:
            j = 0
            while dim >= 4 ** j:
                j += 1
            self.j = j
            self.num = round(math.sqrt(dim) / 2 ** j * 2 ** 33)
            self.eps_int = max(1, round(eps * dim * 2 ** EPS_BITS))
        sh_min = 17 + gamma_frac - out_frac - self.j - EPS_BITS // 2
        self.guard = min(GUARD_MAX, sh_min)
        if self.guard < 1:
            raise ValueError(
                f"gamma_frac={gamma_frac} with out_frac={out_frac} and dim={dim} leaves "
                f"{self.guard} guard bits: raise gamma_frac or lower out_frac by {1 - self.guard}")
        self.sh0 = 33 + gamma_frac - out_frac - self.j - EPS_BITS // 2 - self.guard
        self.beta_shift = self.guard + out_frac - beta_frac
        # Widths of the datapath.
        xmax = 1 << (in_width - 1)
        self.s1_width = (dim * xmax).bit_length() + 1
        self.s2_width = (dim * xmax * xmax).bit_length() + 1
        if ln:
            vmax = (dim * dim * xmax * xmax << EPS_BITS) + self.eps_int
            self.xt_width = in_width + 1 + dim.bit_length()
        else:
            vmax = (dim * xmax * xmax << EPS_BITS) + self.eps_int
            self.xt_width = in_width
        self.v_width = vmax.bit_length() + 1
        self.p_width = self.xt_width + gamma_width
        self.q_width = self.p_width + 18
        # Largest right shift of Q (smallest k: v at its maximum).
        k_min = 34 - vmax.bit_length()
        k_min -= k_min % 2
        self.shr_max = self.sh0 - k_min // 2

    def as_dict(self) -> dict:
        d = {"dim": self.dim, "in_width": self.in_width, "gamma_width": self.gamma_width,
             "gamma_frac": self.gamma_frac, "out_frac": self.out_frac, "eps": self.eps}
        if self.kind == "layernorm":
            d.update(beta_width=self.beta_width, beta_frac=self.beta_frac)
        return d


def _rsqrt(p: NormParams, v: int) -> tuple[int, int]:
    """(R, k) for ``v >= 1``."""
    k = 34 - v.bit_length()
    k -= k % 2
    m = v << k if k >= 0 else v >> -k
    s = math.isqrt(m)
    assert 2 ** 16 <= s < 2 ** 17
    return p.num // s, k


def _check(name, a, width, n):
    a = np.asarray(a, dtype=np.int64)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}: expected ({n},)")
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} out of signed {width}-bit range {lo}..{hi}")
    return [int(v) for v in a]


def norm_golden(p: NormParams, x, gamma, beta=None, out_bits: int = 8) -> np.ndarray:
    """Bit-exact int8 output of one vector (see the module docstring); ``out_bits`` clamps to
    a wider signed range instead (the same integer steps)."""
    xs = _check("x", x, p.in_width, p.dim)
    gs = _check("gamma", gamma, p.gamma_width, p.dim)
    ln = p.kind == "layernorm"
    bs = _check("beta", beta if beta is not None else np.zeros(p.dim), p.beta_width, p.dim)
    s1 = sum(xs)
    s2 = sum(v * v for v in xs)
    if ln:
        v = ((p.dim * s2 - s1 * s1) << EPS_BITS) + p.eps_int
    else:
        v = (s2 << EPS_BITS) + p.eps_int
    R, k = _rsqrt(p, v)
    shr = p.sh0 - k // 2
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    out = []
    for xi, gi, bi in zip(xs, gs, bs):
        xt = p.dim * xi - s1 if ln else xi
        z = (xt * gi * R) >> shr
        if ln:
            z += bi << p.beta_shift if p.beta_shift >= 0 else bi >> -p.beta_shift
        out.append(min(hi, max(lo, (z + (1 << (p.guard - 1))) >> p.guard)))
    return np.asarray(out, dtype=np.int64)


def norm_float(p: NormParams, x, gamma, beta=None) -> np.ndarray:
    """Float reference on the same integers, in output LSB units (not rounded or clipped)."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64) * 2.0 ** -p.gamma_frac
    if p.kind == "layernorm":
        mu = x.mean()
        den = np.sqrt(((x - mu) ** 2).mean() + p.eps)
        y = (x - mu) / den * g if den > 0 else np.zeros_like(x)
        if beta is not None:
            y = y + np.asarray(beta, dtype=np.float64) * 2.0 ** -p.beta_frac
    else:
        den = np.sqrt((x * x).mean() + p.eps)
        y = x / den * g if den > 0 else np.zeros_like(x)
    return y * 2.0 ** p.out_frac


def rmsnorm_golden(x, gamma, **params) -> np.ndarray:
    return norm_golden(NormParams("rmsnorm", **params), x, gamma)


def layernorm_golden(x, gamma, beta, **params) -> np.ndarray:
    return norm_golden(NormParams("layernorm", **params), x, gamma, beta)


def error_vectors(p: NormParams, rng: np.random.Generator, count: int):
    """(x, gamma, beta) covering the whole input range: magnitudes from +-1 to full scale,
    uniform / normal / one-hot / all-equal / extreme / outlier vectors; gammas near one and
    over their full range; betas over their full range."""
    lo, hi = -(1 << (p.in_width - 1)), (1 << (p.in_width - 1)) - 1
    glo, ghi = -(1 << (p.gamma_width - 1)), (1 << (p.gamma_width - 1)) - 1
    blo, bhi = -(1 << (p.beta_width - 1)), (1 << (p.beta_width - 1)) - 1
    n = p.dim
    for i in range(count):
        amp = 2.0 ** rng.uniform(0, p.in_width - 1)
        kind = i % 8
        if kind == 0:
            x = rng.uniform(-amp, amp, n)
        elif kind == 1:
            x = rng.normal(0, amp / 3, n) + rng.uniform(-amp, amp) * 0.5
        elif kind == 2:
            x = np.zeros(n)
            x[rng.integers(n)] = amp * rng.choice((-1, 1))
        elif kind == 3:
            x = np.full(n, rng.integers(lo, hi + 1))
        elif kind == 4:
            x = rng.choice([lo, hi], n)
        elif kind == 5:
            x = rng.integers(lo, hi + 1, n)
        elif kind == 6:
            x = rng.integers(-2, 3, n)
        else:
            x = rng.normal(0, amp / 50, n)
            x[rng.integers(n, size=max(1, n // 20))] = amp
        x = np.clip(np.round(x), lo, hi).astype(np.int64)
        if i % 3 == 0:
            g = rng.integers(glo, ghi + 1, n)
        else:
            g = np.round(rng.normal(1, 0.5, n) * 2 ** p.gamma_frac)
        g = np.clip(g, glo, ghi).astype(np.int64)
        b = rng.integers(blo, bhi + 1, n) if i % 2 else np.round(
            rng.normal(0, 1, n) * 2 ** p.beta_frac)
        b = np.clip(b, blo, bhi).astype(np.int64)
        yield x, g, (b if p.kind == "layernorm" else None)


def norm_error(p: NormParams, *, count: int = 400, seed: int = 1) -> dict:
    """Max relative error (metric in the module docstring) of the golden model against the
    float reference over :func:`error_vectors`; also checks saturated elements."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for x, g, b in error_vectors(p, rng, count):
        y = norm_golden(p, x, g, b)
        ref = norm_float(p, x, g, b)
        inside = (ref > -128.5) & (ref < 127.5)
        excess = np.maximum(0.0, np.abs(y - ref) - 0.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(excess > 0, excess / np.abs(ref), 0.0)
        if inside.any():
            worst = max(worst, float(rel[inside].max()))
        sat_ok = np.all(y[ref >= 127.5 + 1e-6] == 127) and np.all(y[ref <= -128.5 - 1e-6] == -128)
        if not sat_ok:
            raise AssertionError(f"saturation wrong for x={x.tolist()}")
    return {"max_rel": worst}
