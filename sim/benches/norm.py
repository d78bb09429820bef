"""cocotb bench for :class:`hdlgen.blocks.rmsnorm.RMSNorm` and
:class:`hdlgen.blocks.layernorm.LayerNorm`: vectors on ``i``, per-channel ``gamma`` (and
``beta``) on ``g``, int8 results on ``o`` checked bit for bit (values and ``last``) against
:func:`sim.golden.norm.norm_golden`, with random valid/ready stalls on all three streams.

``HDLGEN_PARAMS`` (JSON): ``kind`` (``rmsnorm``/``layernorm``), ``block`` (the constructor
parameters), ``stall_in``, ``stall_out``, ``corrupt`` (``"value"`` or ``"missing"``: the
scoreboard expects one wrong / one extra item, which must fail).
``HDLGEN_COUNT``: number of random vectors in ``random_vectors`` (default 3000).
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Combine

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, pack, start)
from sim.golden.norm import NormParams, error_vectors, norm_golden


def _params():
    cfg = bench_params()
    return cfg, NormParams(cfg["kind"], **cfg["block"])


async def _check(dut, vectors, rng):
    cfg, p = _params()
    ln = p.kind == "layernorm"
    await start(dut)
    stall_in, stall_out = cfg.get("stall_in", 0.0), cfg.get("stall_out", 0.0)
    drv_x = StreamDriver(dut, "i", rng, stall_in)
    drv_g = StreamDriver(dut, "g", rng, stall_in)
    mon = StreamMonitor(dut, "o", rng, stall_out)
    xs, gs, expected = [], [], []
    for x, g, b in vectors:
        xs += [pack([v], [p.in_width]) for v in x]
        if ln:
            gs += [pack([gi, bi], [p.gamma_width, p.beta_width]) for gi, bi in zip(g, b)]
        else:
            gs += [pack([gi], [p.gamma_width]) for gi in g]
        y = norm_golden(p, x, g, b if ln else None)
        expected += [pack([int(v), k == p.dim - 1], [8, 1]) for k, v in enumerate(y)]
    tx = cocotb.start_soon(drv_x.send(xs))
    tg = cocotb.start_soon(drv_g.send(gs))
    await Combine(tx, tg)
    slack = 1 + 4 * max(stall_in, stall_out) / (1 - stall_out)
    await mon.wait_for(len(expected), timeout_cycles=int(slack * (3 * p.dim + 200)))
    await ClockCycles(dut.clk, 40)           # anything extra would arrive by now
    got = list(mon.items)
    mon.stop()
    if cfg.get("corrupt") == "value":
        expected[len(expected) // 2] ^= 1
    elif cfg.get("corrupt") == "missing":
        expected.append(expected[-1])

    def fmt(word):
        v = word & 0xFF
        return f"(y={v - 256 if v > 127 else v}, last={word >> 8})"
    assert_streams_equal(expected, got, "norm output", fmt=fmt)
    cocotb.log.info("checked %d vectors, %d outputs", len(vectors), len(expected))


def _ranges(p):
    return ((-(1 << (p.in_width - 1)), (1 << (p.in_width - 1)) - 1),
            (-(1 << (p.gamma_width - 1)), (1 << (p.gamma_width - 1)) - 1),
            (-(1 << (p.beta_width - 1)), (1 << (p.beta_width - 1)) - 1))


def _vec(p, x, g, b=None):
    return (np.asarray(x, dtype=np.int64), np.asarray(g, dtype=np.int64),
            np.asarray(b if b is not None else np.zeros(p.dim), dtype=np.int64))


@cocotb.test()
async def random_vectors(dut):
    """HDLGEN_COUNT random vectors over the whole input range (see error_vectors)."""
    rng = bench_rng("norm-random")
    _, p = _params()
    nrng = np.random.default_rng(rng.getrandbits(32))
    vectors = [_vec(p, x, g, b) for x, g, b in error_vectors(p, nrng, bench_count(3000))]
    await _check(dut, vectors, rng)


@cocotb.test()
async def all_equal(dut):
    """Constant vectors: RMSNorm gives sign(x) * gamma, LayerNorm gives beta (zero variance)."""
    rng = bench_rng("norm-equal")
    _, p = _params()
    (lo, hi), _, _ = _ranges(p)
    one = 1 << p.gamma_frac
    vectors = []
    for v in (lo, -1, 0, 1, hi, 5):
        g = [rng.randint(-2 * one, 2 * one) for _ in range(p.dim)]
        b = [rng.randint(-one, one) for _ in range(p.dim)]
        vectors.append(_vec(p, [v] * p.dim, g, b))
    await _check(dut, vectors, rng)


@cocotb.test()
async def extremes(dut):
    """Largest magnitudes and sums (all min, all max, alternating, one outlier), the
    extreme gammas and betas, and tiny inputs (+-1, where epsilon matters)."""
    rng = bench_rng("norm-extremes")
    _, p = _params()
    (lo, hi), (glo, ghi), (blo, bhi) = _ranges(p)
    n = p.dim
    xs = [[lo] * n, [hi] * n, [lo if i % 2 else hi for i in range(n)],
          [hi] + [0] * (n - 1), [lo] + [1] * (n - 1), [1 if i % 3 else -1 for i in range(n)]]
    vectors = []
    for x in xs:
        for g, b in (([ghi] * n, [bhi] * n), ([glo] * n, [blo] * n),
                     ([rng.choice((glo, ghi, 0, 1)) for _ in range(n)],
                      [rng.choice((blo, bhi, 0)) for _ in range(n)])):
            vectors.append(_vec(p, x, g, b))
    await _check(dut, vectors, rng)


@cocotb.test()
async def saturation(dut):
    """Outputs far beyond int8 (large gamma on a one-hot vector) clip to -128 / 127."""
    rng = bench_rng("norm-saturation")
    _, p = _params()
    (lo, hi), (glo, ghi), _ = _ranges(p)
    n = p.dim
    vectors = []
    for k in range(4):
        x = [0] * n
        x[rng.randrange(n)] = rng.choice((lo, hi))
        x[rng.randrange(n)] = rng.randint(lo, hi)
        g = [rng.choice((glo, ghi)) for _ in range(n)]
        vectors.append(_vec(p, x, g, [rng.randint(-100, 100) for _ in range(n)]))
    await _check(dut, vectors, rng)


@cocotb.test()
async def zeros(dut):
    """All-zero vectors (v clamps to 1 when eps is 0) between ordinary ones."""
    rng = bench_rng("norm-zeros")
    _, p = _params()
    one = 1 << p.gamma_frac
    vectors = [_vec(p, [0] * p.dim, [one] * p.dim, [7] * p.dim),
               _vec(p, [rng.randint(-50, 50) for _ in range(p.dim)], [one] * p.dim),
               _vec(p, [0] * p.dim, [-one] * p.dim, [-3] * p.dim)]
    await _check(dut, vectors, rng)
