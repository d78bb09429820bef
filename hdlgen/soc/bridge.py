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

from amaranth.hdl import Cat, Const, Module, Mux, Signal
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

        # Register slice on the input: whatever feeds the bridge (a FIFO's block RAM, a UART)
        # is cut from the frame parser's next-state logic.
        m.submodules.in_reg = in_reg = SkidBuffer(8)
        wiring.connect(m, wiring.flipped(self.i), in_reg.i)
        rx_in = in_reg.o

        m.submodules.buf = buf = BlockRAM(width=32, depth=max_burst, ports=("w", "r"))
        wr, rd = buf.a, buf.b
        # Buffer writes are registered: port a is driven from flip-flops.
        wr_en = Signal()
        wr_addr = Signal.like(wr.addr)
        wr_data = Signal(32)
        m.d.sync += wr_en.eq(0)
        m.d.comb += [wr.en.eq(wr_en), wr.we.eq(wr_en), wr.addr.eq(wr_addr), wr.wdata.eq(wr_data)]
        # Address and data are loaded every cycle (no wide clock enable decoded from the
        # state): from the payload while receiving, from the bus while a READ runs. A write
        # uses the values loaded in the cycle that set ``wr_en``.
        reading = Signal()
        assert buf.latency == READ_LATENCY == 2

        # ---- receive side
        byte = rx_in.payload
        take = rx_in.valid & rx_in.ready
        hdr = Signal(_Header)
        rx_crc = Signal(32)
        got_crc = Signal(32)
        idx = Signal(range(4 * max_burst + 1))   # byte index within the current field
        last_idx = Signal.like(idx)                # index of the last payload byte
        word = Signal(24)                          # payload bytes 0..2 of the current word
        idle = Signal(range(self._timeout + 1))

        # ---- execution / reply state
        chk = Signal(data.StructLayout({"crc_ok": 1, "dup": 1, "count_ok": 1, "aligned": 1,
                                        "op_ping": 1, "op_rw": 1, "op_write": 1}))
        status = Signal(Status)
        done = Signal(16)                          # words transferred (reply count)
        widx = Signal(range(max_burst + 1))        # word index of bus access / reply data
        bus_wait = Signal(range(self._bus_timeout + 1))
        bus_timed_out = Signal()            # registered: bus_wait reached the limit
        is_last = Signal()                  # registered: widx is the last word of the burst
        count_m1 = Signal(16)               # hdr.count - 1 and done - 1, precomputed so the
        done_m1 = Signal(16)                # last-word tests are plain comparisons
        reply_word = Signal(32)
        tx_crc = Signal(32)
        tx_idx = Signal(3)
        # dedup cache of the last executed WRITE
        last_valid = Signal()
        last_crc = Signal(32)
        last_status = Signal(Status)
        last_done = Signal(16)

        m.d.sync += [wr_addr.eq(Mux(reading, widx, idx[2:])),
                     wr_data.eq(Mux(reading, bus.dat_r, Cat(word, byte)))]
        m.d.sync += [self.events.eq(0)]
        # Replies leave through a register slice too, so ``o.ready`` (from a UART transmitter
        # or a FIFO) is a flip-flop by the time it reaches the reply state machine.
        m.submodules.out_reg = out_reg = SkidBuffer(8)
        wiring.connect(m, out_reg.o, wiring.flipped(self.o))
        tx_out = out_reg.i
        with m.If(tx_out.ready):
            m.d.sync += tx_out.valid.eq(0)
        can_send = ~tx_out.valid | tx_out.ready

        # The reply CRC is updated one cycle after a byte is loaded, from the output register
        # (not from the byte multiplexer), so the CRC network is not behind the mux.
        crc_en = Signal()
        m.d.sync += crc_en.eq(0)
        with m.If(crc_en):
            m.d.sync += tx_crc.eq(crc32_next(tx_crc, tx_out.payload))

        def send(value, crc=True):
            m.d.sync += [tx_out.valid.eq(1), tx_out.payload.eq(value), crc_en.eq(crc)]

        # Inter-byte timeout inside a frame.
        in_frame = Signal()
        timed_out = Signal()
        # The comparison is registered: ``timed_out`` is a flip-flop, set the cycle after the
        # counter reached the limit (and the frame parser does not take a byte then).
        with m.If(in_frame & ~take):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        m.d.sync += timed_out.eq(in_frame & ~take & ~timed_out & (idle == self._timeout - 1))

        def truncated():
            m.d.sync += [self.events.dropped.eq(1), status.eq(Status.TRUNCATED), done.eq(0)]
            m.next = "REPLY"

        m.d.sync += bus_timed_out.eq(bus.cyc & (bus_wait == self._bus_timeout - 1))

        op_write = hdr.op == Opcode.WRITE
        count_ok = (hdr.count != 0) & (hdr.count <= max_burst)
        word_addr = hdr.addr[2:2 + self._addr_width]

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += rx_in.ready.eq(1)
                with m.If(take & (byte == SYNC[0])):
                    m.next = "SYNC1"

            with m.State("SYNC1"):
                m.d.comb += [rx_in.ready.eq(~timed_out), in_frame.eq(1)]
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.Elif(take):
                    with m.If(byte == SYNC[1]):
                        m.d.sync += [rx_crc.eq(0xFFFFFFFF), idx.eq(0)]
                        m.next = "HEADER"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "HUNT"

            with m.State("HEADER"):
                m.d.comb += [rx_in.ready.eq(~timed_out), in_frame.eq(1)]
                with m.If(timed_out):
                    m.d.sync += self.events.dropped.eq(1)
                    m.next = "HUNT"
                with m.Elif(take):
                    m.d.sync += [hdr.eq(Cat(hdr.as_value()[8:], byte)), rx_crc.eq(crc32_next(rx_crc, byte)),
                                 idx.eq(idx + 1)]
                    with m.If(idx == 7):
                        m.next = "DECIDE"

            with m.State("DECIDE"):
                m.d.sync += [idx.eq(0), last_idx.eq((hdr.count << 2) - 1)]
                with m.If(op_write & ~count_ok):
                    m.d.sync += self.events.dropped.eq(1)
                    m.next = "HUNT"
                with m.Elif(op_write):
                    m.next = "PAYLOAD"
                with m.Else():
                    m.next = "CRC"

            with m.State("PAYLOAD"):
                m.d.comb += [rx_in.ready.eq(~timed_out), in_frame.eq(1)]
                with m.If(timed_out):
                    truncated()
                with m.Elif(take):
                    m.d.sync += [word.eq(Cat(word[8:], byte)), rx_crc.eq(crc32_next(rx_crc, byte)),
                                 idx.eq(idx + 1)]
                    with m.If(idx[:2] == 3):
                        m.d.sync += wr_en.eq(1)
                    with m.If(idx == last_idx):
                        m.d.sync += idx.eq(0)
                        m.next = "CRC"

            with m.State("CRC"):
                m.d.comb += [rx_in.ready.eq(~timed_out), in_frame.eq(1)]
                with m.If(timed_out):
                    truncated()
                with m.Elif(take):
                    m.d.sync += [got_crc.eq(Cat(got_crc[8:], byte)), idx.eq(idx + 1)]
                    with m.If(idx == 3):
                        m.next = "CHECK"

            with m.State("CHECK"):
                # Register the comparisons; DECODE acts on them.
                m.d.sync += [widx.eq(0), done.eq(0), bus_wait.eq(0),
                             chk.crc_ok.eq(got_crc == ~rx_crc),
                             chk.dup.eq(op_write & last_valid & (last_crc == got_crc)),
                             chk.count_ok.eq(count_ok), chk.aligned.eq(hdr.addr[:2] == 0),
                             chk.op_ping.eq(hdr.op == Opcode.PING),
                             chk.op_rw.eq((hdr.op == Opcode.READ) | op_write),
                             chk.op_write.eq(op_write)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += count_m1.eq(hdr.count - 1)
                with m.If(~chk.crc_ok):
                    m.d.sync += [status.eq(Status.CRC_ERROR), self.events.crc_error.eq(1)]
                    m.next = "REPLY"
                with m.Else():
                    m.d.sync += self.events.frame_ok.eq(1)
                    with m.If(chk.dup):
                        m.d.sync += [status.eq(last_status), done.eq(last_done),
                                     self.events.duplicate.eq(1)]
                        m.next = "REPLY"
                    with m.Else():
                        m.d.sync += last_valid.eq(0)
                        with m.If(chk.op_ping):
                            m.d.sync += [status.eq(Status.OK), done.eq(2)]
                            m.next = "REPLY"
                        with m.Elif(~chk.op_rw):
                            m.d.sync += status.eq(Status.BAD_OPCODE)
                            m.next = "REPLY"
                        with m.Elif(~chk.count_ok):
                            m.d.sync += status.eq(Status.BAD_LENGTH)
                            m.next = "REPLY"
                        with m.Elif(~chk.aligned):
                            m.d.sync += status.eq(Status.BAD_ALIGN)
                            m.next = "REPLY"
                        with m.Elif(chk.op_write):
                            m.d.sync += status.eq(Status.OK)
                            m.next = "W_FETCH"
                        with m.Else():
                            m.d.sync += [status.eq(Status.OK), reading.eq(1)]
                            m.next = "R_BUS"

            # ---- WRITE: buffer word -> bus, one word at a time
            with m.State("W_FETCH"):
                m.d.comb += [rd.addr.eq(widx), rd.en.eq(1)]
                m.next = "W_WAIT"
            with m.State("W_WAIT"):
                m.next = "W_ISSUE"
            with m.State("W_ISSUE"):     # rd.rdata valid READ_LATENCY cycles after W_FETCH
                m.d.sync += [is_last.eq(widx == count_m1),
                             bus.dat_w.eq(rd.rdata), bus.adr.eq(word_addr + widx), bus.we.eq(1),
                             bus.sel.eq(0xF), bus.cyc.eq(1), bus.stb.eq(1), bus_wait.eq(0)]
                m.next = "W_BUS"
            with m.State("W_BUS"):
                m.d.sync += bus_wait.eq(bus_wait + 1)

                def finish(st, n):
                    m.d.sync += [bus.cyc.eq(0), bus.stb.eq(0), status.eq(st), last_valid.eq(1),
                                 last_crc.eq(got_crc), last_status.eq(st), last_done.eq(n)]
                    m.next = "REPLY"

                with m.If(bus.ack):
                    m.d.sync += [widx.eq(widx + 1), done.eq(done + 1), bus.cyc.eq(0), bus.stb.eq(0)]
                    with m.If(is_last):
                        finish(Status.OK, done + 1)
                    with m.Else():
                        m.next = "W_FETCH"
                with m.Elif(bus.err):
                    m.d.sync += self.events.bus_error.eq(1)
                    finish(Status.BUS_ERROR, done)
                with m.Elif(bus_timed_out):
                    m.d.sync += self.events.bus_error.eq(1)
                    finish(Status.TIMEOUT, done)

            # ---- READ: bus -> buffer, one word at a time
            with m.State("R_BUS"):
                m.d.sync += [is_last.eq(widx == count_m1),
                             bus.adr.eq(word_addr + widx), bus.we.eq(0), bus.sel.eq(0xF),
                             bus.cyc.eq(1), bus.stb.eq(1), bus_wait.eq(0)]
                m.next = "R_WAIT"
            with m.State("R_WAIT"):
                m.d.sync += bus_wait.eq(bus_wait + 1)
                with m.If(bus.ack):
                    m.d.sync += wr_en.eq(1)
                    m.d.sync += [widx.eq(widx + 1), done.eq(done + 1), bus.cyc.eq(0), bus.stb.eq(0)]
                    with m.If(is_last):
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "R_BUS"
                with m.Elif(bus.err):
                    m.d.sync += [status.eq(Status.BUS_ERROR), self.events.bus_error.eq(1),
                                 bus.cyc.eq(0), bus.stb.eq(0)]
                    m.next = "REPLY"
                with m.Elif(bus_timed_out):
                    m.d.sync += [status.eq(Status.TIMEOUT), self.events.bus_error.eq(1),
                                 bus.cyc.eq(0), bus.stb.eq(0)]
                    m.next = "REPLY"

            # ---- reply: header, data words (READ, PING), CRC
            with m.State("REPLY"):
                m.d.sync += [reading.eq(0), done_m1.eq(done - 1), tx_idx.eq(0), widx.eq(0),
                             tx_crc.eq(0xFFFFFFFF)]
                m.next = "T_HDR"
            with m.State("T_HDR"):
                fields = Signal(56)
                m.d.comb += fields.eq(Cat(Const(SYNC[0], 8), Const(SYNC[1], 8), hdr.op, hdr.seq,
                                          status, done[:8], done[8:16]))
                has_data = ((hdr.op == Opcode.READ) | (hdr.op == Opcode.PING)) & (done != 0)
                with m.If(can_send):
                    send(fields.word_select(tx_idx, 8), crc=tx_idx >= 2)
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(tx_idx == 6):
                        m.d.sync += tx_idx.eq(0)
                        with m.If(has_data):
                            m.next = "T_FETCH"
                        with m.Else():
                            m.next = "T_PAD"
            with m.State("T_FETCH"):
                m.d.comb += [rd.addr.eq(widx), rd.en.eq(1)]
                m.next = "T_WAIT"
            with m.State("T_WAIT"):
                m.next = "T_LOAD"
            with m.State("T_LOAD"):
                with m.If(hdr.op == Opcode.PING):
                    m.d.sync += reply_word.eq(Mux(widx == 0, BRIDGE_MAGIC,
                                                  (PROTOCOL_VERSION << 16) | max_burst))
                with m.Else():
                    m.d.sync += reply_word.eq(rd.rdata)
                m.d.sync += [tx_idx.eq(0), is_last.eq(widx == done_m1)]
                m.next = "T_DATA"
            with m.State("T_DATA"):
                with m.If(can_send):
                    send(reply_word.word_select(tx_idx[:2], 8))
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(tx_idx == 3):
                        m.d.sync += [tx_idx.eq(0), widx.eq(widx + 1)]
                        with m.If(is_last):
                            m.next = "T_PAD"
                        with m.Else():
                            m.next = "T_FETCH"
            with m.State("T_PAD"):       # the last byte's CRC update happens in this cycle
                m.d.sync += tx_idx.eq(0)
                m.next = "T_CRC"
            with m.State("T_CRC"):
                final = ~tx_crc
                with m.If(can_send):
                    send(final.word_select(tx_idx[:2], 8), crc=False)
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(tx_idx == 3):
                        m.next = "HUNT"
        return m
