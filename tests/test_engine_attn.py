"""Fused attention scores and softmax (``SCORES_SOFTMAX``): the golden model's definition (the
probabilities of ``SCORES`` then ``SOFTMAX``, the scores never written), the compiler's
emission, and the RTL engine (Verilator + cocotb, :mod:`sim.benches.engine`: the whole
scratchpad equals the golden model's after every step) for multi-query, grouped-query and
multi-head attention, several head sizes, positions from 0 to the KV capacity, its field errors,
the unfused pair on the same engine, and the cycles it saves."""

from pathlib import Path

import numpy as np
import pytest

from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import Instruction, Opcode, Width, decode, encode
from hdlgen.model import load_model
from sim.benches.engine import build, run_scenarios
from sim.golden.engine import Engine, EngineError

REPO = Path(__file__).resolve().parent.parent

# MQA, head size 8, five heads (the softmax's rows at position 0 are shorter than its
# per-row cost: the engine must wait for it)
MQA = {"spec": "random:llama", "seed": 3, "context": 6,
       "over": {"dim": 40, "n_heads": 5, "n_kv_heads": 1, "hidden_dim": 60, "vocab_size": 45,
                "n_layers": 2}}
# GQA (kv_mul 4), head size 4 (one ATTV group per head), twelve heads, context 9; heads in
# pairs (with 16-deep score queues, see test_rtl_scores_in_pairs, more scores wait for the
# softmax than the queues hold, up to 12 x 9, so the KV stream must be held back)
GQA4 = {"spec": "random:llama", "seed": 4, "context": 9,
        "over": {"dim": 48, "n_heads": 12, "n_kv_heads": 3, "hidden_dim": 40, "vocab_size": 30,
                 "n_layers": 2}}
# two heads of size 8 over one KV head (two ATTV groups per head with 8 lanes): ATTV reaches
# the last head's row while the softmax still writes it
TWO_HEADS = {"spec": "random:llama", "seed": 5, "context": 7,
             "over": {"dim": 16, "n_heads": 2, "n_kv_heads": 1, "hidden_dim": 24,
                      "vocab_size": 30, "n_layers": 2}}
# multi-head GPT-2, head size 12
GPT2 = {"spec": "random:gpt2", "seed": 2, "context": 5,
        "over": {"dim": 36, "n_heads": 3, "hidden_dim": 90, "vocab_size": 50, "n_layers": 1}}


def _compile(p, fuse):
    cfg = AcceleratorConfig(lanes=p.get("lanes", 8), macs_per_lane=p.get("macs_per_lane", 4))
    m = load_model(p["spec"], seed=p["seed"], **p["over"])
    return compile_model(m, cfg, CompileOptions(context=p["context"], fuse_softmax=fuse))


def _steps(ctx, tokens=(3, 7, 1, 4, 9, 2, 5, 8)):
    return [[tokens[i % len(tokens)], i] for i in range(ctx)]


# ---- ISA, compiler and golden model (no simulator) ---------------------------------------------

def test_isa_round_trip():
    ins = Instruction.make(Opcode.SCORES_SOFTMAX, layer_rel=1, q_width=Width.W16, in_frac=8,
                           out_bits=14, q=100, dst=2000, stride=256, n_heads=8, kv_mul=2,
                           head_size=8, paddr=12345)
    assert decode(encode(ins)) == ins
    assert encode(ins) & 0x3F == Opcode.SCORES_SOFTMAX.value


@pytest.mark.parametrize("p", [MQA, GQA4, GPT2], ids=["mqa", "gqa_hs4", "gpt2"])
def test_compiler_fuses_scores_and_softmax(p):
    fused, plain = _compile(p, True), _compile(p, False)
    ops_f = [i.op for i in fused.program]
    ops_p = [i.op for i in plain.program]
    assert Opcode.SCORES not in ops_f and Opcode.SOFTMAX not in ops_f
    assert ops_f.count(Opcode.SCORES_SOFTMAX) == 1 and len(ops_f) == len(ops_p) - 1
    f = next(i for i in fused.program if i.op == Opcode.SCORES_SOFTMAX)
    sc = next(i for i in plain.program if i.op == Opcode.SCORES)
    sm = next(i for i in plain.program if i.op == Opcode.SOFTMAX)
    assert (f.q, f.stride, f.n_heads, f.kv_mul, f.head_size, f.paddr) == \
        (sc.q, sc.stride, sc.n_heads, sc.kv_mul, sc.head_size, sc.paddr)
    assert (f.in_frac, f.out_bits) == (sm.in_frac, sm.out_bits)
    # both write the probabilities to the probs buffer; only the unfused pair has scores
    assert (f.dst, sm.dst) == (fused.buffers["probs"][0], plain.buffers["probs"][0])
    assert sc.dst == sm.src == plain.buffers["scores"][0] and "scores" not in fused.buffers
    loop = next(i for i in fused.program if i.op == Opcode.LOOP)
    assert loop.body == next(i for i in plain.program if i.op == Opcode.LOOP).body - 1


@pytest.mark.parametrize("p", [MQA, GQA4, GPT2], ids=["mqa", "gqa_hs4", "gpt2"])
def test_golden_fused_equals_scores_then_softmax(p):
    """Every position up to the KV capacity: the fused program gives the same probabilities
    (trace), tokens, logits and contents of every scratchpad buffer as the unfused one; only
    the unfused one has (and writes) a scores buffer, so the fused scratchpad is that much
    smaller."""
    fused, plain = _compile(p, True), _compile(p, False)
    n_heads, ctx = p["over"]["n_heads"], p["context"]
    assert set(plain.buffers) - set(fused.buffers) == {"scores"}
    assert set(fused.buffers) <= set(plain.buffers)
    a, s_len = plain.buffers["scores"]
    assert s_len == n_heads * ctx
    assert plain.image.act_elements - fused.image.act_elements == s_len
    rec = {True: [], False: []}
    engines = {}
    for fuse, comp in ((True, fused), (False, plain)):
        engines[fuse] = Engine(comp.image, comp.words, trace=lambda pc, layer, ins, v, f=fuse:
                               rec[f].append((ins.op, layer, v)))
    for t, pos in _steps(ctx):
        rf, rp = engines[True].step(t, pos), engines[False].step(t, pos)
        assert (rf.token, rf.value) == (rp.token, rp.value)
        assert np.array_equal(rf.logits, rp.logits)
        for name, (fa, n) in fused.buffers.items():
            pa = plain.buffers[name][0]
            assert np.array_equal(engines[True].act[fa:fa + n],
                                  engines[False].act[pa:pa + n]), (name, pos)
        assert len(engines[True].act) == fused.image.act_elements
        scores = engines[False].act[a:a + s_len].reshape(n_heads, ctx)
        assert scores[:, :pos + 1].any() and not scores[:, pos + 1:].any()
    probs_f = [(layer, v) for op, layer, v in rec[True] if op == Opcode.SCORES_SOFTMAX]
    probs_p = [(layer, v) for op, layer, v in rec[False] if op == Opcode.SOFTMAX]
    assert len(probs_f) == len(probs_p) == p["context"] * p["over"]["n_layers"]
    for (lf, vf), (lp, vp) in zip(probs_f, probs_p):
        assert lf == lp and np.array_equal(vf, vp)
        assert vf.shape[0] == p["over"]["n_heads"]


def test_golden_refuses_bad_fused_fields():
    comp = _compile(MQA, True)
    n = next(k for k, i in enumerate(comp.program) if i.op == Opcode.SCORES_SOFTMAX)
    for fields, msg in (({"kv_mul": 0}, "needs more than the KV cache"),
                        ({"head_size": 4}, "does not match the KV cache"),
                        ({"stride": 2}, "do not fit the row stride")):
        prog = list(comp.program)
        prog[n] = Instruction.make(Opcode.SCORES_SOFTMAX, **{**dict(prog[n].fields), **fields})
        with pytest.raises(EngineError, match=msg):
            Engine(comp.image, prog).step(1, 3)


# ---- RTL ------------------------------------------------------------------------------------

def _run(p, out_dir):
    out_dir.mkdir(exist_ok=True)
    return run_scenarios("sim.benches.engine", p, out_dir, REPO)


def test_rtl_fused_mqa_field_errors(tmp_path):
    """MQA (the build of ``tests/test_engine_rtl.py``, whose every-position run takes the fused
    path): a bad ``kv_mul`` or ``head_size`` ends the step with BAD_FIELD, a destination past
    the scratchpad with SCRATCH_RANGE (the golden model refuses each); then good steps."""
    _, comp = build(MQA)
    n = next(k for k, i in enumerate(comp.program) if i.op == Opcode.SCORES_SOFTMAX)
    ctx = MQA["context"]
    scen = [{"steps": [[3, 2]], "patch": [n, {"kv_mul": 0}, "BAD_FIELD"]},
            {"steps": [[3, 2]], "patch": [n, {"head_size": 4}, "BAD_FIELD"]},
            {"steps": [[3, 2]], "patch": [n, {"dst": comp.image.act_elements - 3},
                                          "SCRATCH_RANGE"]},
            {"steps": _steps(ctx)}]
    _run({**MQA, "scenarios": scen}, tmp_path)


def test_rtl_fused_gqa_head_size_4(tmp_path):
    """GQA, head size 4: every position up to the KV capacity and one beyond (fused), then
    the same steps with the unfused SCORES and SOFTMAX on the same engine design (built
    for the unfused program, whose scratchpad also holds the scores buffer);
    the fused step is faster at the longer positions."""
    ctx = GQA4["context"]
    steps = _steps(ctx) + [[1, ctx]]
    fused = _run({**GQA4, "scenarios": [{"steps": steps}]}, tmp_path / "f")
    plain = _run({**GQA4, "fuse_softmax": False, "scenarios": [{"steps": _steps(ctx)}]},
                 tmp_path / "p")
    cf = [s["cycles"] for s in fused[0]["steps"][:ctx]]
    cp = [s["cycles"] for s in plain[0]["steps"]]
    assert all(f < q for f, q in zip(cf[2:], cp[2:])), (cf, cp)


@pytest.mark.parametrize("p", [TWO_HEADS, GQA4], ids=["two_groups", "one_group"])
def test_rtl_attv_follows_the_softmax(p, tmp_path):
    """``ATTV`` starts while the ``SCORES_SOFTMAX`` before it still writes its last rows
    (``AV_CHAIN``): its probability reader takes a row only once the softmax has written it,
    its results and its writer run wait for the softmax's run. Two heads with two ``ATTV``
    groups each (a reader job per group) and GQA4 (one group per head: one reader job over
    every head's row), every position, both reading rows the softmax has not finished yet (a
    reader without the row limit fails both): bit-exact with the golden model over the whole
    scratchpad, and every step faster than the same program with a ``SYNC`` before ``ATTV``
    (which then waits for the softmax's last row, as before the overlap) by at least 16
    cycles a layer (two layers; measured: two heads 70 ... 72 cycles a step, GQA4 62 ... 210;
    with the overlap switched off the SYNC alone costs 22 a step, and both fail)."""
    _, comp = build(p)
    a = next(k for k, i in enumerate(comp.program) if i.op == Opcode.ATTV)
    steps = _steps(p["context"])
    out = _run({**p, "scenarios": [{"steps": steps}, {"steps": steps, "sync_before": a}]},
               tmp_path)
    chained = [s["cycles"] for s in out[0]["steps"]]
    synced = [s["cycles"] for s in out[1]["steps"]]
    assert all(s - c >= 16 * p["over"]["n_layers"] for c, s in zip(chained, synced)), \
        (chained, synced)


def test_rtl_scores_in_pairs(tmp_path):
    """``SCORES_SOFTMAX`` with an even ``kv_mul`` runs two heads per K row (heads ``h`` and
    ``h + 1`` on lanes 0-2 and 3-5, the second score through ``rq2`` into a second queue, the
    softmax taking their rows in head order; GQA4's other tests run it too). GQA4 with 16-deep
    score queues (the shallowest for context 9: a whole row and the margin of 3), so that both
    queues' credits hold the K stream back, every position and one beyond: bit-exact with the
    golden model. GQA4 over a context of 24, every position, with pairs and with one head per
    K row (``pair_scores=False``): both bit-exact; the pair's query load costs ``head_size``
    cycles a layer more, so short rows (the softmax then sets the pace) are at most that much
    slower, and from position 18 on, where the K stream of one head per row holds the ``ATTV``
    back, the pairs save at least 32 cycles a layer."""
    ctx = GQA4["context"]
    _run({**GQA4, "score_queue": 16, "scenarios": [{"steps": _steps(ctx) + [[1, ctx]]}]},
         tmp_path / "small")
    long = {**GQA4, "context": 24}
    cyc = {}
    for name, opt in (("pair", {}), ("one", {"pair_scores": False})):
        out = _run({**long, **opt, "scenarios": [{"steps": _steps(24)}]}, tmp_path / name)
        cyc[name] = [s["cycles"] for s in out[0]["steps"]]
    layers, hs = GQA4["over"]["n_layers"], GQA4["over"]["dim"] // GQA4["over"]["n_heads"]
    assert all(q - o <= hs * layers for q, o in zip(cyc["pair"], cyc["one"])), cyc
    assert all(o - q >= 32 * layers for q, o in zip(cyc["pair"][18:], cyc["one"][18:])), cyc


def test_rtl_score_queue_overrun(tmp_path):
    """The score queues' guard: a K row's last beat enters the MAC array only with a place
    reserved for its score in both queues of the pair (``sm_space``, registered from the
    reservation counts ``sm_occ`` and ``sm_occ2``). With ``sm_space`` held at 1 by the
    simulator while the fused softmax runs, the K stream (two scores a beat) outruns the
    softmax (one a cycle) and a score finds its queue full: the step must end with
    ``OVERRUN`` (the requantizer cannot stall, so the score would be lost) rather than write
    wrong probabilities; the same engine then runs every position bit-exact with the golden
    model."""
    ctx = GQA4["context"]
    scen = [{"steps": [[3, ctx - 1]], "inject": ["sm_space", 1, "sm_fused"]},
            {"steps": _steps(ctx)}]
    out = _run({**GQA4, "score_queue": 16, "scenarios": scen}, tmp_path)
    assert [len(o["steps"]) for o in out] == [1, ctx], out
    assert out[0]["steps"][0]["forced"] > 0, out


def test_score_queue_checks():
    """With pairs each score queue must hold a row and the margin (context + 3); the depth is
    a power of two; without pairs (``pair_scores=False``, or an odd ``kv_mul``) 8 is enough.
    Defaults: 1,024 with pairs, 64 without."""
    from hdlgen.engine.core import Engine
    from hdlgen.errors import UserError
    cfg, comp = build(GQA4)
    with pytest.raises(UserError, match=r"score_queue=8 .*context of 9: give at least 12"):
        Engine(cfg, comp, score_queue=8)
    with pytest.raises(UserError, match="score_queue=24: .*power of two"):
        Engine(cfg, comp, score_queue=24)
    depths = []
    for e in (Engine(cfg, comp), Engine(cfg, comp, score_queue=16),
              Engine(cfg, comp, score_queue=8, pair_scores=False), Engine(*build(MQA))):
        e._MustUse__silence = True          # (not elaborated here)
        depths.append(e._smq)
    assert depths == [1024, 16, 8, 64]
