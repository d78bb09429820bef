"""DistRAM and SplitRAM (hdlgen.engine.memories) against a dictionary model: random byte-masked
writes on port ``a`` and reads on port ``b`` (the word as it is after the cycle's write comes
out ``latency`` cycles later), for widths that split into uneven column groups.

WideFIFO: an Amaranth-simulator check of the order under stalls, and a cocotb bench
(:mod:`sim.benches.wide_fifo`, Verilator) on the generated Verilog for the engine's beat-FIFO
shape on the 85F (``depth`` 16, the beat width of a 16 x 8 MAC array) and a small edge shape,
with random stalls on both sides, the FIFO filled and drained many times and ``level`` /
``r_rdy`` checked every cycle; the bench's checker must fail on a corrupted and on a
missing word."""

import json
import os
import random

import pytest
from amaranth.sim import Simulator

from hdlgen.engine.memories import DistRAM, SplitRAM, WideFIFO
from sim.harness import run_cocotb


def _check(dut, width, depth, latency, *, seed, n=300):
    rng = random.Random(seed)
    model = [0] * depth
    nbytes = width // 8
    errors = []

    async def bench(ctx):
        pending = []                              # (cycle due, expected)
        for t in range(n):
            write = rng.random() < 0.5
            addr = rng.randrange(depth)
            ctx.set(dut.a.en, write)
            ctx.set(dut.a.addr, addr)
            ctx.set(dut.b.en, 0)
            if write:
                we = rng.randrange(1, 1 << nbytes)
                data = rng.getrandbits(width)
                ctx.set(dut.a.we, we)
                ctx.set(dut.a.wdata, data)
                mask = sum(0xFF << (8 * i) for i in range(nbytes) if we >> i & 1)
                model[addr] = (model[addr] & ~mask) | (data & mask)
            else:
                ctx.set(dut.a.we, 0)
                ctx.set(dut.b.en, 1)
                ctx.set(dut.b.addr, addr)
                pending.append((t + latency, model[addr]))
            await ctx.tick()
            while pending and pending[0][0] == t + 1:
                _, want = pending.pop(0)
                got = ctx.get(dut.b.rdata)
                if got != want:
                    errors.append((t, hex(got), hex(want)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]


@pytest.mark.parametrize("latency", [2, 3, 4])
def test_distram_groups(latency):
    _check(DistRAM(width=136, depth=5, granularity=8, latency=latency), 136, 5, latency,
           seed=latency)


@pytest.mark.parametrize("latency", [3, 4])
def test_splitram_tail(latency):
    """(4: the engine's weight bank)"""
    _check(SplitRAM(width=80, depth=20, main_depth=16, granularity=8, latency=latency,
                    wdata_per_group=latency == 4), 80, 20, latency, seed=7)


@pytest.mark.parametrize("seed", [1, 2])
def test_wide_fifo_order_under_stalls(seed):
    """A writer that keeps credits (never more than ``depth`` items inside) and a reader that
    stalls at random: every word comes out once, in order."""
    dut = WideFIFO(width=150, depth=8)
    rng = random.Random(seed)
    words = [rng.getrandbits(150) for _ in range(200)]
    got = []

    async def bench(ctx):
        sent, inside = 0, 0
        while len(got) < len(words):
            write = sent < len(words) and inside < 8 and rng.random() < 0.7
            ctx.set(dut.w_en, (1 << dut.groups) - 1 if write else 0)
            if write:
                ctx.set(dut.w_data, words[sent])
            read = rng.random() < 0.6
            ctx.set(dut.r_en, read)
            await ctx.delay(1e-9)
            took = read and ctx.get(dut.r_rdy)
            if took:
                got.append(ctx.get(dut.r_data))
            await ctx.tick()
            sent += write
            inside += write - took

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == words


def _wide_fifo_bench(monkeypatch, width, depth, check=True, **params):
    flags = os.environ.get("MAKEFLAGS", "")
    if "OPT_FAST" not in flags:             # a quick C++ compile: the bench runs briefly
        monkeypatch.setenv("MAKEFLAGS", f"{flags} OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0")
    return run_cocotb(WideFIFO(width=width, depth=depth), "sim.benches.wide_fifo",
                      name="wide_fifo", check=check,
                      env={"HDLGEN_PARAMS": json.dumps({"width": width, "depth": depth, **params}),
                           "HDLGEN_COUNT": "3000"})


# (width, depth): the beat FIFO of a 16 x 8 MAC array (17 column groups, the last 2 bits; the
# engine tests' 8 x 4 array has 290 x 16, the same depth and pointers); the smallest depth,
# with a last group of 1 bit
@pytest.mark.parametrize("width,depth", [(1090, 16), (65, 2)])
def test_wide_fifo_random_traffic(monkeypatch, width, depth):
    res = _wide_fifo_bench(monkeypatch, width, depth)
    assert res.passed and res.tests == 1


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_wide_fifo_bench_catches_wrong_and_missing_word(monkeypatch, corrupt):
    res = _wide_fifo_bench(monkeypatch, 65, 2, check=False, corrupt=corrupt)
    assert res.tests == 1 and res.failed == 1
    assert "r_data" in res.results_xml.read_text()       # the scoreboard, not a stray failure
