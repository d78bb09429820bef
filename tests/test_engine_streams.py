"""ElementReader (hdlgen.engine.streams) against 2-cycle RAM models: every element of a
(base, rows, row_len, stride) region once, in order, with row_end/last and the auxiliary
RAM's element (two per word) beside it, under random stalls."""

import random

import pytest
from amaranth.sim import Simulator

from hdlgen.engine.streams import ElementReader

AUX_BASE = 5


def _read(base, rows, row_len, stride, *, seed, p_ready=0.6):
    dut = ElementReader(addr_width=12, width=16, aux_addr_width=8, aux_width=32, aux_shift=1)
    ram = [(a * 7 + 3) & 0xFFFF for a in range(1 << 12)]
    aux = [(a * 0x9E3779B1) & 0xFFFFFFFF for a in range(1 << 8)]
    rng = random.Random(seed)
    n = rows * row_len
    got = []

    async def memory(ctx):              # 2-cycle read latency (the models ignore the enables)
        pipe = [(0, 0), (0, 0)]
        async for _clk, _rst, addr, aux_addr in ctx.tick().sample(dut.addr, dut.aux_addr):
            pipe = [(ram[addr], aux[aux_addr]), pipe[0]]
            ctx.set(dut.rdata, pipe[1][0])
            ctx.set(dut.aux_rdata, pipe[1][1])

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.rows, rows)
        ctx.set(dut.row_len, row_len)
        ctx.set(dut.stride, stride)
        ctx.set(dut.aux_base, AUX_BASE)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(20 * n + 50):
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                p = ctx.get(dut.o.payload)
                got.append((p.data, p.aux, p.row_end, p.last))
            await ctx.tick()
            if len(got) == n:
                break
        assert ctx.get(dut.busy) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memory)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for r in range(rows):
        for c in range(row_len):
            i = r * row_len + c
            want.append((ram[base + r * stride + c], aux[AUX_BASE + i // 2] >> (16 * (i % 2))
                         & 0xFFFF, int(c == row_len - 1), int(c == row_len - 1 and r == rows - 1)))
    return got, want


@pytest.mark.parametrize("rows, row_len, stride", [(1, 1, 0), (1, 7, 0), (3, 1, 5), (4, 2, 9),
                                                   (2, 5, 5), (5, 3, 100)])
def test_element_reader_regions(rows, row_len, stride):
    got, want = _read(17, rows, row_len, stride, seed=rows * 31 + row_len)
    assert got == want


def test_element_reader_rejects_aux_width():
    with pytest.raises(ValueError, match="multiple of 2"):
        ElementReader(addr_width=4, width=8, aux_addr_width=4, aux_width=12, aux_shift=3)
