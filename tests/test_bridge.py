"""Host bridge against the byte-exact Python model (:mod:`sim.golden.bridge`): random frames
with corruption, truncation, garbage, retries, bus errors and timeouts; named edge cases;
protocol and CRC unit tests; the cocotb bench on the Verilog with thousands of frames."""

import json
import random
import zlib

import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.lib import stream
from amaranth.sim import Simulator

from hdlgen.soc import protocol
from hdlgen.soc.bridge import Bridge
from hdlgen.soc.protocol import Opcode, Status, encode_reply, encode_request
from hdlgen.soc.soc import WishboneRAM
from hdlgen.soc import wishbone
from sim.golden.bridge import BridgeModel, DictBus, random_segments

RAM_WORDS = 64
SILENT_WORD = 0x400
ACC_WORD = 0x800


class _Accumulator(wiring.Component):
    """One word where a write adds ``dat_w`` (a side effect: a re-applied write shows)."""
    bus: In(wishbone.Signature(addr_width=0))

    def elaborate(self, platform):
        m = Module()
        acc = Signal(32)
        m.d.comb += self.bus.dat_r.eq(acc)
        m.d.sync += self.bus.ack.eq(self.bus.cyc & self.bus.stb & ~self.bus.ack)
        with m.If(self.bus.cyc & self.bus.stb & ~self.bus.ack & self.bus.we):
            m.d.sync += acc.eq(acc + self.bus.dat_w)
        return m


class BridgeHarness(wiring.Component):
    """Bridge + decoder + RAM (words 0..63) + a subordinate that never answers (byte 0x1000);
    the rest is unmapped. Also the DUT of the cocotb bench ``sim.benches.bridge``."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, *, timeout_cycles=200, max_burst=16, bus_timeout_cycles=64):
        super().__init__()
        self.bridge = Bridge(timeout_cycles=timeout_cycles, max_burst=max_burst,
                             bus_timeout_cycles=bus_timeout_cycles, addr_width=16)
        self.ram = WishboneRAM(RAM_WORDS)
        self.silent = wishbone.Signature(addr_width=4).flip().create()
        self.dec = wishbone.Decoder(addr_width=16)
        self.dec.add(self.ram.bus, addr=0, name="ram")
        self.dec.add(self.silent, addr=4 * SILENT_WORD, name="silent")
        self.acc = _Accumulator()
        self.dec.add(self.acc.bus, addr=4 * ACC_WORD, name="acc")

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.ram, m.submodules.dec = self.bridge, self.ram, self.dec
        m.submodules.acc = self.acc
        wiring.connect(m, wiring.flipped(self.i), self.bridge.i)
        wiring.connect(m, self.bridge.o, wiring.flipped(self.o))
        wiring.connect(m, self.bridge.bus, self.dec.bus)
        return m


def make_model(max_burst=16):
    bus = DictBus([(0, RAM_WORDS)], silent=[(SILENT_WORD, 16)], accumulators=[ACC_WORD])
    return BridgeModel(bus.read, bus.write, max_burst=max_burst, addr_width=16), bus


def run_segments(segs, *, timeout_cycles=200, max_burst=16, seed=0, stall=0.2):
    """Drive ``segs`` into the harness in Amaranth's simulator; returns the reply bytes."""
    dut = BridgeHarness(timeout_cycles=timeout_cycles, max_burst=max_burst)
    rng = random.Random(seed)
    got = bytearray()

    async def driver(ctx):
        for data, long_gap in segs:
            for b in data:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, b)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
                if rng.random() < stall:
                    await ctx.tick().repeat(rng.randrange(1, 4))
            # (long: beyond the timeout even if the bridge first finishes the previous frame)
            await ctx.tick().repeat(2 * timeout_cycles + 30 * max_burst + 200 if long_gap
                                    else rng.randrange(1, 20))
        await ctx.tick().repeat(4 * max_burst * 12 + 200)

    async def monitor(ctx):
        while True:
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):       # transfer at the coming edge
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return bytes(got)


def expected_replies(segs, max_burst=16):
    model, bus = make_model(max_burst)
    out = bytearray()
    for data, long_gap in segs:
        out += model.feed(data)
        if long_gap:
            out += model.timeout()
    return bytes(out), model


def assert_same_replies(expected: bytes, got: bytes):
    pe, pg = protocol.ReplyParser(), protocol.ReplyParser()
    re, rg = pe.feed(expected), pg.feed(got)
    for i, (a, b) in enumerate(zip(re, rg)):
        assert a == b, f"reply {i}: expected {a}, got {b}"
    assert len(re) == len(rg), f"expected {len(re)} replies, got {len(rg)}"
    assert expected == got


# ---- protocol and CRC -----------------------------------------------------------------------

def test_crc_definition_matches_zlib():
    rng = random.Random(5)
    for n in [0, 1, 4, 17, 300]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        crc = 0xFFFFFFFF
        for b in data:
            crc = protocol.crc32_update_bits(crc, b)
        assert crc ^ 0xFFFFFFFF == zlib.crc32(data) == protocol.crc32(data)


def test_frame_round_trip_and_parser_resync():
    f = encode_request(Opcode.WRITE, 7, 0x100, payload=[1, 2, 0xFFFFFFFF])
    r = protocol.decode_request(f)
    assert (r.opcode, r.seq, r.addr, r.count, r.payload) == (3, 7, 0x100, 3, (1, 2, 0xFFFFFFFF))
    with pytest.raises(protocol.ProtocolError, match="CRC"):
        protocol.decode_request(f[:-1] + bytes([f[-1] ^ 1]))
    a = encode_reply(Opcode.READ, 9, Status.OK, 2, [5, 6])
    b = encode_reply(Opcode.WRITE, 10, Status.BUS_ERROR, 0)
    bad = bytearray(a)
    bad[9] ^= 0x40
    p = protocol.ReplyParser()
    # garbage, a false sync, a corrupted reply, then two good ones split across feeds
    stream_ = b"\x00\xA5\x5A\x02" + bytes(bad) + a + b
    out = []
    for k in range(0, len(stream_), 5):
        out += p.feed(stream_[k:k + 5])
    assert [(x.seq, x.status, x.data) for x in out] == [(9, 0, (5, 6)), (10, 5, ())]
    assert p.crc_errors >= 1


# ---- bridge in Amaranth's simulator ----------------------------------------------------------

def test_bridge_named_cases():
    w = encode_request(Opcode.WRITE, 1, 8, payload=[0x11223344, 0x55667788])
    a = encode_request(Opcode.WRITE, 11, 4 * ACC_WORD, payload=[5])
    segs = [
        (a, False),
        (a, False),                                                  # retry: cached, not re-applied
        (encode_request(Opcode.READ, 12, 4 * ACC_WORD, count=1), False),
        (encode_request(Opcode.PING, 0), False),
        (w, False),
        (w, False),
        (encode_request(Opcode.READ, 2, 8, count=2), False),
        (encode_request(Opcode.READ, 3, 4 * RAM_WORDS, count=1), False),   # unmapped -> BUS_ERROR
        (encode_request(Opcode.READ, 4, 4 * SILENT_WORD, count=1), False), # silent -> TIMEOUT
        (encode_request(Opcode.READ, 5, 6, count=1), False),         # misaligned
        (encode_request(Opcode.READ, 6, 0, count=17), False),        # > max_burst
        (encode_request(0x7E, 7, 0, count=1), False),                # bad opcode
        (w[:-1] + bytes([w[-1] ^ 0x80]), False),                     # corrupted CRC
        (encode_request(Opcode.WRITE, 8, 0, payload=[1, 2, 3])[:10], True),  # truncated
        (b"\x13\xA5\xA5\x00", False),                                # garbage
        (encode_request(Opcode.WRITE, 9, 4 * (RAM_WORDS - 1), payload=[7, 8]), False),  # runs off RAM
        (encode_request(Opcode.READ, 10, 4 * (RAM_WORDS - 2), count=2), False),
    ]
    exp, model = expected_replies(segs)
    replies = protocol.ReplyParser().feed(exp)
    assert [r.status for r in replies] == [0, 0, 0, 0, 0, 0, 0, 5, 6, 4, 3, 2, 1, 7, 5, 0]
    assert replies[2].data == (5,)
    assert replies[3].data == (protocol.BRIDGE_MAGIC, 1 << 16 | 16)
    assert replies[6].data == (0x11223344, 0x55667788)
    assert replies[-2].count == 1 and replies[-1].data == (0, 7)
    assert model.stats["duplicate"] == 2 and model.stats["dropped"] == 1
    got = run_segments(segs, seed=1)
    assert_same_replies(exp, got)


def test_bridge_random_frames_against_model():
    rng = random.Random(11)
    segs = random_segments(rng, 120, ram_words=RAM_WORDS, max_burst=16, silent_word=SILENT_WORD,
                           acc_word=ACC_WORD, corrupt=0.2)
    segs.append((encode_request(Opcode.READ, 0, 0, count=16), True))
    segs.append((encode_request(Opcode.READ, 1, 4 * ACC_WORD, count=1), False))
    exp, model = expected_replies(segs)
    assert model.stats["crc_error"] > 3 and model.stats["dropped"] > 1
    assert model.stats["duplicate"] > 1
    got = run_segments(segs, seed=2)
    assert_same_replies(exp, got)


def test_bridge_never_applies_a_corrupted_write():
    """Every single-bit flip of a WRITE frame: the RAM must be unchanged afterwards."""
    w = encode_request(Opcode.WRITE, 0x33, 0, payload=[0xDEADBEEF, 0x01020304])
    check = encode_request(Opcode.READ, 0x34, 0, count=2)
    segs = []
    for pos in range(2, len(w)):
        f = bytearray(w)
        f[pos] ^= 1 << (pos % 8)
        segs.append((bytes(f), True))
    segs.append((check, False))
    exp, _ = expected_replies(segs)
    assert protocol.ReplyParser().feed(exp)[-1].data == (0, 0)
    got = run_segments(segs, timeout_cycles=40, seed=3, stall=0.0)
    assert_same_replies(exp, got)


def test_bridge_parameter_errors():
    with pytest.raises(ValueError, match="max_burst"):
        Bridge(timeout_cycles=100, max_burst=1000)
    with pytest.raises(ValueError, match="timeout_cycles"):
        Bridge(timeout_cycles=3)


# ---- cocotb bench on the generated Verilog ---------------------------------------------------

def _bench(env, check=True):
    from sim.harness import run_cocotb
    return run_cocotb(BridgeHarness(timeout_cycles=300, max_burst=64), "sim.benches.bridge",
                      name="bridge_harness", env=env, check=check)


def test_bridge_cocotb_random():
    _bench({"HDLGEN_COUNT": "1500", "HDLGEN_PARAMS": json.dumps(
        {"ram_words": RAM_WORDS, "max_burst": 64, "silent_word": SILENT_WORD, "timeout": 300})})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_bridge_cocotb_scoreboard_can_fail(corrupt):
    res = _bench({"HDLGEN_COUNT": "100", "HDLGEN_PARAMS": json.dumps(
        {"ram_words": RAM_WORDS, "max_burst": 64, "silent_word": SILENT_WORD, "timeout": 300,
         "corrupt": corrupt})}, check=False)
    assert res.tests > 0 and res.failed > 0


# ---- the SoC with an engine, in Amaranth's simulator -----------------------------------------

class _FakeEngine(wiring.Component):
    """Finishes a job 150 cycles after ``start`` (busy meanwhile: long enough for the STATUS
    read that follows the start); ``error`` if the job's first word in its little memory is
    odd."""
    bus: In(wishbone.Signature(addr_width=2))
    start: In(1)
    token: In(32)
    pos: In(32)
    done: Out(1)
    error: Out(1)
    error_code: Out(4)
    unit_busy: Out(2)

    def elaborate(self, platform):
        m = Module()
        word = Signal(32)
        cnt = Signal(8)
        m.d.comb += self.bus.dat_r.eq(word)
        m.d.sync += [self.bus.ack.eq(self.bus.cyc & self.bus.stb & ~self.bus.ack),
                     self.done.eq(0), self.error.eq(0)]
        with m.If(self.bus.cyc & self.bus.stb & self.bus.we & ~self.bus.ack):
            m.d.sync += word.eq(self.bus.dat_w)
        with m.If(self.start):
            m.d.sync += cnt.eq(150)
        with m.Elif(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)
            with m.If(cnt == 1):
                m.d.sync += [self.done.eq(~word[0]), self.error.eq(word[0]), self.error_code.eq(5)]
        m.d.comb += self.unit_busy.eq(Mux(cnt != 0, 0b11, 0))
        return m


def test_soc_with_engine_amaranth():
    from hdlgen.config import AcceleratorConfig
    from hdlgen.soc import regmap
    from hdlgen.soc.soc import SoC

    cfg = AcceleratorConfig(scratch_bytes=256)
    extra = [regmap.Window("engine", 0x8000, 16)]
    rm = regmap.soc_register_map(cfg, extra)
    eng = _FakeEngine()
    dut = SoC(cfg, byte_port=True, link_timeout_cycles=500, subordinates={"engine": eng},
              extra_layout=extra, engine=eng)
    frames = [
        encode_request(Opcode.WRITE, 1, 0x8000, payload=[2]),                  # even: success
        encode_request(Opcode.WRITE, 2, rm.address("CTRL"), payload=[rm.encode("CTRL", START=1)]),
        encode_request(Opcode.READ, 3, rm.address("STATUS"), count=1),          # busy
        encode_request(Opcode.READ, 4, 0x8000, count=1),
    ]
    replies = []

    async def bench(ctx):
        parser = protocol.ReplyParser()

        async def exchange(frame, wait=0):
            for b in frame:
                ctx.set(dut.rx_byte.valid, 1)
                ctx.set(dut.rx_byte.payload, b)
                await ctx.tick().until(dut.rx_byte.ready)
            ctx.set(dut.rx_byte.valid, 0)
            ctx.set(dut.tx_byte.ready, 1)
            for _ in range(2000):
                if ctx.get(dut.tx_byte.valid):
                    got = parser.feed(bytes([ctx.get(dut.tx_byte.payload)]))
                    if got:
                        await ctx.tick()
                        replies.extend(got)
                        await ctx.tick().repeat(wait + 1)
                        return
                await ctx.tick()
            raise AssertionError("no reply")

        for f in frames:
            await exchange(f)
        await ctx.tick().repeat(200)
        await exchange(encode_request(Opcode.READ, 5, rm.address("STATUS"), count=1))
        await exchange(encode_request(Opcode.READ, 6, rm.address("BUSY_MAC_ARRAY"), count=1))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [r.status for r in replies] == [0] * 6
    busy = rm.decode("STATUS", replies[2].data[0])
    assert busy["BUSY"] == 1
    assert replies[3].data == (2,)
    final = rm.decode("STATUS", replies[4].data[0])
    assert final["BUSY"] == 0 and final["DONE"] == 1 and final["ERROR"] == 0
    assert 140 <= replies[5].data[0] <= 155        # the engine's unit 0 was busy ~150 cycles
