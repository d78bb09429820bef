"""cocotb bench for :class:`hdlgen.soc.control.ControlBlock` on its generated Verilog: the
register map (``regmap.json`` content in ``HDLGEN_PARAMS["regmap"]``) drives a model of
every register, and random Wishbone traffic with byte selects and idle gaps must match it.

``random_registers``: random reads of every register, random writes to the RW registers
(``SCRATCH``, ``WATCHDOG``) with random byte selects, writes to read-only registers (no
effect), accesses to offsets without a register (``err``), and short jobs (start, unit busy
cycles, done) whose status and busy counters are checked; the cycle counter must increase.
``corrupt`` (``"value"``) makes the model expect one wrong value, which must fail.
"""

import functools

import cocotb
from cocotb.triggers import FallingEdge

from hdlgen.soc.regmap import RegisterMap
from sim.cocotb_kit import bench_count, bench_params, bench_rng, start, wishbone_access

# Every register access must be answered within 20 cycles.
wb = functools.partial(wishbone_access, timeout=20)


@cocotb.test()
async def random_registers(dut):
    p = bench_params()
    rng = bench_rng("csr")
    rm = RegisterMap.from_json(p["regmap"])
    await start(dut)
    for s in ("cyc", "stb", "we", "sel", "adr", "dat_w"):
        getattr(dut, f"bus__{s}").value = 0
    dut.job_done.value = 0
    dut.job_error.value = 0
    dut.job_error_code.value = 0
    dut.unit_busy.value = 0
    base = rm.address("ID")
    model = {r.name: r.reset for r in rm.registers}
    rw = ["SCRATCH", "WATCHDOG"]
    const = ["ID", "CONFIG_HASH", "SHAPE", "CONTEXT", "SYS_CLK"]
    mapped = {r.offset for r in rm.registers}
    holes = [o for o in range(0, 256, 4) if o not in mapped]
    busy_regs = [r.name for r in rm.registers if r.name.startswith("BUSY_")]
    corrupt = p.get("corrupt") == "value"
    last_cycles = -1
    n = bench_count(600)
    for i in range(n):
        for _ in range(rng.choice([0, 0, 1, 2])):
            await FallingEdge(dut.clk)
        r = rng.random()
        if r < 0.3:
            name = rng.choice(rw)
            v, sel = rng.getrandbits(32), rng.randrange(1, 16)
            assert (await wb(dut, rm.address(name), v, sel))[1] == "ack"
            m = sum(0xFF << (8 * b) for b in range(4) if sel >> b & 1)
            model[name] = (model[name] & ~m) | (v & m)
        elif r < 0.6:
            name = rng.choice(rw + const)
            want = model[name]
            if corrupt and i >= n // 2:
                want ^= 1 << rng.randrange(32)
                corrupt = False
            got = await wb(dut, rm.address(name))
            assert got == (want, "ack"), f"{name}: read {got[0]:#x} {got[1]}, expected {want:#x}"
        elif r < 0.7:
            name = rng.choice(const)
            await wb(dut, rm.address(name), rng.getrandbits(32))
        elif r < 0.8:
            off = rng.choice(holes)
            res = (await wb(dut, base + off, None if rng.random() < 0.5 else 0))[1]
            assert res == "err", f"offset {off:#x} has no register but answered {res}"
        elif r < 0.9:
            lo = (await wb(dut, rm.address("CYCLES_LO")))[0]
            hi = (await wb(dut, rm.address("CYCLES_HI")))[0]
            v = hi << 32 | lo
            assert v > last_cycles, f"cycle counter went from {last_cycles} to {v}"
            last_cycles = v
        else:
            # a short job: start, some unit busy cycles, done
            if model["WATCHDOG"]:       # a random limit could abort the job: disable it
                await wb(dut, rm.address("WATCHDOG"), 0)
                model["WATCHDOG"] = 0
            await wb(dut, rm.address("CTRL"), rm.encode("CTRL", START=1))
            k = rng.randrange(len(busy_regs))
            cycles = rng.randint(1, 20)
            await FallingEdge(dut.clk)
            dut.unit_busy.value = 1 << k
            for _ in range(cycles):
                await FallingEdge(dut.clk)
            dut.unit_busy.value = 0
            dut.job_done.value = 1
            await FallingEdge(dut.clk)
            dut.job_done.value = 0
            st = rm.decode("STATUS", (await wb(dut, rm.address("STATUS")))[0])
            assert (st["BUSY"], st["DONE"], st["ERROR"]) == (0, 1, 0), st
            got = (await wb(dut, rm.address(busy_regs[k])))[0]
            assert got == cycles, f"{busy_regs[k]} = {got}, expected {cycles}"
            await wb(dut, rm.address("STATUS"), rm.encode("STATUS", DONE=1, ERROR=1))
