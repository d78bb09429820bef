"""Board descriptions: every ULX3S device elaborates to a build plan (no tools run), budgets
match the device, and a configuration that cannot fit is refused before synthesis."""

import pytest

from boards import board_names, get_board
from hdlgen.errors import UserError
from hdlgen.soc.top import Top

ULX3S = get_board("ulx3s")


def test_ulx3s_is_registered_with_85f_default():
    assert "ulx3s" in board_names()
    assert ULX3S.default_device == "85F"
    assert ULX3S.device(None).device.part == "LFE5U-85F"
    assert ULX3S.device("12f").device.name == "12F"


@pytest.mark.parametrize("device, dsp, ebr", [("12F", 28, 56), ("25F", 28, 56), ("45F", 72, 108),
                                              ("85F", 156, 208)])
def test_device_budgets(device, dsp, ebr):
    bdev = ULX3S.device(device)
    assert (bdev.device.dsp, bdev.device.ebr) == (dsp, ebr)
    assert bdev.config.macs <= dsp
    assert bdev.platform().device == bdev.device.part


@pytest.mark.parametrize("device", ["12F", "25F", "45F", "85F"])
def test_plan_only_build_of_every_device(device, tmp_path):
    bdev = ULX3S.device(device)
    top = Top(ULX3S, bdev.config)
    plan = bdev.platform().build(top, name="top", build_dir=str(tmp_path), do_build=False)
    files = dict(plan.files)
    assert "top.il" in files and "top.lpf" in files
    il = files["top.il"]
    assert "EHXPLLL" in il
    assert f"parameter \\CLKFB_DIV {top.pll.clkfb_div}" in il
    assert top.sys_clk_mhz == bdev.config.sys_clk_mhz
    lpf = files["top.lpf"]
    assert 'FREQUENCY PORT "clk25_0__io" 25000000' in lpf   # nextpnr derives the PLL output
    assert "M1" in lpf and "L4" in lpf      # FT231X UART pins


def test_too_many_macs_refused_before_synthesis():
    bdev = ULX3S.device("12F")
    with pytest.raises(UserError, match="MULT18X18D"):
        bdev.check_fits(bdev.config.replace(lanes=16, macs_per_lane=8))


def test_unknown_device_names_choices():
    with pytest.raises(UserError, match="12F, 25F, 45F, 85F"):
        ULX3S.device("99F")


def test_engine_dsps_refused_before_synthesis(tmp_path, capsys):
    """An engine whose MAC array fits the device alone but not with the engine's own
    multipliers (the 45F's default 8 x 8 array: 64 + 19 = 83 of 72 MULT18X18D) is refused
    after elaboration, before Yosys, with the count and a shape that fits; that shape builds a
    plan. (The 45F build used to reach nextpnr, whose static placer ran 29 minutes without
    an error.)"""
    from hdlgen.build import dsp_cells
    from hdlgen.cli import main
    args = ["build", "--board", "ulx3s", "--device", "45F", "--model", "random:llama",
            "--plan-only"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "needs 83 MULT18X18D (8 x 8 = 64 for the MAC array, 19 for the other units)" in err
    assert "LFE5U-45F has 72" in err and "--lanes 4" in err
    assert main(args + ["--out", str(tmp_path / "b"), "--lanes", "4"]) == 0
    assert "51 of 72 MULT18X18D" in capsys.readouterr().err
    assert dsp_cells((tmp_path / "b" / "top.il").read_text()) == 51
