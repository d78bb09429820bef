"""``MATMAT`` (prefill tiles) in the RTL engine and the prefill programs that use it.

RTL (generated Verilog on Verilator + cocotb, :mod:`sim.benches.engine_matmat`): hand-assembled
tiles on a synthetic image leave the whole scratchpad equal to the integer golden model's;
a tile streams one beat per cycle; field and region errors end the job with the expected code
(and the golden model refuses them too); the checker fails on a corrupted and on a missing
element. A prefill program of a compiled random model runs on the RTL bit-exact too.

Golden model only: a prefill program equals as many decode steps (KV cache, every token's
residual stream, the last token's logits), for LLaMA and GPT-2; an engine without ``MATMAT``
has no tile buffer."""

import json
from pathlib import Path

import numpy as np
import pytest

from hdlgen.compiler.prefill import prefill_program, with_prefill
from hdlgen.engine.core import Engine
from hdlgen.engine.isa import Opcode
from hdlgen.errors import UserError
from sim.benches.engine import build as build_model, run_scenarios
from sim.benches.engine_matmat import build
from sim.golden.engine import Engine as Golden

REPO = Path(__file__).resolve().parent.parent
P = {"lanes": 8, "macs_per_lane": 4, "seed": 5}
LLAMA = {"spec": "random:llama", "seed": 3, "context": 8,
         "over": {"dim": 40, "n_heads": 5, "n_kv_heads": 1, "hidden_dim": 60, "vocab_size": 45,
                  "n_layers": 2}}
GPT2 = {"spec": "random:gpt2", "seed": 2, "context": 8,
        "over": {"dim": 36, "n_heads": 3, "hidden_dim": 90, "vocab_size": 50, "n_layers": 1}}


def _run(p, tmp_path):
    """Run the bench in a subprocess (fixed hash seed: a stable Verilog text, so the Verilator
    build is cached) and return each scenario's outcome."""
    return run_scenarios("sim.benches.engine_matmat", p, tmp_path, REPO)


def test_matmat_rtl(tmp_path):
    """Tiles of 1, 3 and lanes tokens (A: rows not a multiple of lanes, cols not a multiple of
    macs_per_lane, a block-RAM tile buffer), int8 and int16 outputs, with and without bias, a
    MATVEC between tiles, a reused tile buffer, a tile overwriting its own input (the next one
    reloads it), a layer-relative tile in a two-layer LOOP. A tile and lanes MATVECs compute
    the same products; the tile's cycles are its input load (tokens x cols) plus one per beat
    (rows x ceil(cols / K)) plus a fixed overhead: no bubble between beats or passes. tokens 0
    and lanes + 1, zero rows, regions outside the scratchpad, weight bank and parameter memory
    end with the right error code."""
    cfg, case = build(P)
    L, K = P["lanes"], P["macs_per_lane"]
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
    rows, cols = mm0.rows, mm0.cols
    assert rows * -(-cols // K) > L * rows          # the beats, not the results, set the pace
    overhead = tile - L * cols - rows * -(-cols // K)
    assert 0 < overhead <= 80, (tile, overhead)
    assert tile < vecs, (tile, vecs)


@pytest.mark.parametrize("cols", [4, 3], ids=["cols=K", "cols<K"])
def test_matmat_one_beat_per_pass(cols, tmp_path):
    """A tile matrix ``A`` whose rows fit one beat (``cols <= macs_per_lane``: a one-word tile
    buffer, every beat the first and the last of its pass) runs the ``main`` and ``tile``
    programs bit-exact. Here the results (``tokens`` per beat, one written per cycle), not the
    beats, set the pace: the tile's cycles are its input load plus one per result plus the
    fixed overhead of :func:`test_matmat_rtl`."""
    assert cols <= P["macs_per_lane"]
    p = {**P, "shape_a": [2 * P["lanes"] + 3, cols]}
    cfg, case = build(p)
    mm0 = case.programs["main"][0]
    assert (mm0.op, mm0.cols) == (Opcode.MATMAT, cols)
    out = _run({**p, "scenarios": [{"program": "main"}, {"program": "tile"}]}, tmp_path)
    assert out[0]["changed"] > 0 and out[1]["changed"] > 0
    overhead = out[1]["cycles"] - P["lanes"] * cols - P["lanes"] * mm0.rows
    assert 0 < overhead <= 80, (out[1]["cycles"], overhead)


def test_int8_input_range_rtl(tmp_path):
    """An 8-bit operand (a ``MATVEC`` with ``in_width`` 8, every ``MATMAT``) whose scratchpad
    element lies outside int8 ends the job with ``INPUT_RANGE``, and the golden model refuses
    it with the same code (the RTL does not compute with the element's low byte): in a
    ``MATVEC``'s input (its last element; 256, whose low byte is 0), in an input the vector
    buffer already holds from a 16-bit ``MATVEC`` of it, in a tile (its last element) and in
    the first tile of ``main``. The edges of int8 (-128, 127) run bit-exact, as does a 16-bit
    ``MATVEC`` of elements outside int8 (including -32768 and 32767), and the engine runs
    ``main`` again after the errors."""
    cfg, case = build(P)
    L = P["lanes"]
    xa, ca = case.layout["xA"], case.layout["A"]["cols"]
    scen = [{"program": "vecs", "poke": [[xa, -128], [xa + ca - 1, 127]]},
            {"program": "vecs", "poke": [[xa + ca - 1, 128]], "expect": "INPUT_RANGE"},
            {"program": "vecs", "poke": [[xa + 5, 256]], "expect": "INPUT_RANGE"},
            {"program": "wide16", "poke": [[xa + 3, 32767], [xa + 4, -32768], [xa + 5, -129]]},
            {"program": "wide", "poke": [[xa + 3, -129]], "expect": "INPUT_RANGE"},
            {"program": "tile", "poke": [[xa + L * ca - 1, -129]], "expect": "INPUT_RANGE"},
            {"program": "main", "poke": [[xa, 300]], "expect": "INPUT_RANGE"},
            {"program": "main", "poke": [[xa + 7, 127], [xa + 8, -128]]}]
    out = _run({**P, "scenarios": scen}, tmp_path)
    assert [o.get("golden_code") for o, sc in zip(out, scen) if "expect" in sc] == \
        ["INPUT_RANGE"] * 5
    assert out[3]["changed"] > 0 and out[7]["changed"] > 0


@pytest.mark.parametrize("program", ["vecs", "main"], ids=["MATVEC", "MATMAT"])
def test_golden_input_range_after_region_checks(program):
    """The golden model refuses an 8-bit input outside int8 with ``INPUT_RANGE``, but only
    after the instruction's region checks, in the RTL's order (its range checks end the job
    before the input is loaded): with a weight region outside the bank too, ``WEIGHT_RANGE``;
    with a destination outside the scratchpad, ``SCRATCH_RANGE``."""
    from hdlgen.engine.isa import Instruction
    from sim.golden.engine import EngineError
    cfg, case = build(P)
    img, xa = case.image, case.layout["xA"]
    prog = case.programs[program]

    def code(**fields):
        p = [Instruction.make(prog[0].op, **{**dict(prog[0].fields), **fields})] + prog[1:]
        g = Golden(img, p)
        g.act[xa] = 200
        with pytest.raises(EngineError) as e:
            g.step(0, 0)
        return e.value.code
    assert code() == "INPUT_RANGE"
    assert code(waddr=img.weights.shape[0] - 1) == "WEIGHT_RANGE"
    assert code(dst=img.act_elements - 2) == "SCRATCH_RANGE"


def test_prefill_rtl(tmp_path):
    """A prefill chunk of a compiled random LLaMA (4 tokens; q and the fused k and v as MATMAT
    tiles, a LUT-RAM tile buffer; the gate/up glu MATVEC token by token) on the RTL equals the golden model over the whole scratchpad."""
    out = _run({"model": LLAMA, "prefill": [3, 7, 1, 4],
                "scenarios": [{"program": "prefill"}]}, tmp_path)
    assert out[0]["changed"] > 0


@pytest.mark.parametrize("spec", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_prefill_equals_decode_steps(spec):
    """Two prefill chunks (4 + 2 tokens) leave the KV cache, every token's residual stream
    and the last token's logits and prediction exactly as six decode steps do; a decode step
    after them equals the seventh decode step."""
    cfg, comp = build_model(spec)
    pc = with_prefill(comp, 4)
    info = pc.manifest["prefill"]
    assert info["tokens"] == 4 and info["matmat_cols"] == spec["over"]["dim"]
    prompt = [3, 7, 1, 4, 9, 2, 5]
    D = spec["over"]["dim"]
    xa, px = pc.buffers["x"][0], pc.buffers["prefill_x"][0]
    dec = Golden(pc.image, pc.program)
    xs, res = [], []
    for i, t in enumerate(prompt):
        res.append(dec.step(t, i))
        xs.append(dec.act[xa:xa + D].copy())
    pre = Golden(pc.image, pc.program)
    n_mm = 0
    for c0, chunk in ((0, prompt[:4]), (4, prompt[4:6])):
        prog = prefill_program(pc, chunk, c0)
        assert len(prog) <= info["program_words"]
        n_mm += sum(i.op == Opcode.MATMAT for i in prog)
        pre.program = prog
        r = pre.step(chunk[0], c0)
        for t in range(len(chunk)):
            assert np.array_equal(pre.act[px + t * D:px + (t + 1) * D], xs[c0 + t]), (c0, t)
    # tiles per chunk: q, kv (fuse_kv) and w_fc (GPT-2); LLaMA's gate/up MATVEC (fuse_glu)
    # writes their SwiGLU, which a tile has not, and wo and the FFN's down projection
    # accumulate into x, so they run token by token
    assert n_mm == 2 * (2 if spec["spec"] == "random:llama" else 3)
    assert (r.token, r.value) == (res[5].token, res[5].value)
    assert np.array_equal(r.logits, res[5].logits)
    im = pc.image
    for layer in range(im.kv_layers):
        for h in range(im.kv_heads):
            for kv in (0, 1):
                assert np.array_equal(pre.kv.rows(layer, h, kv, 5), dec.kv.rows(layer, h, kv, 5))
    pre.program = pc.program
    r7 = pre.step(prompt[6], 6)
    assert (r7.token, r7.value) == (res[6].token, res[6].value)


def test_prefill_refuses():
    cfg, comp = build_model(LLAMA)
    with pytest.raises(UserError, match="2..lanes"):
        with_prefill(comp, cfg.lanes + 1)
    with pytest.raises(UserError, match="no prefill buffers"):
        prefill_program(comp, [1, 2], 0)
    pc = with_prefill(comp, 2)
    with pytest.raises(UserError, match="chunk holds"):
        prefill_program(pc, [1, 2, 3], 0)
    with pytest.raises(UserError, match="beyond the context"):
        prefill_program(pc, [1, 2], LLAMA["context"] - 1)


def test_no_tile_buffer_without_matmat():
    """A program without MATMAT generates no tile buffer (and the fingerprint is unchanged); a
    model compiled with prefill gets one for its widest tile."""
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
    cfg, comp = build_model(LLAMA)
    e3 = Engine(cfg, with_prefill(comp, 4))
    e3._MustUse__silence = True             # only its analysis is looked at here
    assert json.loads(e3.fingerprint())["matmat_cols"] == LLAMA["over"]["dim"]


def test_eltwise_result_chained_into_the_vector_buffer_rtl(tmp_path):
    """An ``ELTWISE`` writes its results into the vector buffer too, so a ``MATVEC`` of them
    skips its load, bit-exact: as a 16-bit operand with an element >= 32640 (the carry plane
    the buffer's flags must ask for) and, with that element outside int8, as an 8-bit operand
    refused with ``INPUT_RANGE`` like a loaded one, and accepted with every element in int8.
    The chained ``MATVEC`` costs less than half
    its load more than the ``ELTWISE`` alone; a loaded one costs its load."""
    cfg, case = build(P)
    xa, ca = case.layout["xA"], case.layout["A"]["cols"]
    big = [[xa + 3, 32000], [xa + ca + 3, 700]]          # 32700: a carry plane
    zero_b = [[xa + ca + c, 0] for c in range(ca)]        # the sum is token 0's int8 input
    scen = [{"program": "elt", "poke": big},
            {"program": "chain16", "poke": big},
            {"program": "chain16"},
            {"program": "chain8", "poke": big, "expect": "INPUT_RANGE"},
            {"program": "chain8", "poke": zero_b},
            {"program": "wide16"}]
    out = _run({**P, "scenarios": scen}, tmp_path)
    assert out[3].get("golden_code") == "INPUT_RANGE"
    assert all(out[n]["changed"] > 0 for n in (0, 1, 2, 4, 5))
    # (scenario 2: no carry plane, two passes like wide16's)
    elt, chained, loaded = out[0]["cycles"], out[2]["cycles"], out[5]["cycles"]
    assert chained - elt < loaded - ca // 2, (elt, chained, loaded)


def test_matvec_results_in_the_side_region_rtl(tmp_path):
    """A ``MATVEC``'s results also go to the vector buffer's side region, so an ``ELTWISE``
    reading them (as ``a``, or as ``b``: SwiGLU after gate and up) skips its load, bit-exact
    with the golden model over the whole scratchpad; a write into those results between the
    two (``side_hazard``) makes the ``ELTWISE`` load them again (the side region's stale copy
    would differ from the golden model in four elements). The ``ELTWISE`` after the
    ``MATVEC`` costs less than half its load more than the ``MATVEC`` alone."""
    cfg, case = build(P)
    ra = case.layout["A"]["rows"]
    names = ["side_mv", "side_elt", "side_a", "side_b", "side_hazard"]
    out = _run({**P, "scenarios": [{"program": n} for n in names]}, tmp_path)
    cyc = {n: o["cycles"] for n, o in zip(names, out)}
    assert all(o["changed"] > 0 for o in out)
    for n in ("side_a", "side_b"):
        assert cyc[n] - cyc["side_mv"] < cyc["side_elt"] - ra // 2, cyc


def test_norm_loads_its_input_as_it_is_written_rtl(tmp_path):
    """A one-row writer run of a norm unit's length also streams into that unit, so a ``NORM``
    of it right after (``norm_hit``) skips its load: at least ``len`` cycles less than a
    ``NORM`` of another region after the same ``MATVEC`` (``norm_miss``). A run of the same
    length between them, which the unit loaded
    instead (``norm_other``: the unit must be reset and load), and a write into the input
    between them (``norm_hazard``: the unit's copy is stale, four elements would differ) make
    it load as before; ``norm_after`` resets the unit just after another run loaded it, and
    the next run's values still make an exact norm. Every scenario bit-exact with the golden
    model over the whole scratchpad."""
    cfg, case = build(P)
    ra = case.layout["A"]["rows"]
    names = ["norm_alone", "norm_hit", "norm_miss", "norm_other", "norm_hazard", "norm_after"]
    out = _run({**P, "scenarios": [{"program": n} for n in names]}, tmp_path)
    cyc = {n: o["cycles"] for n, o in zip(names, out)}
    assert all(o["changed"] > 0 for o in out)
    assert cyc["norm_hit"] <= cyc["norm_miss"] - ra, cyc


def test_argmax_loads_its_input_as_it_is_written_rtl(tmp_path):
    """The same for the argmax unit and a one-row run of the longest ``ARGMAX``'s length (the
    classifier's logits): ``am_hit`` costs at least ``len`` cycles less than ``am_miss``;
    ``am_alone``, ``am_other`` and ``am_hazard`` (four results overwritten with the
    largest value, so the stale argmax would differ) read the logits again. Index and value
    equal the golden model's, the scratchpad too."""
    cfg, case = build(P)
    ra = case.layout["A"]["rows"]
    xb = case.layout["xB"]
    names = ["am_alone", "am_hit", "am_miss", "am_other", "am_hazard"]
    poke = [[xb + i, 30000] for i in range(4)]
    out = _run({**P, "scenarios": [{"program": n, **({"poke": poke} if n == "am_hazard" else {})}
                                   for n in names]}, tmp_path)
    cyc = {n: o["cycles"] for n, o in zip(names, out)}
    assert cyc["am_hit"] <= cyc["am_miss"] - ra, cyc


def test_matvec_follows_matvec_rtl(tmp_path):
    """A ``MATVEC`` whose input the vector buffer holds starts while the ``MATVEC`` before it
    drains (its MAC results taken, its writer still busy): its beats issue and its results
    wait until the writer has finished the first run. Bit-exact with the golden model over
    the whole scratchpad (and the result registers) for two and three in a row with other
    widths, bias and input width, an ``accumulate`` into the first's results, a first whose
    last result lands on the buffered input (``mv_hazard``: the second must reload it; the
    stale copy differs), and the norm and argmax units' early loads after such a pair. The
    second and third ``MATVEC`` each cost their beats plus less than 30 cycles (seed 5:
    +22; +47 without the overlap, when each waits for the writer before it starts)."""
    cfg, case = build(P)
    A = case.layout["A"]
    beats = -(-A["rows"] // P["lanes"]) * -(-A["cols"] // P["macs_per_lane"])
    names = ["mv_one", "mv_pair", "mv_three", "mv_acc", "mv_hazard", "mv_norm_b", "mv_norm_a",
             "mv_am_b", "mv_am_a"]
    out = _run({**P, "scenarios": [{"program": n} for n in names]}, tmp_path)
    cyc = {n: o["cycles"] for n, o in zip(names, out)}
    assert all(o["changed"] > 0 for o in out)
    assert cyc["mv_pair"] - cyc["mv_one"] < beats + 30, cyc
    assert cyc["mv_three"] - cyc["mv_pair"] < 2 * beats + 30, cyc    # a 16-bit input: 2 passes
