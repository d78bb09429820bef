"""cocotb bench for :class:`hdlgen.blocks.rope.Rope` against :func:`sim.golden.rope.rope`.

``HDLGEN_PARAMS``: ``{"head_size", "theta", "bits", "max_positions", "dim", "corrupt"}``;
``dim`` is the vector length (a multiple of ``head_size``). ``HDLGEN_COUNT`` counts pairs.
"""

import cocotb
import numpy as np

from sim.benches.pointwise_common import STALLS, run_stream
from sim.cocotb_kit import bench_count, bench_params, bench_rng, pack
from sim.golden.rope import rope


def case(p, vectors, positions):
    """Items and expected outputs for whole vectors (rows of ``vectors``) at ``positions``."""
    bits, hs = p["bits"], p["head_size"]
    pos_bits = max(1, (p["max_positions"] - 1).bit_length())
    items, expected = [], []
    for x, pos in zip(vectors, positions):
        y = rope(x, int(pos), hs, p["theta"], bits)
        n = len(x) // 2
        for k in range(n):
            last = int(k == n - 1)
            items.append(pack([x[2 * k], x[2 * k + 1], pos, last], [bits, bits, pos_bits, 1]))
            expected.append(pack([y[2 * k], y[2 * k + 1], last], [bits, bits, 1]))
    return items, expected


def random_vectors(p, g, pairs):
    """Random vectors of ``dim`` elements (about ``pairs`` pairs in all), random positions."""
    bits = p["bits"]
    dim = p["dim"]
    rows = max(1, pairs // (dim // 2))
    x = g.integers(-(1 << (bits - 1)), 1 << (bits - 1), (rows, dim))
    return x, g.integers(0, p["max_positions"], rows)


async def _random(dut, salt, stall):
    p = bench_params()
    rng = bench_rng(salt)
    g = np.random.default_rng(rng.getrandbits(32))
    items, expected = case(p, *random_vectors(p, g, bench_count(3000)))
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
    """Every position once with extreme vectors (saturation: (max, max) rotated by 45 degrees
    leaves the range), all-equal and zero vectors, the first and last position, and a
    one-pair vector (length 1: ``last`` on the first pair resets the pair index)."""
    p = bench_params()
    rng = bench_rng("edge")
    bits, dim = p["bits"], p["dim"]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    pats = [np.full(dim, hi), np.full(dim, lo), np.tile([hi, lo], dim // 2),
            np.tile([lo, hi], dim // 2), np.zeros(dim, int), np.full(dim, 3)]
    npos = p["max_positions"]
    vecs = [pats[k % len(pats)] for k in range(npos)]
    items, expected = case(p, vecs, np.arange(npos))
    await run_stream(dut, items, expected, rng, max_cycles_per_item=1)
    items, expected = case(p, [pats[0], pats[2]], [0, npos - 1])
    await run_stream(dut, items, expected, rng, stall_in=0.5, stall_out=0.5, reset=False)
    # a one-pair vector after a partial head: the index restarts after 'last'
    short = [np.array([hi, 7]), np.array([lo, -5])]
    items, expected = case(p, short, [npos - 1, 1])
    await run_stream(dut, items, expected, rng, reset=False)
