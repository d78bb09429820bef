"""Host bridge: request frames in, Wishbone accesses, reply frames out.

The frame format, opcodes, statuses and CRC are those of :mod:`hdlgen.soc.protocol`. The
bridge reads one byte per cycle at most from ``i``, and writes replies to ``o``; put it
behind a UART (and a FIFO: the UART has no flow control) or drive the byte streams directly
in simulation::

    m.submodules.bridge = bridge = Bridge(timeout_cycles=sys_clk_hz // 50)
    wiring.connect(m, rx_fifo.r_stream, bridge.i)
    wiring.connect(m, bridge.o, uart_tx.i)
    wiring.connect(m, bridge.bus, decoder.bus)

Robustness rules (what the tests check):

* nothing of a frame is executed before its CRC has been checked: a WRITE's payload goes to a
  burst buffer (one block RAM) and the bus writes start only after the last CRC byte;
* a frame with a wrong CRC gets a ``CRC_ERROR`` reply (opcode and seq echoed as received);
  nothing is executed;
* bytes outside a frame are skipped until the next ``A5 5A``; a WRITE whose count is 0 or
  above ``max_burst`` cannot be delimited and is dropped silently;
* a frame is dropped when no byte arrives for ``timeout_cycles`` in the middle of it: with a
  ``TRUNCATED`` reply (opcode and seq as received) once its header is complete, silently
  before;
* a WRITE byte-identical to the last executed WRITE (same seq and CRC: a host retry after a
  lost reply) is not executed again; the cached status is replied. Any other verified frame
  clears this cache;
* every access is bounded: a subordinate silent for ``bus_timeout_cycles`` ends the burst with
  ``TIMEOUT``; ``err`` ends it with ``BUS_ERROR``; the reply's count says how many words were
  transferred.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import BlockRAM, READ_LATENCY
from hdlgen.blocks.stream_parts import SkidBuffer
from hdlgen.soc import wishbone
from hdlgen.soc.protocol import (BRIDGE_MAGIC, MAX_BURST, PROTOCOL_VERSION, SYNC, Opcode,
                                 Status, crc32_matrix)

__all__ = ["Bridge", "crc32_next", "BridgeEvents"]


def crc32_next(crc, byte):
    """Gateware: CRC-32 register after one more byte (XOR network derived from
    :func:`hdlgen.soc.protocol.crc32_update_bits`)."""
    bits = []
    for crc_bits, byte_bits in crc32_matrix():
        x = Const(0, 1)
        for i in crc_bits:
            x = x ^ crc[i]
        for j in byte_bits:
            x = x ^ byte[j]
        bits.append(x)
    return Cat(*bits)


#: One-cycle event pulses, for LEDs and counters.
BridgeEvents = data.StructLayout({
    "frame_ok": 1,       # a frame passed its CRC check
    "crc_error": 1,      # a frame failed its CRC check
    "dropped": 1,        # a partial frame timed out, or a WRITE had an impossible count
    "duplicate": 1,      # a retried WRITE was answered from the cache
    "bus_error": 1,      # a burst ended with BUS_ERROR or TIMEOUT
})

_Header = data.StructLayout({"op": 8, "seq": 8, "count": 16, "addr": 32})
_RxByte = data.StructLayout({"byte": 8, "sync0": 1, "sync1": 1})
_STATES = ("HUNT", "SYNC1", "HEADER", "DECIDE", "PAYLOAD", "CRC", "TRUNC", "CHECK", "CHECK2", "CHECK3",
           "DECODE", "W_FETCH", "W_WAIT", "W_ISSUE", "W_BUS", "R_BUS", "R_WAIT", "REPLY",
           "T_HDR", "T_SEND", "T_FETCH", "T_WAIT", "T_WAIT2", "T_LOAD", "T_PAD", "T_CRC",
           "T_END")
# Groups of states with a flip-flop of their own (kept by ``goto``): the receiving states
# (the input is read), and the states that load the reply shift register.
_RX_STATES = frozenset({"HUNT", "SYNC1", "HEADER", "PAYLOAD", "CRC"})
_LOAD_STATES = frozenset({"T_HDR", "T_LOAD", "T_CRC"})


class Bridge(wiring.Component):
    """Byte-stream <-> Wishbone initiator bridge (see the module docstring).

    Parameters
    ----------
    timeout_cycles : int
        Inter-byte timeout inside a frame, in clock cycles (e.g. ``sys_clk_hz // 50`` for
        20 ms on a board; a few thousand in simulation).
    bus_timeout_cycles : int
        Cycles a bus access may wait for ``ack``/``err`` before the burst ends with TIMEOUT.
    max_burst : int
        Longest burst in words (at most :data:`~hdlgen.soc.protocol.MAX_BURST`); sets the burst
        buffer's depth.
    addr_width : int
        Word-address width of the Wishbone initiator (the protocol's 32-bit byte address
        ``>> 2``, truncated).

    Attributes
    ----------
    i : In(stream.Signature(8))
        Request bytes (through a register slice: ``i.ready`` is a flip-flop).
    o : Out(stream.Signature(8))
        Reply bytes (through a register slice: ``valid``/``payload`` are flip-flops and
        ``o.ready`` only reaches a flip-flop).
    bus : Out(wishbone.Signature(addr_width))
    events : Out(BridgeEvents)
    """

    def __init__(self, *, timeout_cycles: int, bus_timeout_cycles: int = 1024,
                 max_burst: int = MAX_BURST, addr_width: int = 30):
        self._MustUse__silence = True     # not "unused" if the arguments are rejected
        for name, v in [("timeout_cycles", timeout_cycles), ("bus_timeout_cycles", bus_timeout_cycles)]:
            if not isinstance(v, int) or v < 16:
                raise ValueError(f"{name} must be an integer >= 16 cycles, not {v!r}")
        if not isinstance(max_burst, int) or not 1 <= max_burst <= MAX_BURST:
            raise ValueError(f"max_burst must be an integer in 1..{MAX_BURST}, not {max_burst!r}")
        if not isinstance(addr_width, int) or not 1 <= addr_width <= 30:
            raise ValueError(f"addr_width must be an integer in 1..30, not {addr_width!r}")
        self._MustUse__silence = False
        self._timeout = timeout_cycles
        self._bus_timeout = bus_timeout_cycles
        self._max_burst = max_burst
        self._addr_width = addr_width
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "bus": Out(wishbone.Signature(addr_width=addr_width)),
            "events": Out(BridgeEvents),
        })

    max_burst = property(lambda self: self._max_burst)
    timeout_cycles = property(lambda self: self._timeout)

    def elaborate(self, platform):
        m = Module()
        max_burst = self._max_burst
        bus = self.bus

        # One-hot state machine: one flip-flop per state, so a state test is a flip-flop
        # output (no state decode in front of the next-state logic or the clock enables).
        # ``goto`` is used only inside a condition that includes its source state.
        st = {n: Signal(name=f"st_{n.lower()}", init=(n == "HUNT")) for n in _STATES}
        rx_on = Signal(init=1)           # in one of _RX_STATES
        loading = Signal()               # in one of _LOAD_STATES
        groups = [(rx_on, _RX_STATES), (loading, _LOAD_STATES)]

        def goto(src, dst):
            m.d.sync += [st[src].eq(0), st[dst].eq(1)]
            for flag, members in groups:
                if (src in members) != (dst in members):
                    m.d.sync += flag.eq(dst in members)

        # Input register slices; the two sync-byte comparisons are made in front of them, so
        # the frame parser sees them as flip-flops. Two slices: the first sits by the byte
        # source (the UART's FIFO), the second by the parser, whose CRC and header logic
        # (four LUTs) then starts from a flip-flop next to it (on the 85F, seed 3, with one
        # slice the parser's input came over 4.4 ns of routing).
        m.submodules.in_reg = in_reg = SkidBuffer(_RxByte)
        m.submodules.in_reg2 = in_reg2 = SkidBuffer(_RxByte)
        m.d.comb += [in_reg.i.valid.eq(self.i.valid), self.i.ready.eq(in_reg.i.ready),
                     in_reg.i.payload.byte.eq(self.i.payload),
                     in_reg.i.payload.sync0.eq(self.i.payload == SYNC[0]),
                     in_reg.i.payload.sync1.eq(self.i.payload == SYNC[1])]
        wiring.connect(m, in_reg.o, in_reg2.i)
        rx = in_reg2.o
        byte = rx.payload.byte

        m.submodules.buf = buf = BlockRAM(width=32, depth=max_burst, ports=("w", "r"))
        wr, rd = buf.a, buf.b
        assert buf.latency == READ_LATENCY == 2

        # ---- receive side
        timed_out = Signal()      # one-cycle pulse: no byte for timeout_cycles inside a frame
        # (only ever high inside a frame, so HUNT need not look at it)
        in_frame = rx_on & ~st["HUNT"]
        m.d.comb += rx.ready.eq(rx_on & ~timed_out)
        # A byte is taken when valid in a receiving state and not timed out. The datapath
        # below ignores ``timed_out`` (two inputs less in front of its clock enables): in the
        # timed-out cycle the byte is not taken and the frame is abandoned, so whatever the
        # datapath made of it is never used. State changes do test ``timed_out`` first.
        tk_sync1 = rx.valid & st["SYNC1"]
        tk_hdr = rx.valid & st["HEADER"]
        tk_pay = rx.valid & st["PAYLOAD"]
        tk_crc = rx.valid & st["CRC"]

        # Inter-byte timeout: the counter starts at 2**k - timeout + 1 and its top bit (a
        # flip-flop) says that ``timeout_cycles`` idle cycles have passed (no comparator).
        k = self._timeout.bit_length()
        idle = Signal(k + 1)
        idle_start = (1 << k) - self._timeout + 1
        idle_run = in_frame & ~(rx.valid & ~timed_out)
        m.d.sync += [idle.eq(Mux(idle_run, idle + 1, idle_start)),
                     timed_out.eq(idle_run & ~timed_out & idle[k])]

        hdr = Signal(_Header)
        hpos = Signal(8)                 # one-hot: header byte being received
        rx_crc = Signal(32)
        got_crc = Signal(32)
        word = Signal(24)                # payload bytes 0..2 of the current word
        bpos = Signal(4)                 # one-hot: byte within the current payload word / CRC
        pw = Signal(range(max_burst))    # payload word index (buffer write address)
        nb = max_burst.bit_length() + 1
        prem = Signal(signed(nb))        # payload words left after this one, minus one
        cnt_m2 = Signal(signed(nb))      # hdr.count - 2 (negative: one word)

        # Header bytes are stored in place (one-hot byte enables), so the fields are final
        # as soon as their bytes have arrived; these decodes run every cycle and are read
        # from DECIDE on (count and opcode are complete before the last header byte).
        f = Signal(data.StructLayout({"write": 1, "read": 1, "ping": 1, "count_ok": 1,
                                      "aligned": 1, "drop": 1}))
        count_ok = (hdr.count != 0) & (hdr.count <= max_burst)
        m.d.sync += [
            f.drop.eq((hdr.op == Opcode.WRITE) & ~count_ok),
            f.write.eq(hdr.op == Opcode.WRITE), f.read.eq(hdr.op == Opcode.READ),
            f.ping.eq(hdr.op == Opcode.PING),
            f.count_ok.eq(count_ok),
            f.aligned.eq(hdr.addr[:2] == 0),
            cnt_m2.eq(hdr.count - 2),
        ]
        hdr_bytes = hdr.as_value()
        with m.If(tk_hdr):
            m.d.sync += hpos.eq(hpos.rotate_left(1))
        for i in range(8):
            with m.If(tk_hdr & hpos[i]):
                m.d.sync += hdr_bytes[8 * i:8 * i + 8].eq(byte)

        with m.If(st["SYNC1"]):
            m.d.sync += [rx_crc.eq(0xFFFFFFFF), hpos.eq(1)]
        with m.Elif(tk_hdr | tk_pay):
            m.d.sync += rx_crc.eq(crc32_next(rx_crc, byte))
        with m.If(tk_pay):
            m.d.sync += word.eq(Cat(word[8:], byte))
        with m.If(tk_crc):
            m.d.sync += got_crc.eq(Cat(got_crc[8:], byte))
        with m.If(st["DECIDE"]):
            m.d.sync += [bpos.eq(1), pw.eq(0), prem.eq(cnt_m2)]
        with m.Elif(tk_pay | tk_crc):
            m.d.sync += bpos.eq(bpos.rotate_left(1))
        word_done = tk_pay & bpos[3]
        with m.If(word_done):
            m.d.sync += [pw.eq(pw + 1), prem.eq(prem - 1)]

        # ---- execution / reply state
        status = Signal(Status)
        done = Signal(16)                # words transferred (reply count)
        widx = Signal(range(max_burst + 1))   # buffer index of the bus access / reply word
        brem = Signal(signed(nb))        # bus words left after this one, minus one
        reading = Signal()               # a READ runs: the buffer is written from the bus
        x_write = Signal()               # a WRITE is executing: cache its result at REPLY
        last_valid = Signal()            # dedup cache of the last executed WRITE
        last_crc = Signal(32)
        last_status = Signal(Status)
        last_done = Signal(16)

        # Buffer writes are registered: port a is driven from flip-flops, and address and
        # data are loaded every cycle (no clock enable): from the payload while receiving,
        # from the bus while a READ runs. A write uses the values loaded with ``wr_en``.
        wr_en = Signal()
        wr_addr = Signal.like(wr.addr)
        wr_data = Signal(32)
        m.d.comb += [wr.en.eq(wr_en), wr.we.eq(wr_en), wr.addr.eq(wr_addr), wr.wdata.eq(wr_data)]
        m.d.sync += [wr_en.eq(word_done | (bus.cyc & ~bus.we & bus.ack)),
                     wr_addr.eq(Mux(reading, widx, pw)),
                     wr_data.eq(Mux(reading, bus.dat_r, Cat(word, byte)))]
        # Buffer reads (WRITE execution and READ replies) from the buffer index.
        m.d.comb += [rd.addr.eq(widx), rd.en.eq(st["W_FETCH"] | st["T_FETCH"])]

        # Frame checks, in three registered steps that run every cycle: ``e`` compares byte by
        # byte (valid in CHECK2, the CRC bytes being complete in CHECK), ``c`` combines the
        # bytes (valid in CHECK3), ``d`` decides (valid in DECODE).
        e = Signal(data.StructLayout({"crc_eq": 4, "same_eq": 4}))
        for i in range(4):
            b = slice(8 * i, 8 * i + 8)
            m.d.sync += [e.crc_eq[i].eq(got_crc[b] == ~rx_crc[b]),
                         e.same_eq[i].eq(last_crc[b] == got_crc[b])]
        c = Signal(data.StructLayout({"crc_ok": 1, "same_crc": 1}))
        m.d.sync += [c.crc_ok.eq(e.crc_eq.all()), c.same_crc.eq(e.same_eq.all())]
        d = Signal(data.StructLayout({"crc_error": 1, "dup": 1, "verified": 1, "write": 1,
                                      "read": 1, "status": Status, "done": 16}))
        dup = c.crc_ok & f.write & last_valid & c.same_crc
        verified = c.crc_ok & ~dup
        # What the header alone decides (its fields are final from DECIDE on, long before
        # CHECK3), registered every cycle: ``d`` then only picks between it, a CRC error and
        # a duplicate (on the 85F, seed 2, the whole priority chain after ``c`` took four
        # LUTs behind a 4.1 ns route).
        legal = Signal()
        hdr_status = Signal(Status)
        m.d.sync += legal.eq(f.count_ok & f.aligned & (f.read | f.write))
        with m.If(f.ping):
            m.d.sync += hdr_status.eq(Status.OK)
        with m.Elif(~(f.read | f.write)):
            m.d.sync += hdr_status.eq(Status.BAD_OPCODE)
        with m.Elif(~f.count_ok):
            m.d.sync += hdr_status.eq(Status.BAD_LENGTH)
        with m.Elif(~f.aligned):
            m.d.sync += hdr_status.eq(Status.BAD_ALIGN)
        with m.Else():
            m.d.sync += hdr_status.eq(Status.OK)
        m.d.sync += [
            d.crc_error.eq(~c.crc_ok), d.dup.eq(dup), d.verified.eq(verified),
            d.write.eq(verified & legal & f.write), d.read.eq(verified & legal & f.read),
            d.done.eq(Mux(dup, last_done, Mux(c.crc_ok & f.ping, 2, 0))),
        ]
        with m.If(~c.crc_ok):
            m.d.sync += d.status.eq(Status.CRC_ERROR)
        with m.Elif(dup):
            m.d.sync += d.status.eq(last_status)
        with m.Else():
            m.d.sync += d.status.eq(hdr_status)

        # Bus timeout: the same top-bit counter as the inter-byte timeout, restarted when
        # an access is issued; its top bit is ``bus_timeout_cycles`` cycles into the access.
        kb = self._bus_timeout.bit_length()
        bwait = Signal(kb + 1)
        issue = st["W_ISSUE"] | st["R_BUS"]
        m.d.sync += bwait.eq(Mux(issue, (1 << kb) - self._bus_timeout, bwait + 1))
        bus_timed_out = bwait[kb]
        m.d.comb += bus.sel.eq(0xF)
        # The write data comes straight from the buffer's output register: it holds the
        # word fetched for the access in progress.
        m.d.sync += bus.dat_w.eq(rd.rdata)

        m.d.sync += self.events.eq(0)

        # ---- reply: an output shift register loaded with the header, each data word and
        # the CRC in turn; one state sends whatever it holds.
        m.submodules.out_reg = out_reg = SkidBuffer(8)
        wiring.connect(m, out_reg.o, wiring.flipped(self.o))
        tx_out = out_reg.i
        with m.If(tx_out.ready):
            m.d.sync += tx_out.valid.eq(0)
        send = st["T_SEND"] & (~tx_out.valid | tx_out.ready)
        # The shift register's clock enable is ``send | loading``: three flip-flops and one
        # more input, one LUT.
        txsh = Signal(56)                # bytes to send, LSB first
        txk = Signal(7)                  # one-hot: bytes left in the segment (bit 0: last)
        txc = Signal(7)                  # per byte still to send: include it in the CRC
        seg_hdr = Signal()
        seg_crc = Signal()
        first = Signal()                 # the next data word is the first (PING's magic)
        trem = Signal(signed(17))        # reply words left after the one loaded, minus one
        has_data = Signal()
        more = Signal()                  # after this segment, fetch another data word
        rword = Signal(32)
        tx_crc = Signal(32)
        crc_en = Signal()
        m.d.sync += [
            has_data.eq((f.read | f.ping) & (done != 0)),
            more.eq(Mux(seg_hdr, has_data, ~trem[-1])),
            rword.eq(Mux(f.ping, Mux(first, BRIDGE_MAGIC, (PROTOCOL_VERSION << 16) | max_burst),
                         rd.rdata)),
            crc_en.eq(0),
        ]
        # The reply CRC is updated one cycle after a byte is loaded, from the output register.
        with m.If(st["REPLY"]):
            m.d.sync += tx_crc.eq(0xFFFFFFFF)
        with m.Elif(crc_en):
            m.d.sync += tx_crc.eq(crc32_next(tx_crc, tx_out.payload))
        with m.If(send):
            m.d.sync += [tx_out.valid.eq(1), tx_out.payload.eq(txsh[:8]), crc_en.eq(txc[0])]
        # The next value is chosen by ``loading`` (a flip-flop), not by ``send``, which only
        # enables the registers.
        tx_next = Signal(56 + 7 + 7)
        with m.If(st["T_HDR"]):
            m.d.comb += tx_next.eq(Cat(Cat(Const(SYNC[0], 8), Const(SYNC[1], 8), hdr.op, hdr.seq,
                                           status, done), Const(1 << 6, 7), Const(0b1111100, 7)))
        with m.Elif(st["T_LOAD"]):
            m.d.comb += tx_next.eq(Cat(rword, Const(0, 24), Const(1 << 3, 7), Const(0b1111, 7)))
        with m.Elif(loading):        # T_CRC
            m.d.comb += tx_next.eq(Cat(~tx_crc, Const(0, 24), Const(1 << 3, 7), Const(0, 7)))
        with m.Else():
            m.d.comb += tx_next.eq(Cat(txsh >> 8, txk >> 1, txc >> 1))
        with m.If(send | loading):
            m.d.sync += Cat(txsh, txk, txc).eq(tx_next)

        # ``cyc`` is high exactly in W_BUS and R_WAIT: the bus-side updates are conditioned on
        # it (a flip-flop) rather than on the two states.
        acked = bus.cyc & bus.ack
        failed = bus.cyc & ~bus.ack & (bus.err | bus_timed_out)
        # (counters without a clock enable: + 0 or + 1; DECODE, TRUNC and REPLY below
        # override them)
        m.d.sync += [widx.eq(widx + (acked | st["T_LOAD"])), done.eq(done + acked)]
        with m.If(acked):
            m.d.sync += [bus.adr.eq(bus.adr + 1), brem.eq(brem - 1), bus.cyc.eq(0), bus.stb.eq(0)]
        with m.If(failed):
            m.d.sync += [status.eq(Mux(bus.err, Status.BUS_ERROR, Status.TIMEOUT)),
                         self.events.bus_error.eq(1), bus.cyc.eq(0), bus.stb.eq(0)]
        # ---- state machine
        with m.If(st["HUNT"] & rx.valid & rx.payload.sync0):
            goto("HUNT", "SYNC1")

        with m.If(st["SYNC1"] & timed_out):
            goto("SYNC1", "HUNT")
        with m.Elif(tk_sync1 & rx.payload.sync1):
            goto("SYNC1", "HEADER")
        with m.Elif(tk_sync1 & ~rx.payload.sync0):
            goto("SYNC1", "HUNT")

        with m.If(st["HEADER"] & timed_out):
            m.d.sync += self.events.dropped.eq(1)
            goto("HEADER", "HUNT")
        with m.Elif(tk_hdr & hpos[7]):
            goto("HEADER", "DECIDE")

        with m.If(st["DECIDE"]):
            with m.If(f.drop):
                m.d.sync += self.events.dropped.eq(1)
                goto("DECIDE", "HUNT")
            with m.Elif(f.write):
                goto("DECIDE", "PAYLOAD")
            with m.Else():
                goto("DECIDE", "CRC")

        with m.If(st["PAYLOAD"] & timed_out):
            goto("PAYLOAD", "TRUNC")
        with m.Elif(word_done & prem[-1]):
            goto("PAYLOAD", "CRC")

        with m.If(st["CRC"] & timed_out):
            goto("CRC", "TRUNC")
        with m.Elif(tk_crc & bpos[3]):
            goto("CRC", "CHECK")

        with m.If(st["TRUNC"]):
            m.d.sync += [self.events.dropped.eq(1), status.eq(Status.TRUNCATED), done.eq(0)]
            goto("TRUNC", "REPLY")

        with m.If(st["CHECK"]):
            goto("CHECK", "CHECK2")
        with m.If(st["CHECK2"]):
            goto("CHECK2", "CHECK3")
        with m.If(st["CHECK3"]):
            goto("CHECK3", "DECODE")

        with m.If(st["DECODE"]):
            m.d.sync += [status.eq(d.status), done.eq(d.done), widx.eq(0),
                         bus.adr.eq(hdr.addr[2:2 + self._addr_width]), brem.eq(cnt_m2),
                         self.events.crc_error.eq(d.crc_error),
                         self.events.frame_ok.eq(~d.crc_error),
                         self.events.duplicate.eq(d.dup)]
            with m.If(d.verified):
                m.d.sync += last_valid.eq(0)
            with m.If(d.write):
                m.d.sync += [x_write.eq(1), last_crc.eq(got_crc)]
                goto("DECODE", "W_FETCH")
            with m.Elif(d.read):
                m.d.sync += reading.eq(1)
                goto("DECODE", "R_BUS")
            with m.Else():
                goto("DECODE", "REPLY")

        # ---- WRITE: buffer word -> bus, one word at a time
        with m.If(st["W_FETCH"]):
            goto("W_FETCH", "W_WAIT")
        with m.If(st["W_WAIT"]):
            goto("W_WAIT", "W_ISSUE")
        with m.If(st["W_ISSUE"]):    # rd.rdata (-> bus.dat_w) valid READ_LATENCY after W_FETCH
            m.d.sync += [bus.we.eq(1), bus.cyc.eq(1), bus.stb.eq(1)]
            goto("W_ISSUE", "W_BUS")
        # ---- READ: bus -> buffer, one word at a time
        with m.If(st["R_BUS"]):
            m.d.sync += [bus.we.eq(0), bus.cyc.eq(1), bus.stb.eq(1)]
            goto("R_BUS", "R_WAIT")

        for src, again in (("W_BUS", "W_FETCH"), ("R_WAIT", "R_BUS")):
            with m.If(st[src] & bus.ack):
                with m.If(brem[-1]):
                    if src == "W_BUS":
                        m.d.sync += last_valid.eq(1)
                    goto(src, "REPLY")
                with m.Else():
                    goto(src, again)
            with m.Elif(st[src] & (bus.err | bus_timed_out)):
                if src == "W_BUS":
                    m.d.sync += last_valid.eq(1)
                goto(src, "REPLY")

        # ---- reply: header, data words (READ, PING), CRC
        with m.If(st["REPLY"]):
            m.d.sync += [reading.eq(0), widx.eq(0), first.eq(1), trem.eq(done - 1),
                         seg_hdr.eq(1), seg_crc.eq(0)]
            with m.If(x_write):
                m.d.sync += [x_write.eq(0), last_status.eq(status), last_done.eq(done)]
            goto("REPLY", "T_HDR")
        with m.If(st["T_HDR"]):
            goto("T_HDR", "T_SEND")
        with m.If(send & txk[0]):
            with m.If(seg_crc):
                goto("T_SEND", "T_END")
            with m.Elif(more):
                goto("T_SEND", "T_FETCH")
            with m.Else():
                goto("T_SEND", "T_PAD")
        with m.If(st["T_FETCH"]):
            goto("T_FETCH", "T_WAIT")
        with m.If(st["T_WAIT"]):
            goto("T_WAIT", "T_WAIT2")
        with m.If(st["T_WAIT2"]):    # rd.rdata valid; rword loads it at this edge
            goto("T_WAIT2", "T_LOAD")
        with m.If(st["T_LOAD"]):
            m.d.sync += [seg_hdr.eq(0), first.eq(0), trem.eq(trem - 1)]
            goto("T_LOAD", "T_SEND")
        with m.If(st["T_PAD"]):      # the last byte's CRC update happens in this cycle
            goto("T_PAD", "T_CRC")
        with m.If(st["T_CRC"]):
            m.d.sync += seg_crc.eq(1)
            goto("T_CRC", "T_SEND")
        with m.If(st["T_END"]):
            goto("T_END", "HUNT")
        return m
