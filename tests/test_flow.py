"""Implementation flow: nextpnr report parsing and one real out-of-context run of a small block."""

import json

import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.stream_parts import SkidBuffer
from hdlgen.flow import ECP5_DEVICES, ToolError, check_netlist, ooc_implement, parse_nextpnr_report


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


def _netlist(cells, ports=None):
    return {"modules": {"dut": {"attributes": {}, "ports": ports or {}, "cells": cells,
                                "netnames": {"o__payload": {"bits": [5, 6, 7]}}}}}


def _ff(q):
    return {"type": "TRELLIS_FF", "port_directions": {"DI": "input", "Q": "output"},
            "connections": {"DI": [2], "Q": [q]}}


def test_check_netlist_refuses_multiply_driven_nets(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist({"a": _ff(5), "b": _ff(6)})))
    check_netlist(path)     # distinct drivers: fine
    path.write_text(json.dumps(_netlist({"a": _ff(5), "b": _ff(5)})))
    with pytest.raises(ToolError, match=r"o__payload\[0\] driven by a\.Q \(TRELLIS_FF\) and b\.Q"):
        check_netlist(path)
    # a cell output on a module input is a short too
    path.write_text(json.dumps(_netlist({"a": _ff(6)}, {"i": {"direction": "input", "bits": [6]}})))
    with pytest.raises(ToolError, match=r"input port i\[0\]"):
        check_netlist(path)


class _ArrayOut(wiring.Component):
    """Registered array-shaped output: Amaranth names its elements ``o[0]``, ``o[1]``, which
    Yosys' abc9 read as bits of ``o`` (it aborted, or shorted two flip-flops, before the OOC
    flow hid those names)."""

    def __init__(self):
        super().__init__({"i": In(12), "o": Out(data.ArrayLayout(unsigned(4), 3))})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.i)
        return m


def test_ooc_array_shaped_registered_output(tmp_path):
    r = ooc_implement(_ArrayOut(), device="12F", freq_mhz=150, out_dir=tmp_path)
    assert r.ff == 12
    dut = json.loads((tmp_path / "top.json").read_text())["modules"]["top.dut"]
    bits = dut["ports"]["o"]["bits"]
    assert len(set(bits)) == 12 and all(isinstance(b, int) for b in bits)


def test_nextpnr_args_from_the_environment(monkeypatch):
    from hdlgen.flow import nextpnr_argv
    dev = ECP5_DEVICES["85F"]
    base = nextpnr_argv(dev, "CABGA381", 6, json_in="t.json", freq_mhz=50, seed=3, report="r.json")
    monkeypatch.setenv("HDLGEN_NEXTPNR_ARGS", "--router2-heatmap heat --placed-svg 'p q.svg'")
    argv = nextpnr_argv(dev, "CABGA381", 6, json_in="t.json", freq_mhz=50, seed=3, report="r.json")
    assert argv == base + ["--router2-heatmap", "heat", "--placed-svg", "p q.svg"]
    assert "--seed" in base and base[base.index("--seed") + 1] == "3"


def test_placer_choice():
    import argparse

    from hdlgen.build import add_arguments, choose_placer
    from hdlgen.flow import nextpnr_argv
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert choose_placer(p.parse_args([])) == "heap"
    assert choose_placer(p.parse_args(["--model", "stories260K"])) == "static"
    assert choose_placer(p.parse_args(["--model", "stories260K", "--placer", "heap"])) == "heap"
    argv = nextpnr_argv(ECP5_DEVICES["85F"], "CABGA381", 6, json_in="t.json", freq_mhz=50,
                        seed=1, report="r.json", placer="static")
    assert argv[argv.index("--placer") + 1] == "static"
    assert "--placer" not in nextpnr_argv(ECP5_DEVICES["85F"], "CABGA381", 6, json_in="t.json",
                                          freq_mhz=50, seed=1, report="r.json")


def test_engine_builds_default_to_the_engines_clock():
    """A build (and run / bench model) with a transformer engine defaults to
    MODEL_SYS_CLK_MHZ, which the engine meets; --freq overrides it; without --model the
    board's 125 MHz stays."""
    import argparse

    from hdlgen.build import MODEL_SYS_CLK_MHZ, add_arguments, resolve_target
    p = argparse.ArgumentParser()
    add_arguments(p)
    _, _, cfg = resolve_target(p.parse_args([]))
    assert cfg.sys_clk_mhz == 125.0
    _, _, cfg = resolve_target(p.parse_args(["--model", "stories260K"]), model=True)
    assert cfg.sys_clk_mhz == MODEL_SYS_CLK_MHZ == 60.0
    _, _, cfg = resolve_target(p.parse_args(["--model", "stories260K", "--freq", "62.5"]),
                               model=True)
    assert cfg.sys_clk_mhz == 62.5
