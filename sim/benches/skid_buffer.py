"""cocotb bench for :class:`hdlgen.blocks.stream_parts.SkidBuffer`: random payloads through
random valid/ready stalls must come out unchanged, in order, none lost or duplicated.

``HDLGEN_PARAMS``: ``{"width": W, "stall": S, "corrupt": bool}``; ``corrupt`` makes the
scoreboard expect one wrong item, which must fail (negative test of the checker)."""

import cocotb

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, start)


@cocotb.test()
async def random_traffic(dut):
    p = bench_params()
    rng = bench_rng("skid")
    await start(dut)
    n = bench_count(3000)
    items = [rng.getrandbits(p["width"]) for _ in range(n)]
    drv = StreamDriver(dut, "i", rng, p["stall"])
    mon = StreamMonitor(dut, "o", rng, p["stall"])
    await drv.send(items)
    got = await mon.wait_for(n, timeout_cycles=100)
    expected = list(items)
    if p.get("corrupt") == "value":
        expected[n // 2] ^= 1
    elif p.get("corrupt") == "missing":
        expected.append(0)
    assert_streams_equal(expected, got)
