"""cocotb bench for :class:`hdlgen.blocks.kv_cache.KVCache` against
:class:`sim.golden.kv_cache.KVCacheModel`.

``HDLGEN_PARAMS``: ``{"layers", "kv_heads", "head_dim", "beat_bytes", "context_length",
"append_fields": [[name, width], ...], "cmd_fields": [[name, width], ...],
"stall": S, "corrupt": "value" | "missing" | null}``. ``HDLGEN_COUNT``: appended beats.

Rounds alternate a batch of random appends (about 5 % out of range: position at or past the
capacity, bad layer or head) with a batch of random read commands (about 10 % out of range),
through random valid/ready stalls on all three streams. After each batch the sticky error
flags must equal the model's; they are then cleared. Every read packet must equal the
model's beats, framing (``row_end``, ``last``) included. ``corrupt`` makes the scoreboard
expect one wrong or one extra beat, which must fail.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, pack, start, unpack)
from sim.golden.kv_cache import KVCacheModel


def _pack_fields(fields, values: dict) -> int:
    return pack([values[n] for n, _ in fields], [w for _, w in fields])


async def _idle(dut, n):
    for _ in range(n):
        await FallingEdge(dut.clk)


async def _check_and_clear_errors(dut, model, what):
    await ReadOnly()
    err = int(dut.error.value)
    want = int(model.error_append) | (int(model.error_read) << 1)
    assert err == want, f"{what}: error flags {err:#04b}, model expects {want:#04b}"
    await FallingEdge(dut.clk)
    dut.error_clear.value = 1
    await FallingEdge(dut.clk)
    dut.error_clear.value = 0
    model.error_append = model.error_read = False


@cocotb.test()
async def random_traffic(dut):
    p = bench_params()
    rng = bench_rng("kv_cache")
    await start(dut)
    dut.error_clear.value = 0
    model = KVCacheModel(layers=p["layers"], kv_heads=p["kv_heads"], head_dim=p["head_dim"],
                         beat_bytes=p["beat_bytes"], context_length=p["context_length"])
    af, cf = p["append_fields"], p["cmd_fields"]
    maxw = {n: (1 << w) - 1 for n, w in af}
    stall = p["stall"]
    app = StreamDriver(dut, "append", rng, stall)
    cmd = StreamDriver(dut, "read_cmd", rng, stall)
    mon = StreamMonitor(dut, "read_data", rng, stall)
    total = bench_count(2000)
    bits = p["beat_bytes"] * 8
    ctx = p["context_length"]
    sent = 0
    expected, n_reads = [], 0
    # the first rows of a few (layer, head, kv) get written most, so reads see data
    while sent < total:
        batch = []
        for _ in range(rng.randint(1, 40)):
            v = {"layer": rng.randrange(model.layers), "head": rng.randrange(model.kv_heads),
                 "kv": rng.randrange(2), "pos": min(int(rng.expovariate(4 / ctx)), ctx - 1),
                 "beat": rng.randrange(model.beats), "data": rng.getrandbits(bits)}
            r = rng.random()
            if r < 0.02:
                v["pos"] = rng.randint(ctx, maxw["pos"])
            elif r < 0.035:
                v["layer"] = rng.randint(model.layers, maxw["layer"])
            elif r < 0.05:
                v["head"] = rng.randint(model.kv_heads, maxw["head"])
            elif r < 0.06:
                v["beat"] = rng.randint(model.beats, maxw["beat"])
            model.append(v["layer"], v["head"], v["kv"], v["pos"], v["beat"], v["data"])
            batch.append(_pack_fields(af, v))
        await app.send(batch)
        sent += len(batch)
        await _idle(dut, 3)
        await _check_and_clear_errors(dut, model, f"after {sent} appends")

        cmds = []
        for _ in range(rng.randint(1, 6)):
            v = {"layer": rng.randrange(model.layers), "head": rng.randrange(model.kv_heads),
                 "kv": rng.randrange(2), "pos": min(int(rng.expovariate(3 / ctx)), ctx - 1)}
            if rng.random() < 0.1:
                v["pos"] = rng.randint(ctx, maxw["pos"])
            expected += model.read(v["layer"], v["head"], v["kv"], v["pos"])
            n_reads += 1
            cmds.append(_pack_fields(cf, v))
        await cmd.send(cmds)
        got = await mon.wait_for(len(expected), timeout_cycles=20 * len(expected) + 200)
        await _idle(dut, 4)
        assert len(mon.items) == len(expected), \
            f"after {n_reads} read commands: {len(mon.items)} beats, expected {len(expected)}"
        await _check_and_clear_errors(dut, model, f"after {n_reads} read commands")

    exp = list(expected)
    if p.get("corrupt") == "value":
        d, e, lst = exp[len(exp) // 2]
        exp[len(exp) // 2] = (d ^ 1, e, lst)
    elif p.get("corrupt") == "missing":
        exp.append((0, 1, 1))
    got = [tuple(unpack(w, [bits, 1, 1], signed=False)) for w in mon.items]
    assert_streams_equal(exp, got, "read_data")
    cocotb.log.info("%d appends, %d read commands, %d beats checked", sent, n_reads, len(got))


@cocotb.test()
async def full_rate_stream(dut):
    """No stalls: a whole context streams back at one beat per cycle."""
    p = bench_params()
    await start(dut)
    dut.error_clear.value = 0
    rng = bench_rng("kv_full_rate")
    af, cf = p["append_fields"], p["cmd_fields"]
    bits = p["beat_bytes"] * 8
    ctx = p["context_length"]
    beats = p["head_dim"] // p["beat_bytes"]
    model = KVCacheModel(layers=p["layers"], kv_heads=p["kv_heads"], head_dim=p["head_dim"],
                         beat_bytes=p["beat_bytes"], context_length=ctx)
    app = StreamDriver(dut, "append", rng, 0.0)
    items = []
    for pos in range(ctx):
        for b in range(beats):
            v = {"layer": p["layers"] - 1, "head": 0, "kv": 1, "pos": pos, "beat": b,
                 "data": rng.getrandbits(bits)}
            model.append(v["layer"], v["head"], v["kv"], v["pos"], v["beat"], v["data"])
            items.append(_pack_fields(af, v))
    await app.send(items)
    mon = StreamMonitor(dut, "read_data", rng, 0.0)
    cmd = StreamDriver(dut, "read_cmd", rng, 0.0)
    await cmd.send([_pack_fields(cf, {"layer": p["layers"] - 1, "head": 0, "kv": 1, "pos": ctx - 1})])
    # count cycles from the first beat to the last
    n = ctx * beats
    cycles = 0
    while len(mon.items) < n and cycles < 4 * n + 50:
        await FallingEdge(dut.clk)
        cycles += 1
    got = [tuple(unpack(w, [bits, 1, 1], signed=False)) for w in mon.items]
    assert_streams_equal(model.read(p["layers"] - 1, 0, 1, ctx - 1), got, "read_data")
    assert cycles <= n + 6, f"{n} beats took {cycles} cycles: not one beat per cycle"
