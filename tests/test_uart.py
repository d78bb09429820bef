"""UART: divisor rules, TX bit timing against a line model, RX from a line model with baud
error and glitches, TX -> RX loopback at bit level, and the cocotb bench on the Verilog."""

import json
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hdlgen.errors import UserError
from hdlgen.soc.uart import UARTRx, UARTTx, uart_divisor


def test_divisor():
    assert uart_divisor(125_000_000, 3_000_000) == 42
    assert uart_divisor(25_000_000, 115_200) == 217
    with pytest.raises(UserError, match="too fast"):
        uart_divisor(10_000_000, 3_000_000)
    with pytest.raises(UserError, match="% off"):
        uart_divisor(18_000_000, 4_000_000)      # 4.5 -> 4 or 5: >2 % off
    with pytest.raises(ValueError, match="divisor"):
        UARTTx(2)


def test_tx_waveform():
    """Sample ``tx`` every cycle; decode start/data/stop at mid-bit like a receiver would."""
    div = 11
    dut = UARTTx(div)
    data = [0x00, 0xFF, 0x55, 0xA3, 0x01, 0x80]
    line = []

    async def feed(ctx):
        for b in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(12 * div)

    async def probe(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            line.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_process(probe)
    sim.run()
    # decode
    got, i = [], 0
    while True:
        while i < len(line) and line[i] == 1:
            i += 1
        if i + 10 * div > len(line):
            break
        start = i
        assert line[start + div // 2] == 0
        bits = [line[start + div * (k + 1) + div // 2] for k in range(8)]
        assert line[start + 9 * div + div // 2] == 1, "stop bit"
        got.append(sum(b << k for k, b in enumerate(bits)))
        # every bit exactly div cycles long: the line is constant inside each bit
        for k in range(9):
            seg = line[start + k * div + 1:start + (k + 1) * div - 1]
            assert len(set(seg)) == 1, f"bit {k} of byte {len(got) - 1} is not {div} cycles long"
        i = start + 9 * div + div // 2
    assert got == data


def _drive_line(ctx, rx, events):
    """Coroutine body: drive ``rx`` from a list of (level, cycles)."""
    async def run():
        for level, cycles in events:
            ctx.set(rx, level)
            await ctx.tick().repeat(max(1, cycles))
    return run()



def _frame(byte, bit_cycles, stop=1):
    bits = [0] + [(byte >> k) & 1 for k in range(8)] + [stop]
    return [(b, round(bit_cycles)) for b in bits]


@pytest.mark.parametrize("error", [-0.018, 0.0, 0.018])
def test_rx_with_baud_error_and_glitches(error):
    div = 42
    dut = UARTRx(div)
    rng = random.Random(3)
    data = [rng.getrandbits(8) for _ in range(40)]
    bit = div * (1 + error)
    events = [(1, 20)]
    for b in data:
        if rng.random() < 0.3:
            events += [(0, div // 4), (1, div)]          # glitch shorter than half a bit
        # fractional bit periods: accumulate rounding over the frame
        t, acc = 0.0, []
        bits = [0] + [(b >> k) & 1 for k in range(8)] + [1]
        for lv in bits:
            t_next = t + bit
            acc.append((lv, round(t_next) - round(t)))
            t = t_next
        events += acc + [(1, rng.randrange(0, 30))]
    events.append((1, 50))
    got, errors = [], []

    async def line(ctx):
        await _drive_line(ctx, dut.rx, events)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, fe in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.frame_error):
            if valid:
                got.append(payload)
            if fe:
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(line)
    sim.add_process(sink)
    sim.run()
    assert got == data and not errors


def test_rx_frame_error_and_overrun():
    div = 8
    dut = UARTRx(div)
    events = [(1, 10)] + _frame(0x3C, div, stop=0) + [(1, 30)] + _frame(0x5A, div) + [(1, 5)] \
        + _frame(0x11, div) + [(1, 20)]
    got, fe, ov = [], [], []

    async def line(ctx):
        await _drive_line(ctx, dut.rx, events)

    async def sink(ctx):
        ctx.set(dut.o.ready, 0)          # never take: the second good byte overruns
        async for _, _, valid, payload, f, o in ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.frame_error, dut.overrun):
            fe.append(f)
            ov.append(o)
            if valid and payload not in got:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(line)
    sim.add_process(sink)
    sim.run()
    assert got == [0x5A] and sum(fe) == 1 and sum(ov) == 1


class Loopback(wiring.Component):
    """TX -> RX through a wire; also the DUT of the cocotb bench ``sim.benches.uart``."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    line: Out(1)

    def __init__(self, divisor):
        self._div = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTx(self._div)
        m.submodules.rx = rx = UARTRx(self._div)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        wiring.connect(m, rx.o, wiring.flipped(self.o))
        m.d.comb += [rx.rx.eq(tx.tx), self.line.eq(tx.tx)]
        return m


def test_loopback_amaranth():
    dut = Loopback(5)
    rng = random.Random(4)
    data = [rng.getrandbits(8) for _ in range(200)]
    got = []

    async def src(ctx):
        for b in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            if rng.random() < 0.2:
                await ctx.tick().repeat(rng.randrange(1, 40))
        await ctx.tick().repeat(200)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(src)
    sim.add_process(sink)
    sim.run()
    assert got == data


def _bench(env, check=True):
    from sim.harness import run_cocotb
    return run_cocotb(Loopback(42), "sim.benches.uart", name="uart_loopback", env=env, check=check)


def test_loopback_cocotb():
    _bench({"HDLGEN_COUNT": "400", "HDLGEN_PARAMS": json.dumps({"divisor": 42})})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_loopback_cocotb_scoreboard_can_fail(corrupt):
    res = _bench({"HDLGEN_COUNT": "20", "HDLGEN_PARAMS": json.dumps({"divisor": 42, "corrupt": corrupt})},
                 check=False)
    assert res.tests > 0 and res.failed > 0
