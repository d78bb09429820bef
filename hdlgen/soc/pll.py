"""ECP5 EHXPLLL: parameter search (as Project Trellis' ``ecppll`` does) and instantiation."""

from dataclasses import dataclass

from amaranth.hdl import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdlgen.errors import UserError

__all__ = ["PLLParams", "pll_params", "ECP5PLL"]

# EHXPLLL limits (Lattice FPGA-TN-02200 / ecppll): input, phase detector, VCO and output.
_CLKI_MHZ = (8.0, 400.0)
_PFD_MHZ = (3.125, 400.0)
_VCO_MHZ = (400.0, 800.0)
_CLKO_MHZ = (3.125, 400.0)
_TOLERANCE = 0.005   # accepted relative deviation of the achieved clock from the request


@dataclass(frozen=True)
class PLLParams:
    clk_in_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def clk_out_mhz(self) -> float:
        return self.clk_in_mhz / self.clki_div * self.clkfb_div

    @property
    def vco_mhz(self) -> float:
        return self.clk_out_mhz * self.clkop_div


def pll_params(clk_in_mhz: float, clk_out_mhz: float) -> PLLParams:
    """Dividers that make ``clk_out_mhz`` from ``clk_in_mhz`` with feedback from CLKOP.

    Prefers the exact frequency, then the highest phase-detector frequency (less jitter),
    then a VCO near the middle of its range. Raises :class:`UserError` when the PLL cannot
    make the frequency within 0.5 %.
    """
    if not _CLKO_MHZ[0] <= clk_out_mhz <= _CLKO_MHZ[1]:
        raise UserError(f"clock frequency {clk_out_mhz:g} MHz is outside the ECP5 PLL's output "
                        f"range {_CLKO_MHZ[0]:g}-{_CLKO_MHZ[1]:g} MHz")
    if not _CLKI_MHZ[0] <= clk_in_mhz <= _CLKI_MHZ[1]:
        raise UserError(f"PLL input {clk_in_mhz:g} MHz is outside {_CLKI_MHZ[0]:g}-{_CLKI_MHZ[1]:g} MHz")
    best, best_key = None, None
    for clki_div in range(1, 129):
        pfd = clk_in_mhz / clki_div
        if not _PFD_MHZ[0] <= pfd <= _PFD_MHZ[1]:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not _CLKO_MHZ[0] <= out <= _CLKO_MHZ[1]:
                continue
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if not _VCO_MHZ[0] <= vco <= _VCO_MHZ[1]:
                    continue
                key = (round(abs(out - clk_out_mhz), 6), -pfd, abs(vco - 600.0))
                if best_key is None or key < best_key:
                    best, best_key = PLLParams(clk_in_mhz, clki_div, clkfb_div, clkop_div), key
    if best is None or abs(best.clk_out_mhz - clk_out_mhz) > _TOLERANCE * clk_out_mhz:
        near = f" (nearest: {best.clk_out_mhz:g} MHz)" if best else ""
        raise UserError(f"the ECP5 PLL cannot make {clk_out_mhz:g} MHz from {clk_in_mhz:g} MHz "
                        f"within 0.5 %{near}: choose another --freq")
    return best


class ECP5PLL(wiring.Component):
    """One EHXPLLL, CLKOP fed back. ``clk_out`` drives the system clock domain; ``locked``
    goes high once the output is stable (use it to release the reset synchroniser)."""
    clk_in: In(1)
    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, params: PLLParams):
        self._params = params
        super().__init__()

    @property
    def params(self) -> PLLParams:
        return self._params

    def elaborate(self, platform):
        p = self._params
        m = Module()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.clk_in_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.clk_out_mhz:.4f}".rstrip("0").rstrip("."),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=(p.clkop_div - 1) // 2, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=self.clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=self.clk_out, o_LOCK=self.locked,
        )
        return m
