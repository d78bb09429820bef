"""One real bitstream build through the CLI (ULX3S-12F, the fastest device to place)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ulx3s_12f_bitstream(tmp_path):
    out = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-m", "hdlgen", "build", "--board", "ulx3s", "--device", "12F",
                           "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for key in ("board", "device", "target_mhz", "fmax_mhz", "lut", "lut_total", "ff", "ff_total",
                "dsp", "dsp_total", "ebr", "ebr_total", "bitstream", "seconds"):
        assert key in report, key
    assert report["board"] == "ulx3s" and report["device"] == "12F"
    assert report["fmax_mhz"] >= report["target_mhz"]
    assert 0 < report["lut"] <= report["lut_total"]
    assert set(report["seconds"]) >= {"elaborate", "yosys", "nextpnr", "ecppack"}
    bit = out / "top.bit"
    assert bit.stat().st_size > 50_000
    assert report["bitstream"] == str(bit.resolve())
    # the printed table carries the same figures
    assert f"fmax {report['fmax_mhz']}" in proc.stdout
    # and `report` shows it again
    again = subprocess.run([sys.executable, "-m", "hdlgen", "report", str(out), "--json"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout) == report
