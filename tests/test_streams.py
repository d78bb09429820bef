"""The engine's element reader (:class:`hdlgen.engine.streams.ElementReader`) alone, in the
Amaranth simulator: the element sequence (strided rows, the auxiliary word and sub-index, the
row and sequence ends) under random ``o.ready`` stalls, and ``idle``, which the sequencer's
early exit (``WAIT_WRITER``) trusts: it must never be high while an element is still to be
issued, in the RAM's latency or in the FIFO, and it must rise once the last one is taken."""

import random

import pytest
from amaranth.sim import Simulator

from hdlgen.engine.streams import ElementReader


def _data(a):
    return (a * 7 + 3) & 0xFFFF


def _aux(x):
    return (x * 13 + 1) & 0xFFFFFFFF


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sequence_and_idle_under_stalls(seed):
    rng = random.Random(seed)
    shift = 2
    dut = ElementReader(addr_width=12, width=16, aux_addr_width=6, aux_width=32,
                        aux_shift=shift, len_width=8)
    jobs = []
    for _ in range(6):
        rows, row_len = rng.randint(1, 4), rng.randint(1, 9)
        jobs.append({"base": rng.randrange(1024), "rows": rows, "row_len": row_len,
                     "stride": rng.randint(row_len, 40), "aux_base": rng.randrange(8),
                     "p_ready": rng.choice([1.0, 0.7, 0.3])})
    log = {"idle_rise": []}

    async def tb(ctx):
        hist = []                         # (addr, en, aux_addr) of every cycle

        async def cycle(ready):
            hist.append((ctx.get(dut.addr), ctx.get(dut.en), ctx.get(dut.aux_addr)))
            a, _, x = hist[-3] if len(hist) >= 3 else (0, 0, 0)
            ctx.set(dut.rdata, _data(a))
            ctx.set(dut.aux_rdata, _aux(x))
            ctx.set(dut.o.ready, ready)
            got = None
            if ctx.get(dut.o.valid) and ready:
                got = ctx.get(dut.o.payload)
            await ctx.tick()
            return got

        for job in jobs:
            expect = []
            for r in range(job["rows"]):
                for c in range(job["row_len"]):
                    idx = r * job["row_len"] + c
                    row_end = c == job["row_len"] - 1
                    expect.append((_data(job["base"] + r * job["stride"] + c),
                                   _aux(job["aux_base"] + (idx >> shift)),
                                   idx & ((1 << shift) - 1), int(row_end),
                                   int(row_end and r == job["rows"] - 1)))
            assert ctx.get(dut.idle), "idle before the job"
            for name in ("base", "rows", "row_len", "stride", "aux_base"):
                ctx.set(getattr(dut, name), job[name])
            ctx.set(dut.start, 1)
            await cycle(0)
            ctx.set(dut.start, 0)
            taken = []
            for t in range(2000):
                idle = ctx.get(dut.idle)
                assert not (idle and len(taken) < len(expect)), \
                    f"idle with {len(expect) - len(taken)} elements left (cycle {t})"
                if idle:
                    log["idle_rise"].append(t)
                    break
                got = await cycle(int(rng.random() < job["p_ready"]))
                if got is not None:
                    taken.append((got.data, got.aux, got.sub, got.row_end, got.last))
            else:
                raise AssertionError("idle never rose after the last element")
            assert taken == expect
            for _ in range(rng.randint(0, 3)):     # idle stays high between jobs
                await cycle(1)
                assert ctx.get(dut.idle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert len(log["idle_rise"]) == len(jobs)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_limited_rows_are_never_read_early(seed):
    """``limited``: no address of row ``limit`` or later is presented (``limit`` as it was the
    cycle before, rising at random as a producer completes rows, as the softmax does for
    ``ATTV``), with the output stalled at random; the sequence is the unlimited one, and it
    finishes when ``limited`` drops."""
    rng = random.Random(seed)
    dut = ElementReader(addr_width=12, width=16, len_width=8)
    jobs = []
    for _ in range(8):
        rows, row_len = rng.randint(1, 6), rng.choice([1, 2, 3, 7])
        jobs.append({"base": rng.randrange(512), "rows": rows, "row_len": row_len,
                     "stride": rng.randint(row_len, 20), "p_row": rng.choice([0.5, 0.2, 0.05]),
                     "drop_at": rng.choice([None, rng.randint(0, rows)]),
                     "p_ready": rng.choice([1.0, 0.6, 0.3])})
    checked = []

    async def tb(ctx):
        for job in jobs:
            base, stride, row_len = job["base"], job["stride"], job["row_len"]
            expect = [_data(base + r * stride + c) for r in range(job["rows"])
                      for c in range(row_len)]
            for name in ("base", "rows", "row_len", "stride"):
                ctx.set(getattr(dut, name), job[name])
            limit, limited = 0, 1
            ctx.set(dut.limit, limit)
            ctx.set(dut.limited, limited)
            ctx.set(dut.start, 1)
            hist, taken, prev_limit = [], [], limit
            await ctx.tick()
            ctx.set(dut.start, 0)
            for t in range(3000):
                a, en = ctx.get(dut.addr), ctx.get(dut.en)
                if en and limited:
                    row = (a - base) // stride
                    assert row < prev_limit, f"row {row} read with limit {prev_limit} (cycle {t})"
                    checked.append(row)
                hist.append((a, en))
                a2 = hist[-3][0] if len(hist) >= 3 else 0
                ctx.set(dut.rdata, _data(a2))
                ready = rng.random() < job["p_ready"]
                ctx.set(dut.o.ready, ready)
                if ctx.get(dut.o.valid) and ready:
                    taken.append(ctx.get(dut.o.payload).data)
                if ctx.get(dut.idle) and t > 2:
                    break
                if limited and rng.random() < job["p_row"] and limit < job["rows"]:
                    limit += 1
                    if limit == job["drop_at"]:
                        limited = 0           # (the producer is done: no limit)
                if limit == job["rows"]:
                    limited = 0
                prev_limit = limit                    # (what the reader sees next cycle)
                ctx.set(dut.limit, limit)
                ctx.set(dut.limited, limited)
                await ctx.tick()
            else:
                raise AssertionError("the reader never finished")
            assert taken == expect

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert checked, "no element was read under the limit"
