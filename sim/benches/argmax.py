"""cocotb bench for :class:`hdlgen.blocks.argmax.Argmax` against
:func:`sim.golden.argmax.argmax_packets`.

``HDLGEN_PARAMS``: ``{"bits", "max_length", "corrupt"}``; ``HDLGEN_COUNT`` counts logits.
"""

import cocotb
import numpy as np

from sim.benches.pointwise_common import STALLS, run_stream
from sim.cocotb_kit import bench_count, bench_params, bench_rng, pack
from sim.golden.argmax import argmax_packets


def case(p, packets):
    """Packed input payloads and expected outputs (golden model)."""
    bits, ib = p["bits"], max(1, (p["max_length"] - 1).bit_length())
    items = [pack([int(v), int(k == len(pk) - 1)], [bits, 1]) for pk in packets
             for k, v in enumerate(pk)]
    expected = [pack([i, v], [ib, bits]) for i, v in argmax_packets(packets, bits)]
    return items, expected


def random_packets(p, g, n):
    """Packets of random length (1 .. max_length, biased short) until ``n`` logits; half of
    them drawn from a narrow range so ties are frequent."""
    bits, lmax = p["bits"], p["max_length"]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    packets, total = [], 0
    while total < n:
        length = int(min(lmax, 1 + g.geometric(1 / 24)))
        if g.random() < 0.5:
            pk = g.integers(lo, hi + 1, length)
        else:
            c = int(g.integers(lo + 4, hi - 3))
            pk = g.integers(c - 3, c + 4, length)
        packets.append(pk)
        total += length
    return packets


async def _random(dut, salt, stall):
    p = bench_params()
    rng = bench_rng(salt)
    g = np.random.default_rng(rng.getrandbits(32))
    items, expected = case(p, random_packets(p, g, bench_count(3000)))
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
    """All-equal packets (index 0), extremes at either end, the maximum twice, length 1
    packets back to back, a packet of exactly ``max_length``, under stalls and without."""
    p = bench_params()
    rng = bench_rng("edge")
    bits, lmax = p["bits"], p["max_length"]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    packets = [
        [5] * 17, [lo] * 9, [hi] * 3,
        [lo] * 10 + [hi], [hi] + [lo] * 10, [lo, hi, 0, hi, hi], [lo + 1, lo],
        [0], [lo], [hi], [-1], [1], [hi], [lo],
        list(range(-20, 20)), list(range(20, -20, -1)),
        [lo] * (lmax - 1) + [lo + 1],
    ]
    items, expected = case(p, packets)
    await run_stream(dut, items, expected, rng, max_cycles_per_item=1)
    await run_stream(dut, items, expected, rng, stall_in=0.5, stall_out=0.5, reset=False)
    items, expected = case(p, [[hi]] * 50)          # length-1 packets, output slower
    await run_stream(dut, items, expected, rng, stall_in=0.0, stall_out=0.5, reset=False)
