"""Stream parts of the engine: a credit-based element reader for the 2-cycle block RAMs.

:class:`ElementReader` turns a (base, rows, row length, row stride) region of a block RAM into
a stream, one element per cycle while the consumer is ready. The RAM answers two cycles after
an address is presented (:mod:`hdlgen.blocks.bram`) and cannot stall, so the reader issues an
address only while it holds a *credit*: the items issued but not yet taken by the consumer
never exceed the depth of the small FIFO that catches the RAM's answers. ``o.ready`` therefore
never reaches the RAM; the FIFO is the only place an item waits.

An optional *auxiliary* read goes to a second RAM in the same cycle, at ``aux_base + (i >>
aux_shift)`` for element ``i`` of the sequence (``aux_shift`` > 0: the RAM holds
``2**aux_shift`` elements per word, e.g. the engine's vector buffer; the low bits of ``i`` come
out as ``sub``), so two operands arrive in lockstep.

While ``limited`` is high the reader issues no element of row ``limit`` or later (rows counted
from 0 in the current sequence): the producer of the rows raises ``limit`` as it completes
them. The comparisons are registered; the one for the row after the current one is ready
when a row ends (after ``start``, row 0 passes whenever the stale row's compare did).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["ElementReader"]


class ElementReader(wiring.Component):
    """Streams ``rows`` rows of ``row_len`` elements, ``stride`` apart, from ``base``.

    Parameters
    ----------
    addr_width, width : int
        Address and data width of the main RAM port.
    aux_addr_width, aux_width : int
        The auxiliary RAM port (0: none).
    aux_shift : int
        Elements per auxiliary word, log2.
    len_width : int
        Width of ``row_len``, ``rows`` and ``stride``.
    depth : int
        Credits (FIFO entries); 5 keeps one element per cycle with the 2-cycle RAM.

    Attributes
    ----------
    start : In(1)
        One-cycle pulse: latch ``base``, ``rows``, ``row_len``, ``stride``, ``aux_base`` and
        begin. ``rows`` and ``row_len`` must be at least 1.
    busy : Out(1)
        Addresses still to issue.
    idle : Out(1)
        Registered: nothing to issue and every issued element taken from ``o`` (none in the
        RAM's latency or the FIFO).
    addr, en : Out
        Main RAM port request; ``rdata`` In, two cycles later.
    aux_addr, aux_en, aux_rdata : auxiliary RAM port.
    o : Out(stream.Signature({data, aux, sub, row_end, last}))
    limited : In(1)
        Issue only rows below ``limit`` (``limit`` may only grow while ``limited``).
    limit : In(len_width)
        Rows that may be read (counted from 0), while ``limited``.
    """

    def __init__(self, *, addr_width: int, width: int, aux_addr_width: int = 0,
                 aux_width: int = 0, aux_shift: int = 0, len_width: int = 16, depth: int = 5):
        self._aw, self._w = addr_width, width
        self._xaw, self._xw, self._xs = max(1, aux_addr_width), max(1, aux_width), aux_shift
        self._lw, self._depth = len_width, depth
        self.o_layout = data.StructLayout({"data": width, "aux": self._xw,
                                           "sub": max(1, aux_shift), "row_end": 1, "last": 1})
        super().__init__({
            "start": In(1), "base": In(addr_width), "rows": In(len_width),
            "row_len": In(len_width), "stride": In(len_width), "aux_base": In(self._xaw),
            "limited": In(1), "limit": In(len_width),
            "busy": Out(1), "idle": Out(1, init=1),
            "addr": Out(addr_width), "en": Out(1), "rdata": In(width),
            "aux_addr": Out(self._xaw), "aux_en": Out(1), "aux_rdata": In(self._xw),
            "o": Out(stream.Signature(self.o_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        lw = self._lw
        cur = Signal(self._aw)
        rowb = Signal(self._aw)
        col = Signal(lw)
        row = Signal(lw)
        idx = Signal(lw + 8)
        row_lm1 = Signal(lw)          # row_len - 1 and rows - 1, registered at start
        rows_m1 = Signal(lw)
        stride = Signal(lw)
        aux_base = Signal(self._xaw)
        active = Signal()
        outstanding = Signal(range(self._depth + 1))
        issue = Signal()
        row_end = Signal()
        last = Signal()
        # the row limit, registered: row < limit and row + 1 < limit (the next row's, used
        # the cycle after a row ends)
        ok0, ok1, wrapped, gate = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [ok0.eq(row < self.limit), ok1.eq(row + 1 < self.limit)]
        m.d.comb += gate.eq(~self.limited | Mux(wrapped, ok1, ok0))
        m.d.comb += [
            self.busy.eq(active),
            issue.eq(active & (outstanding < self._depth) & gate),
            row_end.eq(col == row_lm1),
            last.eq(row_end & (row == rows_m1)),
            self.addr.eq(cur), self.en.eq(issue),
            self.aux_addr.eq(aux_base + (idx >> self._xs)), self.aux_en.eq(issue),
        ]
        with m.If(self.start):
            m.d.sync += [cur.eq(self.base), rowb.eq(self.base), col.eq(0), row.eq(0), idx.eq(0),
                         row_lm1.eq(self.row_len - 1), rows_m1.eq(self.rows - 1),
                         stride.eq(self.stride),
                         aux_base.eq(self.aux_base), active.eq(1)]
        with m.Elif(issue):
            m.d.sync += idx.eq(idx + 1)
            with m.If(row_end):
                m.d.sync += [col.eq(0), row.eq(row + 1), rowb.eq(rowb + stride),
                             cur.eq(rowb + stride)]
                with m.If(last):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += [col.eq(col + 1), cur.eq(cur + 1)]

        # two cycles of RAM latency: the control bits travel beside the request
        v1, v2 = Signal(), Signal()
        e1, e2, l1, l2 = Signal(), Signal(), Signal(), Signal()
        s1 = Signal(max(1, self._xs))
        s2 = Signal(max(1, self._xs))
        m.d.sync += [v1.eq(issue), v2.eq(v1), e1.eq(row_end), e2.eq(e1), l1.eq(last), l2.eq(l1),
                     s1.eq(idx), s2.eq(s1), wrapped.eq(issue & row_end)]
        m.submodules.fifo = fifo = SyncFIFO(width=self.o_layout.size, depth=self._depth)
        item = Signal(self.o_layout)
        m.d.comb += [
            item.data.eq(self.rdata), item.aux.eq(self.aux_rdata), item.sub.eq(s2),
            item.row_end.eq(e2), item.last.eq(l2),
            fifo.w_en.eq(v2), fifo.w_data.eq(item.as_value()),
            self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data), fifo.r_en.eq(self.o.ready),
        ]
        taken = Signal()
        m.d.comb += taken.eq(self.o.valid & self.o.ready)
        m.d.sync += [outstanding.eq(outstanding + issue - taken),
                     self.idle.eq(~self.start & ~(active & ~(issue & last)) &
                                  (outstanding + issue - taken == 0))]
        return m
