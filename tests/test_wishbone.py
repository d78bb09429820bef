"""Wishbone signature, Decoder and Arbiter in Amaranth's simulator against a dict model."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from hdlgen.errors import UserError
from hdlgen.soc import wishbone


class _Ram(wiring.Component):
    """Test subordinate: byte-lane RAM answering after ``latency`` cycles (random if < 0);
    addresses whose word index is ``err_at`` answer ``err``."""

    def __init__(self, addr_width, latency=1, err_at=None, seed=0):
        self._aw, self._lat, self._err_at, self._seed = addr_width, latency, err_at, seed
        super().__init__({"bus": In(wishbone.Signature(addr_width=addr_width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=1 << self._aw, init=[])
        wr, rd = mem.write_port(granularity=8), mem.read_port(domain="comb")
        cnt = Signal(4)
        lfsr = Signal(8, init=self._seed | 1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]))
        wait = (lfsr[:2] if self._lat < 0 else self._lat)
        m.d.comb += [rd.addr.eq(self.bus.adr), wr.addr.eq(self.bus.adr), wr.data.eq(self.bus.dat_w)]
        active = self.bus.cyc & self.bus.stb & ~self.bus.ack & ~self.bus.err
        m.d.sync += [self.bus.ack.eq(0), self.bus.err.eq(0)]
        with m.If(active):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(cnt >= wait):
                m.d.sync += cnt.eq(0)
                if self._err_at is not None:
                    is_err = self.bus.adr == self._err_at
                else:
                    is_err = 0
                with m.If(is_err):
                    m.d.sync += self.bus.err.eq(1)
                with m.Else():
                    m.d.sync += [self.bus.ack.eq(1), self.bus.dat_r.eq(rd.data)]
                    with m.If(self.bus.we):
                        m.d.comb += wr.en.eq(self.bus.sel)
        return m


async def wb_access(ctx, bus, adr, *, we=0, dat=0, sel=0xF, limit=100):
    """One classic cycle; returns ("ack", data) or ("err", None)."""
    ctx.set(bus.adr, adr)
    ctx.set(bus.we, we)
    ctx.set(bus.dat_w, dat)
    ctx.set(bus.sel, sel)
    ctx.set(bus.cyc, 1)
    ctx.set(bus.stb, 1)
    for _ in range(limit):
        await ctx.tick()
        ack, err, dat_r = ctx.get(bus.ack), ctx.get(bus.err), ctx.get(bus.dat_r)
        if ack or err:
            ctx.set(bus.cyc, 0)
            ctx.set(bus.stb, 0)
            return ("ack", dat_r) if ack else ("err", None)
    raise AssertionError(f"no ack/err within {limit} cycles at adr {adr:#x}")


class _Top(wiring.Component):
    bus: In(wishbone.Signature(addr_width=14))

    def __init__(self, buffered=False):
        super().__init__()
        self.buf = wishbone.Buffer(addr_width=14) if buffered else None
        self.a = _Ram(4, latency=0)
        self.b = _Ram(6, latency=-1, err_at=5, seed=3)
        self.dec = wishbone.Decoder(addr_width=14)
        self.dec.add(self.a.bus, addr=0x0000, name="a")     # 16 words = 64 bytes
        self.dec.add(self.b.bus, addr=0x1000, name="b")     # 64 words = 256 bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.a, m.submodules.b, m.submodules.dec = self.a, self.b, self.dec
        if self.buf is None:
            wiring.connect(m, wiring.flipped(self.bus), self.dec.bus)
        else:
            m.submodules.buf = self.buf
            wiring.connect(m, wiring.flipped(self.bus), self.buf.initiator)
            wiring.connect(m, self.buf.bus, self.dec.bus)
        return m


def _expand(sel):
    return sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1)


@pytest.mark.parametrize("buffered", [False, True], ids=["decoder", "buffer_and_decoder"])
def test_decoder_random_traffic(buffered):
    dut = _Top(buffered)
    rng = random.Random(1)
    model = {}

    async def bench(ctx):
        for _ in range(600):
            region = rng.choice(["a", "b", "gap", "b"])
            if region == "a":
                w = rng.randrange(16)
            elif region == "b":
                w = 0x1000 // 4 + rng.randrange(64)
            else:
                w = rng.choice([16, 0x40, 0x1000 // 4 - 1, 0x1000 // 4 + 64, (1 << 14) - 1])
            we = rng.random() < 0.5
            dat, sel = rng.getrandbits(32), rng.choice([0xF, 0x1, 0x6, 0x8, 0xF])
            kind, got = await wb_access(ctx, dut.bus, w, we=we, dat=dat, sel=sel)
            if region == "gap" or (region == "b" and w == 0x1000 // 4 + 5):
                assert kind == "err", (hex(w), kind)
                continue
            assert kind == "ack", hex(w)
            old = model.get(w, 0)
            if we:
                mask = _expand(sel)
                model[w] = (old & ~mask) | (dat & mask)
            else:
                assert got == old, (hex(w), hex(got), hex(old))
            if rng.random() < 0.3:
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_decoder_rejects_bad_windows():
    dec = wishbone.Decoder(addr_width=10)
    dec._MustUse__silence = True  # elaborated nowhere: only add() is under test
    dec.add(wishbone.Signature(addr_width=4).flip().create(), addr=0, name="x")
    with pytest.raises(UserError, match="multiple of its window size"):
        dec.add(wishbone.Signature(addr_width=4).flip().create(), addr=0x20, name="y")
    with pytest.raises(UserError, match="overlaps"):
        dec.add(wishbone.Signature(addr_width=5).flip().create(), addr=0, name="z")
    with pytest.raises(UserError, match="does not fit"):
        dec.add(wishbone.Signature(addr_width=10).flip().create(), addr=0x1000, name="w")
    with pytest.raises(UserError, match="data_width"):
        dec.add(wishbone.Signature(addr_width=4, data_width=16).flip().create(), addr=0x40, name="v")


def test_signature_equality_and_errors():
    assert wishbone.Signature(addr_width=4) == wishbone.Signature(addr_width=4)
    assert wishbone.Signature(addr_width=4) != wishbone.Signature(addr_width=5)
    assert wishbone.Signature(addr_width=4).flip() == wishbone.Signature(addr_width=4).flip()
    with pytest.raises(ValueError, match="data_width"):
        wishbone.Signature(addr_width=4, data_width=24)


class _ArbTop(wiring.Component):
    def __init__(self):
        super().__init__({"p": In(wishbone.Signature(addr_width=4)).array(2)})
        self.ram = _Ram(4, latency=-1, seed=7)
        self.arb = wishbone.Arbiter(2, addr_width=4)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram, m.submodules.arb = self.ram, self.arb
        for i in range(2):
            wiring.connect(m, wiring.flipped(self.p[i]), self.arb.initiators[i])
        wiring.connect(m, self.arb.bus, self.ram.bus)
        return m


def test_arbiter_two_initiators():
    dut = _ArbTop()
    rng = random.Random(2)

    def make(i):
        async def bench(ctx):
            # Each initiator owns half of the words: its writes must all read back.
            mine = {}
            for _ in range(150):
                w = 2 * rng.randrange(8) + i
                if rng.random() < 0.5:
                    d = rng.getrandbits(32)
                    assert (await wb_access(ctx, dut.p[i], w, we=1, dat=d, limit=400))[0] == "ack"
                    mine[w] = d
                else:
                    kind, got = await wb_access(ctx, dut.p[i], w, limit=400)
                    assert kind == "ack" and got == mine.get(w, 0), (i, w)
                for _ in range(rng.randrange(3)):
                    await ctx.tick()
        return bench

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(make(0))
    sim.add_testbench(make(1))
    sim.run()


def test_wishbone_ram_banks():
    """hdlgen.soc.soc.WishboneRAM split into 4 banks: random byte-lane traffic vs a dict."""
    from hdlgen.soc.soc import WishboneRAM
    dut = WishboneRAM(64, bank_words=16)
    rng = random.Random(9)
    model = {}

    async def bench(ctx):
        for _ in range(400):
            w = rng.randrange(64)
            we = rng.random() < 0.5
            dat, sel = rng.getrandbits(32), rng.choice([0xF, 0x3, 0x4, 0xF])
            kind, got = await wb_access(ctx, dut.bus, w, we=we, dat=dat, sel=sel)
            assert kind == "ack"
            if we:
                mask = _expand(sel)
                model[w] = (model.get(w, 0) & ~mask) | (dat & mask)
            else:
                assert got == model.get(w, 0), (w, hex(got))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_buffer_abandoned_access():
    """An initiator that drops ``cyc`` before the answer abandons the access: the buffer ends
    its own cycle, the late answer is not passed on, and the next access is served."""
    dut = _Top(buffered=True)

    async def bench(ctx):
        kind, _ = await wb_access(ctx, dut.bus, 0x1000 // 4 + 7, we=1, dat=0x1234_5678)
        assert kind == "ack"
        ctx.set(dut.bus.adr, 3)
        ctx.set(dut.bus.we, 0)
        ctx.set(dut.bus.cyc, 1)
        ctx.set(dut.bus.stb, 1)
        await ctx.tick().repeat(2)            # taken, forwarded, not yet answered
        assert ctx.get(dut.buf.bus.cyc) == 1
        ctx.set(dut.bus.cyc, 0)
        ctx.set(dut.bus.stb, 0)
        await ctx.tick()
        assert ctx.get(dut.buf.bus.cyc) == 0
        for _ in range(8):
            await ctx.tick()
            assert not ctx.get(dut.bus.ack) and not ctx.get(dut.bus.err)
        kind, got = await wb_access(ctx, dut.bus, 0x1000 // 4 + 7)
        assert (kind, got) == ("ack", 0x1234_5678)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
