"""cocotb bench for :class:`hdlgen.soc.bridge.Bridge` (in ``tests.test_bridge.BridgeHarness``:
bridge + decoder + RAM + silent subordinate + accumulator): random request traffic with
corruption, truncation, garbage and retries (:func:`sim.golden.bridge.random_segments`)
through random valid/ready stalls; the reply bytes must equal the Python model's.

``HDLGEN_PARAMS``: ``{"ram_words", "max_burst", "silent_word", "timeout", "corrupt"}``;
``corrupt`` (``"value"``/``"missing"``) feeds the scoreboard one wrong or one missing reply
byte, which must fail (negative test of the checker)."""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, start)
from sim.golden.bridge import BridgeModel, DictBus, random_segments

ACC_WORD = 0x800


@cocotb.test()
async def random_frames(dut):
    p = bench_params()
    rng = bench_rng("bridge")
    await start(dut)
    segs = random_segments(rng, bench_count(1000), ram_words=p["ram_words"],
                           max_burst=p["max_burst"], silent_word=p["silent_word"],
                           acc_word=ACC_WORD, corrupt=0.15)
    bus = DictBus([(0, p["ram_words"])], silent=[(p["silent_word"], 16)], accumulators=[ACC_WORD])
    model = BridgeModel(bus.read, bus.write, max_burst=p["max_burst"], addr_width=16)
    expected = bytearray()
    drv = StreamDriver(dut, "i", rng, stall=0.1)
    mon = StreamMonitor(dut, "o", rng, stall=0.2)
    for data, long_gap in segs:
        await drv.send(data)
        expected += model.feed(data)
        if long_gap:
            expected += model.timeout()
            # the bridge may still be executing and replying to the previous frame (the
            # bytes just sent wait in its input register): leave room for that too
            await ClockCycles(dut.clk, 2 * p["timeout"] + 30 * p["max_burst"] + 200)
        else:
            await ClockCycles(dut.clk, rng.randrange(1, 30))
        await FallingEdge(dut.clk)   # StreamDriver.send must start at a falling edge
    got = await mon.wait_for(len(expected), timeout_cycles=20 * p["max_burst"] * 12 + 2000)
    await ClockCycles(dut.clk, 200)          # and nothing more arrives
    got = list(mon.items)
    cocotb.log.info("model stats %s; %d reply bytes", model.stats, len(expected))
    exp = list(expected)
    if p.get("corrupt") == "value":
        exp[len(exp) // 2] ^= 1
    elif p.get("corrupt") == "missing":
        exp.append(0)
    if bytes(exp) != bytes(got):
        cocotb.log.info("expected %s", bytes(exp).hex())
        cocotb.log.info("got      %s", bytes(got).hex())
    assert_streams_equal(exp, got, "reply byte", fmt=hex)
    if len(segs) >= 300:   # the traffic really exercised the error paths
        assert model.stats["crc_error"] and model.stats["dropped"] and model.stats["duplicate"]
