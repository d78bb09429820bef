"""EHXPLLL parameter search: exact frequencies where possible, clear refusals otherwise."""

import pytest

from hdlgen.errors import UserError
from hdlgen.soc.pll import pll_params


@pytest.mark.parametrize("mhz", [25, 50, 100, 125, 130, 150, 175, 200])
def test_exact_frequencies_within_limits(mhz):
    p = pll_params(25.0, mhz)
    assert p.clk_out_mhz == pytest.approx(mhz, rel=1e-9)
    assert 400 <= p.vco_mhz <= 800
    assert 25.0 / p.clki_div >= 3.125
    assert 1 <= p.clkfb_div <= 80 and 1 <= p.clkop_div <= 128


def test_near_frequency_accepted_within_half_percent():
    p = pll_params(25.0, 133.33)
    assert abs(p.clk_out_mhz - 133.33) <= 0.005 * 133.33


@pytest.mark.parametrize("mhz", [1.0, 48.0, 450.0])
def test_impossible_frequencies_refused(mhz):
    with pytest.raises(UserError, match=f"{mhz:g} MHz"):
        pll_params(25.0, mhz)
