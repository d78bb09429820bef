"""Wishbone B4 (classic cycles, with ``err``): bus signature, address decoder, arbiter.

The project's own small bus layer (amaranth-soc is not installable here). Its shape mirrors
amaranth-soc: ``adr`` is a *word* address (one word = ``data_width`` bits), while the address
windows given to :meth:`Decoder.add` are *byte* addresses (units of ``granularity`` = 8 bits),
which is what the register map, the C header and the host API use.

A subordinate (register bank, memory) takes ``In(wishbone.Signature(...))``; the initiator
(host bridge, DMA) takes ``Out(wishbone.Signature(...))``. A classic cycle: the initiator
raises ``cyc`` and ``stb`` with ``adr``/``we``/``sel``/``dat_w`` and holds them until the
subordinate answers with ``ack`` (``dat_r`` valid on reads) or ``err`` for one cycle.

Example::

    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from hdlgen.soc import wishbone

    class Regs(wiring.Component):
        bus: In(wishbone.Signature(addr_width=4))        # 16 words = 64 bytes
        ...

    # in the parent's elaborate():
    dec = m.submodules.decoder = wishbone.Decoder(addr_width=30)
    dec.add(regs.bus, addr=0x0000_0000, name="csr")        # bytes 0x00..0x3f
    dec.add(ram.bus,  addr=0x0001_0000, name="scratch")    # bytes 0x10000..
    wiring.connect(m, bridge.bus, dec.bus)                 # initiator -> decoder
    # the decoder connects itself to every subordinate added (no wiring.connect needed)

An access to a byte address outside every window ends with ``err``. The decoder registers
the request, the window hits and the response (four extra cycles per access) so that neither
the address decode nor the response mux sits on a combinational path between initiator and
subordinate, and no clock enable is decoded from the request.
"""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.dsp import keep_register
from hdlgen.errors import UserError

__all__ = ["Signature", "Decoder", "Arbiter", "Buffer"]


class Signature(wiring.Signature):
    """Wishbone B4 classic bus, seen from the initiator (``Out`` members are driven by it).

    Parameters
    ----------
    addr_width : int
        Width of the word address ``adr`` (the bus spans ``2**addr_width`` words).
    data_width : int
        Word width in bits: 8, 16, 32 or 64 (default 32).
    granularity : int
        Smallest addressable unit in bits (default 8: ``sel`` has one bit per byte).

    Members
    -------
    adr, dat_w, sel, cyc, stb, we : Out
        Request, driven by the initiator.
    dat_r, ack, err : In
        Response, driven by the subordinate.
    """

    def __init__(self, *, addr_width: int, data_width: int = 32, granularity: int = 8):
        if not isinstance(addr_width, int) or addr_width < 0:
            raise TypeError(f"addr_width must be a non-negative integer, not {addr_width!r}")
        if data_width not in (8, 16, 32, 64):
            raise ValueError(f"data_width must be one of 8, 16, 32, 64, not {data_width!r}")
        if granularity not in (8, 16, 32, 64) or granularity > data_width:
            raise ValueError(f"granularity must be one of 8, 16, 32, 64 and at most "
                             f"data_width={data_width}, not {granularity!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        self._granularity = granularity
        super().__init__({
            "adr": Out(addr_width),
            "dat_w": Out(data_width),
            "dat_r": In(data_width),
            "sel": Out(data_width // granularity),
            "cyc": Out(1),
            "stb": Out(1),
            "we": Out(1),
            "ack": In(1),
            "err": In(1),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    @property
    def data_width(self) -> int:
        return self._data_width

    @property
    def granularity(self) -> int:
        return self._granularity

    @property
    def word_bytes(self) -> int:
        """Bytes per bus word."""
        return self._data_width // 8

    @property
    def size_bytes(self) -> int:
        """Bytes spanned by the whole address space of this bus."""
        return (1 << self._addr_width) * self.word_bytes

    def __eq__(self, other):
        other = other.flip() if isinstance(other, wiring.FlippedSignature) else other
        return (type(other) is Signature and
                (self.addr_width, self.data_width, self.granularity) ==
                (other.addr_width, other.data_width, other.granularity))

    def __hash__(self):
        return hash((Signature, self.addr_width, self.data_width, self.granularity))

    def __repr__(self):
        return (f"wishbone.Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"granularity={self.granularity})")


def _bus_signature(bus) -> Signature:
    sig = bus.signature
    sig = sig.flip() if isinstance(sig, wiring.FlippedSignature) else sig
    if not isinstance(sig, Signature):
        raise TypeError(f"expected a Wishbone bus (hdlgen.soc.wishbone.Signature), not {sig!r}")
    return sig


class Decoder(wiring.Component):
    """One initiator, many subordinates at byte-address windows; unmapped addresses -> ``err``.

    Request, window hits and response are registered: a read or write takes four cycles more
    than the subordinate itself needs. The initiator must hold its request until ``ack``/``err``
    (classic cycles); one access is in flight at a time.

    Parameters
    ----------
    addr_width : int
        Word-address width of the initiator side.
    data_width, granularity : int
        As for :class:`Signature`; every subordinate must match them.

    Attributes
    ----------
    bus : In(Signature)
        Connect the initiator here.
    windows : list of (name, base_byte_addr, size_bytes)
        What has been added, in order.
    """

    def __init__(self, *, addr_width: int, data_width: int = 32, granularity: int = 8):
        self._MustUse__silence = True         # not "unused" if the arguments are rejected
        self._sig = Signature(addr_width=addr_width, data_width=data_width, granularity=granularity)
        self._subs = []  # (name, base_byte, size_bytes, bus)
        self._MustUse__silence = False
        super().__init__({"bus": In(self._sig)})

    @property
    def windows(self):
        return [(name, base, size) for name, base, size, _ in self._subs]

    def add(self, sub_bus, *, addr: int, name: str):
        """Map ``sub_bus`` (a subordinate's ``In(wishbone.Signature)`` port, or an interface
        with that signature's flip) at byte address ``addr``.

        The window spans ``2**sub.addr_width`` words; ``addr`` must be a multiple of the
        window size and the window must fit in the decoder's space and overlap no other.
        """
        sig = _bus_signature(sub_bus)
        if (sig.data_width, sig.granularity) != (self._sig.data_width, self._sig.granularity):
            raise UserError(f"subordinate {name!r} has data_width={sig.data_width}, "
                            f"granularity={sig.granularity}; the decoder has "
                            f"data_width={self._sig.data_width}, granularity={self._sig.granularity}")
        size = sig.size_bytes
        if not isinstance(addr, int) or addr < 0 or addr % size:
            raise UserError(f"subordinate {name!r} at addr={addr!r}: the base must be a "
                            f"non-negative multiple of its window size {size:#x} bytes")
        if addr + size > self._sig.size_bytes:
            raise UserError(f"subordinate {name!r} at {addr:#x}..{addr + size - 1:#x} does not fit "
                            f"in the decoder's {self._sig.size_bytes:#x}-byte space; raise "
                            f"the decoder's addr_width ({self._sig.addr_width})")
        for other, base, osize, _ in self._subs:
            if other == name:
                raise UserError(f"subordinate name {name!r} is used twice")
            if addr < base + osize and base < addr + size:
                raise UserError(f"subordinate {name!r} at {addr:#x}..{addr + size - 1:#x} overlaps "
                                f"{other!r} at {base:#x}..{base + osize - 1:#x}")
        self._subs.append((name, addr, size, sub_bus))
        return sub_bus

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        dw = self._sig.data_width
        n = len(self._subs)

        # Registered copies of the request, one per subordinate (each can sit beside its
        # subordinate: measured on the 85F, one shared copy drove a memory 46 tiles away
        # through 8 ns of routing), loaded every cycle (no clock enable: the initiator holds
        # its request until the answer, so a copy is stable while its subordinate sees it),
        # and the window hits, compared every cycle from the initiator's address.
        hit = Signal(n, name="hit")                # registered compare, one bit per window

        busy = Signal()        # from the request's first cycle until the answer
        req = Signal()         # the cycle after the first: ``hit`` is valid
        sub_stb = Signal(n, name="sub_stb")        # one-hot, registered
        got_ack = Signal(n)    # registered answer of each subordinate
        got_err = Signal(n)
        resp_ack = Signal()
        resp_err = Signal()
        resp_dat = Signal(dw)
        m.d.comb += [bus.ack.eq(resp_ack), bus.err.eq(resp_err), bus.dat_r.eq(resp_dat)]

        word_bytes = self._sig.word_bytes
        gated = []
        for i, (name, base, size, sub) in enumerate(self._subs):
            sub_aw = _bus_signature(sub).addr_width
            top = bus.adr[sub_aw:]
            m.d.sync += hit[i].eq(top == (base // word_bytes) >> sub_aw if len(top) else 1)
            adr = keep_register(m, platform, Signal(sub_aw, name=f"adr_{name}", reset_less=True),
                                bus.adr[:sub_aw])
            dat_w = keep_register(m, platform, Signal(dw, name=f"dat_w_{name}", reset_less=True),
                                  bus.dat_w)
            sel = keep_register(m, platform, Signal(len(bus.sel), name=f"sel_{name}",
                                                    reset_less=True), bus.sel)
            we = keep_register(m, platform, Signal(name=f"we_{name}", reset_less=True), bus.we)
            m.d.comb += [
                sub.adr.eq(adr),
                sub.dat_w.eq(dat_w),
                sub.sel.eq(sel),
                sub.we.eq(we),
                sub.cyc.eq(sub_stb[i]),
                sub.stb.eq(sub_stb[i]),
            ]
            # Each answer is captured next to its subordinate, its data already gated by its
            # own ack (so the response mux below is a plain OR of flip-flops).
            answer = sub_stb[i] & (sub.ack | sub.err)
            data_i = Signal(dw, name=f"dat_r_{name}")
            m.d.sync += [got_ack[i].eq(sub_stb[i] & sub.ack),
                         got_err[i].eq(sub_stb[i] & ~sub.ack & sub.err),
                         data_i.eq(sub.dat_r & (sub_stb[i] & sub.ack).replicate(dw))]
            with m.If(answer):
                m.d.sync += sub_stb[i].eq(0)
            gated.append(data_i)

        resp = Const(0, dw)
        for data_i in gated:
            resp = resp | data_i
        m.d.sync += [resp_ack.eq(got_ack.any()), resp_err.eq(got_err.any()), resp_dat.eq(resp),
                     req.eq(0)]

        with m.If(bus.cyc & bus.stb & ~busy):
            m.d.sync += [busy.eq(1), req.eq(1)]
        with m.If(req):
            m.d.sync += sub_stb.eq(hit)
            with m.If(~hit.any()):
                m.d.sync += resp_err.eq(1)
        with m.If(resp_ack | resp_err):
            m.d.sync += busy.eq(0)
        with m.If(~bus.cyc):  # the initiator abandoned the cycle (or is idle)
            m.d.sync += [busy.eq(0), req.eq(0), sub_stb.eq(0), got_ack.eq(0), got_err.eq(0),
                         resp_ack.eq(0), resp_err.eq(0)]
        return m


class Arbiter(wiring.Component):
    """Several initiators share one subordinate bus; round-robin grant, held while ``cyc``.

    The grant changes only between cycles (when the holder drops ``cyc``), so a burst of
    classic cycles under one ``cyc`` is never interleaved with another initiator's.

    Parameters
    ----------
    n : int
        Number of initiators; their ports are ``initiators[0..n-1]`` (``In(Signature)``).
    addr_width, data_width, granularity : int
        As for :class:`Signature`, shared by all ports.

    Attributes
    ----------
    bus : Out(Signature)
        Connect to the subordinate (or a :class:`Decoder`).
    """

    def __init__(self, n: int, *, addr_width: int, data_width: int = 32, granularity: int = 8):
        if not isinstance(n, int) or n < 1:
            self._MustUse__silence = True     # rejected: not an unused elaboratable
            raise TypeError(f"n must be a positive integer, not {n!r}")
        sig = Signature(addr_width=addr_width, data_width=data_width, granularity=granularity)
        self._n = n
        super().__init__({"initiators": In(sig).array(n), "bus": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        n = self._n
        grant = Signal(range(n))
        for i, ini in enumerate(self.initiators):
            with m.If(grant == i):
                m.d.comb += [
                    self.bus.adr.eq(ini.adr), self.bus.dat_w.eq(ini.dat_w), self.bus.sel.eq(ini.sel),
                    self.bus.we.eq(ini.we), self.bus.cyc.eq(ini.cyc), self.bus.stb.eq(ini.stb),
                    ini.ack.eq(self.bus.ack), ini.err.eq(self.bus.err),
                ]
            m.d.comb += ini.dat_r.eq(self.bus.dat_r)
        if n > 1:
            cyc = Signal(n)
            for i, ini in enumerate(self.initiators):
                m.d.comb += cyc[i].eq(ini.cyc)
            holder_cyc = cyc.bit_select(grant, 1)
            with m.If(~holder_cyc):
                # Round-robin: first requester after the current holder.
                with m.Switch(grant):
                    for g in range(n):
                        with m.Case(g):
                            for k in reversed(range(1, n + 1)):
                                j = (g + k) % n
                                with m.If(cyc[j]):
                                    m.d.sync += grant.eq(j)
        return m


class Buffer(wiring.Component):
    """A register slice between an initiator and a subordinate: every signal crossing it,
    both ways, comes from a flip-flop.

    Two cycles more per access (one for the request, one for the answer). Put it where an
    initiator and its subordinates sit far apart on the die: the long route is then from
    flip-flop to flip-flop, and neither side's logic is pulled towards the other (measured
    on the 85F, seed 5: without it the host bridge's next-state logic was split between the
    UART's corner and the bus, one LUT 50 columns from the others).

    The request is registered when the buffer takes it; the subordinate's answer (``ack``
    or ``err``, with ``dat_r``) is registered and ends the subordinate's cycle at once. The
    initiator's ``cyc`` dropping abandons the access on both sides.

    Parameters
    ----------
    addr_width, data_width, granularity : int
        As for :class:`Signature`, the same on both sides.

    Attributes
    ----------
    initiator : In(Signature)
        Connect the initiator (or an :class:`Arbiter`'s ``bus``) here.
    bus : Out(Signature)
        Connect to the subordinate (or a :class:`Decoder`).
    """

    def __init__(self, *, addr_width: int, data_width: int = 32, granularity: int = 8):
        sig = Signature(addr_width=addr_width, data_width=data_width, granularity=granularity)
        super().__init__({"initiator": In(sig), "bus": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        up, down = self.initiator, self.bus
        busy = Signal()        # from taking a request until the cycle its answer is seen
        ack, err = Signal(), Signal()
        dat_r = Signal.like(up.dat_r)
        m.d.comb += [up.ack.eq(ack), up.err.eq(err), up.dat_r.eq(dat_r)]
        m.d.sync += [ack.eq(0), err.eq(0)]
        with m.If(~busy):      # the request registers hold still while the access runs
            m.d.sync += [down.adr.eq(up.adr), down.dat_w.eq(up.dat_w), down.sel.eq(up.sel),
                         down.we.eq(up.we)]
            with m.If(up.cyc & up.stb):
                m.d.sync += [busy.eq(1), down.cyc.eq(1), down.stb.eq(1)]
        with m.If(down.cyc & (down.ack | down.err)):
            m.d.sync += [down.cyc.eq(0), down.stb.eq(0), ack.eq(down.ack),
                         err.eq(~down.ack & down.err), dat_r.eq(down.dat_r)]
        with m.If(ack | err):  # the initiator sees the answer now; its next request follows
            m.d.sync += busy.eq(0)
        with m.If(~up.cyc):    # abandoned (or idle)
            m.d.sync += [busy.eq(0), down.cyc.eq(0), down.stb.eq(0), ack.eq(0), err.eq(0)]
        return m
