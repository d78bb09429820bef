"""Element-wise block: golden model properties, then the RTL against the golden model."""

import gc
import json
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from hdlgen.blocks.eltwise import Eltwise
from sim.golden.activation import activation
from sim.golden.eltwise import residual_add, swiglu, swiglu_float
from sim.golden.requant import quantize_multiplier
from sim.amaranth_streams import run_stream_amaranth
from sim.benches.eltwise import case as case_items
from sim.benches.eltwise import random_inputs, typical_scale
from sim.harness import run_cocotb

COUNT = "3000"


def _rejects(match, build, **kw):
    """``build(**kw)`` raises ValueError matching ``match``; the half-built component is
    collected with Amaranth's unused-elaboratable warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            build(**kw)
        gc.collect()


def test_residual_add_saturates():
    assert list(residual_add([127, -128, 100, -100], [1, -1, -50, 50])) == [127, -128, 50, -50]
    assert list(residual_add([32767, -32768], [32767, -32768], bits=16)) == [32767, -32768]
    with pytest.raises(ValueError, match="int8"):
        residual_add([128], [0])


def test_swiglu_is_requantized_silu_product():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, 5000)
    b = rng.integers(-128, 128, 5000)
    # real scales: a 1/16, silu 1/2048, b 1/32, y 1/8
    mult, shift = quantize_multiplier((1 / 2048) * (1 / 32) / (1 / 8))
    y = swiglu(a, b, mult, shift)
    s = activation(a, "silu", 8, 16, 1 / 16, 1 / 2048)
    assert np.array_equal(y, np.clip(np.floor(s * b * mult / 2**shift + 0.5), -128, 127))
    # against float: within one output LSB plus the silu table error, where not saturated
    ref = swiglu_float(a / 16, b / 32) * 8
    ok = np.abs(ref) < 127
    assert np.max(np.abs(y[ok] - ref[ok])) <= 0.5 + 0.00025 * 4 * 8 + 1e-9


@pytest.mark.parametrize("kw", [dict(op="mul"), dict(bits=4), dict(op="swiglu", a_bits=32)])
def test_rejects_bad_parameters(kw):
    _rejects([k for k in kw if k != "op"][0] if len(kw) > 1 or "op" not in kw else "op", Eltwise, **kw)


CASES = {   # cocotb + Verilator, one build each
    "add16": dict(op="add", bits=16),
    "swiglu8": dict(op="swiglu", a_bits=8, b_bits=8, out_bits=8, a_scale=1 / 16, silu_scale=1 / 2048),
}
SIM_CASES = {   # Amaranth's simulator
    "add8": dict(op="add", bits=8),
    "swiglu16": dict(op="swiglu", a_bits=16, b_bits=16, out_bits=16, a_scale=1 / 4096,
                     silu_scale=1 / 4096),
    "swiglu16x8to8": dict(op="swiglu", a_bits=16, b_bits=8, out_bits=8, a_scale=1 / 4096,
                          silu_scale=1 / 4096),
}


@pytest.mark.parametrize("case", list(SIM_CASES))
def test_other_widths_in_amaranth_sim(case):
    p = SIM_CASES[case]
    g = np.random.default_rng(6)
    mult, shift = typical_scale(p)
    a, b, last = random_inputs(p, g, 3000)
    items, expected = case_items(p, a, b, last, mult, shift)
    dut = Eltwise(p["op"], **{k: v for k, v in p.items() if k != "op"})
    extra = [(dut.mult, mult), (dut.shift, shift)] if p["op"] == "swiglu" else None
    got = run_stream_amaranth(dut, items, len(expected), stall_in=0.2, stall_out=0.2, extra=extra)
    assert got == expected


@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_golden(case):
    p = CASES[case]
    kw = {k: v for k, v in p.items() if k != "op"}
    run_cocotb(Eltwise(p["op"], **kw), "sim.benches.eltwise", name=f"eltwise_{case}",
               env={"HDLGEN_PARAMS": json.dumps(p), "HDLGEN_COUNT": COUNT})


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_scoreboard_catches_errors(corrupt):
    p = CASES["swiglu8"]
    kw = {k: v for k, v in p.items() if k != "op"}
    res = run_cocotb(Eltwise("swiglu", **kw), "sim.benches.eltwise", name="eltwise_swiglu8",
                     testcase="random_stall_0", check=False,
                     env={"HDLGEN_PARAMS": json.dumps(p | {"corrupt": corrupt}), "HDLGEN_COUNT": "300"})
    assert res.tests == 1 and res.failed == 1
