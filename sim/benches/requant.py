"""cocotb bench for :class:`hdlgen.blocks.requant.Requant` against
:func:`sim.golden.requant.requantize`.

``HDLGEN_PARAMS``: ``{"out_bits": 8|16, "has_bias": bool, "corrupt": ...}``.
"""

import cocotb
import numpy as np

from sim.benches.pointwise_common import STALLS, run_stream
from sim.cocotb_kit import bench_count, bench_params, bench_rng, pack
from sim.golden.requant import requantize


def _widths(p):
    a = p.get("acc_bits", 32)
    return [a, a, 16, 6, 1] if p["has_bias"] else [a, 16, 6, 1]


def items_of(p, acc, bias, mult, shift, last):
    """Packed input payloads."""
    out = []
    for k in range(len(acc)):
        fields = [acc[k], bias[k], mult[k], shift[k], last[k]] if p["has_bias"] else \
                 [acc[k], mult[k], shift[k], last[k]]
        out.append(pack(fields, _widths(p)))
    return out


def expected_of(p, acc, bias, mult, shift, last):
    """Packed expected outputs (golden model)."""
    y = requantize(acc, mult, shift, bias if p["has_bias"] else None, p["out_bits"])
    return [pack([int(v), int(l)], [p["out_bits"], 1]) for v, l in zip(y, last)]


def random_vectors(p, rng, n):
    """Random items whose outputs mostly land inside the output range (plus some saturating):
    the shift is chosen around ``log2(|x| * mult) - out_bits``."""
    g = np.random.default_rng(rng.getrandbits(32))
    a = p.get("acc_bits", 32)                  # (acc and bias are signed a-bit values)
    mag = g.integers(0, a, n)
    acc = np.array([int(g.integers(-(1 << int(b)), 1 << int(b))) for b in mag], dtype=np.int64)
    acc = np.clip(acc, -(1 << (a - 1)), (1 << (a - 1)) - 1)
    lim = 1 << min(20, a - 1)
    bias = g.integers(-lim, lim, n) if p["has_bias"] else np.zeros(n, np.int64)
    wide = g.random(n) < 0.05
    bias[wide] = g.integers(-(1 << (a - 1)), 1 << (a - 1), int(wide.sum()))
    mult = g.integers(1, 1 << 16, n)
    x = np.abs(acc + bias) + 1
    base = np.floor(np.log2(x.astype(np.float64) * mult)).astype(np.int64) - p["out_bits"] + 2
    shift = np.clip(base + g.integers(-3, 4, n), 1, 47)
    last = g.integers(0, 2, n)
    return acc, bias, mult, shift, last


async def _random(dut, salt, stall):
    p = bench_params()
    rng = bench_rng(salt)
    n = bench_count(3000)
    vec = random_vectors(p, rng, n)
    await run_stream(dut, items_of(p, *vec), expected_of(p, *vec), rng, stall_in=stall, stall_out=stall,
                     max_cycles_per_item=1 if stall == 0 else None)


@cocotb.test()
async def random_stall_0(dut):
    await _random(dut, "stall_0", STALLS["stall_0"])


@cocotb.test()
async def random_stall_01(dut):
    await _random(dut, "stall_01", STALLS["stall_01"])


@cocotb.test()
async def random_stall_05(dut):
    await _random(dut, "stall_05", STALLS["stall_05"])


def edge_rows(p):
    """Extremes of every field, rounding ties, saturation both ways: ``(acc, bias, mult,
    shift, last)`` arrays."""
    a = p.get("acc_bits", 32)
    amin, amax = -(1 << (a - 1)), (1 << (a - 1)) - 1
    rows = []
    for acc in (amin, amax, 0, 1, -1, 3, -3, 5, -5, min(1 << 20, amax), max(-(1 << 20), amin)):
        for bias in ((amin, amax, 0, -1) if p["has_bias"] else (0,)):
            for mult in (1, 2, 32768, 65535):
                for shift in (1, 2, 16, 17, 31, 32, 33, 46, 47):
                    rows.append((acc, bias, mult, shift, len(rows) & 1))
    # exact half-way ties: x * mult = (2k + 1) * 2**(shift - 1)
    for k in range(-6, 6):
        for shift in (1, 3, 15, 16, 17, 47):
            v = (2 * k + 1) << (shift - 1)
            if v % 3 == 0 and abs(v // 3) <= amax:
                rows.append((v // 3, 0, 3, shift, 0))
            if abs(v) <= amax:
                rows.append((v, 0, 1, shift, 1))
    return tuple(np.array(c, dtype=np.int64) for c in zip(*rows))


@cocotb.test()
async def edge_cases(dut):
    """Extremes of every field, rounding ties, saturation both ways, length 1."""
    p = bench_params()
    rng = bench_rng("edge")
    vec = edge_rows(p)
    await run_stream(dut, items_of(p, *vec), expected_of(p, *vec), rng, stall_in=0.2, stall_out=0.3)
    # a single item
    one = tuple(np.array([c], dtype=np.int64) for c in (123456, -7, 40000, 20, 1))
    await run_stream(dut, items_of(p, *one), expected_of(p, *one), rng, reset=False)
