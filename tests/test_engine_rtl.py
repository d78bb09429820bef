"""RTL transformer engine (:class:`hdlgen.engine.core.Engine`): decode steps of compiled random
models run on the generated Verilog (Verilator + cocotb, :mod:`sim.benches.engine`) and equal
the integer golden model bit for bit (token, largest logit, logits and the whole scratchpad after
every step); positions at the KV capacity and beyond it, an undefined opcode, and the bench's
own checker (corrupted and missing logits must fail) are tested too. Plus fast elaboration
checks of the engine's construction errors and memory map."""

import json
from pathlib import Path

import numpy as np
import pytest

from hdlgen.config import AcceleratorConfig
from hdlgen.engine.core import Engine, ErrorCode
from hdlgen.engine.isa import Instruction, Opcode, Width, layout_digest
from hdlgen.errors import UserError
from sim.benches.engine import build, run_module, run_scenarios
from sim.golden.engine import Engine as Golden

REPO = Path(__file__).resolve().parent.parent

LLAMA = {"spec": "random:llama", "seed": 3, "context": 6,
         "over": {"dim": 40, "n_heads": 5, "n_kv_heads": 1, "hidden_dim": 60, "vocab_size": 45,
                  "n_layers": 2}}                                        # MQA, non-power-of-two
GQA = {"spec": "random:llama", "seed": 1, "context": 5, "weight_main_rows": 512,
       "weight_bits": {"wq": 16, "w1": 16, "token_embedding": 16}, "fuse_rope": False,
       "over": {"dim": 48, "n_heads": 6, "n_kv_heads": 2, "hidden_dim": 72, "vocab_size": 40,
                "n_layers": 1}}          # GQA; 16-bit (two-plane) wq, w1, embedding/classifier;
#                    ROPE and KVAPPEND instructions (LLAMA rotates and appends in the MATVEC)
GPT2 = {"spec": "random:gpt2", "seed": 2, "context": 5, "fuse_kv": False,
        "over": {"dim": 36, "n_heads": 3, "hidden_dim": 90, "vocab_size": 50, "n_layers": 1}}


def _run(p, tmp_path):
    """Run the bench in a subprocess (fixed hash seed: a stable Verilog text, so the Verilator
    build is cached) and return each scenario's outcome."""
    return run_scenarios("sim.benches.engine", p, tmp_path, REPO)


def _steps(ctx, tokens=(3, 7, 1, 4, 9, 2, 5, 8)):
    return [[tokens[i % len(tokens)], i] for i in range(ctx)]


def test_llama_mqa(tmp_path):
    """MQA llama: every position up to the last KV slot, then one beyond (POS_RANGE); the
    bench's checker fails on a corrupted and on a missing logit; an undefined opcode ends the
    job with BAD_OPCODE, regions outside the scratchpad, weight bank or parameter memory with
    SCRATCH_RANGE, WEIGHT_RANGE, PARAM_RANGE, an 8-bit SCORES query of elements outside int8
    (the 16-bit q) and an ATTV whose probabilities exceed prob_bits with INPUT_RANGE (the
    golden model refuses them with the same codes), a MATVEC whose ``rope_heads`` do not fit
    its rows or that accumulates, or whose ``kv_append`` has more heads than the cache, with
    BAD_FIELD (a kv projection whose int8 k saturates runs and equals the golden model:
    saturated, then rotated), the gate/up MATVEC (``glu``) with odd rows, accumulate or an
    output width other than the SwiGLU unit's or a 16-bit input (``rq2`` takes int8 x int8
    sums) with BAD_FIELD, the down projection after it as
    an 8-bit MATVEC (its 16-bit input, read from the side region otherwise) with INPUT_RANGE;
    a WEIGHT_RANGE or PARAM_RANGE refusal leaves the scratchpad of the program cut before the
    refused instruction (the MATVEC right after a MATVEC or a NORM is checked while their
    results are still being written: none is lost); the engine then runs good steps again,
    started through its registers."""
    _, comp = build(LLAMA)
    first_mv = next(n for n, i in enumerate(comp.program) if i.op.name == "MATVEC")
    first_norm = next(n for n, i in enumerate(comp.program) if i.op.name == "NORM")
    q_mv, kv_mv = (n for n, i in enumerate(comp.program)
                   if i.op.name == "MATVEC" and i.rope_heads)
    n_heads = comp.program[q_mv].rope_heads
    # the kv projection with q's requantization words: its int8 results saturate before
    # the fused RoPE rotates k (as a ROPE of the int8 k would)
    q_paddr = comp.program[q_mv].paddr
    patched = list(comp.program)
    patched[kv_mv] = Instruction.make(Opcode.MATVEC, **{**dict(patched[kv_mv].fields),
                                                        "paddr": q_paddr})
    gold = Golden(comp.image, patched)
    gold.step(3, 0)
    k = gold.act[comp.buffers["kv"][0]:][:comp.image.kv_heads * comp.image.head_size]
    assert np.abs(k).max() == 128 or 127 in k          # (saturated)
    scores = next(n for n, i in enumerate(comp.program) if i.op.name.startswith("SCORES"))
    # the gate/up MATVEC (glu, 16-bit results) and the down projection after it, which reads
    # them from the vector buffer's side region
    glu_mv = next(n for n, i in enumerate(comp.program) if i.op.name == "MATVEC" and i.glu)
    glu_rows = comp.program[glu_mv].rows
    assert comp.program[glu_mv + 1].src == comp.program[glu_mv].dst
    attv = next(n for n, i in enumerate(comp.program) if i.op.name == "ATTV")
    ctx = LLAMA["context"]
    scen = [{"steps": _steps(ctx) + [[1, ctx]]},
            {"steps": [[3, 0]], "corrupt": "value", "expect_fail": True},
            {"steps": [[3, 0]], "corrupt": "missing", "expect_fail": True},
            {"steps": [[3, 0]], "bad_program": 4},
            {"steps": [[3, 0]], "patch": [0, {"dst": comp.image.act_elements - 5},
                                          "SCRATCH_RANGE"]},
            {"steps": [[3, 0]], "patch": [first_mv, {"waddr": (1 << 20) - 1}, "WEIGHT_RANGE"],
             "before": True},
            {"steps": [[3, 0]], "patch": [first_norm, {"paddr": (1 << 20) - 8}, "PARAM_RANGE"],
             "before": True},
            {"steps": [[3, 0]], "patch": [scores, {"q_width": Width.W8.value}, "INPUT_RANGE"]},
            {"steps": [[3, 0]], "patch": [attv, {"prob_bits": 6}, "INPUT_RANGE"]},
            {"steps": [[3, 0]], "patch": [first_mv + 1, {"waddr": (1 << 20) - 1},
                                          "WEIGHT_RANGE"], "before": True},
            {"steps": [[3, 0]], "patch": [q_mv, {"rope_heads": n_heads + 1}, "BAD_FIELD"],
             "before": True},
            {"steps": [[3, 0]], "patch": [kv_mv, {"accumulate": 1}, "BAD_FIELD"], "before": True},
            {"steps": [[3, 0]], "patch": [kv_mv, {"kv_append": 1}, "BAD_FIELD"], "before": True},
            {"steps": [[3, 0], [7, 1]], "patch": [kv_mv, {"paddr": q_paddr}, None]},
            {"steps": [[5, 0], [6, 1]], "bus_start": True},
            {"steps": [[3, 0]], "patch": [glu_mv, {"rows": glu_rows - 1}, "BAD_FIELD"],
             "before": True},
            {"steps": [[3, 0]], "patch": [glu_mv, {"accumulate": 1}, "BAD_FIELD"],
             "before": True},
            {"steps": [[3, 0]], "patch": [glu_mv, {"out_width": Width.W8.value}, "BAD_FIELD"],
             "before": True},
            {"steps": [[3, 0]], "patch": [glu_mv + 1, {"in_width": Width.W8.value},
                                          "INPUT_RANGE"]},
            {"steps": [[3, 0]], "patch": [glu_mv, {"in_width": Width.W16.value}, "BAD_FIELD"],
             "before": True}]
    out = _run({**LLAMA, "scenarios": scen}, tmp_path)
    assert "logits differ" in out[1]["message"] and "logits differ" in out[2]["message"]
    assert [out[n]["steps"][0]["golden_code"] for n in range(4, 13)] == \
        ["SCRATCH_RANGE", "WEIGHT_RANGE", "PARAM_RANGE"] + ["INPUT_RANGE"] * 2 + \
        ["WEIGHT_RANGE", None, None, None]
    assert [s["pos"] for s in out[0]["steps"]] == list(range(ctx))
    assert [out[n]["steps"][0]["golden_code"] for n in range(15, 20)] == [None] * 3 + \
        ["INPUT_RANGE", None]


def test_gpt2(tmp_path):
    """GPT-2 (LayerNorm with bias, learned positions, GELU, multi-head; k and v projected by
    two MATVECs, each appending its rows to the KV cache): every position, then one beyond; a
    MATVEC with ``glu`` ends the job with BAD_FIELD (the engine has no SwiGLU unit)."""
    ctx = GPT2["context"]
    _, comp = build(GPT2)
    fc = next(n for n, i in enumerate(comp.program) if i.op.name == "MATVEC" and i.rows == 90)
    out = _run({**GPT2, "scenarios": [
        {"steps": _steps(ctx) + [[2, ctx]]},
        {"steps": [[2, 0]], "patch": [fc, {"glu": 1, "bias": 0}, "BAD_FIELD"], "before": True}]},
        tmp_path)
    assert out[1]["steps"][0]["golden_code"] is None


def test_llama_gqa(tmp_path):
    """GQA llama (kv_mul 3) with 16-bit wq, w1 and embedding table (shared classifier), all
    stored as two weight planes: three positions. The weight bank is split: rows 0-511 in
    block RAM, the rest (the embedding/classifier among them) in LUT RAM. Compiled without
    ``fuse_rope`` (so without ``fuse_append``): q and k are rotated by ROPE instructions, k
    and v appended by KVAPPEND, and an 8-bit ROPE or a KVAPPEND of elements outside int8 (the
    16-bit q) ends the job with INPUT_RANGE."""
    _, comp = build(GQA)
    rope8 = next(n for n, i in enumerate(comp.program)
                 if i.op.name == "ROPE" and i.width.name == "W8")
    q = comp.buffers["q"][0]
    first_kv = next(n for n, i in enumerate(comp.program) if i.op.name == "KVAPPEND")
    scen = [{"steps": _steps(3)},
            {"steps": [[3, 0]], "patch": [rope8, {"src": q}, "INPUT_RANGE"]},
            {"steps": [[3, 0]], "patch": [first_kv, {"src": q}, "INPUT_RANGE"]}]
    out = _run({**GQA, "scenarios": scen}, tmp_path)
    assert [out[n]["steps"][0]["golden_code"] for n in (1, 2)] == ["INPUT_RANGE"] * 2


def test_engine_construction_checks():
    cfg, comp = build(GQA)
    e = Engine(cfg, comp)
    e._MustUse__silence = True              # only its memory map is looked at here
    mp = e.memory_map
    assert json.loads(e.fingerprint())["isa"] == layout_digest()
    assert mp.base("program") == 1 << (mp.window_bits + 2)
    assert len(mp.image_writes(comp.words, comp.image)) == \
        4 * len(comp.words) + comp.image.weights.shape[0] * mp.row_words + comp.image.params.size
    with pytest.raises(UserError, match="powers"):
        Engine(AcceleratorConfig(lanes=6, macs_per_lane=4), comp)
    with pytest.raises(UserError, match="laid out"):
        Engine(AcceleratorConfig(lanes=16, macs_per_lane=4), comp)
    with pytest.raises(UserError, match="smaller than the program"):
        Engine(cfg, comp, program_words=3)
    assert ErrorCode.POS_RANGE.value == 6


def test_engine_profile_per_instruction(tmp_path):
    """``python -m sim.benches.engine_profile`` (same build as ``test_gpt2``): one row per
    instruction up to the end of the layer loop's body, each costing cycles, and the whole
    step (all layers, classifier) costing more than the one-layer prefix."""
    r = run_module("sim.benches.engine_profile",
                   ["--params", json.dumps(GPT2), "--pos", "2", "--json"], REPO)
    _, comp = build(GPT2)
    loop = next(n for n, ins in enumerate(comp.program) if ins.op.name == "LOOP")
    assert [row[0] for row in r["rows"]] == list(range(loop + comp.program[loop].body + 1))
    assert r["rows"][0][1].startswith("EMBED") and all(row[2] > 0 for row in r["rows"])
    assert r["step_cycles"] > sum(row[2] for row in r["rows"])
