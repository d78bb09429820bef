"""cocotb bench for :class:`hdlgen.soc.uart.UARTTx` -> :class:`hdlgen.soc.uart.UARTRx` on a
wire (``tests.test_uart.Loopback``): random bytes with random idle gaps go in; the bytes
the receiver delivers and the bytes a line model decodes from the ``line`` pin (start bit
edge, sample mid-bit, stop bit high) must both equal them.

``HDLGEN_PARAMS``: ``{"divisor": N, "corrupt": "value"|"missing"}``; ``corrupt`` feeds the
scoreboard one wrong or one missing byte, which must fail."""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, start)

PERIOD_NS = 10


async def line_model(dut, div, out):
    """Decode 8N1 bytes from ``dut.line`` (bit period ``div`` clocks)."""
    while True:
        await FallingEdge(dut.line)
        await Timer(PERIOD_NS * div // 2, unit="ns")
        if int(dut.line.value) != 0:
            continue
        byte = 0
        for k in range(8):
            await Timer(PERIOD_NS * div, unit="ns")
            byte |= int(dut.line.value) << k
        await Timer(PERIOD_NS * div, unit="ns")
        assert int(dut.line.value) == 1, "stop bit low on the line"
        out.append(byte)


@cocotb.test()
async def loopback(dut):
    p = bench_params()
    div = p["divisor"]
    rng = bench_rng("uart")
    await start(dut, period_ns=PERIOD_NS)
    n = bench_count(300)
    data = [rng.getrandbits(8) for _ in range(n)]
    decoded = []
    cocotb.start_soon(line_model(dut, div, decoded))
    drv = StreamDriver(dut, "i", rng, stall=0.05)
    mon = StreamMonitor(dut, "o", rng, stall=0.0)
    await drv.send(data)
    await mon.wait_for(n, timeout_cycles=12 * div + 100)
    await ClockCycles(dut.clk, 3 * div)
    expected = list(data)
    if p.get("corrupt") == "value":
        expected[n // 2] ^= 0x10
    elif p.get("corrupt") == "missing":
        expected.append(0)
    assert_streams_equal(expected, mon.items, "received byte", fmt=hex)
    assert_streams_equal(expected, decoded, "line byte", fmt=hex)
