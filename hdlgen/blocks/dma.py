"""Descriptor-driven DMA: strided word copies between memories, one word per cycle.

:class:`DMA` takes descriptors on a stream, checks them, then streams read requests out of
``rd_cmd``, takes the returned words on ``rd_data`` (in order) and streams them with their
destination addresses out of ``wr``. Each descriptor ends with one ``status`` beat.

Descriptor (``desc``, :data:`DESC_LAYOUT`): ``src`` and ``dst`` byte addresses (multiples
of 4), ``length`` in 32-bit words, ``src_stride`` and ``dst_stride`` in words (word ``k`` is
read from ``src + 4*k*src_stride`` and written to ``dst + 4*k*dst_stride``; stride 0 repeats
one address).

Status (``status``, :data:`STATUS_LAYOUT`): ``code`` (:class:`DMAError`) and ``count``, the
words written. Checked before anything moves: ``LENGTH_ZERO``; ``MISALIGNED`` (``src`` or
``dst`` not a multiple of 4); ``BAD_SRC`` / ``BAD_DST`` (the first and last address of the
copy do not lie in one readable / writable region of ``regions``). A word returned with
``err`` set (``READ_ERROR``) is not written; the copy continues and reports the error.

Memory side (all ``amaranth.lib.stream``; connect them to memories with
:class:`BankReadPort` / :class:`BankWritePort` for a BlockRAM-style port, or to a bus):

``rd_cmd``  Out ``{addr}``: byte address to read.
``rd_data`` In ``{data, err}``: the words, in request order, one per request.
``wr``      Out ``{addr, data}``: byte address and word to write.

Within one descriptor, reads run ahead of writes: overlapping source and destination ranges
give an undefined result. Descriptors run one after another (the status beat of one comes
after its last write left the DMA, and before the next descriptor's first read).

Steady state: one word per cycle when the memories keep up (the check costs one cycle per
bit of ``length - 1``, plus four, at the start of each descriptor: a shift-and-add for the last
address, which keeps the DSP blocks for the MAC array). ``busy`` is high while a descriptor
is in flight (for the profiling counters).

Example::

    dma = DMA(regions=[Region("scratch", 0x1_0000, 0x1_0000, "rw"),
                       Region("weights", 0x10_0000, 0x2_0000, "w")])
"""


from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import PortSignature
from hdlgen.blocks.stream_parts import SkidBuffer

__all__ = ["Region", "DMAError", "DESC_LAYOUT", "STATUS_LAYOUT", "DMA", "BankReadPort",
           "BankWritePort", "dma_registers", "DMAControl", "WishboneDMAPort"]


@dataclass(frozen=True)
class Region:
    """An address range the DMA may touch: ``base`` and ``size`` in bytes, ``access`` one of
    ``"r"``, ``"w"``, ``"rw"``."""
    name: str
    base: int
    size: int
    access: str = "rw"

    def __post_init__(self):
        if self.access not in ("r", "w", "rw"):
            raise ValueError(f"region {self.name}: access={self.access!r} must be 'r', 'w' or 'rw'")
        if self.base % 4 or self.size % 4 or self.size <= 0 or self.base < 0:
            raise ValueError(f"region {self.name}: base={self.base:#x}, size={self.size:#x} must "
                             f"be non-negative multiples of 4 (size > 0)")
        if self.base + self.size > 1 << 32:
            raise ValueError(f"region {self.name} ends past the 32-bit address space")


class DMAError(enum.Enum, shape=3):
    OK = 0
    LENGTH_ZERO = 1
    MISALIGNED = 2
    BAD_SRC = 3
    BAD_DST = 4
    READ_ERROR = 5


LENGTH_BITS = 16
STRIDE_BITS = 16

DESC_LAYOUT = data.StructLayout({
    "src": 32, "dst": 32, "length": LENGTH_BITS, "src_stride": STRIDE_BITS, "dst_stride": STRIDE_BITS,
})
STATUS_LAYOUT = data.StructLayout({"code": DMAError, "count": LENGTH_BITS})
RD_CMD_LAYOUT = data.StructLayout({"addr": 32})
RD_DATA_LAYOUT = data.StructLayout({"data": 32, "err": 1})
WR_LAYOUT = data.StructLayout({"addr": 32, "data": 32})


class DMA(wiring.Component):
    """The DMA engine (see the module docstring).

    Parameters
    ----------
    regions : list of Region
        Where the DMA may read (``"r"``/``"rw"``) and write (``"w"``/``"rw"``).
    """

    desc: In(stream.Signature(DESC_LAYOUT))
    status: Out(stream.Signature(STATUS_LAYOUT))
    rd_cmd: Out(stream.Signature(RD_CMD_LAYOUT))
    rd_data: In(stream.Signature(RD_DATA_LAYOUT))
    wr: Out(stream.Signature(WR_LAYOUT))
    busy: Out(1)

    def __init__(self, regions):
        regions = list(regions)
        if not regions:
            self._MustUse__silence = True
            raise ValueError("the DMA needs at least one region it may access")
        self._regions = regions
        super().__init__()

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    def elaborate(self, platform):
        m = Module()
        d = Signal(DESC_LAYOUT)
        code = Signal(DMAError)
        count = Signal(LENGTH_BITS)

        # shift-and-add: last offsets (length - 1) * stride, in words
        mplier = Signal(LENGTH_BITS)
        s_mcand = Signal(32 + 1)
        d_mcand = Signal(32 + 1)
        s_off = Signal(34)
        d_off = Signal(34)

        s_last = Signal(36)
        d_last = Signal(36)
        src_in = Signal(len(self._regions))
        dst_in = Signal(len(self._regions))
        to_issue = Signal(LENGTH_BITS)       # down-counters: "last" is an equality with 1
        to_receive = Signal(LENGTH_BITS)
        rd_ptr = Signal(32)
        wr_ptr = Signal(32)
        rd_step = Signal(32)
        wr_step = Signal(32)

        wr_skid = m.submodules.wr_skid = SkidBuffer(WR_LAYOUT)
        wiring.connect(m, wr_skid.o, wiring.flipped(self.wr))
        rd_skid = m.submodules.rd_skid = SkidBuffer(RD_CMD_LAYOUT)
        wiring.connect(m, rd_skid.o, wiring.flipped(self.rd_cmd))
        all_issued = Signal()

        m.d.comb += self.status.payload.code.eq(code)
        m.d.comb += self.status.payload.count.eq(count)

        # One-hot state flags: every clock enable is one flag AND one handshake, no state
        # decode on the paths to the wide pointer registers.
        st = {n: Signal(name=f"st_{n}", init=(n == "idle"))
              for n in ("idle", "mul", "check", "cmp", "decide", "run", "drain", "status")}

        def goto(cur, nxt):
            m.d.sync += [st[cur].eq(0), st[nxt].eq(1)]

        # IDLE: take a descriptor; length and alignment are checked at once
        m.d.comb += self.desc.ready.eq(st["idle"])
        with m.If(st["idle"] & self.desc.valid):
            p = self.desc.payload
            m.d.sync += [d.eq(p), code.eq(DMAError.OK), count.eq(0), all_issued.eq(0),
                         to_issue.eq(p.length), to_receive.eq(p.length),
                         mplier.eq(p.length - 1), s_mcand.eq(p.src_stride),
                         d_mcand.eq(p.dst_stride), s_off.eq(0), d_off.eq(0),
                         rd_ptr.eq(p.src), wr_ptr.eq(p.dst),
                         rd_step.eq(p.src_stride << 2), wr_step.eq(p.dst_stride << 2)]
            with m.If(p.length == 0):
                m.d.sync += code.eq(DMAError.LENGTH_ZERO)
                goto("idle", "status")
            with m.Elif(p.src[:2].any() | p.dst[:2].any()):
                m.d.sync += code.eq(DMAError.MISALIGNED)
                goto("idle", "status")
            with m.Else():
                goto("idle", "mul")
        # MULTIPLY: shift-and-add (length - 1) * stride
        with m.If(st["mul"]):
            with m.If(mplier == 0):
                goto("mul", "check")
            with m.Else():
                with m.If(mplier[0]):
                    m.d.sync += [s_off.eq(s_off + s_mcand), d_off.eq(d_off + d_mcand)]
                m.d.sync += [mplier.eq(mplier >> 1), s_mcand.eq(s_mcand << 1),
                             d_mcand.eq(d_mcand << 1)]
        # CHECK: last addresses (registered), COMPARE: one comparison per region
        with m.If(st["check"]):
            m.d.sync += [s_last.eq(d.src + (s_off << 2)), d_last.eq(d.dst + (d_off << 2))]
            goto("check", "cmp")
        with m.If(st["cmp"]):
            for i, r in enumerate(self._regions):
                lo, hi = r.base, r.base + r.size
                m.d.sync += [
                    src_in[i].eq(("r" in r.access) & (d.src >= lo) & (s_last < hi)),
                    dst_in[i].eq(("w" in r.access) & (d.dst >= lo) & (d_last < hi)),
                ]
            goto("cmp", "decide")
        with m.If(st["decide"]):
            with m.If(~src_in.any()):
                m.d.sync += code.eq(DMAError.BAD_SRC)
                goto("decide", "status")
            with m.Elif(~dst_in.any()):
                m.d.sync += code.eq(DMAError.BAD_DST)
                goto("decide", "status")
            with m.Else():
                goto("decide", "run")
        # RUN: read requests (through a skid buffer: valid and ready from flip-flops) ...
        m.d.comb += [rd_skid.i.valid.eq(st["run"] & ~all_issued), rd_skid.i.payload.addr.eq(rd_ptr)]
        with m.If(rd_skid.i.valid & rd_skid.i.ready):
            m.d.sync += [to_issue.eq(to_issue - 1), rd_ptr.eq(rd_ptr + rd_step)]
            with m.If(to_issue == 1):
                m.d.sync += all_issued.eq(1)
        # ... and returned words become writes
        m.d.comb += [wr_skid.i.payload.addr.eq(wr_ptr),
                     wr_skid.i.payload.data.eq(self.rd_data.payload.data),
                     wr_skid.i.valid.eq(st["run"] & self.rd_data.valid & ~self.rd_data.payload.err),
                     self.rd_data.ready.eq(st["run"] & wr_skid.i.ready)]
        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += [wr_ptr.eq(wr_ptr + wr_step), to_receive.eq(to_receive - 1)]
            with m.If(self.rd_data.payload.err):
                m.d.sync += code.eq(DMAError.READ_ERROR)
            with m.Else():
                m.d.sync += count.eq(count + 1)
            with m.If(to_receive == 1):
                goto("run", "drain")
        # DRAIN: the last writes leave the skid buffer before the status is reported
        with m.If(st["drain"] & ~wr_skid.o.valid):
            goto("drain", "status")
        m.d.comb += self.status.valid.eq(st["status"])
        with m.If(st["status"] & self.status.ready):
            goto("status", "idle")
        m.d.comb += self.busy.eq(~st["idle"])
        return m


class BankReadPort(wiring.Component):
    """Serves ``rd_cmd``/``rd_data`` streams from a RAM port with a fixed read latency
    (a :class:`~hdlgen.blocks.bram.BlockRAM` port: 2 cycles), one word per cycle, under
    back-pressure (credits for a small FIFO, so no request is issued without room for its
    answer).

    Parameters
    ----------
    base : int
        Byte address of word 0 of the RAM in the DMA's address space.
    addr_width : int
        Word-address width of the RAM port.
    latency : int
        Read latency of the RAM port in cycles.
    """

    def __init__(self, *, base: int, addr_width: int, latency: int = 2):
        self._base, self._aw, self._lat = base, addr_width, latency
        self._depth = latency + 2
        super().__init__({
            "rd_cmd": In(stream.Signature(RD_CMD_LAYOUT)),
            "rd_data": Out(stream.Signature(RD_DATA_LAYOUT)),
            "port": Out(PortSignature(addr_width=addr_width, data_width=32, read=True, write=False)),
        })

    def elaborate(self, platform):
        m = Module()
        q = m.submodules.q = fifo.SyncFIFO(width=32, depth=self._depth)
        credits = Signal(range(self._depth + 1), init=self._depth)
        issue = Signal()
        take = Signal()
        m.d.comb += [issue.eq(self.rd_cmd.valid & (credits != 0)), self.rd_cmd.ready.eq(credits != 0),
                     self.port.addr.eq((self.rd_cmd.payload.addr - self._base) >> 2),
                     self.port.en.eq(issue)]
        valid = Signal(self._lat)
        m.d.sync += valid.eq((valid << 1) | issue)
        m.d.comb += [q.w_en.eq(valid[-1]), q.w_data.eq(self.port.rdata),
                     self.rd_data.valid.eq(q.r_rdy), self.rd_data.payload.data.eq(q.r_data),
                     q.r_en.eq(self.rd_data.ready), take.eq(q.r_rdy & self.rd_data.ready)]
        m.d.sync += credits.eq(credits - issue + take)
        return m


class BankWritePort(wiring.Component):
    """Writes a ``wr`` stream into a RAM port (one word per cycle, always ready).

    Parameters
    ----------
    base : int
        Byte address of word 0 of the RAM in the DMA's address space.
    addr_width : int
        Word-address width of the RAM port.
    """

    def __init__(self, *, base: int, addr_width: int):
        self._base, self._aw = base, addr_width
        super().__init__({
            "wr": In(stream.Signature(WR_LAYOUT)),
            "port": Out(PortSignature(addr_width=addr_width, data_width=32, lanes=4, read=False,
                                      write=True)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.wr.ready.eq(1)
        m.d.sync += [self.port.en.eq(self.wr.valid), self.port.we.eq(0b1111),
                     self.port.addr.eq((self.wr.payload.addr - self._base) >> 2),
                     self.port.wdata.eq(self.wr.payload.data)]
        return m


def dma_registers() -> list:
    """Registers of :class:`DMAControl` (byte offsets in its bank), the single definition the
    register map documents."""
    from hdlgen.soc.csr import Access, Field, Register
    return [
        Register("DMA_SRC", 0x00, [Field("ADDR", 32, Access.RW, desc="Source byte address (multiple of 4).")],
                 "DMA source address."),
        Register("DMA_DST", 0x04, [Field("ADDR", 32, Access.RW, desc="Destination byte address (multiple of 4).")],
                 "DMA destination address."),
        Register("DMA_LEN", 0x08, [Field("WORDS", LENGTH_BITS, Access.RW, desc="Words to copy (0 is refused).")],
                 "DMA length."),
        Register("DMA_STRIDE", 0x0C, [
            Field("SRC", STRIDE_BITS, Access.RW, reset=1, desc="Source stride in words."),
            Field("DST", STRIDE_BITS, Access.RW, reset=1, desc="Destination stride in words."),
        ], "DMA strides."),
        Register("DMA_CTRL", 0x10, [Field("GO", 1, Access.WO, desc="Write 1 to start the copy described above.")],
                 "DMA command."),
        Register("DMA_STATUS", 0x14, [
            Field("BUSY", 1, Access.RO, desc="A copy is queued or running."),
            Field("DONE", 1, Access.W1C, desc="A copy finished (with or without error); write 1 to clear."),
            Field("ERROR", 1, Access.W1C, desc="The last copy failed; write 1 to clear."),
            Field("CODE", 3, Access.RO, offset=8, desc="DMAError of the last copy: 0 ok, 1 length 0, "
                                                       "2 misaligned, 3 bad source, 4 bad destination, "
                                                       "5 read error."),
            Field("COUNT", LENGTH_BITS, Access.RO, offset=16, desc="Words written by the last copy."),
        ], "DMA status."),
    ]


class DMAControl(wiring.Component):
    """A :class:`DMA` programmed through registers (:func:`dma_registers`), for the host.

    The host writes ``DMA_SRC``, ``DMA_DST``, ``DMA_LEN``, ``DMA_STRIDE``, then ``DMA_CTRL.GO``;
    ``DMA_STATUS`` reports ``BUSY``, then ``DONE`` (and ``ERROR`` with ``CODE``) and ``COUNT``.
    A ``GO`` while busy is ignored.

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width=3))
        The register bank (32 bytes).
    rd_cmd, rd_data, wr : as :class:`DMA`
    busy : Out(1)
    """

    def __init__(self, regions):
        from hdlgen.soc import wishbone
        self._dma = DMA(regions)
        self._regs = dma_registers()
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=3, data_width=32)),
            "rd_cmd": Out(stream.Signature(RD_CMD_LAYOUT)),
            "rd_data": In(stream.Signature(RD_DATA_LAYOUT)),
            "wr": Out(stream.Signature(WR_LAYOUT)),
            "busy": Out(1),
        })

    @property
    def registers(self):
        return list(self._regs)

    def elaborate(self, platform):
        from hdlgen.soc.csr import CSRBank
        m = Module()
        dma = m.submodules.dma = self._dma
        bank = m.submodules.bank = CSRBank(self._regs, addr_width=3)
        wiring.connect(m, wiring.flipped(self.bus), bank.bus)
        wiring.connect(m, dma.rd_cmd, wiring.flipped(self.rd_cmd))
        wiring.connect(m, wiring.flipped(self.rd_data), dma.rd_data)
        wiring.connect(m, dma.wr, wiring.flipped(self.wr))
        r = bank.regs
        pending = Signal()
        go = r.dma_ctrl.go.stb & r.dma_ctrl.go.data[0]
        with m.If(go & ~pending):
            m.d.sync += pending.eq(1)
        m.d.comb += [
            dma.desc.valid.eq(pending),
            dma.desc.payload.src.eq(r.dma_src.addr.data),
            dma.desc.payload.dst.eq(r.dma_dst.addr.data),
            dma.desc.payload.length.eq(r.dma_len.words.data),
            dma.desc.payload.src_stride.eq(r.dma_stride.src.data),
            dma.desc.payload.dst_stride.eq(r.dma_stride.dst.data),
        ]
        with m.If(dma.desc.valid & dma.desc.ready):
            m.d.sync += pending.eq(0)
        in_flight = Signal()
        with m.If(dma.desc.valid & dma.desc.ready):
            m.d.sync += in_flight.eq(1)
        code = Signal(3)
        count = Signal(LENGTH_BITS)
        m.d.comb += dma.status.ready.eq(1)
        with m.If(dma.status.valid):
            m.d.sync += [in_flight.eq(0), code.eq(dma.status.payload.code),
                         count.eq(dma.status.payload.count)]
            m.d.comb += [r.dma_status.done.set.eq(1),
                         r.dma_status.error.set.eq(dma.status.payload.code != DMAError.OK)]
        busy = pending | in_flight
        m.d.comb += [r.dma_status.busy.data.eq(busy), r.dma_status.code.data.eq(code),
                     r.dma_status.count.data.eq(count), self.busy.eq(busy)]
        return m


class WishboneDMAPort(wiring.Component):
    """Serves the DMA's ``rd_cmd``/``rd_data``/``wr`` streams with Wishbone classic cycles, so
    the DMA reaches anything on the bus (one access at a time: a few cycles per word, for
    main memory and bus-attached memories; on-chip banks reach one word per cycle through
    :class:`BankReadPort`/:class:`BankWritePort`). Pending writes go first; a read that ends
    with ``err`` returns a word with ``err`` set. A write that ends with ``err`` sets the
    sticky ``wr_error``.

    Attributes
    ----------
    bus : Out(wishbone.Signature(addr_width=30, data_width=32))
    """

    def __init__(self, *, addr_width: int = 30):
        from hdlgen.soc import wishbone
        self._aw = addr_width
        super().__init__({
            "rd_cmd": In(stream.Signature(RD_CMD_LAYOUT)),
            "rd_data": Out(stream.Signature(RD_DATA_LAYOUT)),
            "wr": In(stream.Signature(WR_LAYOUT)),
            "bus": Out(wishbone.Signature(addr_width=addr_width, data_width=32)),
            "wr_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.d.comb += bus.sel.eq(0b1111)
        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += self.rd_data.valid.eq(0)
        with m.FSM(name="wbdma"):
            with m.State("IDLE"):
                with m.If(self.wr.valid):
                    m.d.sync += [bus.adr.eq(self.wr.payload.addr[2:]), bus.dat_w.eq(self.wr.payload.data),
                                 bus.we.eq(1), bus.cyc.eq(1), bus.stb.eq(1)]
                    m.d.comb += self.wr.ready.eq(1)
                    m.next = "WAIT"
                with m.Elif(self.rd_cmd.valid & ~self.rd_data.valid):
                    m.d.sync += [bus.adr.eq(self.rd_cmd.payload.addr[2:]), bus.we.eq(0),
                                 bus.cyc.eq(1), bus.stb.eq(1)]
                    m.d.comb += self.rd_cmd.ready.eq(1)
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(bus.ack | bus.err):
                    m.d.sync += [bus.cyc.eq(0), bus.stb.eq(0)]
                    with m.If(~bus.we):
                        m.d.sync += [self.rd_data.valid.eq(1), self.rd_data.payload.data.eq(bus.dat_r),
                                     self.rd_data.payload.err.eq(bus.err)]
                    with m.Elif(bus.err):
                        m.d.sync += self.wr_error.eq(1)
                    m.next = "IDLE"
        return m
