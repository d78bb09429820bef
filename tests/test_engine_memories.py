"""DistRAM and SplitRAM (hdlgen.engine.memories) against a dictionary model: random byte-masked
writes on port ``a`` and reads on port ``b`` (the word as it is after the cycle's write comes
out ``latency`` cycles later), for widths that split into uneven column groups."""

import random

import pytest
from amaranth.sim import Simulator

from hdlgen.engine.memories import DistRAM, SplitRAM


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


@pytest.mark.parametrize("latency", [2, 3])
def test_distram_groups(latency):
    _check(DistRAM(width=136, depth=5, granularity=8, latency=latency), 136, 5, latency,
           seed=latency)


def test_splitram_tail():
    _check(SplitRAM(width=80, depth=20, main_depth=16, granularity=8, latency=3), 80, 20, 3,
           seed=7)


@pytest.mark.parametrize("seed", [1, 2])
def test_wide_fifo_order_under_stalls(seed):
    """A writer that keeps credits (never more than ``depth`` items inside) and a reader that
    stalls at random: every word comes out once, in order."""
    from hdlgen.engine.memories import WideFIFO
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
