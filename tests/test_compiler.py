"""Model compiler: layout, program structure, fit check and errors, on random models of both
architectures (non-power-of-two widths, MQA, GQA) and on stories260K."""

import json

import numpy as np
import pytest

from hdlgen.blocks.membank import weight_rows
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.compiler.image import WeightAllocator, ebr_count, split_requant_word
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.isa import Opcode, decode_program
from hdlgen.errors import UserError
from hdlgen.model import builtin_model_path, load_model

STORIES = builtin_model_path("stories260K")   # hdlgen/model/builtin (vendored)
SHAPES = [
    ("random:llama", {}),                                            # GQA 6/2, dim 48
    ("random:llama", dict(dim=40, n_heads=5, n_kv_heads=1, hidden_dim=100, vocab_size=77)),  # MQA
    ("random:llama", dict(n_layers=3, shared_classifier=False, hidden_dim=72)),
    ("random:gpt2", {}),                                             # MHA, head 12
    ("random:gpt2", dict(dim=36, n_heads=3, hidden_dim=90, vocab_size=50, n_layers=1)),
]


def test_weight_layout_matches_membank():
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (37, 21))
    wa = WeightAllocator(4, 8)
    wa.add(rng.integers(-128, 128, (3, 3)))          # offset the second matrix
    addr = wa.add(w)
    rows = wa.array()[addr:]
    ref = weight_rows(w, 4, 8)
    assert len(rows) == len(ref)
    for r, v in zip(rows, ref):
        assert int.from_bytes(r.astype(np.uint8).tobytes(), "little") == v


@pytest.mark.parametrize("spec,over", SHAPES)
def test_compile_random(spec, over):
    m = load_model(spec, seed=3, **over)
    cfg = AcceleratorConfig(lanes=8, macs_per_lane=4)
    comp = compile_model(m, cfg)
    c = m.config
    prog = comp.program
    assert prog[-1].op == Opcode.HALT
    assert decode_program(comp.words) == prog
    loop = next(i for i in prog if i.op == Opcode.LOOP)
    assert loop.count == c.n_layers
    body = prog[prog.index(loop) + 1:prog.index(loop) + 1 + loop.body]
    ops = [i.op for i in body]
    assert Opcode.ROPE not in ops                   # (fuse_rope: q and k rotate in MATVEC)
    assert Opcode.KVAPPEND not in ops               # (fuse_append: k and v append themselves)
    mvs = [i for i in body if i.op == Opcode.MATVEC]
    rh = [i.rope_heads for i in mvs]
    assert rh[:2] == ([c.n_heads, c.n_kv_heads] if c.arch == "llama" else [0, 0])
    assert not any(rh[2:])
    assert [i.kv_append for i in mvs] == [0, 3] + [0] * (len(mvs) - 2)
    sc = next(i for i in body if i.op in (Opcode.SCORES, Opcode.SCORES_SOFTMAX))
    assert (sc.n_heads, sc.kv_mul, sc.head_size) == (c.n_heads, c.kv_mul, c.head_size)
    # the weight bank holds every matrix in the MAC array's row layout
    assert comp.image.weights.shape[1] == cfg.lanes * cfg.macs_per_lane
    # layer l's wq sits at its layer-0 address + l * wstride and equals the quantized matrix
    from sim.golden.engine import Engine
    eng = Engine(comp.image, comp.words)
    wq = next(i for i in body if i.op == Opcode.MATVEC)
    for layer in range(c.n_layers):
        got = eng._matrix(wq.waddr + layer * loop.wstride, wq.rows, wq.cols)
        assert np.array_equal(got, comp.qmodel.weights["wq"].q[layer])
    assert comp.manifest["memory_map"]["weights"]["layer_stride"] == loop.wstride
    # requantization words are valid quantize_multiplier pairs
    cls = [i for i in prog if i.op == Opcode.MATVEC][-1]
    words = comp.image.params[cls.paddr:cls.paddr + cls.rows]
    for w in words[:5]:
        mult, shift = split_requant_word(int(w))
        assert 1 <= mult <= 65535 and 1 <= shift <= 47
    # the fit check's plan (shapes only, before quantizing) has the image's exact sizes
    from hdlgen.compiler.compile import _program_length, plan_image
    plan = plan_image(c, cfg, comp.image.context)
    assert plan.weights.shape == comp.image.weights.shape
    assert (plan.params.size, plan.act_elements) == (comp.image.params.size,
                                                     comp.image.act_elements)
    assert _program_length(c) == len(prog)
    json.dumps(comp.manifest)                       # the manifest is plain JSON
    assert comp.manifest["fit"]["ebr_total"] <= comp.manifest["fit"]["ebr_available"]



def _with_and_without(spec, over, option):
    """``(config, accelerator config, context, {True: compiled, False: compiled})``: a random
    model compiled with the boolean ``option`` on and off (8 x 4 MACs, context 8)."""
    m = load_model(spec, seed=3, **over)
    cfg = AcceleratorConfig(lanes=8, macs_per_lane=4)
    comps = {f: compile_model(m, cfg, CompileOptions(context=8, **{option: f}))
             for f in (True, False)}
    return m.config, cfg, 8, comps


@pytest.mark.parametrize("spec,over", SHAPES)
def test_scratchpad_with_and_without_fused_softmax(spec, over):
    """Only the unfused program (``SCORES`` then ``SOFTMAX``) has a ``scores`` buffer; the
    buffers tile the scratchpad in both, the fit check's plan counts exactly the compiled
    scratchpad, no instruction addresses beyond it, and prefill (which shares ``scores``,
    ``probs`` and ``logits`` between tokens) derives a program from either that equals decode
    steps."""
    from hdlgen.compiler.compile import _program_length, plan_image
    from hdlgen.compiler.prefill import prefill_program, with_prefill
    from sim.golden.engine import Engine
    c, cfg, ctx, comps = _with_and_without(spec, over, "fuse_softmax")
    for fuse, comp in comps.items():
        bufs = comp.buffers
        assert ("scores" in bufs) == (not fuse)
        spans = sorted(bufs.values())
        assert spans[0][0] == 0 and sum(n for _, n in spans) == comp.image.act_elements
        assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))   # no gap or overlap
        assert comp.manifest["memory_map"]["scratch"] == \
            {k: {"addr": a, "elements": n} for k, (a, n) in bufs.items()}
        plan = plan_image(c, cfg, ctx, fuse_softmax=fuse)
        assert plan.act_elements == comp.image.act_elements
        assert plan.weights.shape == comp.image.weights.shape
        assert plan.params.size == comp.image.params.size
        assert _program_length(c, fuse) == len(comp.program)
        ops = {i.op for i in comp.program}
        assert (Opcode.SCORES_SOFTMAX in ops) == fuse and (Opcode.SCORES in ops) != fuse
        if not fuse:
            sc = next(i for i in comp.program if i.op == Opcode.SCORES)
            sm = next(i for i in comp.program if i.op == Opcode.SOFTMAX)
            assert sc.dst == sm.src == bufs["scores"][0]
            assert bufs["scores"][1] == c.n_heads * ctx == sc.stride * sc.n_heads
    saved = comps[False].image.act_elements - comps[True].image.act_elements
    assert saved == c.n_heads * ctx
    # prefill of three tokens = three decode steps (same prediction and logits), either way
    prompt = [3, 1, 4]
    for fuse, comp in comps.items():
        pc = with_prefill(comp, 3)
        assert "prefill_scores" not in pc.buffers
        assert ("scores" in pc.buffers) == (not fuse)
        dec = Engine(pc.image, pc.program)
        for i, t in enumerate(prompt):
            want = dec.step(t, i)
        pre = Engine(pc.image, prefill_program(pc, prompt, 0))
        got = pre.step(prompt[0], 0)
        assert (got.token, got.value) == (want.token, want.value), fuse
        assert np.array_equal(got.logits, want.logits)


def test_compile_errors():
    m = load_model("random:llama", seed=0, dim=48, n_heads=4, n_kv_heads=2)   # head size 12
    with pytest.raises(UserError, match="head size 12 .* not a power of two"):
        compile_model(m)
    m = load_model("random:llama", seed=0)
    with pytest.raises(UserError, match="act_bits k=16"):
        compile_model(m, options=CompileOptions(act_bits={"k": 16}))
    with pytest.raises(UserError, match="context=100"):
        compile_model(m, options=CompileOptions(context=100))
    with pytest.raises(UserError, match="max_dot_length"):
        compile_model(m, AcceleratorConfig(max_dot_length=64))


def test_ebr_count():
    assert ebr_count(1024, 2056, parity=True) == 29 * 5
    assert ebr_count(1024, 2056) == 32 * 5
    assert ebr_count(64, 10240) == 40
    assert ebr_count(16, 100) == 1


def test_stories_fits_85f_at_256_and_not_25f():
    import time
    m = load_model(STORIES)
    comp = compile_model(m, AcceleratorConfig(), CompileOptions(context=256, gptq=False))
    fit = comp.manifest["fit"]
    assert fit["ebr_total"] <= 208 and comp.image.context == 256
    assert comp.image.kv_layers == 5 and comp.image.kv_heads == 4
    # the fused softmax (default) needs no scores buffer (8 heads x 256 x 16 bits): 2 EBR less
    plain = compile_model(m, AcceleratorConfig(), CompileOptions(context=256, gptq=False,
                                                                 fuse_softmax=False))
    # (and the fused gate/up, default, no hb and hb2 buffers: 1 EBR less than without it)
    assert (fit["ebr"]["scratch"], plain.manifest["fit"]["ebr"]["scratch"]) == (3, 5)
    # (without SCORES_SOFTMAX no pairs of heads: one 64-entry score queue in LUT RAM, 2 less)
    assert (fit["ebr_total"], plain.manifest["fit"]["ebr_total"]) == (197, 197)
    assert (fit["units"]["score_queues"], plain.manifest["fit"]["units"]["score_queues"]) == (2, 0)
    t0 = time.time()
    with pytest.raises(UserError, match=r"needs \d+ EBR .* but the 25F has 56 EBR.*fits the 85F"):
        compile_model(m, AcceleratorConfig(), CompileOptions(context=256, device="25F"))
    assert time.time() - t0 < 2, "the fit check must refuse before quantizing"


def test_save_artefacts(tmp_path):
    m = load_model("random:gpt2", seed=1)
    comp = compile_model(m, AcceleratorConfig(lanes=8, macs_per_lane=4))
    paths = comp.save(tmp_path)
    assert {p.name for p in paths} == {"program.bin", "program.txt", "weights.bin", "params.bin",
                                       "manifest.json"}
    raw = (tmp_path / "program.bin").read_bytes()
    words = [int.from_bytes(raw[i:i + 16], "little") for i in range(0, len(raw), 16)]
    assert words == comp.words
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["model"]["config"]["arch"] == "gpt2" and man["tables"]
    assert (tmp_path / "weights.bin").stat().st_size == comp.image.weights.size
    params = np.frombuffer((tmp_path / "params.bin").read_bytes(), dtype="<u4")
    assert np.array_equal(params, comp.image.params)


@pytest.mark.parametrize("spec,over", [("random:llama", dict(dim=40, n_heads=5, n_kv_heads=1)),
                                       ("random:gpt2", {})])
def test_smoothing_is_an_exact_reparametrisation(spec, over):
    from hdlgen.compiler.smooth import smooth_kv, smooth_norms
    from hdlgen.model.quantize import calibration_tokens
    from sim.float_ref import FloatModel
    m = load_model(spec, seed=4, **over)
    seqs = calibration_tokens(m, 2, 24)
    s = smooth_norms(smooth_kv(m, seqs), seqs, 0.75, untie=True)
    assert not s.config.shared_classifier
    ref = FloatModel(m, context=24).logits_sequence(seqs[0])
    got = FloatModel(s, context=24).logits_sequence(seqs[0])
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
    changed = [k for k in m.weights if not np.allclose(m.weights[k], s.weights[k])]
    assert {"wq", "wk", "wv", "wo"} <= set(changed)


def test_gptq_rounding_beats_nearest():
    from hdlgen.compiler.gptq import gptq_round
    rng = np.random.default_rng(0)
    # correlated inputs (as activations are): rank 8 plus a little noise
    X = rng.standard_normal((400, 8)) @ rng.standard_normal((8, 48))
    X += 0.1 * rng.standard_normal((400, 48))
    W = rng.standard_normal((32, 48))
    scale = np.abs(W).max(axis=1) / 127
    near = np.clip(np.rint(W / scale[:, None]), -127, 127)
    q = gptq_round(W, scale, X.T @ X)
    assert np.abs(q).max() <= 127
    err_near = np.linalg.norm(X @ (W - near * scale[:, None]).T)
    err_gptq = np.linalg.norm(X @ (W - q * scale[:, None]).T)
    assert err_gptq < 0.7 * err_near, (err_gptq, err_near)


def test_compile_with_all_options_runs():
    from sim.golden.engine import Engine
    m = load_model("random:llama", seed=2)
    comp = compile_model(m, AcceleratorConfig(lanes=8, macs_per_lane=4),
                         CompileOptions(smooth=0.75, smooth_kv=True, gptq=True, untie=True,
                                        weight_bits={"wq": 16, "token_embedding": 16}))
    assert comp.manifest["scheme"]["weight_planes"]["wq"] == 2
    r = Engine(comp.image, comp.words).step(1, 0)
    assert 0 <= r.token < m.config.vocab_size


def _same_steps(c, comps, ctx):
    """The golden model runs ``comps[True]`` and ``comps[False]`` (one program with an option,
    one without) through every position, each fed its own predictions: same token, logits and
    scratchpad at every step (each buffer both have; the whole scratchpad when they have the
    same buffers), same KV cache at the end."""
    from sim.golden.engine import Engine
    engines = {f: Engine(comp.image, comp.words) for f, comp in comps.items()}
    common = sorted(set(comps[True].buffers) & set(comps[False].buffers))
    same = comps[True].buffers == comps[False].buffers
    tok = {f: 1 for f in comps}
    for pos in range(ctx):
        res = {f: e.step(tok[f], pos) for f, e in engines.items()}
        assert (res[True].token, res[True].value) == (res[False].token, res[False].value)
        assert np.array_equal(res[True].logits, res[False].logits)
        if same:
            assert np.array_equal(engines[True].act, engines[False].act), pos
        for name in common:
            a, b = (engines[f].act[slice(at, at + n)]
                    for f, (at, n) in ((f, comps[f].buffers[name]) for f in (True, False)))
            assert np.array_equal(a, b), (pos, name)
        tok = {f: r.token for f, r in res.items()}
    for layer in range(c.n_layers):
        for head in range(c.n_kv_heads):
            for kv in (0, 1):
                a, b = (engines[f].kv.rows(layer, head, kv, ctx - 1) for f in (True, False))
                assert np.array_equal(a, b)


def _prefill_equals_decode(comp, prompt):
    """The prefill program of ``prompt`` (one chunk from position 0) of ``comp``: the golden
    model's prediction and logits after it equal those of as many decode steps."""
    from hdlgen.compiler.prefill import prefill_program, with_prefill
    from sim.golden.engine import Engine
    pc = with_prefill(comp, len(prompt))
    prog = prefill_program(pc, prompt, 0)
    dec = Engine(pc.image, pc.program)
    for pos, t in enumerate(prompt):
        want = dec.step(t, pos)
    got = Engine(pc.image, prog).step(prompt[0], 0)
    assert (got.token, got.value) == (want.token, want.value)
    assert np.array_equal(got.logits, want.logits)
    return prog


@pytest.mark.parametrize("spec,over", SHAPES)
def test_fused_kv_equals_separate_projections(spec, over):
    """``fuse_kv`` (the default) stacks wk and wv into one ``MATVEC`` of ``2 * kv_dim`` rows
    into a ``kv`` buffer: one instruction less per layer, the fit check's plan still exact, and
    the golden model's scratchpad, KV cache and logits equal the unfused program's at every
    step (with the GPT-2 biases, MQA and GQA). Prefill tiles the fused projection too."""
    from hdlgen.compiler.compile import _program_length, plan_image
    from hdlgen.compiler.prefill import prefill_program, with_prefill
    c, cfg, ctx, comps = _with_and_without(spec, over, "fuse_kv")
    for fuse, comp in comps.items():
        plan = plan_image(c, cfg, ctx, fuse_kv=fuse)
        assert plan.weights.shape == comp.image.weights.shape
        assert (plan.params.size, plan.act_elements) == (comp.image.params.size,
                                                         comp.image.act_elements)
        assert _program_length(c, True, fuse) == len(comp.program)
        assert ("kv" in comp.buffers) == fuse and ("k" in comp.buffers) != fuse
    kv_rows = [i.rows for i in comps[True].program if i.op == Opcode.MATVEC]
    assert kv_rows.count(2 * c.kv_dim) >= 1
    _same_steps(c, comps, ctx)
    # prefill: the fused projection is one MATMAT tile of the kv buffer
    pc = with_prefill(comps[True], 3)
    prog = prefill_program(pc, [3, 1, 4], 0)
    assert any(i.op == Opcode.MATMAT and i.rows == 2 * c.kv_dim for i in prog)


@pytest.mark.parametrize("spec,over", [sp for sp in SHAPES if sp[0] == "random:llama"])
def test_fused_glu_equals_separate_instructions(spec, over):
    """``fuse_glu`` (the default, LLaMA) computes gate and up as row pairs of one matrix in one
    ``MATVEC`` with ``glu`` that writes their SwiGLU: two instructions and the ``hb``, ``hb2``
    buffers less per layer, the fit check's plan exact, and the golden model's tokens, logits,
    common buffers and KV cache equal the program with two ``MATVEC`` and an ``ELTWISE`` at
    every step. Prefill runs the fused projection token by token (a tile has no SwiGLU) and
    equals decode steps."""
    from hdlgen.compiler.compile import _program_length, plan_image
    c, cfg, ctx, comps = _with_and_without(spec, over, "fuse_glu")
    for fuse, comp in comps.items():
        plan = plan_image(c, cfg, ctx, fuse_glu=fuse)
        assert plan.weights.shape[1] == comp.image.weights.shape[1]
        assert plan.weights.shape[0] >= comp.image.weights.shape[0]
        assert (plan.params.size, plan.act_elements) == (comp.image.params.size,
                                                         comp.image.act_elements)
        assert _program_length(c, fuse_glu=fuse) == len(comp.program)
        ops = [i.op for i in comp.program]
        assert (Opcode.ELTWISE in ops) != fuse and ("hb" in comp.buffers) != fuse
        glu = [i for i in comp.program if i.op == Opcode.MATVEC and i.glu]
        assert [i.rows for i in glu] == ([2 * c.hidden_dim] if fuse else [])
    _same_steps(c, comps, ctx)
    prog = _prefill_equals_decode(comps[True], [3, 1, 4])
    assert sum(i.op == Opcode.MATVEC and i.glu for i in prog) == 3


def test_glu_fused_only_for_int8_weights_and_inputs_it_can_take():
    """``glu`` takes int8 inputs, one-plane weights and at most ``GLU_MAX_COLS`` inputs: 16-bit
    gate/up weights, a 16-bit norm output or a wider model keep the two MATVECs and the
    ELTWISE."""
    from hdlgen.compiler.compile import _fused_glu
    from hdlgen.engine.isa import GLU_MAX_COLS
    assert _fused_glu(True, {}, "llama", 64)
    assert _fused_glu(True, {}, "llama", GLU_MAX_COLS)
    assert not _fused_glu(True, {}, "llama", GLU_MAX_COLS + 1)
    assert not _fused_glu(True, {"w1": 16, "w3": 16}, "llama", 64)
    assert not _fused_glu(True, {"w1": 16}, "llama", 64)
    assert not _fused_glu(True, {}, "llama", 64, 16)         # a 16-bit ffn norm output
    assert not _fused_glu(False, {}, "llama", 64) and not _fused_glu(True, {}, "gpt2", 64)


@pytest.mark.parametrize("spec,over,option",
                         [(sp, ov, o) for sp, ov in SHAPES for o in ("fuse_rope", "fuse_append")
                          if sp == "random:llama" or o == "fuse_append"])
@pytest.mark.parametrize("fuse_kv", [True, False])
def test_fused_outputs_equal_separate_instructions(spec, over, option, fuse_kv):
    """``fuse_rope`` (the default) rotates q and k in their ``MATVEC`` (``rope_heads``; in
    the fused ``kv`` projection only k's heads, v passes unrotated); ``fuse_append`` (the
    default) appends k and v to the KV cache from their ``MATVEC`` (``kv_append``). Either
    way: two instructions less per layer, the fit check's program length exact, and the
    golden model's scratchpad, KV cache and logits equal those of the program with the two
    ``ROPE`` or ``KVAPPEND`` instructions at every step (GQA, MQA, GPT-2; k and v fused or
    not). Prefill of the fused program (its tiles followed by each token's ``ROPE`` and
    ``KVAPPEND``) equals decode steps."""
    from hdlgen.compiler.compile import _program_length
    m = load_model(spec, seed=3, **over)
    c, cfg, ctx = m.config, AcceleratorConfig(lanes=8, macs_per_lane=4), 8
    other = {"fuse_rope": {"fuse_append": False},      # (an unfused RoPE unfuses the append)
             "fuse_append": {"fuse_rope": True}}[option]
    comps = {f: compile_model(m, cfg, CompileOptions(context=ctx, fuse_kv=fuse_kv,
                                                     **{option: f}, **other))
             for f in (True, False)}
    separate = Opcode.ROPE if option == "fuse_rope" else Opcode.KVAPPEND
    field = "rope_heads" if option == "fuse_rope" else "kv_append"
    for fuse, comp in comps.items():
        lengths = {**{k: bool(v) for k, v in other.items()}, option: fuse}
        assert _program_length(c, True, fuse_kv, **lengths) == len(comp.program)
        ops = [i.op for i in comp.program]
        assert (separate in ops) != fuse
        got = sorted(getattr(i, field) for i in comp.program
                     if i.op == Opcode.MATVEC and getattr(i, field))
        want = {"rope_heads": sorted([c.n_heads, c.n_kv_heads]),
                "kv_append": [3] if fuse_kv else [1, 2]}[field]
        assert got == (want if fuse else [])
    assert len(comps[True].program) == len(comps[False].program) - 2
    _same_steps(c, comps, ctx)
    prog = _prefill_equals_decode(comps[True], [3, 1, 4])
    assert any(i.op == separate for i in prog)


def test_fuse_kv_needs_equal_planes():
    """A 16-bit wk (two planes) beside an int8 wv stays two MATVECs."""
    m = load_model("random:llama", seed=3)
    comp = compile_model(m, AcceleratorConfig(lanes=8, macs_per_lane=4),
                         CompileOptions(context=8, weight_bits={"wk": 16}))
    assert "k" in comp.buffers and "kv" not in comp.buffers
    planes = [i.w_planes for i in comp.program if i.op == Opcode.MATVEC]
    assert 2 in planes
