"""Memory banks: weight banks the MAC array reads a full row-slice from every cycle,
activation scratchpads, and host access to any bank over Wishbone.

:class:`MemoryBank` is a :class:`~hdlgen.blocks.bram.BlockRAM` of ``width`` bits (a multiple
of 32) with a 32-bit Wishbone subordinate ``bus`` for the host (byte selects honoured) and a
compute port ``port`` (raw :class:`~hdlgen.blocks.bram.PortSignature`: address + ``en`` in,
``rdata`` :attr:`MemoryBank.latency` cycles later, 3 on weight banks and 2 on scratchpads;
no back-pressure: the consumer carries a valid bit alongside, which keeps the MAC array free
of a global stall net)::

    bank = weight_bank(config, rows=512)          # width = lanes * macs_per_lane * 8 bits
    dec.add(bank.bus, addr=WEIGHTS_BASE, name="weights")
    m.d.comb += [bank.port.addr.eq(row), bank.port.en.eq(1)]
    # bank.latency (3) cycles later: bank.port.rdata is one row-slice (lanes * macs_per_lane int8)

Host view: the bank is ``depth * width / 8`` bytes; byte address ``A`` is byte ``A % (width/8)``
of row ``A // (width/8)``, little-endian (bus word ``k`` of a row is ``rdata[32k:32k+32]``).
Host requests reach the RAM through registers. A bus write is acknowledged the cycle after
it arrives (and lands in the RAM two cycles later, three in a weight bank, whose RAM has its
own input register stage; on rows of more than 16 words the write is acknowledged, and
lands, a cycle later still); a read after
:attr:`MemoryBank.read_latency` cycles (request, RAM latency, a capture register on
rows of more than four words, a registered 4:1 word select per stage). In a weight bank (``compute="r"``) the RAM is pseudo dual port (x36
DP16KD mode): the host writes through port ``a`` and reads through port ``b``, in a cycle the
compute side leaves ``port.en`` low, so a host read waits while the compute side streams;
``port.rdata`` is then only meaningful ``latency`` cycles after a cycle with ``port.en``.

Weight layout (:func:`weight_rows`): the MAC array computes ``lanes`` outputs at a time,
each a dot product consumed ``macs_per_lane`` inputs per cycle. Row ``r`` of the weight
bank for output block ``ob`` and input block ``ib`` (``r = ob * in_blocks + ib``) holds, at
byte ``l * macs_per_lane + k``, the weight ``W[ob * lanes + l, ib * macs_per_lane + k]``
(zero padded). Reading rows ``ob * in_blocks .. ob * in_blocks + in_blocks - 1`` in order
streams a whole output block.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdlgen.blocks.bram import BlockRAM, PortSignature, ecp5_tiling
from hdlgen.blocks.dsp import keep_register
from hdlgen.config import AcceleratorConfig
from hdlgen.soc import wishbone

__all__ = ["MemoryBank", "weight_bank", "activation_bank", "weight_rows", "bus_bytes", "bench_configs"]


def bus_bytes(width: int, depth: int) -> int:
    """Bytes of bus address space a bank of ``width`` x ``depth`` occupies (a power of 2)."""
    words = (width // 32) * depth
    return 4 << max(0, (words - 1).bit_length())


class MemoryBank(wiring.Component):
    """A BlockRAM with a Wishbone host port (port ``a``) and a compute port (port ``b``).

    Parameters
    ----------
    width : int
        Row width in bits, a multiple of 32.
    depth : int
        Rows.
    compute : str
        Direction of the compute port: ``"r"`` (weight banks) or ``"rw"`` (scratchpads).
    init : sequence of int or None
        Initial rows (baked into the bitstream).
    staged : bool or None
        Give the RAM its input register stages (latency 3, or 4 above 16 DP16KD) on both
        ports; default: on weight banks only. A scratchpad whose compute port writes rows
        across the die (the matrix-vector unit's result buffer) wants them too.

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width, data_width=32))
    port : In(PortSignature)
        Port ``b`` of the RAM, 2-cycle read latency.
    """

    def __init__(self, *, width: int, depth: int, compute: str = "r", init=None,
                 staged: bool | None = None, sites=None):
        if not isinstance(width, int) or width < 32 or width % 32:
            self._MustUse__silence = True
            raise ValueError(f"bank width={width!r} must be a positive multiple of 32 bits "
                             f"(host words); pad the row")
        if compute not in ("r", "rw"):
            self._MustUse__silence = True
            raise ValueError(f"compute={compute!r}: use 'r' or 'rw'")
        # Weight banks: host writes on port a, host reads share port b with the compute side
        # (pseudo dual port: allows the x36 DP16KD mode, half the EBRs of x18 at 512 rows).
        # Their RAM has the input register stage (latency 3, replicated per group of
        # primitives): the compute port's address reaches dozens of primitives side by side.
        # A weight bank of more than 16 primitives (four groups of input-register copies)
        # spans the die beside a MAC array: its requests fan out as a tree (latency 4).
        ram_ports = ("w", "r") if compute == "r" else ("rw", "rw")
        self._compute = compute
        if compute == "r" if staged is None else staged:
            t = ecp5_tiling(width, depth, granularity=8, ports=ram_ports, init=bool(init))
            latency = 4 if t.columns * t.rows > 16 else 3
        else:
            latency = 2
        self._ram = BlockRAM(width=width, depth=depth, granularity=8, ports=ram_ports, init=init,
                             latency=latency, sites=sites)
        self._width, self._depth = width, depth
        self._words_per_row = width // 32
        self._sel_bits = (self._words_per_row - 1).bit_length()
        addr_width = (bus_bytes(width, depth) // 4 - 1).bit_length()
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=addr_width, data_width=32)),
            "port": In(PortSignature(addr_width=self._ram.addr_width, data_width=width,
                                     lanes=width // 8, read=True, write=compute == "rw")),
        })

    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    size_bytes = property(lambda self: self._width // 8 * self._depth)
    ram = property(lambda self: self._ram)

    @property
    def latency(self) -> int:
        """Read latency of the compute ``port``: 3 cycles on weight banks (the RAM's input
        register stage, which also takes the host reads), 4 on weight banks of more than 16
        DP16KD (two stages), 2 on scratchpads (unless ``staged``)."""
        return self._ram.latency

    @property
    def read_latency(self) -> int:
        """Cycles from a host read request reaching the bank to ``ack`` (no waiting)."""
        return 2 + self._ram.latency - (self._compute == "r") + self._capture() + \
            self._select_stages()

    def _capture(self) -> int:
        """1 when the row is captured in plain registers before the word select (rows of
        more than four words: the select logic then need not sit beside the EBRs)."""
        return int(self._words_per_row > 4)

    def _select_stages(self) -> int:
        n, stages = self._words_per_row, 0
        while n > 1:
            n = -(-n // 4)
            stages += 1
        return stages

    def elaborate(self, platform):
        m = Module()
        ram = m.submodules.ram = self._ram
        bus = self.bus
        shared = self._compute == "r"
        a = ram.a
        b = ram.b
        sb = self._sel_bits
        row = bus.adr[sb:]
        word = bus.adr[:sb] if sb else None

        ack = Signal()
        err = Signal()
        dat_r = Signal(32)
        m.d.comb += [bus.ack.eq(ack), bus.err.eq(err), bus.dat_r.eq(dat_r)]
        m.d.sync += [ack.eq(0), err.eq(0)]

        # Host requests reach the RAM through registers (address, byte enables and data
        # drive the EBR pins straight from flip-flops): writes and scratchpad reads on port a,
        # weight-bank reads on port b in a cycle the compute side leaves it idle.
        busy = Signal()
        in_range = row < self._depth
        start = bus.cyc & bus.stb & ~busy & ~ack & ~err
        write = start & bus.we & in_range
        host_rd = Signal()
        # A write is first captured per group of four bus words (the group's own copy of
        # the word index, byte selects and data, and "this group is written"), then port a's
        # request registers (shared with scratchpad reads) take the byte enables, decoded
        # beside each group from its copies. No bus bit fans out across the whole row.
        groups = -(-self._words_per_row // 4)
        wreq, row1 = Signal(), Signal.like(row)
        m.d.sync += wreq.eq(write)
        with m.If(start):
            m.d.sync += row1.eq(row)
        # Rows of more than four groups (a weight bank spans the die) first take the write
        # into one copy per four groups, then into the groups' copies: no bus bit goes from
        # one flip-flop to groups across the die in one cycle (measured on the 85F: 8.8 ns of
        # routing from the bus to one group of a 32-tile weight bank). The write lands a
        # cycle later.
        n_mid = -(-groups // 4) if groups > 4 else 0
        src = []
        for j in range(max(1, n_mid)):
            if not n_mid:
                src.append((write, word if sb else 0, bus.sel, bus.dat_w))
                continue
            src.append((keep_register(m, platform, Signal(name=f"wr_m{j}"), write),
                        keep_register(m, platform, Signal(sb, name=f"word_m{j}", reset_less=True),
                                      word),
                        keep_register(m, platform, Signal(4, name=f"bsel_m{j}", reset_less=True),
                                      bus.sel),
                        keep_register(m, platform, Signal(32, name=f"dat_m{j}", reset_less=True),
                                      bus.dat_w)))
        if n_mid:
            wreq0, row0 = wreq, row1
            wreq, row1 = Signal(), Signal.like(row)
            m.d.sync += [wreq.eq(wreq0), row1.eq(row0)]
        g_wr, g_word, g_sel, g_dat = [], [], [], []
        for g in range(groups):
            s_wr, s_word, s_sel, s_dat = src[g // 4 if n_mid else 0]
            hit = s_wr & (s_word[2:] == g) if sb > 2 else s_wr
            g_wr.append(keep_register(m, platform, Signal(name=f"wr_g{g}"), hit))
            g_word.append(keep_register(m, platform, Signal(2, name=f"word_g{g}", reset_less=True),
                                        s_word[:2] if sb else 0))
            g_sel.append(keep_register(m, platform, Signal(4, name=f"bsel_g{g}", reset_less=True),
                                       s_sel))
            g_dat.append(keep_register(m, platform, Signal(32, name=f"dat_g{g}", reset_less=True),
                                       s_dat))
        a_req = wreq if shared else wreq | host_rd
        wen, wrow = Signal(), Signal.like(a.addr)
        wwe = Signal.like(a.we)
        m.d.sync += wen.eq(a_req)
        with m.If(wreq):
            m.d.sync += wrow.eq(row1)
        if not shared:
            with m.If(host_rd):
                m.d.sync += wrow.eq(row)
        for k in range(self._words_per_row):
            g = k // 4
            m.d.sync += wwe[4 * k:4 * k + 4].eq(Mux(g_wr[g] & (g_word[g] == k % 4), g_sel[g], 0))
        wcopy = [keep_register(m, platform, Signal(32, name=f"wdat_g{g}", reset_less=True),
                               g_dat[g]) for g in range(groups)]
        m.d.comb += [a.en.eq(wen), a.addr.eq(wrow), a.we.eq(wwe),
                     a.wdata.eq(Cat(wcopy[k // 4] for k in range(self._words_per_row)))]
        rport = b if shared else a
        if shared:
            # the host read takes port b in a cycle the compute side leaves it idle; the
            # RAM's input registers hold the request
            m.d.comb += [b.addr.eq(Mux(host_rd, row, self.port.addr)),
                         b.en.eq(self.port.en | host_rd),
                         self.port.rdata.eq(b.rdata)]
        else:
            wiring.connect(m, wiring.flipped(self.port), b)

        rd_wait = Signal()             # a read waits for a cycle the compute port is idle
        # (with the extra write stage, the write is acknowledged a cycle later too, so a read
        # right after it still finds it in the RAM)
        wack = Signal()
        m.d.sync += wack.eq(0)
        with m.If(wack):
            m.d.sync += [ack.eq(1), busy.eq(0)]
        with m.If(start):
            with m.If(~in_range):
                m.d.sync += err.eq(1)
            with m.Elif(bus.we):
                if n_mid:
                    m.d.sync += [wack.eq(1), busy.eq(1)]
                else:
                    m.d.sync += ack.eq(1)
            with m.Else():
                m.d.sync += [busy.eq(1), rd_wait.eq(1)]
        sel = Signal(max(1, sb))
        with m.If(start):
            m.d.sync += sel.eq(word if sb else 0)
        issue = rd_wait & (~self.port.en if shared else 1)
        m.d.comb += host_rd.eq(issue)
        with m.If(issue):
            m.d.sync += rd_wait.eq(0)

        # data returns three cycles after the issue (request register + RAM), is captured
        # (wide rows), then a registered 4:1 select per stage
        lat = self._ram.latency + (self._compute != "r") + self._capture()
        v = Signal(lat)
        m.d.sync += v.eq(Cat(issue, v[:-1]))
        words = [rport.rdata[32 * k:32 * k + 32] for k in range(self._words_per_row)]
        if self._capture():
            # free-running capture registers (no logic before them: they pack beside the
            # EBR outputs, which other logic crowds)
            cap = [Signal(32, name=f"cap_{k}", reset_less=True) for k in range(len(words))]
            m.d.sync += [c.eq(w) for c, w in zip(cap, words)]
            words = cap
        valid = v[-1]
        cur_sel = sel          # held from the request until the answer
        shift = 0
        # Each 4:1 select register has its own copy of its two select bits (``sel`` holds
        # from the request to the answer) and no enable: only the stage ``valid`` marks is
        # taken, so neither the select nor ``valid`` is a net across the whole row.
        # The copies do not load from the one select register when a stage has several
        # selects (their words come from block RAMs spread over the die): one intermediate
        # copy per select, and with more than four selects one per four before those
        # (measured on the 85F: 8.8-8.9 ns of routing from the one select register to a copy
        # across the die). ``sel`` is set at the request, at least five cycles before the
        # data reach the first stage, so the copies' extra cycles never show.
        while len(words) > 1:
            nxt = []
            n_sel = -(-len(words) // 4)
            for g in range(0, len(words), 4):
                grp = words[g:g + 4]
                w = Signal(32, name=f"sel{shift}_{g // 4}", reset_less=True)
                src = cur_sel[shift:shift + 2]
                if n_sel > 4 and g % 16 == 0:
                    top = keep_register(m, platform, Signal(2, name=f"selt{shift}_{g // 16}",
                                                            reset_less=True), src)
                if n_sel > 4:
                    src = top
                if n_sel > 1:
                    src = keep_register(m, platform, Signal(2, name=f"selm{shift}_{g // 4}",
                                                            reset_less=True), src)
                for byte in range(4):       # a select copy per byte: 16 LUT inputs each
                    own = keep_register(m, platform,
                                        Signal(2, name=f"selc{shift}_{g // 4}_{byte}",
                                               reset_less=True),
                                        src)
                    with m.Switch(own):
                        for i, x in enumerate(grp):
                            with m.Case(i):
                                m.d.sync += w[8 * byte:8 * byte + 8].eq(x[8 * byte:8 * byte + 8])
                nxt.append(w)
            words = nxt
            nv = Signal(name=f"valid{shift}")
            ns = Signal.like(sel, name=f"selp{shift}")
            m.d.sync += [nv.eq(valid), ns.eq(cur_sel)]
            valid, cur_sel = nv, ns
            shift += 2
        with m.If(valid):
            m.d.sync += [dat_r.eq(words[0]), ack.eq(1), busy.eq(0)]
        return m


def weight_bank(config: AcceleratorConfig, rows: int, init=None) -> MemoryBank:
    """A weight bank: one row-slice (``lanes * macs_per_lane`` int8) per row."""
    return MemoryBank(width=config.lanes * config.macs_per_lane * 8, depth=rows, compute="r",
                      init=init)


def activation_bank(config: AcceleratorConfig, rows: int, init=None) -> MemoryBank:
    """An activation scratchpad: ``macs_per_lane`` int8 per row (one input slice of a dot
    product), read and written by the compute side."""
    width = max(32, -(-config.macs_per_lane * 8 // 32) * 32)
    return MemoryBank(width=width, depth=rows, compute="rw", init=init)


def weight_rows(weights, lanes: int, macs_per_lane: int) -> list[int]:
    """Pack an int8 matrix ``W[out, in]`` into weight-bank rows (see the module docstring);
    each row is returned as an unsigned integer of ``lanes * macs_per_lane * 8`` bits."""
    w = np.asarray(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D matrix [out, in], not shape {w.shape}")
    if w.min(initial=0) < -128 or w.max(initial=0) > 127:
        raise ValueError("weights must be int8 values in -128..127")
    n_out, n_in = w.shape
    ob_n, ib_n = -(-n_out // lanes), -(-n_in // macs_per_lane)
    padded = np.zeros((ob_n * lanes, ib_n * macs_per_lane), dtype=np.int64)
    padded[:n_out, :n_in] = w
    rows = []
    for ob in range(ob_n):
        for ib in range(ib_n):
            blk = padded[ob * lanes:(ob + 1) * lanes, ib * macs_per_lane:(ib + 1) * macs_per_lane]
            raw = (blk.reshape(-1) & 0xFF).astype(np.uint8).tobytes()
            rows.append(int.from_bytes(raw, "little"))
    return rows


def bench_configs() -> list:
    """What ``hdlgen bench blocks`` measures: the default weight bank (16 x 8 int8 per row,
    512 rows: 64 KiB in 32 DP16KD) with its host port."""
    from hdlgen.bench.registry import BlockBench
    cfg = AcceleratorConfig()
    return [BlockBench(name="weight_bank", params={"lanes": cfg.lanes, "macs_per_lane": cfg.macs_per_lane,
                                                   "rows": 512},
                       build=lambda: weight_bank(cfg, rows=512))]
