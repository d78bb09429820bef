"""Fake-quantization estimates of accuracy schemes the integer path does not implement.

:func:`fake_model` is the float reference (:mod:`sim.float_ref`) of the compiler's
reparametrised model (:mod:`hdlgen.compiler.smooth`) with dequantized weights and every
activation snapped to the grid a candidate scheme gives it, through the reference's hooks. It
models the grids, saturation and weight rounding of a scheme, not the fixed-point multipliers
or the blocks' internal rounding; on stories260K it is the optimistic side of the integer
golden model by up to 2.5 % top-1 and 25 % KL for the schemes both implement (default 0.891 /
0.058 against 0.867 / 0.063; without headroom 0.852 / 0.058 against 0.852 / 0.065; int16
norm outputs, int9 KV, int9 weights 0.953 / 0.009 against 0.953 / 0.011).
``bench accuracy --fake`` runs it.

A scheme (:class:`FakeScheme`) chooses:

* ``norm``: the norm outputs (inputs of ``wq``/``wk``/``wv``, ``w1``/``w3``, the
  classifier): ``"static8"`` (calibrated int8, the blocks today), ``"static16"``,
  ``"dyn8"`` (per-vector dynamic int8, scale ``max|x| / 127`` at run time, as llama2.c's
  ``runq.c``), ``"dyn8g32"`` (per group of 32 elements);
* ``kv``: the KV cache: ``"static8"``, ``"static9"``, ``"static16"`` (calibrated per layer),
  ``"row8"`` (int8 with a scale per cached row of ``head_size`` values, ``max|row| / 127``);
* weights: ``weight_bits`` (8..16; 0 keeps them float), per output row or per group of
  ``weight_group`` inputs (``max|group| / qmax``), optionally ``weight_exp`` (a one-bit shift
  per group of that many inputs on a per-row grid ``max|row| / (2 qmax)``: the
  ``weight_exp`` extension), GPTQ rounding (:mod:`hdlgen.compiler.gptq`; the token
  embedding is rounded to nearest as in the compiler);
* ``acts``: ``"scheme"`` (the grids above and below), ``"float"`` (no activation is snapped:
  what the weights alone cost) or ``"q80"`` (llama2.c's ``runq.c``: only the inputs of the
  matrices are quantized, dynamically to int8 per group of ``weight_group`` elements; the
  residual stream, attention and KV cache stay float);
* the other points as the compiler's default scheme: residual 16-bit, ``q``/``att_out``/
  ``ffn_gate``/``ffn_up``/SiLU output/``ffn_hidden`` 16-bit with ``act_headroom``, scores on
  ``2**-8``, probabilities 14-bit, logits 16-bit.
"""

from dataclasses import dataclass

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.checkpoint import Model
from sim.float_ref import FloatModel

__all__ = ["FakeScheme", "fake_model", "measure_fake"]

_NORMS = ("static8", "static16", "dyn8", "dyn8g32")
_ACTS = ("scheme", "float", "q80")
_KVS = ("static8", "static9", "static16", "row8")
#: Observation point -> the scale it is snapped to (:data:`hdlgen.model.quantize.ACT_BITS`).
_GRID = {"embedding": "residual", "residual_attn": "residual", "residual": "residual",
         "attn_proj": "residual", "ffn_out": "residual", "q": "q", "q_rope": "q", "k": "k",
         "k_rope": "k", "v": "v", "att_out": "att_out", "attn_norm": "attn_norm",
         "ffn_norm": "ffn_norm", "final_norm": "final_norm", "ffn_gate": "ffn_gate",
         "ffn_up": "ffn_up", "ffn_silu": "ffn_silu", "ffn_hidden": "ffn_hidden",
         "logits": "logits"}
_MAT_INPUT = {"wq": "attn_norm", "wk": "attn_norm", "wv": "attn_norm", "wo": "att_out",
              "w1": "ffn_norm", "w3": "ffn_norm", "w2": "ffn_hidden"}
#: The observation points whose values are the inputs of matrices (``runq.c`` quantizes these):
#: those of the layers' matrices and the classifier's.
_MATMUL_INPUTS = frozenset(_MAT_INPUT.values()) | {"final_norm"}


@dataclass(frozen=True)
class FakeScheme:
    """A candidate scheme (module docstring)."""
    norm: str = "static8"
    kv: str = "static8"
    weight_bits: int = 8
    weight_group: int = 0
    weight_exp: int = 0
    act_headroom: float = 2.0
    gptq: bool = True
    smooth: float = 0.75
    smooth_kv: bool = True
    acts: str = "scheme"

    @classmethod
    def llama2c(cls, dim: int) -> "FakeScheme":
        """llama2.c's ``runq.c`` (``export.py --version 2``): int8 weights and matrix inputs in
        groups of 64 (halved until the group divides ``dim``), round to nearest, no smoothing,
        everything else float."""
        group = 64
        while dim % group:
            group //= 2
        return cls(weight_group=group, gptq=False, smooth=None, smooth_kv=False, acts="q80")

    def check(self) -> "FakeScheme":
        if self.norm not in _NORMS:
            raise UserError(f"norm={self.norm!r}: use one of {', '.join(_NORMS)}")
        if self.acts not in _ACTS:
            raise UserError(f"acts={self.acts!r}: use one of {', '.join(_ACTS)}")
        if self.acts == "q80" and not self.weight_group:
            raise UserError("acts='q80' quantizes matrix inputs per weight group: set "
                            "weight_group (llama2.c uses 64)")
        if self.kv not in _KVS:
            raise UserError(f"kv={self.kv!r}: use one of {', '.join(_KVS)}")
        if self.weight_bits != 0 and not 8 <= self.weight_bits <= 16:
            raise UserError(f"weight_bits={self.weight_bits}: use 8..16, or 0 for float weights")
        if self.weight_group < 0 or self.weight_exp < 0 or (self.weight_group and
                                                              self.weight_exp):
            raise UserError(f"weight_group={self.weight_group}, weight_exp={self.weight_exp}: "
                            f"non-negative group sizes, at most one of them")
        if self.act_headroom < 1:
            raise UserError(f"act_headroom={self.act_headroom} must be >= 1")
        return self


def _steps(w, bits, group, exp):
    """Grid step of every weight of ``w`` (rows, cols) and the integer limit."""
    qmax = (1 << (bits - 1)) - 1
    amax = np.max(np.abs(w), axis=1, keepdims=True)
    if exp:
        step = np.where(amax > 0, amax / (2 * qmax), 1.0)
        steps = np.repeat(step, w.shape[1], axis=1)
        for j in range(0, w.shape[1], exp):
            g = np.max(np.abs(w[:, j:j + exp]), axis=1, keepdims=True)
            steps[:, j:j + exp] *= np.where(g > qmax * step, 2.0, 1.0)
        return steps, qmax
    if not group:
        return np.repeat(np.where(amax > 0, amax / qmax, 1.0), w.shape[1], axis=1), qmax
    steps = np.empty_like(w)
    for j in range(0, w.shape[1], group):
        g = np.max(np.abs(w[:, j:j + group]), axis=1, keepdims=True)
        steps[:, j:j + group] = np.where(g > 0, g / qmax, 1.0)
    return steps, qmax


def _quantize_matrix(w, scheme, H):
    from hdlgen.compiler.gptq import gptq_round_steps
    w = np.asarray(w, dtype=np.float64)
    steps, qmax = _steps(w, scheme.weight_bits, scheme.weight_group, scheme.weight_exp)
    if H is not None:
        q = gptq_round_steps(w, steps, H, qmax)
    else:
        q = np.clip(np.rint(w / steps), -qmax, qmax)
    return (q * steps).astype(np.float32)


def fake_model(model: Model, scheme: FakeScheme, calibration=None, context: int = None):
    """The float reference with ``scheme``'s grids (module docstring)."""
    from hdlgen.compiler.gptq import capture_inputs
    from hdlgen.compiler.smooth import smooth_kv, smooth_norms
    from hdlgen.model.quantize import calibration_tokens, quantize_model
    scheme.check()
    c = model.config
    if c.arch != "llama":
        raise UserError("the fake-quantization study covers llama models")
    if calibration is None:
        calibration = calibration_tokens(model, 4, min(128, c.seq_len))
    m = model
    if scheme.smooth_kv:
        m = smooth_kv(m, calibration)
    if scheme.smooth is not None:
        m = smooth_norms(m, calibration, scheme.smooth)
    if scheme.weight_bits:
        hs = capture_inputs(m, calibration) if scheme.gptq else {}
        new = {k: np.stack([_quantize_matrix(m.weights[k][l], scheme, hs.get((p, l)))
                            for l in range(c.n_layers)]) for k, p in _MAT_INPUT.items()}
        new["token_embedding"] = _quantize_matrix(m.weights["token_embedding"], scheme, None)
        if not c.shared_classifier:
            new["wcls"] = _quantize_matrix(m.weights["wcls"], scheme,
                                           hs.get(("final_norm", -1)))
        mq = m.with_weights(**new)
    else:
        mq = m
    kv_bits = {"static8": 8, "static9": 9, "static16": 16, "row8": 8}[scheme.kv]
    bits = {"q": 16, "att_out": 16, "ffn_up": 16, "ffn_hidden": 16, "ffn_silu": 16,
            "k": kv_bits, "v": kv_bits}
    if scheme.norm == "static16":
        bits.update(attn_norm=16, ffn_norm=16, final_norm=16)
    qm = quantize_model(m, calibration, act_bits=bits, act_headroom=scheme.act_headroom)
    sc, width = qm.scales, qm.act_bits

    def snap(value, s, b, lo=None):
        mx = (1 << (b - 1)) - 1
        return np.clip(np.floor(value / s + 0.5), -mx - 1 if lo is None else lo, mx) * s

    def dynamic(value, b, group):
        v = np.asarray(value, np.float64).reshape(-1)
        mx = (1 << (b - 1)) - 1
        out = np.empty_like(v)
        group = group or v.size
        for j in range(0, v.size, group):
            a = np.max(np.abs(v[j:j + group]))
            s = a / mx if a > 0 else 1.0
            out[j:j + group] = np.clip(np.floor(v[j:j + group] / s + 0.5), -mx, mx) * s
        return out.reshape(np.shape(value))

    def hook(point, layer, value):
        if scheme.acts == "float":
            return None
        if scheme.acts == "q80":
            if point not in _MATMUL_INPUTS:
                return None
            v = np.asarray(value, np.float64)
            group = scheme.weight_group if v.size % scheme.weight_group == 0 else v.size
            return dynamic(v, 8, group).astype(np.float32)
        if point == "att_scores":
            return snap(value, 2.0 ** -8, 16)
        if point == "att_prob":
            return snap(value, 2.0 ** -14, 15, lo=0)
        name = _GRID.get(point)
        if name is None:
            return None
        if name in ("attn_norm", "ffn_norm", "final_norm") and scheme.norm.startswith("dyn"):
            return dynamic(value, 8, 32 if scheme.norm == "dyn8g32" else 0)
        if scheme.kv == "row8" and point in ("k_rope", "v"):
            return dynamic(value, 8, c.head_size)
        if point == "k" and scheme.kv != "static8":       # before RoPE: a 16-bit output
            return snap(value, float(sc["k"][layer]) * ((1 << (width["k"] - 1)) - 1) / 32767,
                        16)
        s = sc[name]
        return snap(value, float(s if s.ndim == 0 else s[layer]), width[name])

    return FloatModel(mq, context=context, hook=hook)


def measure_fake(model: Model, positions: int, scheme: FakeScheme) -> dict:
    """Teacher-forced top-1 agreement and KL of :func:`fake_model` against the float model
    over the ``bench accuracy`` sequence."""
    from hdlgen.model.accuracy import reference_sequence, teacher_forced
    seq = reference_sequence(model, positions)
    fm = fake_model(model, scheme, context=len(seq))
    agree = teacher_forced(FloatModel(model, context=len(seq)), fm, seq)
    return {"model": model.name, "positions": positions, "fake_quantization": True,
            **agree.to_json(), "scheme": dict(scheme.__dict__)}
