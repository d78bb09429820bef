"""Memories of the engine that do not map well onto whole DP16KD tiles.

Both components have :class:`hdlgen.blocks.bram.BlockRAM`'s port interface (``a`` read/write,
``b`` read-only, :class:`~hdlgen.blocks.bram.PortSignature`) and its two (or, opt-in, three)
cycles of read latency, so the engine treats them as block RAMs:

* :class:`DistRAM`: distributed (LUT) RAM for small, wide memories (the program, the vector
  buffer), where a DP16KD would hold a few dozen words of its 512-2048.
* :class:`SplitRAM`: a :class:`BlockRAM` for the first ``main_depth`` words and a
  :class:`DistRAM` for the few words beyond (the weight bank of a model whose row count is just
  over a multiple of 2048: a 1024-bit row needs at least 29 DP16KD whatever the depth, so 8 rows
  past 2048 would cost as many tiles as 2048 rows).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import BlockRAM, PortSignature, check_latency, ecp5_tiling
from hdlgen.blocks.dsp import keep_register

__all__ = ["DistRAM", "SplitRAM", "WideFIFO", "split_depth"]

_GROUP = 64          # DistRAM bits per column group (own read-address register)


def _ports(width, depth, granularity):
    aw = max(1, (depth - 1).bit_length())
    lanes = width // granularity if granularity else 1
    return {"a": In(PortSignature(addr_width=aw, data_width=width, lanes=lanes)),
            "b": In(PortSignature(addr_width=aw, data_width=width, lanes=lanes, write=False))}


def _check(width, depth, granularity, init, latency=2):
    check_latency(latency)
    if width < 1 or depth < 1:
        raise ValueError(f"width={width} and depth={depth} must be at least 1")
    if granularity not in (None, 8) or (granularity and width % 8):
        raise ValueError(f"granularity={granularity!r} must be None or 8 (dividing "
                         f"width={width})")
    if init is not None and len(init) > depth:
        raise ValueError(f"init has {len(init)} words but depth={depth}")


class DistRAM(wiring.Component):
    """Distributed RAM with :class:`BlockRAM`'s ports and 2-cycle (or more) read latency.

    One write port (``a``) and **one** read port, shared: in a cycle with ``b.en`` port ``b``
    reads, otherwise port ``a`` reads when ``a.en`` (the engine never reads both at once: the
    host's port ``a`` is refused while a job runs). Both ports' ``rdata`` show the last word
    read by either port, ``latency`` cycles after its request. The read address is registered, then
    the LUT RAM is read asynchronously into the output register, which loads every cycle (no
    clock enable on the data): ``rdata`` holds while nothing new is read and that word is not
    written. A read of a word written in the same cycle returns the new word. The LUT RAM is
    built in column groups of up to 64 bits, each with its own copy of the read-address
    register (:func:`~hdlgen.blocks.dsp.keep_register`), so that no address net fans out to
    every LUT RAM of a wide word.

    Parameters
    ----------
    width, depth : int
    granularity : int or None
        ``8``: byte write enables (``we`` has ``width // 8`` bits); ``None``: one.
    init : sequence of int or None
        Initial contents.
    latency : int
        ``2`` (default), ``3`` or ``4``: every request (both ports, writes too) first passes
        ``latency - 2`` register stages, as :class:`BlockRAM`'s.
    """

    def __init__(self, *, width: int, depth: int, granularity: int | None = None, init=None,
                 latency: int = 2):
        _check(width, depth, granularity, init, latency)
        self._width, self._depth, self._gran = width, depth, granularity
        self._init = [int(v) for v in (init or [])]
        self._latency = latency
        super().__init__(_ports(width, depth, granularity))

    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    latency = property(lambda self: self._latency)

    def elaborate(self, platform):
        m = Module()
        init = self._init + [0] * (self._depth - len(self._init))
        gran = self._gran or self._width
        a_addr, a_en, a_we, a_wdata = self.a.addr, self.a.en, self.a.we, self.a.wdata
        b_addr, b_en = self.b.addr, self.b.en
        for n in range(self._latency - 2):      # the request register stages
            w_addr, w_en, w_data = a_addr, Mux(a_en, a_we, 0), a_wdata   # (its inputs)
            regs = [Signal.like(x, name=f"{k}_r{n}") for k, x in
                    (("a_addr", a_addr), ("a_en", a_en), ("a_we", a_we), ("a_wdata", a_wdata),
                     ("b_addr", b_addr), ("b_en", b_en))]
            m.d.sync += [r.eq(x) for r, x in zip(regs, (a_addr, a_en, a_we, a_wdata, b_addr,
                                                          b_en))]
            a_addr, a_en, a_we, a_wdata, b_addr, b_en = regs
        # one memory per column group of (at most) _GROUP bits, each with its own copy of the
        # read-address register: no address net fans out to every LUT RAM of a wide word
        rdata = Signal(self._width)
        gw = max(gran, _GROUP - _GROUP % gran)
        for g, lo in enumerate(range(0, self._width, gw)):
            w = min(gw, self._width - lo)
            mask = (1 << w) - 1
            mem = m.submodules[f"mem{g}"] = Memory(shape=w, depth=self._depth,
                                                   init=[(v >> lo) & mask for v in init])
            wp = mem.write_port(granularity=min(gran, w))
            ne = w // min(gran, w)
            if self._latency > 2:
                # the last request stage of the write side: one copy per column group (write
                # address, byte enables, data), so that no write-enable or write-address net
                # crosses the die to every LUT RAM of a wide word (the weight bank's tail: a
                # single enable register there was the SoC's critical path, 15-20 ns of routing)
                ga = keep_register(m, platform, Signal.like(self.a.addr, name=f"waddr{g}",
                                                               reset_less=True),
                                   w_addr)
                ge = keep_register(m, platform, Signal(ne, name=f"wen{g}"),
                                   w_en[lo // gran:lo // gran + ne])
                gd = Signal(w, name=f"wdata{g}", reset_less=True)
                m.d.sync += gd.eq(w_data[lo:lo + w])
                m.d.comb += [wp.addr.eq(ga), wp.data.eq(gd), wp.en.eq(ge)]
            else:
                m.d.comb += [wp.addr.eq(a_addr), wp.data.eq(a_wdata[lo:lo + w])]
                for i in range(ne):
                    m.d.comb += wp.en[i].eq(a_en & a_we[lo // gran + i])
            rp = mem.read_port(domain="comb")
            raddr = keep_register(m, platform, Signal.like(self.a.addr, name=f"raddr{g}"),
                                  Mux(b_en, b_addr, a_addr), en=b_en | a_en)
            m.d.comb += rp.addr.eq(raddr)
            m.d.sync += rdata[lo:lo + w].eq(rp.data)
        m.d.comb += [self.a.rdata.eq(rdata), self.b.rdata.eq(rdata)]
        return m


def split_depth(width: int, depth: int, granularity: int | None = 8, *, max_tail: int = 32):
    """Words of a ``width`` x ``depth`` memory best kept in block RAM, the rest in LUT RAM:
    the largest power of two below ``depth`` when the tail beyond it has at most ``max_tail``
    words and the cut saves DP16KD tiles, else ``depth`` itself (no split)."""
    main = 1 << ((depth - 1).bit_length() - 1) if depth > 1 else depth
    if main >= depth or depth - main > max_tail:
        return depth
    full = ecp5_tiling(width, depth, granularity=granularity).primitives
    cut = ecp5_tiling(width, main, granularity=granularity).primitives
    return main if cut < full else depth


class SplitRAM(wiring.Component):
    """Words ``0 .. main_depth - 1`` in a :class:`BlockRAM`, the rest in a :class:`DistRAM`;
    :class:`BlockRAM`'s ports (``a`` read/write, ``b`` read-only) and timing.

    ``main_depth`` must be a power of two (the high address bit(s) select the part);
    ``sites`` places the block RAM's tiles (:class:`BlockRAM`). The tail's
    single read port follows :class:`DistRAM`: ``b`` wins over ``a`` in a cycle with both
    enabled. ``latency`` (2, 3 or 4) is both parts' (:class:`BlockRAM`); the part select of
    a wide ``rdata`` is copied per 64 bits; ``wdata_per_group`` is the block RAM's.
    """

    def __init__(self, *, width: int, depth: int, main_depth: int,
                 granularity: int | None = None, init=None, latency: int = 2, sites=None,
                 wdata_per_group: bool = False):
        _check(width, depth, granularity, init, latency)
        self._latency = latency
        self._sites = sites
        self._wdata_per_group = wdata_per_group
        if not (0 < main_depth < depth and main_depth & (main_depth - 1) == 0):
            raise ValueError(f"main_depth={main_depth} must be a power of two below "
                             f"depth={depth}")
        self._width, self._depth, self._main, self._gran = width, depth, main_depth, granularity
        self._init = [int(v) for v in (init or [])]
        super().__init__(_ports(width, depth, granularity))

    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    latency = property(lambda self: self._latency)

    def elaborate(self, platform):
        m = Module()
        md = self._main
        mb = (md - 1).bit_length()
        m.submodules.main = main = BlockRAM(width=self._width, depth=md,
                                            granularity=self._gran, ports=("rw", "r"),
                                            init=self._init[:md] or None,
                                            latency=self._latency, sites=self._sites,
                                            wdata_per_group=self._wdata_per_group)
        m.submodules.tail = tail = DistRAM(width=self._width, depth=self._depth - md,
                                           granularity=self._gran,
                                           init=self._init[md:] or None,
                                           latency=self._latency)
        for name in "ab":
            port, pm, pt = getattr(self, name), getattr(main, name), getattr(tail, name)
            hi = port.addr[mb:].any()
            # the block RAM's enable is the port's (a wide clock enable stays free of the
            # address decode; reading it for a tail address is harmless), writes are steered
            m.d.comb += [pm.addr.eq(port.addr[:mb]), pt.addr.eq(port.addr[:mb]),
                         pm.en.eq(port.en), pt.en.eq(port.en & hi)]
            if name == "a":
                m.d.comb += [pm.we.eq(Mux(hi, 0, port.we)), pt.we.eq(Mux(hi, port.we, 0)),
                             pm.wdata.eq(port.wdata), pt.wdata.eq(port.wdata)]
            # the tail flag travels beside the request (set when it is issued), its last stage
            # one copy per 64 bits of rdata
            sel = Signal(name=f"{name}_tail1")
            with m.If(port.en):
                m.d.sync += sel.eq(hi)
            for n in range(2, self._latency):
                nxt = Signal(name=f"{name}_tail{n}")
                m.d.sync += nxt.eq(sel)
                sel = nxt
            w = self._width
            for j in range(0, w, 64):
                c = keep_register(m, platform, Signal(name=f"{name}_tail_c{j // 64}"), sel)
                m.d.comb += port.rdata[j:j + 64].eq(Mux(c, pt.rdata[j:j + 64],
                                                        pm.rdata[j:j + 64]))
        return m


class WideFIFO(wiring.Component):
    """First-word-fall-through FIFO for a wide word whose writer never overruns it (it counts
    credits), built so that no control net spans the whole word.

    The storage is LUT RAM in column groups of up to 64 bits; each group has its own write and
    read pointers (:func:`~hdlgen.blocks.dsp.keep_register` copies) and its own write enable,
    ``w_en[g]``, which the writer supplies as one registered copy per group. ``r_en`` (with
    ``r_rdy``) advances every group's read pointer; ``r_rdy`` comes from the level register.

    Parameters
    ----------
    width : int
    depth : int
        Entries, a power of two (at least 2).

    Attributes
    ----------
    w_en : In(groups)
        Write this cycle, one copy per column group (all equal; the FIFO must not be full).
    w_data : In(width)
    r_en : In(1)
    r_rdy : Out(1)
    r_data : Out(width)
    level : Out(range(depth + 1))
    """

    def __init__(self, *, width: int, depth: int):
        if width < 1 or depth < 2 or depth & (depth - 1):
            raise ValueError(f"WideFIFO(width={width}, depth={depth}): width must be at least "
                             f"1 and depth a power of two >= 2")
        self._width, self._depth = width, depth
        self._groups = [(lo, min(_GROUP, width - lo)) for lo in range(0, width, _GROUP)]
        super().__init__({"w_en": In(len(self._groups)), "w_data": In(width), "r_en": In(1),
                          "r_rdy": Out(1), "r_data": Out(width),
                          "level": Out(range(depth + 1))})

    @property
    def groups(self) -> int:
        """Column groups (the width of ``w_en``)."""
        return len(self._groups)

    def elaborate(self, platform):
        m = Module()
        pw = (self._depth - 1).bit_length()
        r_fire = Signal()
        m.d.comb += [self.r_rdy.eq(self.level != 0), r_fire.eq(self.r_en & self.r_rdy)]
        m.d.sync += self.level.eq(self.level + self.w_en[0] - r_fire)
        for g, (lo, w) in enumerate(self._groups):
            mem = m.submodules[f"mem{g}"] = Memory(shape=w, depth=self._depth, init=[])
            wp = Signal(pw, name=f"wp{g}")
            rp = Signal(pw, name=f"rp{g}")
            keep_register(m, platform, wp, wp + 1, en=self.w_en[g])
            keep_register(m, platform, rp, rp + 1, en=r_fire)
            wport = mem.write_port()
            rport = mem.read_port(domain="comb")
            m.d.comb += [wport.addr.eq(wp), wport.data.eq(self.w_data[lo:lo + w]),
                         wport.en.eq(self.w_en[g]), rport.addr.eq(rp),
                         self.r_data[lo:lo + w].eq(rport.data)]
        return m
