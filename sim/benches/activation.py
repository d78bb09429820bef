"""cocotb bench for :class:`hdlgen.blocks.activation.Activation` against
:func:`sim.golden.activation.activation`.

``HDLGEN_PARAMS``: ``{"function", "in_bits", "out_bits", "in_scale", "out_scale", "corrupt"}``.
"""

import cocotb
import numpy as np

from sim.benches.pointwise_common import STALLS, run_stream
from sim.cocotb_kit import bench_count, bench_params, bench_rng, pack
from sim.golden.activation import activation


def _args(p):
    return (p["function"], p["in_bits"], p["out_bits"], p["in_scale"], p["out_scale"])


def case(p, x, last):
    """Packed input payloads and expected outputs (golden model)."""
    y = activation(x, *_args(p))
    items = [pack([int(a), int(b)], [p["in_bits"], 1]) for a, b in zip(x, last)]
    expected = [pack([int(a), int(b)], [p["out_bits"], 1]) for a, b in zip(y, last)]
    return items, expected


async def _random(dut, salt, stall):
    p = bench_params()
    rng = bench_rng(salt)
    g = np.random.default_rng(rng.getrandbits(32))
    n = bench_count(3000)
    ib = p["in_bits"]
    x = g.integers(-(1 << (ib - 1)), 1 << (ib - 1), n)
    last = g.integers(0, 2, n)
    items, expected = case(p, x, last)
    await run_stream(dut, items, expected, rng, stall_in=stall, stall_out=stall,
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


@cocotb.test()
async def exhaustive_and_extremes(dut):
    """Every representable input once (the whole range, so saturation and both extremes),
    then the extremes, zero and the knot boundaries alone, then a single item."""
    p = bench_params()
    rng = bench_rng("edge")
    ib = p["in_bits"]
    lo, hi = -(1 << (ib - 1)), (1 << (ib - 1)) - 1
    x = np.arange(lo, hi + 1)
    items, expected = case(p, x, (x & 1))
    await run_stream(dut, items, expected, rng, max_cycles_per_item=1)
    edge = np.array([lo, hi, 0, -1, 1, lo + 1, hi - 1] + ([127, 128, -128, -129, 255, 256] if ib == 16 else []))
    items, expected = case(p, edge, np.ones_like(edge))
    await run_stream(dut, items, expected, rng, stall_in=0.5, stall_out=0.5, reset=False)
    items, expected = case(p, np.array([hi]), np.array([1]))
    await run_stream(dut, items, expected, rng, reset=False)
