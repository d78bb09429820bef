"""cocotb bench for :class:`hdlgen.blocks.mac_array.MACArray` against
:func:`sim.golden.mac_array.mac_array_model`.

``HDLGEN_PARAMS``: ``{"lanes": L, "macs_per_lane": K, "acc_width": W, "max_dot_length": N,
"shared_width": S (default 8), "corrupt": "value" | "missing", "stalls": [0.0, 0.1, 0.5]}``; ``corrupt`` makes the scoreboard of ``random_traffic``
expect one wrong or one extra result, which must fail (negative test of the checker).
``HDLGEN_COUNT``: dot products per stall setting in ``random_traffic`` (default 3000).

Tests:

``random_traffic``      random dot products (1 to 12 beats, values uniform or at the int8
                        extremes; the shared ones at the ``shared_width`` extremes) with valid/ready stalls 0, 0.1 and 0.5 on input and output
``extremes_max_length`` -128 x -128, -128 x 127 and 127 x 127 over ``max_dot_length`` (the
                        shared operand's extremes when it is wider; the sums then wrap)
``length_one``          single-beat dot products, the first right after reset
``back_to_back``        no stalls: a beat accepted every cycle across row boundaries, and one
                        result per cycle for back-to-back single-beat dot products
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
import numpy as np

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, pack, start, unpack)
from sim.golden.mac_array import Beat, mac_array_model, wrap


class _Shape:
    def __init__(self, p):
        self.L, self.K = p["lanes"], p["macs_per_lane"]
        self.W, self.N = p["acc_width"], p["max_dot_length"]
        self.S = p.get("shared_width", 8)
        self.smin, self.smax = -(1 << (self.S - 1)), (1 << (self.S - 1)) - 1

    def encode(self, b: Beat) -> int:
        values = [int(b.first), int(b.last), *map(int, b.shared), *map(int, np.ravel(b.per_lane))]
        widths = [1, 1] + [self.S] * self.K + [8] * (self.L * self.K)
        return pack(values, widths)

    def decode(self, word: int) -> tuple:
        return tuple(unpack(word, [self.W] * self.L))

    def expected(self, beats) -> list[tuple]:
        return [tuple(int(v) for v in r)
                for r in mac_array_model(beats, self.L, self.K, self.W, self.S)]


def _dot(rng, s: _Shape, n_beats: int, mode: str) -> list[Beat]:
    beats = []
    for j in range(n_beats):
        if mode == "extreme":
            sh = np.array([rng.choice((s.smin, s.smax, -1, 0)) for _ in range(s.K)])
            pl = np.array([[rng.choice((-128, 127, -1, 0)) for _ in range(s.K)] for _ in range(s.L)])
        else:
            sh = np.array([rng.randint(s.smin, s.smax) for _ in range(s.K)])
            pl = np.array([[rng.randint(-128, 127) for _ in range(s.K)] for _ in range(s.L)])
        beats.append(Beat(sh, pl, j == 0, j == n_beats - 1))
    return beats


def _random_length(rng) -> int:
    r = rng.random()
    if r < 0.35:
        return 1
    if r < 0.9:
        return rng.randint(2, 5)
    return rng.randint(6, 12)


async def _run(dut, s: _Shape, rng, beats, stall_in, stall_out, corrupt=None):
    expected = s.expected(beats)
    await FallingEdge(dut.clk)
    drv = StreamDriver(dut, "i", rng, stall_in)
    mon = StreamMonitor(dut, "o", rng, stall_out)
    await drv.send([s.encode(b) for b in beats])
    got = await mon.wait_for(len(expected), timeout_cycles=200 + 20 * len(expected))
    # A few more cycles: anything beyond the expected results is an error too.
    for _ in range(40):
        await RisingEdge(dut.clk)
    mon.stop()
    # The kit's driver must start at a falling edge (it drives there and samples in the
    # read-only phase); starting right after a rising edge would race the DUT's registers.
    await FallingEdge(dut.clk)
    if corrupt == "value" and expected:
        k = len(expected) // 2
        expected[k] = (expected[k][0] ^ 1,) + expected[k][1:]
    elif corrupt == "missing":
        expected.append(expected[-1])
    got = [s.decode(w) for w in got]
    if got != expected:
        dut._log.error("expected[:3] %s got[:3] %s; %d vs %d results", expected[:3], got[:3],
                       len(expected), len(got))
    assert_streams_equal(expected, got, what="result")


@cocotb.test()
async def random_traffic(dut):
    p = bench_params()
    s = _Shape(p)
    rng = bench_rng("mac_array.random")
    await start(dut)
    n = bench_count(3000)
    for stall in p.get("stalls", (0.0, 0.1, 0.5)):
        beats = []
        for _ in range(n):
            beats += _dot(rng, s, _random_length(rng), "extreme" if rng.random() < 0.15 else "uniform")
        dut._log.info("stall %.1f: %d dot products, %d beats", stall, n, len(beats))
        await _run(dut, s, rng, beats, stall, stall, corrupt=p.get("corrupt") if stall == 0.5 else None)


@cocotb.test()
async def extremes_max_length(dut):
    s = _Shape(bench_params())
    rng = bench_rng("mac_array.extremes")
    await start(dut)
    n_beats = -(-s.N // s.K)
    beats = []
    cases = ((s.smin, -128), (s.smin, 127), (s.smax, 127))
    for a, b in cases:
        for j in range(n_beats):
            valid = min(s.K, s.N - j * s.K)     # pad the last beat with zeros
            sh = np.array([a if k < valid else 0 for k in range(s.K)])
            pl = np.array([[b if k < valid else 0 for k in range(s.K)] for _ in range(s.L)])
            beats.append(Beat(sh, pl, j == 0, j == n_beats - 1))
    expected = s.expected(beats)
    want = [tuple([int(wrap(a * b * s.N, s.W))] * s.L) for a, b in cases]
    assert expected == want, f"golden model {expected} differs from the closed form {want}"
    await _run(dut, s, rng, beats, 0.1, 0.1)


@cocotb.test()
async def length_one(dut):
    s = _Shape(bench_params())
    rng = bench_rng("mac_array.length_one")
    await start(dut)
    beats = []
    for _ in range(200):
        beats += _dot(rng, s, 1, "extreme" if rng.random() < 0.3 else "uniform")
    await _run(dut, s, rng, beats, 0.0, 0.3)


@cocotb.test()
async def back_to_back(dut):
    """Throughput: with no stalls every cycle transfers a beat, rows follow each other with no
    gap, and single-beat dot products give one result per cycle."""
    s = _Shape(bench_params())
    rng = bench_rng("mac_array.back_to_back")
    await start(dut)
    beats = []
    for _ in range(64):
        beats += _dot(rng, s, 1, "uniform")
    for _ in range(16):
        beats += _dot(rng, s, rng.randint(2, 6), "uniform")
    for _ in range(64):
        beats += _dot(rng, s, 1, "uniform")
    words = [s.encode(b) for b in beats]
    expected = s.expected(beats)

    accept_cycles, out_cycles, got = [], [], []
    dut.o__ready.value = 1
    dut.i__valid.value = 0
    cycle, sent = 0, 0
    await FallingEdge(dut.clk)
    while len(got) < len(expected) and cycle < 20 * len(beats) + 200:
        if sent < len(words):
            dut.i__valid.value = 1
            dut.i__payload.value = words[sent]
        else:
            dut.i__valid.value = 0
        await ReadOnly()
        if sent < len(words) and int(dut.i__ready.value):
            accept_cycles.append(cycle)
            sent += 1
        if int(dut.o__valid.value):
            out_cycles.append(cycle)
            got.append(s.decode(int(dut.o__payload.value)))
        await FallingEdge(dut.clk)
        cycle += 1
    dut.i__valid.value = 0
    assert_streams_equal(expected, got, what="result")
    gaps = [b - a for a, b in zip(accept_cycles, accept_cycles[1:]) if b - a != 1]
    assert not gaps, f"input stalled although the output was always ready: gaps {gaps[:10]}"
    assert accept_cycles[0] <= 1, f"first beat accepted only in cycle {accept_cycles[0]}"
    # The first 64 results (single-beat dot products) leave on consecutive cycles.
    head = out_cycles[:64]
    assert head[-1] - head[0] == 63, f"64 back-to-back results took {head[-1] - head[0] + 1} cycles"
    tail = out_cycles[-64:]
    assert tail[-1] - tail[0] == 63, f"64 back-to-back results took {tail[-1] - tail[0] + 1} cycles"
    dut._log.info("%d beats in %d cycles, latency %d", len(beats),
                  accept_cycles[-1] - accept_cycles[0] + 1, out_cycles[0] - accept_cycles[0])
