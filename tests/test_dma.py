"""DMA: golden model checks, cocotb random descriptors with stalls and error cases, full-rate
copy, negative test of the scoreboard, and the DMA moving data between two BlockRAMs through
the bank adapters (Amaranth simulator)."""

import json
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hdlgen.blocks.bram import BlockRAM
from hdlgen.blocks.dma import DMA, BankReadPort, BankWritePort, Region
from sim.golden.dma import BAD_DST, BAD_SRC, LENGTH_ZERO, MISALIGNED, OK, READ_ERROR, Desc, DMAModel
from sim.harness import run_cocotb

REGIONS = [(0x1000, 0x1000, "rw"), (0x4000, 0x800, "r"), (0x8000, 0x800, "w")]


def _dut():
    return DMA([Region(f"r{i}", b, s, a) for i, (b, s, a) in enumerate(REGIONS)])


def _env(**extra):
    p = {"regions": REGIONS, "stall": 0.3}
    p.update(extra)
    return {"HDLGEN_PARAMS": json.dumps(p)}


def test_model_checks():
    m = DMAModel(REGIONS, {0x4000: 7, 0x4004: 8}, poisoned={0x4008})
    assert m.run(Desc(0x4000, 0x8000, 0)) == ([], (LENGTH_ZERO, 0))
    assert m.run(Desc(0x4002, 0x8000, 1))[1] == (MISALIGNED, 0)
    assert m.run(Desc(0x8000, 0x1000, 1))[1] == (BAD_SRC, 0)          # write-only region
    assert m.run(Desc(0x47fc, 0x1000, 2))[1] == (BAD_SRC, 0)          # runs off the end
    assert m.run(Desc(0x4000, 0x4000 + 0x100, 1))[1] == (BAD_DST, 0)  # read-only region
    assert m.run(Desc(0x4000, 0x8000, 3)) == ([(0x8000, 7), (0x8004, 8)], (READ_ERROR, 2))
    assert m.run(Desc(0x4000, 0x1000, 2, 0, 2)) == ([(0x1000, 7), (0x1008, 7)], (OK, 2))


def test_region_validation():
    with pytest.raises(ValueError, match="access"):
        Region("x", 0, 16, "x")
    with pytest.raises(ValueError, match="multiples of 4"):
        Region("x", 2, 16)


def test_dma_random_descriptors():
    run_cocotb(_dut(), "sim.benches.dma", name="dma", testcase="random_descriptors",
               env={**_env(), "HDLGEN_COUNT": "300"})


def test_dma_full_rate():
    run_cocotb(_dut(), "sim.benches.dma", name="dma", testcase="full_rate", env=_env(stall=0.0))


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_dma_scoreboard_catches_errors(corrupt):
    res = run_cocotb(_dut(), "sim.benches.dma", name="dma", testcase="random_descriptors",
                     env={**_env(corrupt=corrupt), "HDLGEN_COUNT": "40"}, check=False)
    assert res.tests == 1 and res.failed == 1


def test_dma_between_block_rams():
    """DMA + BankReadPort + BankWritePort + two BlockRAMs: a strided copy lands exactly."""
    rng = random.Random(7)
    src_init = [rng.getrandbits(32) for _ in range(256)]
    m = Module()
    dma = m.submodules.dma = DMA([Region("a", 0x0, 0x400, "r"), Region("b", 0x1000, 0x400, "w")])
    ram_a = m.submodules.ram_a = BlockRAM(width=32, depth=256, granularity=8, init=src_init)
    ram_b = m.submodules.ram_b = BlockRAM(width=32, depth=256, granularity=8)
    rp = m.submodules.rp = BankReadPort(base=0x0, addr_width=ram_a.addr_width)
    wp = m.submodules.wp = BankWritePort(base=0x1000, addr_width=ram_b.addr_width)
    m.d.comb += [ram_a.b.addr.eq(rp.port.addr), ram_a.b.en.eq(rp.port.en),
                 rp.port.rdata.eq(ram_a.b.rdata),
                 ram_b.a.addr.eq(wp.port.addr), ram_b.a.en.eq(wp.port.en),
                 ram_b.a.we.eq(wp.port.we), ram_b.a.wdata.eq(wp.port.wdata)]
    from amaranth.lib import wiring
    wiring.connect(m, dma.rd_cmd, rp.rd_cmd)
    wiring.connect(m, rp.rd_data, dma.rd_data)
    wiring.connect(m, dma.wr, wp.wr)
    descs = [Desc(0x0, 0x1000, 64, 2, 1), Desc(0x200, 0x1100, 100, 1, 1), Desc(0x4, 0x1000, 0)]
    statuses = []

    async def tb(ctx):
        ctx.set(dma.status.ready, 1)
        for d in descs:
            ctx.set(dma.desc.payload, {"src": d.src, "dst": d.dst, "length": d.length,
                                       "src_stride": d.src_stride, "dst_stride": d.dst_stride})
            ctx.set(dma.desc.valid, 1)
            await ctx.tick().until(dma.desc.ready)
            ctx.set(dma.desc.valid, 0)
            code, count = await ctx.tick().sample(dma.status.payload.code,
                                                        dma.status.payload.count).until(dma.status.valid)
            statuses.append((code.value, count))
        # read ram_b back through its (otherwise unused) port b
        got = []
        for k in range(164):
            ctx.set(ram_b.b.addr, k)
            ctx.set(ram_b.b.en, 1)
            await ctx.tick()
            await ctx.tick()
            got.append(ctx.get(ram_b.b.rdata))
        model = DMAModel([(0, 0x400, "r"), (0x1000, 0x400, "w")], {4 * i: v for i, v in enumerate(src_init)})
        for d in descs:
            model.run(d)
        assert got == [model.mem.get(0x1000 + 4 * k, 0) for k in range(164)]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert statuses == [(OK, 64), (OK, 100), (LENGTH_ZERO, 0)]


def test_dma_control_registers_over_wishbone():
    """DMAControl programmed over its register bank copies inside a MemoryBank reached through
    WishboneDMAPort and a Decoder; errors are reported in DMA_STATUS."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_csr import wb_access
    from amaranth.lib import wiring
    from hdlgen.blocks.dma import DMAControl, WishboneDMAPort
    from hdlgen.blocks.membank import MemoryBank
    from hdlgen.soc import wishbone
    from hdlgen.soc.regmap import Bank, RegisterMap

    rng = random.Random(11)
    init = [rng.getrandbits(32) for _ in range(256)]
    m = Module()
    ctl = m.submodules.ctl = DMAControl([Region("bank", 0x1000, 0x400, "rw")])
    port = m.submodules.port = WishboneDMAPort()
    bank = m.submodules.bank = MemoryBank(width=32, depth=256, init=init)
    dec = m.submodules.dec = wishbone.Decoder(addr_width=30)
    dec.add(bank.bus, addr=0x1000, name="bank")
    wiring.connect(m, ctl.rd_cmd, port.rd_cmd)
    wiring.connect(m, port.rd_data, ctl.rd_data)
    wiring.connect(m, ctl.wr, port.wr)
    wiring.connect(m, port.bus, dec.bus)
    rm = RegisterMap.from_layout([Bank("dma", 0, 32, tuple(ctl.registers))], config={},
                                 config_hash=0, version=(1, 0))
    results = {}

    async def tb(ctx):
        async def copy(src, dst, n, ss=1, ds=1):
            await wb_access(ctx, ctl.bus, rm.address("DMA_SRC"), src)
            await wb_access(ctx, ctl.bus, rm.address("DMA_DST"), dst)
            await wb_access(ctx, ctl.bus, rm.address("DMA_LEN"), n)
            await wb_access(ctx, ctl.bus, rm.address("DMA_STRIDE"), rm.encode("DMA_STRIDE", SRC=ss, DST=ds))
            await wb_access(ctx, ctl.bus, rm.address("DMA_CTRL"), rm.encode("DMA_CTRL", GO=1))
            for _ in range(2000):
                st = rm.decode("DMA_STATUS", (await wb_access(ctx, ctl.bus, rm.address("DMA_STATUS")))[0])
                if st["DONE"]:
                    break
            await wb_access(ctx, ctl.bus, rm.address("DMA_STATUS"), rm.encode("DMA_STATUS", DONE=1, ERROR=1))
            return st
        results["ok"] = await copy(0x1000, 0x1200, 16, 2, 1)
        results["len0"] = await copy(0x1000, 0x1200, 0)
        results["bad_dst"] = await copy(0x1000, 0x13F0, 16)
        got = []
        for k in range(16):
            ctx.set(bank.port.addr, 0x80 + k)
            ctx.set(bank.port.en, 1)
            for _ in range(bank.latency):
                await ctx.tick()
            got.append(ctx.get(bank.port.rdata))
        results["data"] = got

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert results["ok"] == {"BUSY": 0, "DONE": 1, "ERROR": 0, "CODE": OK, "COUNT": 16}
    assert results["len0"]["ERROR"] == 1 and results["len0"]["CODE"] == LENGTH_ZERO
    assert results["bad_dst"]["CODE"] == BAD_DST and results["bad_dst"]["COUNT"] == 0
    assert results["data"] == [init[2 * k] for k in range(16)]
