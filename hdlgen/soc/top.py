"""Board top level: the PLL makes the system clock from the board oscillator, a reset
synchroniser holds the system in reset until the PLL locks, and the accelerator SoC is wired
to the board's USB-UART and LEDs.

LED 0 shows the PLL lock, LED 1 a heartbeat (about 1 Hz at the system clock), the others
are driven by the SoC's ``leds`` output.
"""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from hdlgen.config import AcceleratorConfig
from hdlgen.soc.pll import ECP5PLL, pll_params

__all__ = ["Top"]


class Top(Elaboratable):
    """Top level for a board platform.

    Parameters
    ----------
    board : boards.Board
        Board description (clock, UART and LED resources).
    config : AcceleratorConfig
        Accelerator configuration; ``sys_clk_mhz`` must be a frequency the PLL can make.
    soc_factory : callable
        ``config -> Component`` with ``tx: Out(1)``, ``rx: In(1)`` and ``leds: Out(n)``;
        defaults to :class:`hdlgen.soc.soc.SoC`.
    """

    def __init__(self, board, config: AcceleratorConfig, soc_factory=None):
        self._board = board
        self._config = config
        self._pll = pll_params(board.clk_in_mhz, config.sys_clk_mhz)
        self._soc_factory = soc_factory

    @property
    def pll(self):
        return self._pll

    @property
    def sys_clk_mhz(self) -> float:
        """The clock the PLL actually makes (within 0.5 % of the requested one)."""
        return self._pll.clk_out_mhz

    def elaborate(self, platform):
        m = Module()
        board = self._board
        clk_in = platform.request(board.clk_resource, 0)

        m.domains.sync = cd_sync = ClockDomain("sync")
        m.submodules.pll = pll = ECP5PLL(self._pll)
        m.d.comb += [pll.clk_in.eq(clk_in.i), cd_sync.clk.eq(pll.clk_out)]
        platform.add_clock_constraint(cd_sync.clk, self._pll.clk_out_mhz * 1e6)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")

        if self._soc_factory is None:
            from hdlgen.soc.soc import SoC
            soc = SoC(self._config)
        else:
            soc = self._soc_factory(self._config)
        m.submodules.soc = soc

        uart = platform.request(board.uart_resource, 0)
        m.d.comb += [uart.tx.o.eq(soc.tx), soc.rx.eq(uart.rx.i)]

        leds = [platform.request("led", i) for i in range(board.led_count)]
        heartbeat = Signal(range(max(2, round(self._pll.clk_out_mhz * 1e6))))
        beat = Signal()
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(round(self._pll.clk_out_mhz * 1e6 / 2) - 1), beat.eq(~beat)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
        m.d.comb += [leds[0].o.eq(pll.locked), leds[1].o.eq(beat)]
        soc_leds = getattr(soc, "leds", None)
        for i, led in enumerate(leds[2:]):
            if soc_leds is not None and i < len(soc_leds):
                m.d.comb += led.o.eq(soc_leds[i])
        return m
