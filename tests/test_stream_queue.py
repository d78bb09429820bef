"""StreamQueue (hdlgen.blocks.stream_parts): order, no loss, one item per cycle, random stalls."""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from hdlgen.blocks.stream_parts import StreamQueue


def _run(dut, items, *, p_valid, p_ready, seed):
    rng = random.Random(seed)
    got, cycles = [], [0]

    async def producer(ctx):
        for item in items:
            while rng.random() > p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, item)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(got) < len(items):
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()
            cycles[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, cycles[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_queue_random_stalls(seed):
    items = [random.Random(seed).randrange(1 << 12) for _ in range(300)]
    got, _ = _run(StreamQueue(12), items, p_valid=0.7, p_ready=0.6, seed=seed)
    assert got == items


def test_stream_queue_full_rate_and_struct_payload():
    layout = data.StructLayout({"a": 8, "last": 1})
    items = [{"a": n & 0xFF, "last": n & 1} for n in range(64)]
    got, cycles = _run(StreamQueue(layout), items, p_valid=1.0, p_ready=1.0, seed=0)
    assert [{"a": g.a, "last": g.last} for g in got] == items
    assert cycles <= len(items) + 3          # one item per cycle after the first


def test_stream_queue_rejects_depth():
    with pytest.raises(ValueError, match="depth must be an integer >= 2"):
        StreamQueue(8, depth=1)
