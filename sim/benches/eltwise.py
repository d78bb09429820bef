"""cocotb bench for :class:`hdlgen.blocks.eltwise.Eltwise` against :mod:`sim.golden.eltwise`.

``HDLGEN_PARAMS``: ``{"op": "add", "bits"}`` or ``{"op": "swiglu", "a_bits", "b_bits",
"out_bits", "a_scale", "silu_scale"}``, plus ``corrupt``.
"""

import cocotb
import numpy as np

from sim.benches.pointwise_common import STALLS, run_stream
from sim.cocotb_kit import bench_count, bench_params, bench_rng, pack
from sim.golden.eltwise import residual_add, swiglu


def _widths(p):
    if p["op"] == "add":
        return p["bits"], p["bits"], p["bits"]
    return p["a_bits"], p["b_bits"], p["out_bits"]


def case(p, a, b, last, mult=None, shift=None):
    """Packed input payloads and expected outputs (golden model)."""
    ab, bb, ob = _widths(p)
    if p["op"] == "add":
        y = residual_add(a, b, p["bits"])
    else:
        y = swiglu(a, b, mult, shift, a_bits=ab, b_bits=bb, out_bits=ob,
                   a_scale=p["a_scale"], silu_scale=p["silu_scale"])
    items = [pack([int(x), int(z), int(l)], [ab, bb, 1]) for x, z, l in zip(a, b, last)]
    expected = [pack([int(v), int(l)], [ob, 1]) for v, l in zip(y, last)]
    return items, expected


def _set_params(dut, p, mult, shift):
    if p["op"] == "swiglu":
        dut.mult.value = int(mult)
        dut.shift.value = int(shift)


def typical_scale(p):
    """mult/shift that map the product range onto the output range (some saturation)."""
    ab, bb, ob = _widths(p)
    prod_bits = 15 + bb - 1 - 2                     # |silu| up to 2**15, |b| up to 2**(bb-1)
    return 40000, 16 + prod_bits - (ob - 1)


def random_inputs(p, g, n):
    """Uniform random operands over the whole input ranges, random ``last``."""
    ab, bb, _ = _widths(p)
    a = g.integers(-(1 << (ab - 1)), 1 << (ab - 1), n)
    b = g.integers(-(1 << (bb - 1)), 1 << (bb - 1), n)
    return a, b, g.integers(0, 2, n)


async def _random(dut, salt, stall):
    p = bench_params()
    rng = bench_rng(salt)
    g = np.random.default_rng(rng.getrandbits(32))
    n = bench_count(3000)
    mult, shift = typical_scale(p)
    mult = int(g.integers(mult // 2, 65536))
    _set_params(dut, p, mult, shift)
    items, expected = case(p, *random_inputs(p, g, n), mult, shift)
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
async def edge_cases(dut):
    """Every pair of extreme operands (saturation both ways), all-equal items, length 1, and
    for SwiGLU the extreme multiplier/shift settings."""
    p = bench_params()
    rng = bench_rng("edge")
    ab, bb, _ = _widths(p)
    ea = [-(1 << (ab - 1)), (1 << (ab - 1)) - 1, -1, 0, 1, 17]
    eb = [-(1 << (bb - 1)), (1 << (bb - 1)) - 1, -1, 0, 1, -23]
    a = np.array([x for x in ea for _ in eb] + [5] * 40)
    b = np.array([z for _ in ea for z in eb] + [-7] * 40)
    last = np.arange(len(a)) % 2
    settings = [typical_scale(p)]
    if p["op"] == "swiglu":
        settings += [(65535, 1), (1, 47), (1, 1), (65535, 47), (32768, 16)]
    first = True
    for mult, shift in settings:
        _set_params(dut, p, mult, shift)
        items, expected = case(p, a, b, last, mult, shift)
        await run_stream(dut, items, expected, rng, stall_in=0.3, stall_out=0.3, reset=first)
        first = False
    mult, shift = settings[0]
    _set_params(dut, p, mult, shift)
    items, expected = case(p, a[:1], b[:1], last[:1], mult, shift)
    await run_stream(dut, items, expected, rng, reset=False)
