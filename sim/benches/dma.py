"""cocotb bench for :class:`hdlgen.blocks.dma.DMA` against :class:`sim.golden.dma.DMAModel`.

The bench plays the memories: it accepts read requests (random ``ready`` stalls), answers
them in order after a random latency of 1-3 cycles (random ``valid`` gaps; poisoned words
answer with ``err``), and accepts writes (random stalls) into its memory.

``HDLGEN_PARAMS``: ``{"regions": [[base, size, access], ...], "stall": S,
"corrupt": "value" | "missing" | null}``; ``HDLGEN_COUNT``: descriptors.

``random_descriptors``: about 70 % valid copies (lengths 1-64 and some up to 300, strides
0-4) and 30 % errors (length 0, misaligned, source or destination outside a region of the
right access, ranges running off a region's end), plus read errors. Every status beat and
every write (address and data, in order) must equal the model's, and so must the final
memory. ``corrupt`` makes the scoreboard expect one wrong or one extra status, which must
fail. ``full_rate``: no stalls, latency 2: a 512-word copy moves one word per cycle.
"""

from collections import deque

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from sim.cocotb_kit import (StreamDriver, StreamMonitor, assert_streams_equal, bench_count,
                            bench_params, bench_rng, pack, start, unpack)
from sim.golden.dma import (BAD_DST, BAD_SRC, LENGTH_ZERO, MISALIGNED, OK, Desc, DMAModel)

DESC_WIDTHS = [32, 32, 16, 16, 16]


class Memory:
    def __init__(self, dut, rng, stall, mem, poisoned, latency=(1, 3)):
        self.dut, self.rng, self.stall = dut, rng, stall
        self.mem, self.poisoned, self.latency = mem, poisoned, latency
        self.writes = []
        self.first_read = self.last_write = None
        self.cycle = 0
        dut.rd_cmd__ready.value = 0
        dut.rd_data__valid.value = 0
        dut.wr__ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def _go(self):
        return not (self.stall and self.rng.random() < self.stall)

    async def _run(self):
        dut = self.dut
        pending = deque()
        presenting = None
        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            rd_ready, wr_ready = self._go(), self._go()
            dut.rd_cmd__ready.value = int(rd_ready)
            dut.wr__ready.value = int(wr_ready)
            if presenting is None and pending and pending[0][0] <= self.cycle and self._go():
                presenting = pending.popleft()
            if presenting is not None:
                dut.rd_data__valid.value = 1
                dut.rd_data__payload.value = pack([presenting[1], presenting[2]], [32, 1])
            else:
                dut.rd_data__valid.value = 0
            await ReadOnly()
            if rd_ready and int(dut.rd_cmd__valid.value):
                addr = int(dut.rd_cmd__payload.value)
                lat = self.rng.randint(*self.latency)
                pending.append((self.cycle + lat, self.mem.get(addr, 0), int(addr in self.poisoned)))
                if self.first_read is None:
                    self.first_read = self.cycle
            if presenting is not None and int(dut.rd_data__ready.value):
                presenting = None
            if wr_ready and int(dut.wr__valid.value):
                addr, data = unpack(int(dut.wr__payload.value), [32, 32], signed=False)
                self.writes.append((addr, data))
                self.mem[addr] = data
                self.last_write = self.cycle


def _random_desc(rng, regions):
    """A random descriptor and the code it should produce (valid ones avoid overlap)."""
    readable = [r for r in regions if "r" in r[2]]
    writable = [r for r in regions if "w" in r[2]]
    kind = rng.random()

    def place(region, length, stride):
        base, size, _ = region
        span = 4 * (length - 1) * stride + 4
        if span > size:
            return None
        return base + 4 * rng.randrange((size - span) // 4 + 1)

    for _ in range(100):
        length = rng.randint(1, 64) if rng.random() < 0.9 else rng.randint(65, 300)
        ss = rng.choice([1, 1, 1, 0, 2, 3, 4])
        ds = rng.choice([1, 1, 1, 2, 4])
        src = place(rng.choice(readable), length, ss)
        dst = place(rng.choice(writable), length, ds)
        if src is None or dst is None:
            continue
        d = Desc(src, dst, length, ss, ds)
        if set(d.src_addrs()) & set(d.dst_addrs()):
            continue
        break
    else:
        raise RuntimeError("could not place a descriptor; regions too small")
    if kind < 0.7:
        return d
    if kind < 0.75:
        return Desc(d.src, d.dst, 0, d.src_stride, d.dst_stride)
    if kind < 0.8:
        return Desc(d.src + rng.choice([1, 2, 3]), d.dst, d.length, d.src_stride, d.dst_stride)
    if kind < 0.85:
        return Desc(d.src, d.dst + rng.choice([1, 2, 3]), d.length, d.src_stride, d.dst_stride)
    if kind < 0.9:   # source runs off the end of its region, or sits in no readable region
        base, size, _ = rng.choice(readable)
        return Desc(base + size - 4 * rng.randint(0, 3), d.dst, rng.randint(5, 20), 1, d.dst_stride)
    if kind < 0.95:
        base, size, _ = rng.choice(writable)
        return Desc(d.src, base + size - 4 * rng.randint(0, 3), rng.randint(5, 20), d.src_stride, 1)
    return Desc(rng.choice([0, 0xFFFF_FFF0, 0x4000_0000]), d.dst, d.length, d.src_stride, d.dst_stride)


def _encode(d: Desc) -> int:
    return pack([d.src, d.dst, d.length, d.src_stride, d.dst_stride], DESC_WIDTHS)


@cocotb.test()
async def random_descriptors(dut):
    p = bench_params()
    rng = bench_rng("dma")
    await start(dut)
    regions = [tuple(r) for r in p["regions"]]
    mem = {}
    for base, size, _ in regions:
        for a in range(base, base + size, 4):
            mem[a] = rng.getrandbits(32)
    readable = [r for r in regions if "r" in r[2]]
    poisoned = {rng.choice(range(b, b + s, 4)) for b, s, _ in readable for _ in range(3)}
    model = DMAModel(regions, dict(mem), poisoned)
    memory = Memory(dut, rng, p["stall"], mem, poisoned)
    drv = StreamDriver(dut, "desc", rng, p["stall"])
    mon = StreamMonitor(dut, "status", rng, p["stall"])
    n = bench_count(300)
    descs = [_random_desc(rng, regions) for _ in range(n)]
    exp_status, exp_writes = [], []
    for d in descs:
        w, st = model.run(d)
        exp_writes += w
        exp_status.append(st)
    await drv.send([_encode(d) for d in descs])
    total = sum(d.length for d in descs)
    await mon.wait_for(n, timeout_cycles=30 * total + 100 * n + 1000)
    for _ in range(20):
        await FallingEdge(dut.clk)
    codes = [c for c, _ in exp_status]
    cocotb.log.info("%d descriptors (%d ok, %d read errors, %d refused), %d writes",
                    n, codes.count(OK), codes.count(5), n - codes.count(OK) - codes.count(5),
                    len(exp_writes))
    assert {LENGTH_ZERO, MISALIGNED, BAD_SRC, BAD_DST} <= set(codes) or n < 100
    got_status = [tuple(unpack(s, [3, 16], signed=False)) for s in mon.items]
    if p.get("corrupt") == "value":
        c, k = exp_status[n // 2]
        exp_status[n // 2] = (c, k ^ 1)
    elif p.get("corrupt") == "missing":
        exp_status.append((OK, 1))
    assert_streams_equal(exp_status, got_status, "status")
    assert_streams_equal(exp_writes, memory.writes, "writes", fmt=lambda w: f"({w[0]:#x}, {w[1]:#x})")
    assert mem == model.mem, "final memory differs from the model"


@cocotb.test()
async def full_rate(dut):
    rng = bench_rng("dma_full_rate")
    p = bench_params()
    await start(dut)
    regions = [tuple(r) for r in p["regions"]]
    (sb, ss, _), (db, ds, _) = regions[0], regions[-1]
    n = min(512, ss // 4, ds // 4)
    mem = {sb + 4 * k: rng.getrandbits(32) for k in range(n)}
    memory = Memory(dut, rng, 0.0, mem, set(), latency=(2, 2))
    drv = StreamDriver(dut, "desc", rng, 0.0)
    mon = StreamMonitor(dut, "status", rng, 0.0)
    await drv.send([_encode(Desc(sb, db, n))])
    await mon.wait_for(1, timeout_cycles=10 * n)
    got = [tuple(unpack(s, [3, 16], signed=False)) for s in mon.items]
    assert got == [(OK, n)], got
    assert [d for _, d in memory.writes] == [mem[sb + 4 * k] for k in range(n)]
    span = memory.last_write - memory.first_read + 1
    cocotb.log.info("%d words in %d cycles from first read to last write", n, span)
    assert span <= n + 8, f"{n} words took {span} cycles: not one word per cycle"
