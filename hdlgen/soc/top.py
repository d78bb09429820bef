"""Board top level: the PLL makes the system clock from the board oscillator, a reset
synchroniser holds the system in reset until the PLL locks, and the accelerator SoC is wired
to the board's USB-UART and LEDs.

LED 0 shows the PLL lock; LEDs 1-7 show the SoC's ``leds`` (heartbeat, frames received,
frames rejected, busy, bus error, ...: see :class:`hdlgen.soc.soc.SoC`).
"""

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module
from amaranth.lib import io
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
        m.submodules.clk_buf = clk_in = io.Buffer("i", platform.request(board.clk_resource, 0, dir="-"))

        # The system reset is asserted asynchronously and released synchronously (the reset
        # synchroniser runs in its own domain on the same clock), and it reaches the
        # flip-flops over a global clock network (DCCA): an asynchronous reset goes straight
        # to every flip-flop's LSR, so Yosys cannot fold next-state logic into it (a
        # synchronous reset merged with state terms made reset -> LUT -> LUT -> LSR paths
        # across the die), and the global network carries its fan-out of ~2000 flip-flops
        # (on fabric routing that net alone took 7 ns).
        m.domains.sync = cd_sync = ClockDomain("sync", async_reset=True)
        m.domains.rst_sync = cd_rst = ClockDomain("rst_sync", local=True)
        m.submodules.pll = pll = ECP5PLL(self._pll)
        m.d.comb += [pll.clk_in.eq(clk_in.i), cd_sync.clk.eq(pll.clk_out),
                     cd_rst.clk.eq(pll.clk_out)]
        # No add_clock_constraint here: nextpnr derives the PLL output clock from the 25 MHz
        # input's constraint and the dividers (the flow also passes --freq).
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="rst_sync")
        m.submodules.reset_buf = Instance("DCCA", i_CLKI=cd_rst.rst, i_CE=Const(1),
                                          o_CLKO=cd_sync.rst)

        if self._soc_factory is None:
            from hdlgen.soc.soc import SoC
            soc = SoC(self._config)
        else:
            soc = self._soc_factory(self._config)
        m.submodules.soc = soc

        # tx comes from the SoC's UART register (idle high from reset); rx goes through the
        # I/O cell's flip-flop, then the SoC's receiver synchroniser.
        uart = platform.request(board.uart_resource, 0, dir="-")
        m.submodules.uart_tx = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.uart_rx = rx_buf = io.FFBuffer("i", uart.rx)
        m.d.comb += [tx_buf.o.eq(soc.tx), soc.rx.eq(rx_buf.i)]

        leds = []
        for i in range(board.led_count):
            leds.append(buf := io.Buffer("o", platform.request("led", i, dir="-")))
            m.submodules[f"led{i}"] = buf
        m.d.comb += leds[0].o.eq(pll.locked)
        soc_leds = getattr(soc, "leds", None)
        for i, led in enumerate(leds[1:]):
            if soc_leds is not None and i < len(soc_leds):
                m.d.comb += led.o.eq(soc_leds[i])
        return m
