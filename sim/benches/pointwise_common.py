"""Shared driver -> monitor -> scoreboard loop of the element-wise block benches
(requant, activation, eltwise, rope, argmax).

``HDLGEN_PARAMS`` keys used here: ``corrupt`` (``"value"`` or ``"missing"``) makes the
scoreboard expect one wrong or one extra item, which must fail (the negative test).
"""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_params,
                            start)

__all__ = ["run_stream", "STALLS"]

STALLS = {"stall_0": 0.0, "stall_01": 0.1, "stall_05": 0.5}


async def run_stream(dut, items, expected, rng, *, stall_in=0.0, stall_out=0.0, what="o",
                     fmt=repr, max_cycles_per_item=None, reset=True):
    """Reset ``dut``, send ``items`` on ``i``, collect ``len(expected)`` payloads from ``o``
    and compare them in order with ``expected`` (after the optional corruption).

    ``max_cycles_per_item`` (with no stalls) also checks throughput: all items must be
    through within ``len(items) * max_cycles_per_item + 64`` cycles.
    """
    p = bench_params()
    if reset:
        await start(dut)
    else:
        await FallingEdge(dut.clk)             # drivers act at the falling edge
    expected = list(expected)
    drv = StreamDriver(dut, "i", rng, stall_in)
    mon = StreamMonitor(dut, "o", rng, stall_out)
    cycles = 0

    async def count():
        nonlocal cycles
        while True:
            await RisingEdge(dut.clk)
            cycles += 1

    counter = cocotb.start_soon(count())
    await drv.send(items)
    budget = 200 + int(len(items) * 4 * (1 + stall_out * 4))
    got = list(await mon.wait_for(len(expected), timeout_cycles=budget))
    await ClockCycles(dut.clk, 20)             # nothing extra may come out
    got = list(mon.items)
    counter.cancel()
    mon.stop()
    if p.get("corrupt") == "value" and expected:
        expected[len(expected) // 2] ^= 1
    elif p.get("corrupt") == "missing":
        expected.append(expected[-1] if expected else 0)
    assert_streams_equal(expected, got, what, fmt=fmt)
    if max_cycles_per_item is not None:
        limit = len(items) * max_cycles_per_item + 64
        assert cycles - 20 <= limit, f"throughput: {len(items)} items took {cycles - 20} cycles (limit {limit})"
    return got
