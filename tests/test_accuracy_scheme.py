"""Accuracy-scheme options of the compiler and their integer definitions in the golden model:
16-bit activation headroom (parameters only), int16 norm outputs, an int9 KV cache and int9
weights (image extensions the RTL does not run yet), each checked against an independent
integer computation, the fit accounting of the wider memories, and the stories260K figure."""


import numpy as np
import pytest

from hdlgen.bench.accuracy import measure
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.compiler.image import split_requant_word
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import Opcode
from hdlgen.errors import UserError
from hdlgen.model import builtin_model_path, load_model
from sim.golden.engine import Engine, EngineError, norm_wide
from sim.golden.norm import NormParams, norm_float, norm_golden
from sim.golden.requant import requantize

STORIES = builtin_model_path("stories260K")   # hdlgen/model/builtin (vendored)
CFG = AcceleratorConfig(lanes=8, macs_per_lane=4)


def _compile(spec="random:llama", seed=1, context=16, **opts):
    m = load_model(spec, seed=seed)
    return m, compile_model(m, CFG, CompileOptions(context=context, **opts))


def _trace(comp, tokens, mac="reference"):
    rec = []
    eng = Engine(comp.image, comp.words, acc_width=comp.config.acc_width, mac=mac,
                 trace=lambda pc, layer, ins, v: rec.append((pc, layer, ins, v)))
    for pos, t in enumerate(tokens):
        rec.append(("step", pos, None, None))
        eng.step(t, pos)
    return eng, rec


def test_norm_wide_is_norm_golden_with_a_wider_clamp():
    rng = np.random.default_rng(5)
    for kind in ("rmsnorm", "layernorm"):
        p = NormParams(kind, dim=48, gamma_frac=4, out_frac=4, eps=0.5)
        wider = 0
        for _ in range(20):
            x = rng.integers(-3000, 3000, 48)
            g = rng.integers(-2000, 2000, 48)
            b = rng.integers(-2000, 2000, 48) if kind == "layernorm" else None
            y16 = norm_wide(p, x, g, b, 16)
            assert np.array_equal(np.clip(y16, -128, 127), norm_golden(p, x, g, b))
            wider += int(np.sum(np.abs(y16) > 127))
            ref = norm_float(p, x, g, b)
            assert np.max(np.abs(y16 - ref)) <= 0.5 + 1e-3 * np.max(np.abs(ref))
        assert wider > 100          # the 16-bit output really goes beyond int8


def test_headroom_changes_parameters_only():
    _, a = _compile(act_headroom=1.0)
    _, b = _compile()                               # default 2
    assert a.image.ext == {} and b.image.ext == {}
    assert a.words == b.words
    assert np.array_equal(a.image.weights, b.image.weights)
    assert not np.array_equal(a.image.params, b.image.params)
    sa, sb = a.qmodel.scales, b.qmodel.scales
    assert np.allclose(sb["q"], 2 * sa["q"])
    assert np.allclose(sb["ffn_hidden"], 2 * sa["ffn_hidden"])
    assert np.allclose(sb["residual"], sa["residual"]) and np.allclose(sb["k"], sa["k"])


def test_int9_weights_matvec_is_exact():
    m, comp = _compile(weight_width=9, norm_bits=16, fuse_rope=False)   # (q not rotated)
    assert comp.image.ext == {"weight_bits": 9, "norm_out_bits": 16}
    assert comp.image.weights.dtype == np.int16
    w = comp.qmodel.weights["wq"].q[0].astype(np.int64)
    assert np.abs(w).max() > 127 and np.abs(w).max() <= 255
    _, rec = _trace(comp, [1, 5, 9])
    body = [r for r in rec if r[0] != "step"]
    i = next(n for n, r in enumerate(body) if r[2].op == Opcode.NORM)
    x, (_, _, mv, y) = body[i][3], body[i + 1]
    assert mv.op == Opcode.MATVEC and mv.in_width.name == "W16"
    assert np.abs(x).max() > 127                       # the norm output is 16-bit
    rq = comp.qmodel.requant["wq"]
    want = requantize(w @ x, rq.mult[0], rq.shift[0], out_bits=16)
    assert np.array_equal(y, want)
    # beat-by-beat MAC-array model gives the same as its reference
    a = Engine(comp.image, comp.words, mac="beats")
    b = Engine(comp.image, comp.words, mac="reference")
    for pos, t in enumerate([1, 5, 9]):
        ra, rb = a.step(t, pos), b.step(t, pos)
        assert ra.token == rb.token and np.array_equal(ra.logits, rb.logits)


def test_int9_kv_cache_scores_are_exact():
    m, comp = _compile(kv_bits=9, act_headroom=2.0, fuse_softmax=False,   # scores traced
                       fuse_rope=False)                                    # and k, q rotated
    assert comp.image.ext == {"kv_bits": 9}
    toks = [1, 5, 9, 3, 7, 2]
    eng, rec = _trace(comp, toks)
    hs = comp.image.head_size
    keys, stored_big, checked = [], 0, 0
    for n, (pc, layer, ins, v) in enumerate(rec):
        if pc == "step" or layer != 0:
            continue
        if ins.op == Opcode.KVAPPEND and ins.kv == 0:
            rope_k = next(r[3] for r in reversed(rec[:n]) if r[0] != "step"
                          and r[2].op == Opcode.ROPE and r[2].src == ins.src)
            assert np.array_equal(v, np.clip(rope_k, -256, 255))
            stored_big += int(np.sum(np.abs(v) > 127))
            keys.append(v[:hs])                      # head 0
        if ins.op == Opcode.ROPE and ins.src == comp.buffers["q"][0]:
            q = v[:hs]
        if ins.op == Opcode.SCORES:
            mult, shift = split_requant_word(comp.image.params[ins.paddr])
            want = requantize(np.stack(keys) @ q, mult, shift, out_bits=16)
            assert np.array_equal(v[0][:len(keys)], want)
            checked += 1
    assert len(keys) == checked == len(toks)
    assert stored_big > 0                            # int9 rows really use the ninth bit


def test_gpt2_layernorm_16_bit_outputs_run():
    _, comp = _compile("random:gpt2", norm_bits=16, kv_bits=9, weight_width=9)
    a = Engine(comp.image, comp.words, mac="beats")
    b = Engine(comp.image, comp.words, mac="reference")
    for pos, t in enumerate([1, 4, 2]):
        ra, rb = a.step(t, pos), b.step(t, pos)
        assert ra.token == rb.token and np.array_equal(ra.logits, rb.logits)


def test_option_errors():
    with pytest.raises(UserError, match="weight_exp"):
        _compile(weight_exp=True, weight_width=9)
    with pytest.raises(UserError, match="norm_bits=12"):
        _compile(norm_bits=12)
    with pytest.raises(UserError, match="weight_width=9"):
        _compile(weight_width=9, weight_bits={"wq": 16})
    with pytest.raises(UserError, match="norm_bits=16"):
        _compile(act_bits={"attn_norm": 16})
    with pytest.raises(UserError, match="act_headroom"):
        _compile(act_headroom=0.5)
    _, comp = _compile()
    comp.image.ext = {"kv_bits": 12}
    with pytest.raises(EngineError, match="kv_bits=12"):
        Engine(comp.image, comp.words)


def test_stories_memory_of_the_wider_schemes():
    """int9 KV rows fill the ninth bits of the 72-bit rows (same 40 EBR); an int9 weight bank
    is 1152 bits wide: 32 DP16KD columns of 36 bits, as many as the int8 bank's byte lanes
    (32 bits of each block) take, so it costs no more block RAM (128 EBR for 2,048 rows, the
    8 rows past them in LUT RAM); int8 weights with a shift bit per lane (1,040 bits) take 29."""
    from hdlgen.compiler.compile import plan_image, plan_units
    m = load_model(STORIES)
    units = plan_units(m.config, AcceleratorConfig())

    def plan(ext):
        return plan_image(m.config, AcceleratorConfig(), 256, ext=ext).memory_ebr(units)
    base, kv9, w9, wexp = plan({}), plan({"kv_bits": 9}), plan({"weight_bits": 9}), \
        plan({"weight_exp": 1})
    assert base["kv_cache"] == kv9["kv_cache"] == 40
    assert (base["weights"], w9["weights"], wexp["weights"]) == (128, 128, 116)
    assert sum(w9.values()) == sum(base.values()) <= 208


def test_stories_best_fitting_scheme():
    """The best scheme that fits the 85F (at context 128; at 256 it needs 216 EBR, see
    hdlgen.compiler.compile): 16-bit headroom x2 (default), int16 norm outputs,
    int9 KV cache, int8 weights with a shift bit per lane and row, 11-bit embedding, wq, wk
    in the bank's spare rows: 0.961 top-1 / 0.0099 KL over 256 positions (default 0.867 /
    0.063). Floor over the first 128 positions."""
    opts = CompileOptions(norm_bits=16, kv_bits=9, weight_exp=True,
                          weight_bits={"token_embedding": 11, "wq": 11, "wk": 11})
    r = measure(load_model(STORIES), 128, opts)
    assert r["fits"] and r["ebr_total"] <= 208
    assert r["scheme"]["ext"] == {"norm_out_bits": 16, "kv_bits": 9, "weight_exp": 1,
                                  "planes_x16": 1}
    assert r["top1_agreement"] >= 0.94, r
    assert r["mean_kl"] < 0.02, r


def test_weight_exp_groups_and_exact_matvec():
    """int8 weights with one shift bit per lane and bank row: every lane slice of a bank row
    is int8 or an even int9; both kinds occur; the matvec is the exact int9 product (of w1,
    so gate and up are separate MATVECs here: without ``fuse_glu``)."""
    _, comp = _compile(weight_exp=True, norm_bits=16, fuse_glu=False)
    im = comp.image
    assert im.ext == {"weight_exp": 1, "norm_out_bits": 16}
    bank = im.weights.astype(np.int64).reshape(-1, im.lanes, im.macs_per_lane)
    fine = np.all((bank >= -128) & (bank <= 127), axis=-1)
    even = np.all(bank % 2 == 0, axis=-1)
    assert np.all(fine | even)
    coarse = ~fine
    assert coarse.any() and (fine & ~even).any()
    assert im.weight_row_bits == 8 * im.lanes * im.macs_per_lane + im.lanes
    w = comp.qmodel.weights["w1"].q[0].astype(np.int64)
    _, rec = _trace(comp, [1, 5])
    body = [r for r in rec if r[0] != "step" and r[1] == 0]
    i = [n for n, r in enumerate(body) if r[2].op == Opcode.NORM][1]     # ffn norm, layer 0
    x, (_, _, _, y) = body[i][3], body[i + 1]
    rq = comp.qmodel.requant["w1"]
    assert np.array_equal(y, requantize(w @ x, rq.mult[0], rq.shift[0], out_bits=16))
    # an odd int9 value in a slice beyond int8 is not representable: the engine refuses it
    bad = im.weights.copy()
    r, l = np.argwhere(coarse)[0]
    bad.reshape(-1, im.lanes, im.macs_per_lane)[r, l, 0] = 201
    im2 = type(im)(**{**im.__dict__, "weights": bad})
    with pytest.raises(EngineError, match="neither int8 nor"):
        Engine(im2, comp.words)


def test_fake_quantization_orders_schemes():
    """The fake-quantization estimator: near-lossless grids give a much smaller KL than the
    int8 scheme on the same random model; bad schemes are refused."""
    from hdlgen.compiler.fakequant import FakeScheme, measure_fake
    m = load_model("random:llama", seed=3)
    lossy = measure_fake(m, 16, FakeScheme())
    fine = measure_fake(m, 16, FakeScheme(norm="static16", kv="static16", weight_bits=0))
    mid = measure_fake(m, 16, FakeScheme(norm="dyn8", kv="row8", weight_bits=9, weight_exp=4))
    assert fine["mean_kl"] < lossy["mean_kl"] / 10
    assert 0 < mid["mean_kl"] < lossy["mean_kl"]
    for bad in (dict(norm="int4"), dict(kv="x"), dict(weight_bits=4),
                dict(weight_group=8, weight_exp=8), dict(act_headroom=0.5)):
        with pytest.raises(UserError):
            measure_fake(m, 4, FakeScheme(**bad))


def test_fake_weights_alone_and_llama2c_scheme():
    """``acts="float"`` quantizes the weights only (its KL is below the full int8 scheme's and
    above float weights'); ``FakeScheme.llama2c`` is runq.c's int8 grouping (group 64 halved
    to divide dim, no GPTQ or smoothing) and loses more than the weights alone."""
    from hdlgen.compiler.fakequant import FakeScheme, measure_fake
    m = load_model("random:llama", seed=3)
    assert FakeScheme.llama2c(64).weight_group == 64 and FakeScheme.llama2c(40).weight_group == 8
    q = FakeScheme.llama2c(m.config.dim)
    assert (q.acts, q.gptq, q.smooth, q.smooth_kv) == ("q80", False, None, False)
    full = measure_fake(m, 16, FakeScheme())
    w_only = measure_fake(m, 16, FakeScheme(acts="float"))
    runq = measure_fake(m, 16, q)
    assert 0 < w_only["mean_kl"] < full["mean_kl"]
    assert runq["mean_kl"] > w_only["mean_kl"]
    for bad in (dict(acts="int4"), dict(acts="q80")):
        with pytest.raises(UserError, match="acts"):
            measure_fake(m, 4, FakeScheme(**bad))


def test_cli_fake_and_extension_flags(capsys):
    import json
    from hdlgen.cli import main
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8", "--fake",
                 "--norm16", "--kv", "row8", "--weight-width", "10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["fake_quantization"] and r["scheme"]["kv"] == "row8"
    assert r["scheme"]["weight_bits"] == 10 and r["scheme"]["norm"] == "static16"
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8", "--fake",
                 "--llama2c", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheme"]["acts"] == "q80"
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8",
                 "--llama2c"]) == 2
    assert "add --fake" in capsys.readouterr().err
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8",
                 "--norm16", "--kv9", "--weight-exp", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["scheme"]["ext"] == {"norm_out_bits": 16, "kv_bits": 9, "weight_exp": 1}
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8",
                 "--kv", "row8"]) == 2
    assert "add --fake" in capsys.readouterr().err
    assert main(["bench", "accuracy", "--model", "random:llama", "--positions", "8",
                 "--weight-width", "10"]) == 2
    assert "--fake" in capsys.readouterr().err


def test_11_bit_two_plane_weights_with_16_bit_inputs():
    """11-bit weights as two int8 planes on 64-input matrices meet 16-bit inputs exactly
    (extension planes_x16); wider matrices and 16-bit two-plane weights are refused."""
    m, comp = _compile(norm_bits=16, weight_exp=True,
                       weight_bits={"wq": 11, "token_embedding": 11})
    assert comp.image.ext == {"norm_out_bits": 16, "weight_exp": 1, "planes_x16": 1}
    w = comp.qmodel.weights["wq"].q[0].astype(np.int64)
    assert 255 < np.abs(w).max() <= 1023
    _, rec = _trace(comp, [1, 5])
    body = [r for r in rec if r[0] != "step"]
    i = next(n for n, r in enumerate(body) if r[2].op == Opcode.NORM)
    x, (_, _, mv, y) = body[i][3], body[i + 1]
    assert mv.w_planes == 2 and mv.in_width.name == "W16"
    rq = comp.qmodel.requant["wq"]
    assert np.array_equal(y, requantize(w @ x, rq.mult[0], rq.shift[0], out_bits=16))
    a = Engine(comp.image, comp.words, mac="beats")
    b = Engine(comp.image, comp.words, mac="reference")
    for pos, t in enumerate([1, 5, 9]):
        ra, rb = a.step(t, pos), b.step(t, pos)
        assert ra.token == rb.token and np.array_equal(ra.logits, rb.logits)
    comp.image.ext = {"norm_out_bits": 16, "weight_exp": 1}
    with pytest.raises(EngineError, match="planes_x16"):
        Engine(comp.image, comp.words).step(1, 0)
    with pytest.raises(UserError, match="at most 64 inputs"):
        _compile(weight_bits={"w2": 11})
    with pytest.raises(UserError, match="or use 11-bit weights"):
        _compile(norm_bits=16, weight_bits={"wq": 16})
