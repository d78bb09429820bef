"""cocotb bench for :class:`hdlgen.blocks.bram.BlockRAM` (behavioural or the ECP5 DP16KD
netlist, the latter simulated with :data:`DP16KD_MODEL`) and for
:class:`hdlgen.blocks.membank.MemoryBank`.

``HDLGEN_PARAMS`` for the RAM tests: ``{"width", "depth", "lanes", "ports": ["rw", "r"],
"init": [...], "addr_span": N, "latency": 2 | 3 | 4, "corrupt": "value" | "missing" | null}``;
``HDLGEN_COUNT``: cycles.

``random_ports``: every cycle each port gets a random enable, address and (on writable
ports) random byte-lane write enables and data; reads are checked against a cycle-exact
model (2-, 3- or 4-cycle latency, read-before-write on the writing port, output holds while the port
is disabled). The generator never touches one address from both ports in the same cycle
(a collision the FPGA leaves undefined). ``corrupt`` makes the checker expect one wrong
value or one extra read, which must fail.

``bank_traffic`` (MemoryBank, ``"latency"`` of its compute port): random Wishbone reads and writes with byte selects and random
idle gaps on the host port, while the compute port streams random reads (and writes, for
"rw" banks); accesses past the bank's depth must end with ``err``.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from sim.cocotb_kit import bench_count, bench_params, bench_rng, start, wishbone_access


class RAMModel:
    """Cycle model of one BlockRAM: ``step`` is one rising clock edge."""

    def __init__(self, depth, width, lanes, init=(), latency=2):
        self.mem = list(init) + [0] * (depth - len(init))
        self.width, self.lanes = width, lanes
        self.stage1 = {"a": 0, "b": 0}
        self.rdata = {"a": 0, "b": 0}
        self.latency = latency
        self.pending = []            # latency 3 / 4: the requests in the input register stages

    def step(self, ops):
        """``ops``: {port: (en, addr, we, wdata)}; reads before writes."""
        if self.latency > 2:
            self.pending.append(ops)
            if len(self.pending) <= self.latency - 2:
                ops = {q: (0, 0, 0, 0) for q in ops}
            else:
                ops = self.pending.pop(0)
        for p, (en, addr, we, wdata) in ops.items():
            self.rdata[p] = self.stage1[p]
            if en:
                self.stage1[p] = self.mem[addr]
        lane_bits = self.width // self.lanes
        for p, (en, addr, we, wdata) in ops.items():
            if en and we:
                m = 0
                for i in range(self.lanes):
                    if we >> i & 1:
                        m |= ((1 << lane_bits) - 1) << (i * lane_bits)
                self.mem[addr] = (self.mem[addr] & ~m) | (wdata & m)


def _set(dut, name, value):
    getattr(dut, name).value = value


@cocotb.test()
async def random_ports(dut):
    p = bench_params()
    rng = bench_rng("bram")
    await start(dut)
    width, depth, lanes = p["width"], p["depth"], p["lanes"]
    ports = dict(zip("ab", p["ports"]))
    span = p.get("addr_span") or depth
    model = RAMModel(depth, width, lanes, p.get("init", []), p.get("latency", 2))
    for q in "ab":
        _set(dut, f"{q}__en", 0)
        _set(dut, f"{q}__addr", 0)
        if "w" in ports[q]:
            _set(dut, f"{q}__we", 0)
            _set(dut, f"{q}__wdata", 0)
    n = bench_count(4000)
    checked = 0
    corrupt_at = n // 2 if p.get("corrupt") == "value" else None
    for cycle in range(n):
        await FallingEdge(dut.clk)
        ops = {}
        used = set()
        for q in "ab":
            en = int(rng.random() < 0.7)
            addr = rng.randrange(span)
            if rng.random() < 0.3:
                addr = rng.randrange(depth)
            while addr in used:
                addr = rng.randrange(depth)
            used.add(addr)
            we = 0
            wdata = 0
            if "w" in ports[q] and rng.random() < 0.5:
                we = rng.getrandbits(lanes) or 1
                wdata = rng.getrandbits(width)
            if "r" not in ports[q] and not we:
                en = 0
            _set(dut, f"{q}__en", en)
            _set(dut, f"{q}__addr", addr)
            if "w" in ports[q]:
                _set(dut, f"{q}__we", we)
                _set(dut, f"{q}__wdata", wdata)
            ops[q] = (en, addr, we, wdata)
        await ReadOnly()
        if cycle > 2:
            for q in "ab":
                if "r" in ports[q]:
                    got = int(getattr(dut, f"{q}__rdata").value)
                    want = model.rdata[q]
                    if corrupt_at is not None and cycle == corrupt_at:
                        want ^= 1
                    assert got == want, (f"cycle {cycle} port {q}: rdata {got:#x}, "
                                         f"expected {want:#x}")
                    checked += 1
        model.step(ops)
    if p.get("corrupt") == "missing":
        assert checked == n + 1, f"checked {checked} reads, expected {n + 1}"
    cocotb.log.info("%d cycles, %d reads checked", n, checked)


@cocotb.test()
async def bank_traffic(dut):
    p = bench_params()
    rng = bench_rng("membank")
    await start(dut)
    width, depth, compute = p["width"], p["depth"], p["compute"]
    row_bytes = width // 8
    bus_bytes = p["bus_bytes"]
    mem = list(p.get("init", [])) + [0] * (depth - len(p.get("init", [])))
    for s in ("cyc", "stb", "we"):
        getattr(dut, f"bus__{s}").value = 0
    dut.port__en.value = 0
    dut.port__addr.value = 0
    if compute == "rw":
        dut.port__we.value = 0
        dut.port__wdata.value = 0

    # concurrent phase: the host works on the lower half of the rows, the compute port on the
    # upper half (reads, and writes on rw banks), so both sides stay predictable; a final
    # sweep then reads every row through the compute port
    half = depth // 2
    errors = []
    stop = False

    async def compute_side():
        pipe = [None] * p.get("latency", 2)
        while not stop:
            await FallingEdge(dut.clk)
            en = rng.random() < 0.6
            row = half + rng.randrange(depth - half)
            we = 0
            if compute == "rw" and rng.random() < 0.3:
                we = rng.getrandbits(row_bytes) or 1
                wdata = rng.getrandbits(width)
                dut.port__we.value = we
                dut.port__wdata.value = wdata
            elif compute == "rw":
                dut.port__we.value = 0
            dut.port__en.value = int(en)
            dut.port__addr.value = row
            await ReadOnly()
            due = pipe.pop(0)
            if due is not None:
                got = int(dut.port__rdata.value)
                if got != due[1]:
                    errors.append(f"compute read of row {due[0]}: {got:#x}, expected {due[1]:#x}")
            pipe.append((row, mem[row]) if en else None)
            if en and we:
                m = sum(0xFF << (8 * i) for i in range(row_bytes) if we >> i & 1)
                mem[row] = (mem[row] & ~m) | (wdata & m)

    task = cocotb.start_soon(compute_side())
    n = bench_count(800)
    corrupt = p.get("corrupt") == "value"
    for i in range(n):
        for _ in range(rng.choice([0, 0, 1, 3])):
            await FallingEdge(dut.clk)
        if rng.random() < 0.05 and bus_bytes > depth * row_bytes:
            a = depth * row_bytes + 4 * rng.randrange((bus_bytes - depth * row_bytes) // 4)
            _, res = await wishbone_access(dut, a, None if rng.random() < 0.5 else 1)
            assert res == "err", f"access at {a:#x} past the bank's end answered {res}"
            continue
        row = rng.randrange(half)
        a = row * row_bytes + 4 * rng.randrange(row_bytes // 4)
        k = (a % row_bytes) // 4
        if rng.random() < 0.5:
            v, sel = rng.getrandbits(32), rng.randrange(1, 16)
            _, res = await wishbone_access(dut, a, v, sel)
            assert res == "ack"
            m = sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1) << (32 * k)
            mem[row] = (mem[row] & ~m) | ((v << (32 * k)) & m)
        else:
            dat, res = await wishbone_access(dut, a)
            want = (mem[row] >> (32 * k)) & 0xFFFF_FFFF
            if corrupt and i >= n // 2:      # the checker must catch one wrong value
                want ^= 1
                corrupt = False
            assert (dat, res) == (want, "ack"), f"host read {a:#x}: {dat:#x} {res}, expected {want:#x}"
    stop = True
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    task.cancel()
    assert not errors, errors[:3]
    if compute == "rw":
        dut.port__we.value = 0
    lat = p.get("latency", 2)
    for row in range(depth + lat):
        await FallingEdge(dut.clk)
        dut.port__en.value = int(row < depth)
        dut.port__addr.value = row % depth
        await ReadOnly()
        if row >= lat:
            got = int(dut.port__rdata.value)
            assert got == mem[row - lat], f"sweep row {row - lat}: {got:#x}, expected {mem[row - lat]:#x}"


def _dp16kd_model() -> str:
    """A behavioural Verilog model of the ECP5 DP16KD, for simulating BlockRAM's ECP5
    netlist: widths 1/2/4/9/18 per port and 36 as write port A + read port B, byte enables
    on AD[1:0] (x18) / AD[3:0] (x36), chip selects ignored, READBEFOREWRITE, REGMODE
    NOREG/OUTREG, INITVAL_00..3F as 1024 rows of 18 bits (20-bit slots). Narrow widths
    (1/2/4) use 8 of every 9 bits. It is a reading of the datasheet and of Yosys' mapping
    files, not Lattice's model: it checks BlockRAM's wiring and tiling, not the primitive."""
    ports = []
    for P in "AB":
        ports += [f"DI{P}{i}" for i in range(18)] + [f"AD{P}{i}" for i in range(14)]
        ports += [f"CE{P}", f"OCE{P}", f"CLK{P}", f"WE{P}", f"RST{P}", f"CS{P}0", f"CS{P}1", f"CS{P}2"]
        ports += [f"DO{P}{i}" for i in range(18)]
    lines = ["module DP16KD(" + ", ".join(ports) + ");"]
    for P in "AB":
        lines += [f"  parameter DATA_WIDTH_{P} = 18;", f'  parameter REGMODE_{P} = "NOREG";',
                  f'  parameter WRITEMODE_{P} = "NORMAL";', f'  parameter CSDECODE_{P} = "0b000";']
    lines += ['  parameter RESETMODE = "SYNC";', '  parameter ASYNC_RESET_RELEASE = "SYNC";',
              '  parameter GSR = "ENABLED";']
    lines += [f"  parameter [319:0] INITVAL_{k:02X} = 320'h0;" for k in range(64)]
    for P in "AB":
        lines += ["  input " + ", ".join(f"DI{P}{i}" for i in range(18)) + ";",
                  "  input " + ", ".join(f"AD{P}{i}" for i in range(14)) + ";",
                  f"  input CE{P}, OCE{P}, CLK{P}, WE{P}, RST{P}, CS{P}0, CS{P}1, CS{P}2;",
                  "  output " + ", ".join(f"DO{P}{i}" for i in range(18)) + ";",
                  f"  wire [17:0] DI{P}_v = {{" + ", ".join(f"DI{P}{i}" for i in reversed(range(18))) + "};",
                  f"  wire [13:0] AD{P}_v = {{" + ", ".join(f"AD{P}{i}" for i in reversed(range(14))) + "};"]
    lines += [
        "  reg mem [0:18431];",
        "  reg [35:0] lat_a, lat_b, out_a, out_b;",
        "  reg [319:0] iv;",
        "  integer k, i, b;",
        "  function integer lsb_of(input integer w);",
        "    lsb_of = (w == 1) ? 0 : (w == 2) ? 1 : (w == 4) ? 2 : (w == 9) ? 3 : (w == 18) ? 4 : 5;",
        "  endfunction",
        "  function integer flat(input integer w, input integer la, input integer bt);",
        "    integer n;",
        "    begin",
        "      n = la * w + bt;",
        "      flat = (w >= 9) ? n : (n / 8) * 9 + n % 8;",
        "    end",
        "  endfunction",
        "  initial begin",
        "    for (k = 0; k < 64; k = k + 1) begin",
        "      case (k)",
    ]
    lines += [f"        {k}: iv = INITVAL_{k:02X};" for k in range(64)]
    lines += [
        "        default: iv = 320'h0;",
        "      endcase",
        "      for (i = 0; i < 16; i = i + 1)",
        "        for (b = 0; b < 18; b = b + 1)",
        "          mem[(k * 16 + i) * 18 + b] = iv[i * 20 + b];",
        "    end",
        "    lat_a = 0; lat_b = 0; out_a = 0; out_b = 0;",
        "  end",
        "  wire [35:0] di_a = (DATA_WIDTH_A == 36) ? {DIB_v, DIA_v} : {18'b0, DIA_v};",
        "  wire [35:0] di_b = {18'b0, DIB_v};",
    ]
    for P, p in (("A", "a"), ("B", "b")):
        lines += [
            f"  integer la_{p}, bt_{p};",
            f"  always @(posedge CLK{P}) begin",
            f"    if (CE{P}) begin",
            f"      la_{p} = AD{P}_v >> lsb_of(DATA_WIDTH_{P});",
            f"      for (bt_{p} = 0; bt_{p} < DATA_WIDTH_{P}; bt_{p} = bt_{p} + 1)",
            f"        lat_{p}[bt_{p}] <= mem[flat(DATA_WIDTH_{P}, la_{p}, bt_{p})];",
            f"      if (WE{P})",
            f"        for (bt_{p} = 0; bt_{p} < DATA_WIDTH_{P}; bt_{p} = bt_{p} + 1)",
            f"          if ((DATA_WIDTH_{P} < 18) || AD{P}_v[bt_{p} / 9])",
            f"            mem[flat(DATA_WIDTH_{P}, la_{p}, bt_{p})] <= di_{p}[bt_{p}];",
            "    end",
            f"    if (OCE{P}) out_{p} <= lat_{p};",
            "  end",
            f'  wire [35:0] q_{p} = (REGMODE_{P} == "OUTREG") ? out_{p} : lat_{p};',
        ]
    lines += [
        "  wire [17:0] doa_v = (DATA_WIDTH_B == 36) ? q_b[17:0] : q_a[17:0];",
        "  wire [17:0] dob_v = (DATA_WIDTH_B == 36) ? q_b[35:18] : q_b[17:0];",
        "  assign {" + ", ".join(f"DOA{i}" for i in reversed(range(18))) + "} = doa_v;",
        "  assign {" + ", ".join(f"DOB{i}" for i in reversed(range(18))) + "} = dob_v;",
        "endmodule",
        "",
    ]
    return "\n".join(lines)


#: A TRELLIS_FF model (synchronous ``LSR``, as :func:`hdlgen.blocks.dsp.keep_register` uses
#: it: the input-register copies of a ``latency=3`` BlockRAM).
TRELLIS_FF_MODEL = """
module TRELLIS_FF(CLK, LSR, CE, DI, M, Q);
  parameter GSR = "ENABLED";
  parameter CEMUX = "1";
  parameter CLKMUX = "CLK";
  parameter LSRMUX = "LSR";
  parameter SRMODE = "LSR_OVER_CE";
  parameter REGSET = "RESET";
  input CLK, LSR, CE, DI, M;
  output reg Q;
  initial Q = (REGSET == "SET");
  always @(posedge CLK)
    if (LSR) Q <= (REGSET == "SET");
    else if (CE) Q <= DI;
endmodule
"""

#: Verilog text of the DP16KD model (see :func:`_dp16kd_model`) and of TRELLIS_FF.
DP16KD_MODEL = _dp16kd_model() + TRELLIS_FF_MODEL
