"""Implementation flow: nextpnr report parsing and one real out-of-context run of a small block."""

import json

import pytest

from hdlgen.blocks.stream_parts import SkidBuffer
from hdlgen.flow import ECP5_DEVICES, ooc_implement, parse_nextpnr_report


def test_report_picks_the_system_clock(tmp_path):
    rep = {"fmax": {"$glbnet$clk": {"achieved": 140.5, "constraint": 125.0},
                    "clk25_0__io": {"achieved": 400.0, "constraint": 25.0}},
           "utilization": {"TRELLIS_COMB": {"used": 1000, "available": 83640},
                           "TRELLIS_FF": {"used": 900, "available": 83640},
                           "MULT18X18D": {"used": 128, "available": 156},
                           "DP16KD": {"used": 10, "available": 208}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rep))
    r = parse_nextpnr_report(path, ECP5_DEVICES["85F"], 125.0)
    assert (r.fmax_mhz, r.lut, r.ff, r.dsp, r.ebr) == (140.5, 1000, 900, 128, 10)
    assert r.timing_met
    assert not parse_nextpnr_report(path, ECP5_DEVICES["85F"], 150.0).timing_met


def test_ooc_counts_the_block_alone(tmp_path):
    r = ooc_implement(SkidBuffer(32), device="12F", freq_mhz=150, out_dir=tmp_path)
    # 32-bit output register + 32-bit skid register + valid bits; wrapper FFs are not counted
    assert 66 <= r.ff <= 70
    assert 0 < r.lut < 100
    assert r.dsp == 0 and r.ebr == 0
    assert r.fmax_mhz > 150
