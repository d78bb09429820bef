"""KV cache: golden model unit checks, cocotb random traffic with stalls and bounds errors,
full-rate streaming, and the negative test of the scoreboard."""

import json

import numpy as np
import pytest

from hdlgen.blocks.kv_cache import KVCache
from hdlgen.config import AcceleratorConfig
from sim.golden.kv_cache import KVCacheModel
from sim.harness import run_cocotb

SHAPE = dict(layers=2, kv_heads=3, head_dim=16, beat_bytes=8)
CONTEXT = 24


def _dut():
    return KVCache(**SHAPE, config=AcceleratorConfig(context_length=CONTEXT))


def _params(dut, **extra):
    p = dict(SHAPE, context_length=CONTEXT,
             append_fields=[[n, f.width] for n, f in dut.append_layout()],
             cmd_fields=[[n, f.width] for n, f in dut.read_cmd_layout()], stall=0.3)
    p.update(extra)
    return {"HDLGEN_PARAMS": json.dumps(p)}


def test_model_bounds_and_rows():
    m = KVCacheModel(**SHAPE, context_length=4)
    row = np.arange(-8, 8, dtype=np.int8)
    assert m.append_row(1, 2, 0, 3, row)
    assert (m.rows(1, 2, 0, 3)[3] == row).all() and not m.rows(1, 2, 0, 3)[:3].any()
    assert not m.append_row(1, 2, 0, 4, row) and m.error_append      # never wraps
    assert not m.rows(1, 2, 0, 3)[0].any()
    assert m.read(0, 0, 1, 4) == [] and m.error_read
    beats = m.read(1, 2, 0, 1)
    assert [(e, last) for _, e, last in beats] == [(0, 0), (1, 0), (0, 0), (1, 1)]


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="multiple of beat_bytes"):
        KVCache(layers=1, kv_heads=1, head_dim=12, beat_bytes=8)


def test_kv_cache_random_traffic():
    dut = _dut()
    run_cocotb(dut, "sim.benches.kv_cache", name="kv_cache", testcase="random_traffic",
               env={**_params(dut), "HDLGEN_COUNT": "1500"})


def test_kv_cache_full_rate():
    dut = _dut()
    run_cocotb(dut, "sim.benches.kv_cache", name="kv_cache", testcase="full_rate_stream",
               env=_params(dut, stall=0.0))


@pytest.mark.parametrize("corrupt", ["value", "missing"])
def test_kv_cache_scoreboard_catches_errors(corrupt):
    dut = _dut()
    res = run_cocotb(dut, "sim.benches.kv_cache", name="kv_cache", testcase="random_traffic",
                     env={**_params(dut, corrupt=corrupt), "HDLGEN_COUNT": "200"}, check=False)
    assert res.tests == 1 and res.failed == 1
