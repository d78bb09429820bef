"""int8 quantization, calibration, requantization parameters, fit check, accuracy metrics."""

import json
import math

import numpy as np
import pytest

from hdlgen.errors import UserError
from hdlgen.model import builtin_model_path, load_model, random_model
from hdlgen.model.accuracy import compare_logits, log_softmax, reference_sequence, teacher_forced
from hdlgen.model.quantize import (ACT_BITS, DEVICE_EBR, PROB_BITS, SCORE_FRAC, Requant,
                                   calibrate, calibration_tokens, check_fit, fit_report,
                                   memory_needs, quantize_model, quantize_weights)
from sim.float_ref import FloatModel
from sim.golden.requant import quantize_multiplier

STORIES = builtin_model_path("stories260K")   # hdlgen/model/builtin (vendored)


# weights -------------------------------------------------------------------------------------

def test_quantize_weights_per_row():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 10, 7)).astype(np.float32) * np.arange(1, 11)[None, :, None]
    w[1, 4] = 0.0
    qt = quantize_weights(w)
    assert qt.q.dtype == np.int8 and qt.scale.shape == (3, 10)
    assert np.abs(qt.q).max() == 127 and qt.q.min() >= -127
    assert np.allclose(qt.scale[0], np.abs(w[0]).max(axis=1) / 127)
    assert qt.scale[1, 4] == 1.0 and not qt.q[1, 4].any()          # all-zero row
    err = np.abs(qt.dequantize() - w)
    assert np.all(err <= qt.scale[..., None] / 2 + 1e-6)
    # every row uses its full range: the row maximum maps to +-127
    assert np.all(np.abs(qt.q).max(axis=-1)[qt.scale != 1.0] == 127)
    q16 = quantize_weights(w, 16)
    assert q16.q.dtype == np.int16 and np.abs(q16.q).max() == 32767
    assert np.abs(q16.dequantize() - w).max() < err.max() / 100
    with pytest.raises(UserError, match="bits=4"):
        quantize_weights(w, 4)


# requantization ------------------------------------------------------------------------------

def test_requant_from_real_uses_golden_multiplier():
    real = np.array([[0.3, 1e-3], [7.5, 0.0123]])
    r = Requant.from_real("x", real, 8)
    for idx in np.ndindex(real.shape):
        assert (r.mult[idx], r.shift[idx]) == quantize_multiplier(real[idx])
    assert np.allclose(r.mult / 2.0 ** r.shift, real, rtol=2e-5)
    acc = np.array([1000, -1000])
    assert np.array_equal(r.apply(acc, 0), np.clip(np.floor(acc * np.array([0.3, 1e-3]) + 0.5),
                                                   -128, 127))
    with pytest.raises(UserError, match=r"requantization big\[1\].*too large"):
        Requant.from_real("big", [1.0, 1e6], 8)
    with pytest.raises(UserError, match="does not fit int32"):
        Requant.from_real("b", [1.0], 8, bias=[2 ** 33])


# calibration ---------------------------------------------------------------------------------

def test_calibration_tokens_and_stats():
    m = random_model("llama", seed=3)
    seqs = calibration_tokens(m, 3, 20, seed=1)
    assert [len(s) for s in seqs] == [20] * 3 and all(s[0] == 1 for s in seqs)
    assert seqs[0] == [1] + FloatModel(m).generate([1], 19).tokens           # greedy first
    assert seqs == calibration_tokens(m, 3, 20, seed=1)
    assert seqs[1:] != calibration_tokens(m, 3, 20, seed=2)[1:]
    stats = calibrate(m, seqs)
    seen = {}
    fm = FloatModel(m, hook=lambda p, l, v: seen.__setitem__((p, l), max(
        seen.get((p, l), 0.0), float(np.abs(v).max()))))
    for s in seqs:
        fm.logits_sequence(s)
    for key, v in seen.items():
        assert stats[key] == pytest.approx(v) and stats[key + ("max",)] == pytest.approx(v)
    pct = calibrate(m, seqs, method="percentile", percentile=90.0)
    assert all(pct[k] <= stats[k] + 1e-9 for k in seen)
    assert pct[("attn_norm", 0)] < stats[("attn_norm", 0)]
    with pytest.raises(UserError, match="method='mse'"):
        calibrate(m, seqs, method="mse")
    with pytest.raises(UserError, match="length=65"):
        calibration_tokens(m, 1, 65)


# the quantized model: parameters mean what the docstring says --------------------------------

def _int8(x, scale, bits=8):
    m = (1 << (bits - 1)) - 1
    return np.clip(np.floor(np.asarray(x, np.float64) / scale + 0.5), -m - 1, m).astype(np.int64)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_integer_matmul_with_requant_matches_float(arch):
    m = random_model(arch, seed=9, dim=40, n_heads=5, n_kv_heads=5 if arch == "gpt2" else 1,
                     hidden_dim=72)
    qm = quantize_model(m, calibration_tokens(m, 2, 24))
    c = m.config
    assert qm.scales["residual"].shape == () and qm.scales["q"].shape == (c.n_layers,)
    assert qm.requant["wq"].mult.shape == (c.n_layers, c.dim)
    assert qm.requant["wk"].mult.shape == (c.n_layers, c.kv_dim)
    acts = {}
    def record(point, layer, value):
        acts[(point, layer)] = value.copy()

    fm = FloatModel(m, hook=record)
    fm.forward(1, 0)            # BOS at position 0 starts every calibration sequence: no clipping
    layer = 1
    x = acts[("attn_norm", layer)]
    xq = _int8(x, qm.scales["attn_norm"][layer])
    wq = qm.weights["wq"]
    acc = wq.q[layer].astype(np.int64) @ xq
    y = qm.requant["wq"].apply(acc, layer)
    want = acts[("q", layer)] / qm.scales["q"][layer]
    # error budget: input and weight rounding through the dot product, plus the output rounding
    assert np.abs(y - want).max() < 3.0
    assert np.corrcoef(y, want)[0, 1] > 0.999
    # branch output straight into the 16-bit residual scale
    aq = _int8(acts[("att_out", layer)], qm.scales["att_out"][layer])
    r = qm.requant["wo"].apply(qm.weights["wo"].q[layer].astype(np.int64) @ aq, layer)
    want = acts[("attn_proj", layer)] / qm.scales["residual"]
    assert qm.requant["wo"].out_bits == 16
    assert np.abs(r - want).max() < 0.02 * np.abs(want).max()
    # embedding row -> residual
    e = qm.requant["embedding"]
    t = 5
    row = qm.weights["token_embedding"].q[t].astype(np.int64)
    res = e.apply(row, t)
    assert e.out_bits == 16 and np.abs(res).max() < 32767
    assert np.abs(res - m.weights["token_embedding"][t] / qm.scales["residual"]).max() \
        <= qm.weights["token_embedding"].scale[t] / qm.scales["residual"] / 2 + 1
    # attention scores: int8 q . int8 k -> 2**-8 fixed point of q.k / sqrt(head_size)
    qv = _int8(acts[("q_rope" if arch == "llama" else "q", layer)].reshape(-1)[:c.head_size],
               qm.scales["q"][layer])
    kv = _int8(acts[("k_rope" if arch == "llama" else "k", layer)].reshape(-1)[:c.head_size],
               qm.scales["k"][layer])
    s = qm.requant["att_scores"].apply(np.array([qv @ kv]), layer)[0]
    want = float(acts[("att_scores", layer)].reshape(-1)[0]) * 2 ** SCORE_FRAC
    assert abs(s - want) < 0.03 * 2 ** SCORE_FRAC * (1 + abs(want) / 2 ** SCORE_FRAC)
    if arch == "gpt2":
        # biases are int32 in accumulator units
        bias = qm.requant["wq"].bias[layer]
        acc_scale = qm.scales["attn_norm"][layer] * wq.scale[layer]
        assert np.allclose(bias * acc_scale, m.weights["bq"][layer], atol=acc_scale.max())
    else:
        assert qm.requant["wq"].bias is None and "ffn_mul" in qm.requant


def test_quantize_model_options_and_manifest():
    m = random_model("gpt2", seed=2, shared_classifier=False)
    seqs = calibration_tokens(m, 2, 16)
    qm = quantize_model(m, seqs)
    assert set(qm.weights) == {"wq", "wk", "wv", "wo", "w_fc", "w_proj", "token_embedding",
                               "pos_embedding", "wcls"}
    assert qm.weight_bytes() == sum(t.q.size for t in qm.weights.values())
    man = json.loads(json.dumps(qm.manifest()))
    assert man["act_bits"]["att_prob"] == PROB_BITS and man["requant"]["cls"]["out_bits"] == 16
    assert man["weight_bits"]["wcls"] == 8
    wide = quantize_model(m, seqs, act_bits={"attn_norm": 16}, weight_bits={"wcls": 16})
    assert wide.act_bits["attn_norm"] == 16 and wide.weights["wcls"].q.dtype == np.int16
    assert wide.scales["attn_norm"][0] < qm.scales["attn_norm"][0] / 100
    # headroom widens the 16-bit residual scale
    assert quantize_model(m, seqs, residual_headroom=4.0).scales["residual"] == \
        pytest.approx(2 * qm.scales["residual"])
    with pytest.raises(UserError, match="act_bits ffn_gate"):
        quantize_model(m, seqs, act_bits={"ffn_gate": 16})          # not a gpt2 point
    with pytest.raises(UserError, match="weight_bits wq=4"):
        quantize_model(m, seqs, weight_bits={"wq": 4})
    with pytest.raises(UserError, match="headroom"):
        quantize_model(m, seqs, residual_headroom=0.5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fake_quant_tracks_float_and_improves_with_width(arch):
    m = random_model(arch, seed=4)
    seqs = calibration_tokens(m, 3, 48)
    ref = FloatModel(m)
    tokens = calibration_tokens(m, 2, 48, seed=7)[1]
    q8 = quantize_model(m, seqs)
    a8 = teacher_forced(ref, q8.fake_quant(), tokens)
    wide = quantize_model(m, seqs, act_bits={k: 16 for k in ACT_BITS[arch]},
                          weight_bits={k: 16 for k in q8.weights})
    a16 = teacher_forced(ref, wide.fake_quant(), tokens)
    assert a8.top1 >= 0.75 and a8.mean_kl < 0.05
    assert a16.mean_kl < a8.mean_kl / 10 and a16.top1 >= a8.top1
    # to_int / to_real round trip on each grid, saturating at the width
    x = np.array([0.0, 0.01, -0.5, 1e6])
    qi = q8.to_int("attn_norm", 1, x)
    assert qi[-1] == 127 and qi.dtype == np.int64
    assert np.allclose(q8.to_real("attn_norm", 1, qi)[:3], x[:3],
                       atol=q8.scale_of("attn_norm", 1) / 2)
    assert q8.to_int("att_prob", 0, [1.0, -0.1]).tolist() == [2 ** PROB_BITS - 1, 0]
    assert q8.to_int("residual", 0, [1e9])[0] == 32767
    with pytest.raises(UserError, match="no activation scale 'nope'"):
        q8.scale_of("nope")
    # the fake-quantized activations really sit on their grids
    seen = []

    def spy(p, l, v):
        out = hook(p, l, v)
        if p == "attn_norm":
            seen.append((out if out is not None else v) / q8.scales["attn_norm"][l])
        return out

    fq = q8.fake_quant()
    hook = fq.hook
    fq.hook = spy
    fq.forward(3, 0)
    assert seen and all(np.allclose(s, np.round(s), atol=1e-3) for s in seen)


def test_stories260k_quantization_accuracy_figures():
    """Pins the measured accuracy of the scheme on stories260K, teacher-forced over the float
    model's own greedy sequence from BOS, so a regression shows up. Measured over 256
    positions: all int8 top-1 0.750 (mean KL 0.198); 16-bit activations with int8 weights
    0.906; 16-bit activations and weights 0.984 (KL 0.0007). Here 128 positions."""
    m = load_model(STORIES)
    ref = FloatModel(m, context=128)
    tokens = reference_sequence(m, 128)
    assert len(tokens) == 128 and tokens[:4] == [1, 461, 461, 401]
    qm = quantize_model(m)
    acc = teacher_forced(ref, qm.fake_quant(128), tokens)
    assert 0.65 <= acc.top1 <= 0.9 and 0.05 < acc.mean_kl < 0.5
    assert qm.weight_bytes() == 259328
    wide = quantize_model(m, act_bits={k: 16 for k in ACT_BITS["llama"]},
                          weight_bits={k: 16 for k in qm.weights})
    acc16 = teacher_forced(ref, wide.fake_quant(128), tokens)
    assert acc16.top1 >= 0.97 and acc16.mean_kl < 0.005


# accuracy metrics ----------------------------------------------------------------------------

def test_compare_logits_definitions():
    a = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    b = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]]))
    r = compare_logits(a, b)
    assert r.top1 == 0.5 and r.mismatches == [0] and r.positions == 2
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)
    assert r.mean_kl == pytest.approx(kl0 / 2) and r.max_kl == pytest.approx(kl0)
    assert np.allclose(np.exp(log_softmax(a + 100)).sum(1), 1)
    with pytest.raises(UserError, match="cannot be compared"):
        compare_logits(a, b[:1])
    with pytest.raises(UserError, match="NaN"):
        compare_logits(a, b * np.nan)
    m = random_model("gpt2")
    with pytest.raises(UserError, match="positions=65"):
        reference_sequence(m, 65)
    assert reference_sequence(m, 1) == [1]


def test_teacher_forced_self_and_perturbed():
    m = random_model("llama", seed=5)
    ref = FloatModel(m)
    tokens = calibration_tokens(m, 2, 40, seed=3)[1]
    same = teacher_forced(ref, FloatModel(m), tokens)
    assert same.top1 == 1.0 and same.mean_kl == 0.0 and same.mismatches == []
    rng = np.random.default_rng(0)
    noisy = m.with_weights(wo=m.weights["wo"] + 0.3 * rng.standard_normal(m.weights["wo"].shape)
                           .astype(np.float32))
    r = teacher_forced(ref, FloatModel(noisy), tokens)
    assert r.top1 < 1.0 and r.mean_kl > 1e-3 and r.mismatches
    slight = m.with_weights(wo=m.weights["wo"] * np.float32(1.001))
    r2 = teacher_forced(ref, FloatModel(slight), tokens)
    assert 0 < r2.mean_kl < r.mean_kl


# fit -----------------------------------------------------------------------------------------

def test_stories260k_fits_85f_at_256():
    c = load_model(STORIES).config
    r = check_fit(c, 256, "85F")
    assert r.needs["weights"] == 259328 and r.needs["kv_cache"] == 5 * 32 * 2 * 256
    assert r.available == 208 * 2048 == 416 * 1024 and r.fits and r.max_context >= 256
    assert check_fit(c, 256, "LFE5U-85F").device == "85F"


def test_fit_errors_say_what_would_fit():
    c = random_model("llama").config.replace(seq_len=4096, dim=64, hidden_dim=160,
                                              n_heads=8, n_kv_heads=8, n_layers=1)
    r = fit_report(c, 64, "25F")
    assert r.available == 56 * 2048 and 64 < r.max_context < 4096
    # the reported max context is exactly the boundary
    assert fit_report(c, r.max_context, "25F").fits
    assert not fit_report(c, r.max_context + 1, "25F").fits
    with pytest.raises(UserError) as e:
        check_fit(c, 4096, "25F", model_name="big")
    msg = str(e.value)
    total = sum(memory_needs(c, 4096).values())
    assert f"needs {total:,} bytes" in msg and "kv_cache" in msg and "114,688" in msg
    assert f"longest context that fits is {r.max_context}" in msg
    huge = c.replace(n_layers=40)                               # 1.9 MB of weights
    with pytest.raises(UserError, match="does not fit at any context"):
        check_fit(huge, 16, "85F")
    mid = c.replace(n_layers=3)
    with pytest.raises(UserError, match="fits the 45F"):
        check_fit(mid, 64, "25F")
    with pytest.raises(UserError, match="device '99F'"):
        fit_report(c, 64, "99F")
    with pytest.raises(UserError, match="exceeds.*seq_len=4096"):
        check_fit(c, 5000, "85F")
    assert set(DEVICE_EBR) == {"12F", "25F", "45F", "85F"}
    assert fit_report(c, 64, "85F", reserved_bytes=1000).needs["reserved"] == 1000


def test_memory_needs_gpt2_counts_positions_and_biases():
    g = random_model("gpt2").config
    l = random_model("llama").config.replace(hidden_dim=g.hidden_dim, n_kv_heads=6)
    a, b = memory_needs(g, 32), memory_needs(g, 33)
    assert b["weights"] - a["weights"] == g.dim                       # one position row
    assert b["kv_cache"] - a["kv_cache"] == g.n_layers * g.kv_dim * 2
    assert memory_needs(l, 32)["weights"] - memory_needs(g, 32)["weights"] == \
        l.n_layers * l.hidden_dim * l.dim - 32 * g.dim               # third FFN matrix vs wpe
