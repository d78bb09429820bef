"""Integer golden model of the engine: tracks the float reference, is consistent with an
independent integer computation of its matmuls, KV cache and planes, and rejects bad programs
and positions."""

import json

import numpy as np
import pytest

from hdlgen.bench.accuracy import GoldenLogits
from hdlgen.cli import main
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import GLU_MAX_COLS, Instruction, Opcode, Width
from hdlgen.model import load_model
from hdlgen.model.accuracy import reference_sequence
from sim.float_ref import FloatModel
from sim.golden.engine import Engine, EngineError, shared_planes
from sim.golden.requant import requantize
from sim.golden.rope import rope

CFG = AcceleratorConfig(lanes=8, macs_per_lane=4)
SHAPES = [
    ("random:llama", {}),                                            # GQA, dim 48
    ("random:llama", dict(dim=40, n_heads=5, n_kv_heads=1, hidden_dim=100, vocab_size=77)),  # MQA
    ("random:llama", dict(n_layers=3, shared_classifier=False, hidden_dim=72)),
    ("random:gpt2", {}),                                             # MHA, head 12
    ("random:gpt2", dict(dim=36, n_heads=3, hidden_dim=90, vocab_size=50, n_layers=1)),
]

#: Stated tolerance: per position, ||logits_int - logits_float|| / ||logits_float|| (measured
#: 0.02 - 0.06 on these models over 24 positions).
LOGIT_REL_TOL = 0.10


def _compile(spec, over, seed=1, context=16, **opts):
    m = load_model(spec, seed=seed, **over)
    return m, compile_model(m, CFG, CompileOptions(context=context, **opts))


def test_shared_planes_exact():
    x = np.arange(-32768, 32768)
    planes = shared_planes(x)
    assert sum(f * p for f, p in planes).tolist() == x.tolist()
    for _, p in planes:
        assert p.min() >= -128 and p.max() <= 127


@pytest.mark.parametrize("spec,over", SHAPES)
def test_logits_track_float(spec, over):
    m, comp = _compile(spec, over)
    seq = reference_sequence(m, 16)
    f = FloatModel(m, context=16).logits_sequence(seq)
    g = GoldenLogits(comp).logits_sequence(seq)
    rel = np.linalg.norm(g - f, axis=1) / np.linalg.norm(f, axis=1)
    assert rel.max() < LOGIT_REL_TOL, rel
    same = f.argmax(1) == g.argmax(1)
    assert np.mean(same) >= 0.7
    # random models have near-ties; where the float top-2 margin is clear, argmax must agree
    top2 = np.sort(f, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.5
    assert same[clear].all(), (np.nonzero(~same)[0], top2[:, 1] - top2[:, 0])


@pytest.mark.parametrize("spec,over,w16", [("random:llama", {}, ("wq", "w1")),
                                           ("random:gpt2", {}, ("wk",))])
def test_matmuls_and_kv_match_independent_integer_math(spec, over, w16):
    """Every MATVEC equals requantize(W_q @ x) computed from the quantized model directly
    (16-bit inputs and 16-bit weights included; k and v as one stacked MATVEC where their
    weights have the same planes, ``fuse_kv``; q's and k's heads rotated by RoPE,
    ``fuse_rope``), and the KV cache holds what was appended (by the k and v projections
    themselves, ``fuse_append``)."""
    m, comp = _compile(spec, over, weight_bits={k: 16 for k in w16})
    qm = comp.qmodel
    trace = []
    eng = Engine(comp.image, comp.words, trace=lambda pc, l, ins, v: trace.append((pc, l, ins, v)))
    prog = comp.program
    loop = next(i for i in prog if i.op == Opcode.LOOP)
    first = prog.index(loop) + 1
    names = {"llama": ["wq", "wk", "wv", "wo", "w1", "w3", "w2"],
             "gpt2": ["wq", "wk", "wv", "wo", "w_fc", "w_proj"]}[m.config.arch]
    n_mv = sum(i.op == Opcode.MATVEC for i in prog[first:first + loop.body])
    parts = [[n] for n in names]
    if n_mv == len(names) - 1:                       # fuse_kv: wk and wv stacked
        parts = [["wq"], ["wk", "wv"]] + parts[3:]
    assert n_mv == len(parts)
    toks = [1, 5, 9, 3]
    for pos, t in enumerate(toks):
        trace.clear()
        eng.step(t, pos)
        outputs = {(pc, l): v for pc, l, ins, v in trace}
        # the value of each scratchpad buffer as each instruction left it
        state = {}
        seen = appended = 0
        for pc, layer, ins, v in trace:
            if ins.op == Opcode.MATVEC and first <= pc < first + loop.body:
                part = parts[seen % len(parts)]
                name = "+".join(part)
                seen += 1
                x = state[ins.src]
                w = np.concatenate([qm.weights[n].q[layer] for n in part]).astype(np.int64)
                rqs = [qm.requant[n] for n in part]
                acc = w @ x
                bias = (None if rqs[0].bias is None else
                        np.concatenate([r.bias[layer] for r in rqs]))
                y = requantize(acc, np.concatenate([r.mult[layer] for r in rqs]),
                               np.concatenate([r.shift[layer] for r in rqs]), bias=bias,
                               out_bits=16 if ins.out_width.value else 8)
                if ins.accumulate:
                    y = np.clip(state[ins.dst] + y, -32768, 32767)
                if ins.rope_heads:                   # fuse_rope: q's and k's heads rotated
                    hs = m.config.head_size
                    n = ins.rope_heads * hs
                    y[:n] = rope(y[:n], pos, hs, m.config.rope_theta,
                                 16 if ins.out_width.value else 8)
                assert np.array_equal(v, y), (pos, layer, name)
            if ins.op == Opcode.KVAPPEND:
                hs = ins.head_size
                for h in range(ins.kv_heads):
                    assert np.array_equal(eng.kv.rows(layer, h, ins.kv, pos)[pos],
                                          v[h * hs:(h + 1) * hs])
            if ins.op == Opcode.MATVEC and ins.kv_append:   # fuse_append: k, v appended
                hs, kinds = m.config.head_size, [k for k in (0, 1) if ins.kv_append >> k & 1]
                n = ins.rows // len(kinds)
                for i, kv in enumerate(kinds):
                    for h in range(n // hs):
                        assert np.array_equal(eng.kv.rows(layer, h, kv, pos)[pos],
                                              v[i * n + h * hs:i * n + (h + 1) * hs])
                        appended += 1
            if ins.op not in (Opcode.ARGMAX, Opcode.OUTPUT, Opcode.KVAPPEND):
                state[ins.dst] = v if ins.op in (Opcode.SCORES, Opcode.SOFTMAX) else v.reshape(-1)
        assert seen == len(parts) * m.config.n_layers
        assert appended == 2 * m.config.n_kv_heads * m.config.n_layers
        assert len(outputs) == len(trace)


def test_error_paths():
    m, comp = _compile("random:llama", {}, context=8)
    eng = Engine(comp.image, comp.words)
    eng.step(1, 7)
    with pytest.raises(EngineError, match="position 8 is beyond the KV cache's context of 8"):
        eng.step(1, 8)
    words = comp.words
    with pytest.raises(EngineError, match="unknown opcode 63"):
        Engine(comp.image, words[:3] + [63] + words[3:])
    with pytest.raises(EngineError, match="must end with HALT"):
        Engine(comp.image, words[:-1])
    bad = list(comp.program)
    i = next(k for k, ins in enumerate(bad) if ins.op == Opcode.MATVEC)
    d = dict(bad[i].fields)
    src = d["src"]
    d["src"] = comp.image.act_elements - 3
    bad[i] = Instruction.make(Opcode.MATVEC, **d)
    with pytest.raises(EngineError, match=r"instruction \d+ \(MATVEC .*scratchpad region"):
        Engine(comp.image, bad).step(1, 0)
    d["src"], d["waddr"] = src, len(comp.image.weights) - 1
    bad[i] = Instruction.make(Opcode.MATVEC, **d)
    with pytest.raises(EngineError, match="outside the weight bank"):
        Engine(comp.image, bad).step(1, 0)
    for k in ("rows", "cols"):             # the RTL ends such a MATVEC with BAD_FIELD
        bad[i] = Instruction.make(Opcode.MATVEC, **{**dict(comp.program[i].fields), k: 0})
        with pytest.raises(EngineError, match=f"{k}=0.*needs at least one of each"):
            Engine(comp.image, bad).step(1, 0)
    # glu is int8 x int8 with at most GLU_MAX_COLS columns (the RTL's rq2 is that wide)
    g = next(k for k, ins in enumerate(comp.program) if ins.op == Opcode.MATVEC and ins.glu)
    for k, val, msg in (("in_width", Width.W16, "in_width=W16"), ("w_planes", 2, "w_planes=2"),
                        ("cols", GLU_MAX_COLS + 1, f"cols={GLU_MAX_COLS + 1}")):
        bad = list(comp.program)
        bad[g] = Instruction.make(Opcode.MATVEC, **{**dict(comp.program[g].fields), k: val})
        with pytest.raises(EngineError, match=f"glu with .*{msg}.*input must be int8"):
            Engine(comp.image, bad).step(1, 0)
    loop = next(k for k, ins in enumerate(comp.program) if ins.op == Opcode.LOOP)
    nested = list(comp.program)
    nested.insert(loop + 1, comp.program[loop])
    with pytest.raises(EngineError, match="loops do not nest"):
        Engine(comp.image, nested).step(1, 0)
    comp.image.params[next(iter(comp.image.tables))] ^= 1
    with pytest.raises(EngineError, match="table .* does not match"):
        Engine(comp.image, words)
    with pytest.raises(EngineError, match="outside the table's"):
        eng.step(m.config.vocab_size + 3, 0)


def test_run_command_json(capsys):
    for spec in ("random:llama", "random:gpt2"):
        assert main(["run", "--model", spec, "--seed", "7", "--steps", "8", "--check",
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out["tokens"]) == 8 and len(out["predictions"]) == 1
        assert out["golden_mismatches"] == 0
        assert out["fmax_mhz"] > 0
    assert main(["run", "--model", "random:llama", "--prompt-tokens", "1,2,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(["run", "--model", "random:llama", "--target", "serial"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["run", "--model", "random:llama", "--steps", "100"]) == 2
    assert "context" in capsys.readouterr().err


def test_mac_reference_mode_is_identical():
    m, comp = _compile("random:llama", dict(dim=40, n_heads=5, n_kv_heads=1, hidden_dim=100),
                       weight_bits={"wq": 16})
    a = Engine(comp.image, comp.words, mac="beats")
    b = Engine(comp.image, comp.words, mac="reference")
    for pos, t in enumerate([1, 7, 3, 3, 12]):
        ra, rb = a.step(t, pos), b.step(t, pos)
        assert ra.token == rb.token and np.array_equal(ra.logits, rb.logits)
    with pytest.raises(EngineError, match="mac='fast'"):
        Engine(comp.image, comp.words, mac="fast")


def test_run_command_tokenizer(tmp_path, capsys):
    from hdlgen.model import Tokenizer
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b" "] + [bytes([97 + i % 26]) * (1 + i // 26)
                                                             for i in range(92)]
    path = tmp_path / "tok.bin"
    Tokenizer(pieces, [0.0] * len(pieces)).write(path)
    assert main(["run", "--model", "random:llama", "--seed", "7", "--steps", "3",
                 "--tokenizer", str(path), "--prompt", "ab", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"][0] == 1 and len(out["tokens"]) == 3 and isinstance(out["text"], str)
    assert main(["run", "--model", "random:llama", "--prompt", "ab"]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_kv_beats_match_mac_array_helper():
    """The engine's KV-cache beats are the MAC array module's own matvec_beats."""
    from sim.golden.mac_array import mac_array_model, matvec_beats
    m, comp = _compile("random:gpt2", {}, context=8)
    eng = Engine(comp.image, comp.words)
    rng = np.random.default_rng(3)
    for rows, cols in ((5, 12), (9, 3), (1, 1), (16, 12)):
        M = rng.integers(-128, 128, (rows, cols))
        x = rng.integers(-32768, 32768, cols)
        want = sum(f * np.concatenate(mac_array_model(matvec_beats(M, p, 8, 4), 8, 4))[:rows]
                   for f, p in shared_planes(x))
        assert np.array_equal(eng._small_matvec(M, x, 16), want)
        assert np.array_equal(want, M @ x)
