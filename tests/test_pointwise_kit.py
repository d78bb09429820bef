"""CreditPipe (the stream edge of every element-wise block) and saturate(), in Amaranth's
simulator."""

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hdlgen.blocks.pointwise_kit import CreditPipe, delay, saturate
from sim.amaranth_streams import run_stream_amaranth


class _PlusOne(wiring.Component):
    """CreditPipe around a ``latency``-deep ``x + 1`` core (test fixture)."""

    def __init__(self, latency):
        self._latency = latency
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    @property
    def depth(self):
        return self._latency + 4

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipe = pipe = CreditPipe(8, 8, self._latency)
        wiring.connect(m, wiring.flipped(self.i), pipe.i)
        wiring.connect(m, pipe.o, wiring.flipped(self.o))
        v = delay(m, pipe.core_valid, self._latency, name="v", reset=True)
        d = delay(m, pipe.core_in + 1, self._latency, name="d")
        m.d.comb += [pipe.core_out_valid.eq(v), pipe.core_out.eq(d)]
        return m


@pytest.mark.parametrize("latency", [1, 5, 12])
@pytest.mark.parametrize("stall", [0.0, 0.1, 0.5])
def test_in_order_no_loss(latency, stall):
    items = [(k * 37) & 0xFF for k in range(600)]
    got = run_stream_amaranth(_PlusOne(latency), items, len(items), stall_in=stall,
                              stall_out=stall, seed=latency)
    assert got == [(x + 1) & 0xFF for x in items]


def test_full_throughput_and_credit_limit():
    dut = _PlusOne(6)
    log = {}

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 0)
        accepted = 0
        for _ in range(40):                      # output blocked: only `depth` items go in
            ctx.set(dut.i.payload, accepted)
            _, _, ir = await ctx.tick().sample(dut.i.ready)
            accepted += ir
        log["blocked"] = accepted
        ctx.set(dut.o.ready, 1)
        out = 0
        for _ in range(200):                     # then one item per cycle in and out
            ctx.set(dut.i.payload, accepted & 0xFF)
            _, _, ir, ov = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            accepted += ir
            out += ov
        log["flow_in"], log["flow_out"] = accepted - log["blocked"], out

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["blocked"] == dut.depth == 10
    assert log["flow_in"] >= 195 and log["flow_out"] >= 195


def test_saturate():
    x = Signal(signed(20))
    y = Signal(signed(8))
    m = Module()
    m.d.comb += y.eq(saturate(x, 8))
    got = {}

    async def bench(ctx):
        for v in (-(1 << 19), -129, -128, -1, 0, 127, 128, (1 << 19) - 1):
            ctx.set(x, v)
            got[v] = ctx.get(y)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == {-(1 << 19): -128, -129: -128, -128: -128, -1: -1, 0: 0, 127: 127,
                   128: 127, (1 << 19) - 1: 127}
