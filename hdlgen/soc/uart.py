"""8N1 UART with stream ports: :class:`UARTTx`, :class:`UARTRx` and :func:`uart_divisor`.

The bit period is ``divisor`` system clock cycles (``round(clk_hz / baud)``); at 125 MHz and
3 Mbaud that is 42 cycles (0.8 % fast), well inside the +-2 % a UART tolerates::

    div = uart_divisor(125_000_000, 3_000_000)
    m.submodules.tx = tx = UARTTx(div)      # tx.i: In(stream.Signature(8)), tx.tx: Out(1)
    m.submodules.rx = rx = UARTRx(div)      # rx.rx: In(1), rx.o: Out(stream.Signature(8))

The receiver passes ``rx`` through a two flip-flop synchroniser, detects the falling edge of
the start bit, re-checks it at half a bit (a shorter glitch is ignored), samples each data
bit in the middle of its period and requires the stop bit to be high (else the byte is
dropped and ``frame_error`` pulses). It has no flow control: a byte not taken by the time
the next one is complete is dropped and ``overrun`` pulses. Put a FIFO after it when the
consumer may stall.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from hdlgen.errors import UserError

__all__ = ["uart_divisor", "UARTTx", "UARTRx"]

#: Largest relative baud-rate error accepted by :func:`uart_divisor`.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_hz: int, baud: int) -> int:
    """System clock cycles per bit for ``baud`` at ``clk_hz``.

    Raises :class:`UserError` if the rounded divisor misses ``baud`` by more than 2 % or is
    below 4 (too few cycles per bit to find the middle of a bit).
    """
    if clk_hz <= 0 or baud <= 0:
        raise UserError(f"clock {clk_hz} Hz and baud {baud} must be positive")
    div = round(clk_hz / baud)
    if div < 4:
        raise UserError(f"baud {baud} is too fast for a {clk_hz / 1e6:g} MHz clock "
                        f"({clk_hz / baud:.2f} cycles per bit; the UART needs >= 4): lower "
                        f"uart_baud or raise sys_clk_mhz")
    err = abs(clk_hz / div - baud) / baud
    if err > MAX_BAUD_ERROR:
        raise UserError(f"baud {baud} at {clk_hz / 1e6:g} MHz: divisor {div} gives "
                        f"{clk_hz / div:.0f} baud, {100 * err:.1f} % off (limit "
                        f"{100 * MAX_BAUD_ERROR:g} %); choose a baud near clk/N, e.g. "
                        f"{clk_hz // div}")
    return div


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an integer >= 4 (cycles per bit), not {divisor!r}; "
                         f"use uart_divisor(clk_hz, baud)")


class UARTTx(wiring.Component):
    """UART transmitter, 8N1, LSB first. ``tx`` comes straight from a flip-flop.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send; one is taken whenever the transmitter is idle.
    tx : Out(1)
        Serial output, idle high.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self._MustUse__silence = True     # not "unused" if the argument is rejected
        _check_divisor(divisor)
        self._MustUse__silence = False
        self._divisor = divisor
        super().__init__()

    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)       # stop, data[7:0], start: shifted out LSB first
        bits = Signal(range(11))
        timer = Signal(range(self._divisor))

        m.d.comb += self.i.ready.eq(bits == 0)
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq((1 << 9) | (self.i.payload << 1)), bits.eq(10),
                             timer.eq(0)]
        with m.Else():
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(shreg[0]), shreg.eq((1 << 9) | (shreg >> 1)),
                             timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
                with m.If((timer == 1) & (bits != 0)):
                    m.d.sync += bits.eq(bits - 1)
        return m


class UARTRx(wiring.Component):
    """UART receiver, 8N1, with synchroniser and mid-bit sampling (see the module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    rx : In(1)
        Serial input (asynchronous; synchronised here).
    o : Out(stream.Signature(8))
        Received bytes; ``valid`` holds until taken or until the next byte overwrites it.
    frame_error : Out(1)
        One-cycle pulse: a stop bit was low; that byte was dropped.
    overrun : Out(1)
        One-cycle pulse: a byte arrived before the previous one was taken; it was dropped.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        self._MustUse__silence = True     # not "unused" if the argument is rejected
        _check_divisor(divisor)
        self._MustUse__silence = False
        self._divisor = divisor
        super().__init__()

    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(div))
        bit = Signal(range(9))
        shreg = Signal(8)

        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):          # glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq((rx << 7) | (shreg >> 1)), timer.eq(div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(~rx):
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(shreg)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                # After a framing error wait for the line to return high before hunting for
                # the next start bit (a held-low line is a break, not a stream of zeros).
                with m.If(rx):
                    m.next = "IDLE"
        return m
