"""Block RAM with registered outputs: DP16KD tiles on ECP5, ``lib.memory`` elsewhere.

:class:`BlockRAM` is a dual-port RAM of any width and depth with **two cycles of read
latency**: the address (with ``en``) presented in cycle *t* gives ``rdata`` in cycle *t+2*,
and ``rdata`` then holds until the next read completes. On ECP5 it instantiates ``DP16KD``
primitives with ``REGMODE_A/B="OUTREG"`` (the array's 5.8 ns clock-to-out is cut by the
primitive's own output register, see TOOLCHAIN.md); elsewhere (simulation, cocotb,
``hdlgen verilog``) an :class:`amaranth.lib.memory.Memory` followed by an output register
behaves the same cycle for cycle. ``latency=3`` (opt-in) puts a register stage in front of
the primitives, replicated per group of four of them, for RAMs that span many DP16KD (see
:class:`BlockRAM`); everything below then happens one cycle later. ``latency=4`` puts a
second stage before that one (a copy per two groups), for RAMs that span the die.

Ports (each a :class:`PortSignature`, seen from the RAM as ``In``)::

    ram = BlockRAM(width=32, depth=4096, granularity=8, ports=("rw", "r"), init=[...])
    m.d.comb += [ram.a.addr.eq(...), ram.a.en.eq(1), ram.a.we.eq(0b0011), ram.a.wdata.eq(...)]
    # two cycles later: ram.a.rdata / ram.b.rdata

``addr``   word address.
``en``     port enable: in a cycle with ``en`` set the port reads ``addr`` (and writes the
           byte lanes selected by ``we``). With ``en`` low nothing happens and the read
           pipeline holds, so ``rdata`` keeps the last word read.
``we``     write-lane enables, one bit per ``granularity`` bits (one bit if no granularity);
           only on writable ports; a write needs ``en`` too.
``wdata``  write data (writable ports).
``rdata``  read data (readable ports), ``latency`` = 2 cycles after the request.

Semantics: a port that writes a word returns the *old* word for that cycle (read before
write, ``WRITEMODE="READBEFOREWRITE"``); a read on one port of a word written in the same
cycle through the other port returns undefined data on the FPGA (collision; the behavioural
model returns the old word). Initial contents (``init``, a list of ints, one per word) are
baked into the bitstream (``INITVAL_xx``).

ECP5 tiling: a DP16KD is 18 Kbit with widths 1, 2, 4, 9, 18 per port (and 36 when port A
only writes and port B only reads, the pseudo-dual-port mode). The tiler picks the width
that uses the fewest primitives for ``width`` x ``depth`` (then the fewest cascaded rows);
rows beyond one are selected by the high address bits, with a mux after the output
register. With ``granularity=8`` data bytes sit in the 9-bit lanes of the x9/x18/x36
modes (the ninth bit unused) so the byte enables line up. Memories with initial contents
use only the x9/x18/x36 modes (whose INITVAL layout follows Yosys' DP16KD mapping).
:func:`ecp5_tiling` tells what a given shape costs without elaborating it.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.dsp import keep_register
from hdlgen.blocks.ecp5 import is_ecp5

__all__ = ["PortSignature", "BlockRAM", "Tiling", "ecp5_tiling", "check_latency", "READ_LATENCY",
           "bench_configs"]

#: Cycles from a read request (``addr`` with ``en``) to ``rdata`` (the default; ``latency=3``
#: adds an input register stage, see :class:`BlockRAM`).
READ_LATENCY = 2

#: Primitives per copy of the input registers when ``latency=3``.
_GROUP_TILES = 4
#: Groups per first-stage copy when ``latency=4`` (measured on the 85F with the 32-primitive
#: weight bank: with four, one first-stage copy reached a primitive 53 columns away through
#: 6.8 ns of routing).
_FIRST_STAGE_GROUPS = 2

_EBR_BITS = 16384          # data bits of one DP16KD without parity (x1/x2/x4 modes)
_MODES = {1: 16384, 2: 8192, 4: 4096, 9: 2048, 18: 1024, 36: 512}   # width -> depth
_ADDR_LSB = {1: 0, 2: 1, 4: 2, 9: 3, 18: 4, 36: 5}                 # word address on AD[13:lsb]


class PortSignature(wiring.Signature):
    """One RAM port, seen from the initiator (``Out`` members are driven by the user).

    Parameters
    ----------
    addr_width : int
    data_width : int
    lanes : int
        Number of write-enable bits (``data_width // granularity``).
    read, write : bool
        Which directions the port has.
    """

    def __init__(self, *, addr_width: int, data_width: int, lanes: int = 1,
                 read: bool = True, write: bool = True):
        members = {"addr": Out(addr_width), "en": Out(1)}
        if write:
            members["we"] = Out(lanes)
            members["wdata"] = Out(data_width)
        if read:
            members["rdata"] = In(data_width)
        self._args = (addr_width, data_width, lanes, read, write)
        super().__init__(members)

    def __eq__(self, other):
        return type(other) is PortSignature and self._args == other._args

    def __hash__(self):
        return hash((PortSignature, self._args))

    def __repr__(self):
        aw, dw, lanes, r, w = self._args
        return f"bram.PortSignature(addr_width={aw}, data_width={dw}, lanes={lanes}, read={r}, write={w})"


@dataclass(frozen=True)
class Tiling:
    """How a memory shape maps onto DP16KD primitives.

    Attributes
    ----------
    mode : int
        Primitive data width (1, 2, 4, 9, 18 or 36).
    unit_bits : int
        Memory bits stored per primitive column (8 per 9-bit lane with byte granularity).
    columns, rows : int
        Primitives side by side (width) and cascaded (depth).
    prim_depth : int
        Words per primitive.
    """
    mode: int
    unit_bits: int
    columns: int
    rows: int
    prim_depth: int

    @property
    def primitives(self) -> int:
        return self.columns * self.rows


def _unit_bits(mode: int, granularity: int | None) -> int:
    if granularity == 8 and mode >= 9:
        return 8 * (mode // 9)
    return mode


def ecp5_tiling(width: int, depth: int, *, granularity: int | None = None,
                ports=("rw", "r"), init: bool = False) -> Tiling:
    """The DP16KD tiling :class:`BlockRAM` uses for this shape (fewest primitives, then fewest
    cascaded rows, then the widest mode)."""
    best = None
    for mode, pdepth in _MODES.items():
        if mode == 36 and tuple(ports) != ("w", "r"):
            continue
        if init and mode < 9:
            continue
        if granularity == 8 and mode < 9 and 8 % mode:
            continue
        ub = _unit_bits(mode, granularity)
        cols = -(-width // ub)
        rows = -(-depth // pdepth)
        key = (cols * rows, rows, -mode)
        if best is None or key < best[0]:
            best = (key, Tiling(mode, ub, cols, rows, pdepth))
    return best[1]


def _scalar_ports(kw: dict) -> dict:
    """DP16KD has one port per bit (``ADA0``..``ADA13``, ``DIA0``..): split vector ports."""
    out = {}
    for key, value in kw.items():
        if key[:2] in ("i_", "o_") and key not in ("i_CLKA", "i_CLKB") and len(value) > 1:
            for i in range(len(value)):
                out[f"{key}{i}"] = value[i]
        else:
            out[key] = value
    return out


class _Request:
    """A port's request fields as the array sees them (registered copies when latency=3)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def check_latency(latency) -> int:
    """``latency`` if it is a read latency the RAMs offer (2, 3 or 4), else a clear error."""
    if latency not in (2, 3, 4) or isinstance(latency, bool):
        raise ValueError(f"latency={latency!r}: use 2 (default), 3 (adds an input register "
                         f"stage, for RAMs of many primitives) or 4 (two stages, for RAMs "
                         f"across the die)")
    return latency


def _check_int(name, value, lo=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise TypeError(f"{name} must be an integer >= {lo}, not {value!r}")


class BlockRAM(wiring.Component):
    """Dual-port RAM, 2-cycle read latency, DP16KD on ECP5 (see the module docstring).

    Parameters
    ----------
    width : int
        Word width in bits.
    depth : int
        Number of words.
    granularity : int or None
        Write-enable granularity in bits: ``8`` (byte enables; ``width`` must be a multiple of
        8) or ``None`` (one write enable for the whole word).
    ports : (str, str)
        Directions of ports ``a`` and ``b``: ``("rw", "r")`` (default: read/write + read-only),
        ``("rw", "rw")`` (true dual port) or ``("w", "r")`` (pseudo dual port, allows the x36
        mode).
    init : sequence of int or None
        Initial contents, word 0 first; missing words are zero.
    latency : int
        Read latency: ``2`` (default), ``3`` or ``4``. With ``3`` every request (``addr``, ``en``,
        ``we``, ``wdata``) first goes through a register stage inside the RAM, replicated
        per group of four DP16KD (and one write-enable register per primitive), so no
        signal of the user fans out to more than a few copies and each copy to a few
        neighbouring primitives. Writes then also land one cycle later; the read-before-write
        and collision rules are unchanged (both ports are delayed alike). Use it for RAMs of
        many primitives, whose address net otherwise crosses the die in one cycle (measured
        for 32 DP16KD on the LFE5U-85F: 149 / 119 MHz with ``latency=2``, nextpnr seeds 1
        and 2, set by that net alone). With ``4`` those copies load from a first stage of
        copies, one per two groups, so a request fans out as a tree: for a RAM whose
        primitives sit across the die, such as a weight bank beside a MAC array that fills
        the DSP rows (measured on the 85F, 32 DP16KD in the SoC with the matrix-vector unit:
        8 ns of routing from the request to one group's copy with ``3``). A write port's data
        is registered once per stage (identical bits of a replicated word merge in synthesis
        into one flip-flop that drives every primitive; see ``wdata_per_group``).
    wdata_per_group : bool
        With ``latency=4``: the second stage of a write port's data is a kept copy per group,
        one flip-flop per primitive pin, so the write data fans out as a tree too. A caller
        that replicates a narrow word across the port should then give it in copies that
        already sit apart (the engine's host weight write: one copy per four lanes), since the
        first stage still merges identical bits. Costs ``width`` flip-flops per row of
        primitives.
    sites : mapping or None
        On ECP5, ``{(row, column): BEL}``: the DP16KD site of some or all tiles of
        :meth:`tiling` (nextpnr's ``BEL`` attribute, e.g. ``"X4/Y22/EBR0"``), from a
        floorplan such as :func:`hdlgen.blocks.ecp5.mac_floorplan`. ``None``: the placer
        chooses.

    Attributes
    ----------
    a, b : In(PortSignature)
        The two ports.
    latency : int
        Read latency in cycles.
    """

    def __init__(self, *, width: int, depth: int, granularity: int | None = None,
                 ports=("rw", "r"), init=None, latency: int = READ_LATENCY, sites=None,
                 wdata_per_group: bool = False):
        self._wdata_per_group = bool(wdata_per_group)
        try:
            self._setup(width, depth, granularity, ports, init, latency)
            self._sites = self._check_sites(sites)
        except Exception:
            self._MustUse__silence = True   # a refused RAM is not an unused one
            raise

    def _setup(self, width, depth, granularity, ports, init, latency):
        _check_int("width", width)
        _check_int("depth", depth)
        self._latency = check_latency(latency)
        if granularity not in (None, 8):
            raise ValueError(f"granularity must be 8 or None, not {granularity!r}")
        if granularity == 8 and width % 8:
            raise ValueError(f"width={width} is not a multiple of granularity=8; pad the word to "
                             f"{-(-width // 8) * 8} bits or use granularity=None")
        ports = tuple(ports)
        if ports not in (("rw", "r"), ("rw", "rw"), ("w", "r")):
            raise ValueError(f"ports={ports!r}: use ('rw', 'r'), ('rw', 'rw') or ('w', 'r')")
        init = [int(v) for v in (init or [])]
        if len(init) > depth:
            raise ValueError(f"init has {len(init)} words but depth={depth}")
        for i, v in enumerate(init):
            if not 0 <= v < (1 << width):
                raise ValueError(f"init[{i}]={v:#x} does not fit in width={width} bits (unsigned)")
        self._width = width
        self._depth = depth
        self._granularity = granularity
        self._ports = ports
        self._init = init
        self._lanes = width // granularity if granularity else 1
        aw = max(1, (depth - 1).bit_length())
        self._addr_width = aw
        sigs = {}
        for name, dirs in zip("ab", ports):
            sigs[name] = In(PortSignature(addr_width=aw, data_width=width, lanes=self._lanes,
                                          read="r" in dirs, write="w" in dirs))
        super().__init__(sigs)

    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    granularity = property(lambda self: self._granularity)
    addr_width = property(lambda self: self._addr_width)
    lanes = property(lambda self: self._lanes)
    latency = property(lambda self: self._latency)

    def _check_sites(self, sites):
        if sites is None:
            return None
        t = self.tiling()
        sites = dict(sites)
        tiles = {(r, c) for r in range(t.rows) for c in range(t.columns)}
        if set(sites) - tiles or not all(isinstance(v, str) for v in sites.values()):
            raise ValueError(f"sites must map (row, column) tiles of this RAM's {t.rows} x "
                             f"{t.columns} DP16KD to BEL names such as 'X4/Y22/EBR0'")
        return sites

    def tiling(self) -> Tiling:
        """The DP16KD tiling used when elaborated for ECP5."""
        return ecp5_tiling(self._width, self._depth, granularity=self._granularity,
                           ports=self._ports, init=bool(self._init))

    # -- behavioural ---------------------------------------------------------------------
    def _elaborate_generic(self, m):
        mem = m.submodules.mem = Memory(shape=self._width, depth=self._depth,
                                        init=self._init + [0] * (self._depth - len(self._init)))
        gran = self._granularity or self._width
        for name, dirs in zip("ab", self._ports):
            port = getattr(self, name)
            for stage in range(self._latency - READ_LATENCY):    # the input register stages
                reg = _Request(addr=Signal.like(port.addr, name=f"{name}_addr_r{stage}",
                                                reset_less=True),
                               en=Signal(name=f"{name}_en_r{stage}"))
                m.d.sync += [reg.addr.eq(port.addr), reg.en.eq(port.en)]
                if "w" in dirs:
                    reg.we = Signal.like(port.we, name=f"{name}_we_r{stage}")
                    reg.wdata = Signal.like(port.wdata, name=f"{name}_wdata_r{stage}",
                                            reset_less=True)
                    m.d.sync += [reg.we.eq(port.we), reg.wdata.eq(port.wdata)]
                if "r" in dirs:
                    reg.rdata = port.rdata
                port = reg
            if "w" in dirs:
                wp = mem.write_port(granularity=gran)
                m.d.comb += [wp.addr.eq(port.addr), wp.data.eq(port.wdata)]
                for i in range(self._lanes):
                    m.d.comb += wp.en[i].eq(port.en & port.we[i])
            if "r" in dirs:
                rp = mem.read_port(domain="sync")
                m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en)]
                m.d.sync += port.rdata.eq(rp.data)          # the DP16KD output register

    # -- ECP5 ----------------------------------------------------------------------------
    def _column_bits(self, t: Tiling, col: int):
        """(memory bit offset, number of bits, lane positions in the primitive) of a column."""
        lo = col * t.unit_bits
        n = min(t.unit_bits, self._width - lo)
        if self._granularity == 8 and t.mode >= 9:
            pos = [9 * (b // 8) + b % 8 for b in range(n)]
        else:
            pos = list(range(n))
        return lo, n, pos

    def _lane_in_column(self, t: Tiling, lane: int, col: int) -> bool:
        """Whether write-enable bit ``lane`` reaches column ``col``."""
        lo, n, _ = self._column_bits(t, col)
        if self._granularity == 8:
            return lo // 8 <= lane < lo // 8 + -(-n // 8)
        return lane == 0

    def _initval(self, t: Tiling, row: int, col: int) -> dict:
        """INITVAL_00..3F of one primitive: 1024 rows of 18 bits, 16 rows per 320-bit value."""
        lo, n, pos = self._column_bits(t, col)
        phys = [0] * 1024
        mask = (1 << n) - 1
        for la in range(t.prim_depth):
            word = row * t.prim_depth + la
            if word >= len(self._init):
                break
            v = (self._init[word] >> lo) & mask
            if not v:
                continue
            for i, p in enumerate(pos):
                if (v >> i) & 1:
                    flat = la * t.mode + p        # x9/x18/x36: flat bit address in 18-bit rows
                    phys[flat // 18] |= 1 << (flat % 18)
        params = {}
        for k in range(64):
            val = 0
            for i in range(16):
                val |= phys[k * 16 + i] << (20 * i)
            params[f"p_INITVAL_{k:02X}"] = Const(val, 320)
        return params

    def _elaborate_ecp5(self, m, platform):
        t = self.tiling()
        mode = t.mode
        pseudo = mode == 36
        row_bits = (t.rows - 1).bit_length()
        local_aw = (t.prim_depth - 1).bit_length()
        lsb = _ADDR_LSB[mode]
        lat = self._latency
        tiles = [(r, c) for r in range(t.rows) for c in range(t.columns)]
        group = {rc: i // _GROUP_TILES for i, rc in enumerate(tiles)}

        def in_row(addr, r):
            return addr[local_aw:local_aw + row_bits] == r if t.rows > 1 else Const(1)

        def lanes_of(port, c):
            lo, n, _ = self._column_bits(t, c)
            if self._granularity == 8:
                return port.we[lo // 8:lo // 8 + -(-n // 8)]
            return port.we[0:1]

        # The request each primitive sees: the port (latency 2), or with latency 3 the copy
        # of its group (address, enable, write lanes: non-mergeable registers) and wdata
        # registered once per bit; with latency 4 a tree (see the class docstring).
        req = {}
        first = {}        # what the per-primitive write enables load from: the port, or with
                          # latency 4 the first-stage copy of the primitive's group
        for name, dirs in zip("ab", self._ports):
            port = getattr(self, name)
            if lat == 2:
                req[name] = {rc: port for rc in tiles}
                continue
            wdata = None
            if "w" in dirs:
                wdata = Signal.like(port.wdata, name=f"{name}_wdata_r", reset_less=True)
                m.d.sync += wdata.eq(port.wdata)
                if lat == 4 and not self._wdata_per_group:
                    wdata2 = Signal.like(port.wdata, name=f"{name}_wdata_r2", reset_less=True)
                    m.d.sync += wdata2.eq(wdata)
                    wdata = wdata2
            source = {}                 # the request each group's copy loads from
            for g in sorted(set(group.values())):
                if lat == 3:
                    source[g] = port
                elif g % _FIRST_STAGE_GROUPS == 0:
                    j = g // _FIRST_STAGE_GROUPS
                    pre = _Request(
                        addr=keep_register(m, platform, Signal(len(port.addr),
                                                               name=f"{name}_addr_t{j}",
                                                               reset_less=True), port.addr),
                        en=keep_register(m, platform, Signal(name=f"{name}_en_t{j}"), port.en))
                    if "w" in dirs:
                        pre.we = keep_register(m, platform,
                                               Signal(len(port.we), name=f"{name}_we_t{j}"),
                                               port.we)
                    source[g] = pre
                else:
                    source[g] = source[g - g % _FIRST_STAGE_GROUPS]
            copies = {}
            for g in sorted(set(group.values())):
                src = source[g]
                copy = _Request(
                    addr=keep_register(m, platform, Signal(len(port.addr), name=f"{name}_addr_g{g}",
                                                           reset_less=True), src.addr),
                    en=keep_register(m, platform, Signal(name=f"{name}_en_g{g}"), src.en))
                if "w" in dirs:
                    # only the write lanes of the group's columns
                    used = sorted({i for rc in tiles if group[rc] == g
                                   for i in range(len(port.we))
                                   if self._lane_in_column(t, i, rc[1])})
                    held = keep_register(m, platform, Signal(len(used), name=f"{name}_we_g{g}"),
                                         Cat(src.we[i] for i in used))
                    copy.we = Signal(len(port.we), name=f"{name}_we_v{g}")
                    m.d.comb += [copy.we[i].eq(held[j]) for j, i in enumerate(used)]
                    copy.wdata = wdata
                    if lat == 4 and self._wdata_per_group:
                        # the group's own copy of its columns' write data (kept: identical
                        # bits of a replicated word stay one flip-flop per primitive pin)
                        bits = [lo + i for c in sorted({rc[1] for rc in tiles if group[rc] == g})
                                for lo, n, _ in [self._column_bits(t, c)] for i in range(n)]
                        held_w = keep_register(m, platform,
                                               Signal(len(bits), name=f"{name}_wdata_g{g}",
                                                      reset_less=True),
                                               Cat(wdata[b] for b in bits))
                        copy.wdata = Signal(len(port.wdata), name=f"{name}_wdata_v{g}")
                        m.d.comb += [copy.wdata[b].eq(held_w[j]) for j, b in enumerate(bits)]
                copies[g] = copy
            req[name] = {rc: copies[group[rc]] for rc in tiles}
            first[name] = {rc: source[group[rc]] for rc in tiles}

        # Row select of each read port, delayed to line up with the read (after the request
        # as the array sees it).
        rsel = {}
        for name, dirs in zip("ab", self._ports):
            if "r" in dirs and t.rows > 1:
                r0 = req[name][tiles[0]]
                s1 = Signal(row_bits, name=f"{name}_rsel1")
                s2 = Signal(row_bits, name=f"{name}_rsel2")
                with m.If(r0.en):
                    m.d.sync += s1.eq(r0.addr[local_aw:local_aw + row_bits])
                m.d.sync += s2.eq(s1)
                rsel[name] = s2

        outs = {name: [[None] * t.columns for _ in range(t.rows)] for name in "ab"}
        for r, c in tiles:
            lo, n, pos = self._column_bits(t, c)
            kw = dict(p_DATA_WIDTH_A=mode, p_DATA_WIDTH_B=mode,
                      p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                      p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                      p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                      p_WRITEMODE_A="READBEFOREWRITE", p_WRITEMODE_B="READBEFOREWRITE",
                      p_GSR="DISABLED",
                      i_CLKA=ClockSignal("sync"), i_CLKB=ClockSignal("sync"),
                      i_RSTA=Const(0), i_RSTB=Const(0), i_OCEA=Const(1), i_OCEB=Const(1),
                      i_CSA=Const(0, 3), i_CSB=Const(0, 3))
            kw.update(self._initval(t, r, c))
            if self._sites and (r, c) in self._sites:   # a floorplan's site (nextpnr's BEL)
                kw["a_BEL"] = self._sites[(r, c)]
            di = {"A": Signal(18, name=f"dia_{r}_{c}"), "B": Signal(18, name=f"dib_{r}_{c}")}
            do = {"A": Signal(18, name=f"doa_{r}_{c}"), "B": Signal(18, name=f"dob_{r}_{c}")}
            kw.update(i_DIA=di["A"], i_DIB=di["B"], o_DOA=do["A"], o_DOB=do["B"])
            for pname, dirs in zip("ab", self._ports):
                port = getattr(self, pname)
                q = req[pname][(r, c)]
                P = pname.upper()
                ad = Signal(14, name=f"ad{pname}_{r}_{c}")
                m.d.comb += ad[lsb:lsb + local_aw].eq(q.addr[:local_aw])
                wr = Signal(name=f"wr{pname}_{r}_{c}")
                if "w" in dirs:
                    src = first[pname][(r, c)] if lat >= 3 else port
                    write = src.en & in_row(src.addr, r) & lanes_of(src, c).any()
                    if lat >= 3:   # one register per primitive, from the port (latency 3)
                        keep_register(m, platform, wr, write)
                    else:
                        m.d.comb += wr.eq(write)
                    if mode in (18, 36):
                        # Byte enables ride on AD[1:0] (x18) or AD[3:0] (x36).
                        nbe = 2 if mode == 18 else 4
                        be = lanes_of(q, c) if self._granularity == 8 else Const(-1, nbe)
                        m.d.comb += ad[:nbe].eq(be)
                    for i, p in enumerate(pos):
                        tgt = di["B"] if (pseudo and p >= 18) else di[P]
                        m.d.comb += tgt[p % 18].eq(q.wdata[lo + i])
                kw[f"i_AD{P}"] = ad
                kw[f"i_WE{P}"] = wr
                kw[f"i_CE{P}"] = q.en if "r" in dirs else wr
                if "r" in dirs:
                    got = Signal(n, name=f"rd{pname}_{r}_{c}")
                    for i, p in enumerate(pos):
                        if pseudo:   # x36 read data: DOA = bits 0..17, DOB = 18..35
                            src = do["A"] if p < 18 else do["B"]
                        else:
                            src = do[P]
                        m.d.comb += got[i].eq(src[p % 18])
                    outs[pname][r][c] = got
            m.submodules[f"ebr_{r}_{c}"] = Instance("DP16KD", **_scalar_ports(kw))

        for pname, dirs in zip("ab", self._ports):
            if "r" not in dirs:
                continue
            port = getattr(self, pname)
            words = [Cat(*outs[pname][r]) for r in range(t.rows)]
            if t.rows == 1:
                m.d.comb += port.rdata.eq(words[0])
            else:
                with m.Switch(rsel[pname]):
                    for r in range(t.rows):
                        with m.Case(r):
                            m.d.comb += port.rdata.eq(words[r])

    def elaborate(self, platform):
        m = Module()
        if is_ecp5(platform):
            self._elaborate_ecp5(m, platform)
        else:
            self._elaborate_generic(m)
        return m


def bench_configs() -> list:
    """What ``hdlgen bench blocks`` measures: a 64 KiB byte-writable RAM (32 DP16KD) with the
    input register stage (``latency=3``), the form for a RAM that spans this many primitives
    (with ``latency=2`` the caller's address register drives all 32 directly and sets fmax:
    149 / 119 MHz, nextpnr seeds 1 / 2)."""
    from hdlgen.bench.registry import BlockBench
    params = {"width": 32, "depth": 16384, "granularity": 8, "latency": 3}
    return [BlockBench(name="bram", params=params, build=lambda: BlockRAM(**params))]
