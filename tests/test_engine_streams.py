"""ElementReader (hdlgen.engine.streams) against a 2-cycle RAM model: every element of a
(base, rows, row_len, stride) region once, in order, with row_end/last, under random stalls."""

import random

import pytest
from amaranth.sim import Simulator

from hdlgen.engine.streams import ElementReader


def _read(base, rows, row_len, stride, *, seed, p_ready=0.6):
    dut = ElementReader(addr_width=12, width=16)
    ram = [(a * 7 + 3) & 0xFFFF for a in range(1 << 12)]
    rng = random.Random(seed)
    n = rows * row_len
    got = []

    async def memory(ctx):              # 2-cycle read latency, no enable needed for the model
        pipe = [0, 0]
        async for clk_edge, _rst, addr in ctx.tick().sample(dut.addr):
            pipe = [ram[addr], pipe[0]]
            ctx.set(dut.rdata, pipe[1])

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.rows, rows)
        ctx.set(dut.row_len, row_len)
        ctx.set(dut.stride, stride)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(20 * n + 50):
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                p = ctx.get(dut.o.payload)
                got.append((p.data, p.row_end, p.last))
            await ctx.tick()
            if len(got) == n:
                break
        assert ctx.get(dut.busy) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memory)
    sim.add_testbench(bench)
    sim.run()
    want = [(ram[base + r * stride + c], int(c == row_len - 1),
             int(c == row_len - 1 and r == rows - 1))
            for r in range(rows) for c in range(row_len)]
    return got, want


@pytest.mark.parametrize("rows, row_len, stride", [(1, 1, 0), (1, 7, 0), (3, 1, 5), (4, 2, 9),
                                                   (2, 5, 5), (5, 3, 100)])
def test_element_reader_regions(rows, row_len, stride):
    got, want = _read(17, rows, row_len, stride, seed=rows * 31 + row_len)
    assert got == want
