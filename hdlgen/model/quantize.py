"""int8 quantization of a model: weights, calibrated activation scales, fixed-point
requantization parameters, and the block-RAM fit check.

Numeric scheme
--------------
Every tensor is a signed integer ``v`` with a real value ``v * scale`` (symmetric, no zero
point). Widths and scales:

=================================== ====== ==============================================
tensor                              bits   scale
=================================== ====== ==============================================
weight matrices, token embedding    8      one per output row (per token row for the
(and classifier, positions)                embedding): ``max|row| / 127``, values -127..127,
                                           rounded to nearest (ties to even)
residual stream                     16     one scale for the whole model (all layers, the
                                           embedding, branch outputs): calibrated max-abs x
                                           ``residual_headroom`` / 32767
norm outputs (``attn_norm``,        8      calibrated per layer (``final_norm``: one)
``ffn_norm``, ``final_norm``)
``q``, ``k``, ``v`` (KV cache)      8      per layer; ``q``/``k`` cover both the projection
                                           and the rotated value (RoPE keeps the scale)
attention scores                    16     fixed: ``2**-8`` (the softmax block's ``in_frac=8``)
attention probabilities             15     fixed: unsigned, ``2**-15`` (softmax ``out_bits=15``)
``att_out`` (input of ``wo``)       8      per layer
``ffn_gate`` (llama ``w1`` out),    16     per layer (input of the SiLU/GELU block, int16
``ffn_fc`` (gpt2)                          interpolated table)
``ffn_up`` (``w3`` out),            8      per layer
``ffn_silu`` (activation out)
``ffn_hidden`` (input of ``w2`` /   8      per layer
``w_proj``)
logits                              16     calibrated max-abs x ``logit_headroom``; argmax on
                                           them
=================================== ====== ==============================================

Where rounding happens: only in the requantizer
(``y = saturate((acc * mult + 2**(shift-1)) >> shift)``, round half up, see
:mod:`sim.golden.requant`) and inside the norm, softmax and activation blocks (their golden
models). Dot products accumulate exactly in int32. Each requantization point and its real scale
``mult / 2**shift``:

* a matmul row ``r`` from an int8 input of scale ``s_in``: ``s_in * s_w[r] / s_out`` (the
  classifier and branch outputs ``wo``, ``w2``/``w_proj`` go straight to 16 bits: logits and
  residual scale; the residual add is a saturating int16 add). GPT-2 biases are int32
  ``round(b / (s_in * s_w[r]))`` added to the accumulator before the multiply.
* ``embedding`` (and gpt2 ``pos_embedding``): row ``t`` of the int8 table to the residual
  scale, ``s_emb[t] / s_res`` (the token table doubles as the tied classifier).
* ``att_scores``: ``q . k`` accumulator to the score grid, ``s_q s_k / sqrt(head_size) * 2**8``.
* ``att_value``: ``sum_t p_t v_t`` (15-bit probabilities x int8 values) to ``att_out``,
  ``2**-15 s_v / s_att_out``.
* ``ffn_mul`` (llama): ``silu(gate) * up`` (int8 x int8) to ``ffn_hidden``,
  ``s_silu s_up / s_hidden``.

Calibration runs token sequences through the float reference (:mod:`sim.float_ref`) and
records, per point and layer, the max-abs (``method="max"``) or a percentile of ``|x|``
(``method="percentile"``, 8-bit points only; 16-bit points always use max-abs with headroom).

Widths can be raised per point (``act_bits``) and per matrix (``weight_bits``, 16-bit weights
meaning two int8 passes of the MAC array) where accuracy needs it.

:meth:`QuantizedModel.fake_quant` runs the float reference with every activation snapped to its
integer grid and the dequantized int8 weights: an estimate of the int8 accelerator's accuracy
before the integer golden model exists (the multipliers' 16-bit precision and the blocks'
internal rounding are not modelled).

Measured on stories260K (fake-quant, teacher-forced over the float model's 256-token greedy
sequence from BOS; top-1 agreement / mean KL in nats): this int8 scheme 0.750 / 0.198;
percentile-99.9 calibration 0.629; int8 weights with float activations 0.902; 16-bit
activations with int8 weights 0.906 / 0.038; 16-bit activations and weights 0.984 / 0.0007.
Float weights rounded to 10 bits give 0.977, to 12 bits 0.996. This 64-wide model has many
near-ties (10 % of positions have a top-2 logit margin below 0.14), so int8 weights alone cost
about 10 % top-1 agreement.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.checkpoint import Model
from hdlgen.model.config import ModelConfig
from sim.float_ref import FloatModel
from sim.golden.requant import quantize_multiplier, requantize

__all__ = ["QuantizedTensor", "Requant", "QuantizedModel", "quantize_weights", "calibrate",
           "calibration_tokens", "quantize_model", "ACT_BITS", "SCORE_FRAC", "PROB_BITS",
           "DEVICE_EBR", "EBR_BYTES", "FitReport", "memory_needs", "fit_report", "check_fit"]

#: Fractional bits of the attention scores fed to the softmax block.
SCORE_FRAC = 8
#: Width of the softmax block's unsigned probabilities (real value ``p * 2**-PROB_BITS``).
PROB_BITS = 15

#: Width of each calibrated activation tensor, per architecture.
ACT_BITS = {
    "llama": {"residual": 16, "attn_norm": 8, "q": 8, "k": 8, "v": 8, "att_out": 8,
              "ffn_norm": 8, "ffn_gate": 16, "ffn_up": 8, "ffn_silu": 8, "ffn_hidden": 8,
              "final_norm": 8, "logits": 16},
    "gpt2": {"residual": 16, "attn_norm": 8, "q": 8, "k": 8, "v": 8, "att_out": 8,
             "ffn_norm": 8, "ffn_fc": 16, "ffn_hidden": 8, "final_norm": 8, "logits": 16},
}
# Points with one scale for the whole model (the rest have one per layer).
_GLOBAL = ("residual", "final_norm", "logits")
# Observation points (sim.float_ref.POINTS) whose values each scale must cover.
_COVERS = {
    "residual": ("embedding", "residual_attn", "residual", "attn_proj", "ffn_out"),
    "q": ("q", "q_rope"),
    "k": ("k", "k_rope"),
}
# Matmuls: name -> (weight key, input scale, output scale, bias key)
_MATMULS = {
    "llama": {"wq": ("wq", "attn_norm", "q", None), "wk": ("wk", "attn_norm", "k", None),
              "wv": ("wv", "attn_norm", "v", None), "wo": ("wo", "att_out", "residual", None),
              "w1": ("w1", "ffn_norm", "ffn_gate", None), "w3": ("w3", "ffn_norm", "ffn_up", None),
              "w2": ("w2", "ffn_hidden", "residual", None)},
    "gpt2": {"wq": ("wq", "attn_norm", "q", "bq"), "wk": ("wk", "attn_norm", "k", "bk"),
             "wv": ("wv", "attn_norm", "v", "bv"), "wo": ("wo", "att_out", "residual", "bo"),
             "w_fc": ("w_fc", "ffn_norm", "ffn_fc", "b_fc"),
             "w_proj": ("w_proj", "ffn_hidden", "residual", "b_proj")},
}


def _qmax(bits):
    return (1 << (bits - 1)) - 1


# weights -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedTensor:
    """Quantized weights with one scale per output row.

    Attributes
    ----------
    q : numpy.ndarray of int8 (or int16 for 16-bit weights)
        ``(..., rows, cols)``, values in -127..127 (-32767..32767).
    scale : numpy.ndarray of float64
        ``(..., rows)``: real weight ``= q * scale[..., None]``.
    """
    q: np.ndarray
    scale: np.ndarray
    bits: int = None

    @property
    def width(self) -> int:
        """Bits of one weight: ``bits`` when given, else 8 for int8 ``q`` and 16 otherwise."""
        if self.bits is not None:
            return int(self.bits)
        return 8 if self.q.dtype == np.int8 else 16

    def dequantize(self) -> np.ndarray:
        return (self.q.astype(np.float64) * self.scale[..., None]).astype(np.float32)


def quantize_weights(w, bits: int = 8) -> QuantizedTensor:
    """Symmetric per-output-row quantization of ``w`` (``(..., rows, cols)``) to ``bits``
    (8 by default; 16 for weights computed in two int8 passes; 9..15 for a weight bank of
    that native width, stored as int16): scale ``max|row| / qmax`` (1.0 for an all-zero row),
    values rounded to nearest, in ``-qmax..qmax``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 16:
        raise UserError(f"weight bits={bits!r}: use 8 (int8), 9..15 (a wider weight bank) or 16 "
                        f"(two int8 planes)")
    w = np.asarray(w, dtype=np.float64)
    m = _qmax(bits)
    amax = np.max(np.abs(w), axis=-1)
    scale = np.where(amax > 0, amax / m, 1.0)
    q = np.clip(np.rint(w / scale[..., None]), -m, m).astype(np.int8 if bits == 8 else np.int16)
    return QuantizedTensor(q=q, scale=scale, bits=bits)


# requantization parameters -------------------------------------------------------------------

@dataclass(frozen=True)
class Requant:
    """Fixed-point requantization parameters of one point, broadcast like its accumulators.

    Attributes
    ----------
    real : numpy.ndarray of float64
        Exact real scales.
    mult, shift : numpy.ndarray of int64
        ``mult / 2**shift`` ~= ``real`` (:func:`sim.golden.requant.quantize_multiplier`).
    out_bits : int
        Output width (8 or 16).
    bias : numpy.ndarray of int64 or None
        int32 bias added to the accumulator first.
    """
    real: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    out_bits: int
    bias: np.ndarray = None

    @classmethod
    def from_real(cls, name, real, out_bits, bias=None) -> "Requant":
        real = np.asarray(real, dtype=np.float64)
        mult = np.empty(real.shape, np.int64)
        shift = np.empty(real.shape, np.int64)
        for idx, r in np.ndenumerate(real):
            try:
                mult[idx], shift[idx] = quantize_multiplier(float(r))
            except ValueError as e:
                raise UserError(f"requantization {name}{list(idx) if idx else ''}: {e}") from None
        if bias is not None:
            bias = np.asarray(bias, dtype=np.int64)
            if bias.size and np.abs(bias).max() >= 2 ** 31:
                raise UserError(f"requantization {name}: a bias of {int(np.abs(bias).max())} "
                                f"accumulator units does not fit int32; the input or weight "
                                f"scale is too fine for this bias")
        return cls(real=real, mult=mult, shift=shift, out_bits=int(out_bits), bias=bias)

    def apply(self, acc, index=()) -> np.ndarray:
        """Requantize accumulators ``acc`` with the parameters at ``index`` (e.g. a layer)."""
        bias = None if self.bias is None else self.bias[index]
        return requantize(acc, self.mult[index], self.shift[index], bias=bias,
                          out_bits=self.out_bits)

    def to_json(self) -> dict:
        d = {"out_bits": self.out_bits, "mult": self.mult.tolist(), "shift": self.shift.tolist()}
        if self.bias is not None:
            d["bias"] = self.bias.tolist()
        return d


# calibration ---------------------------------------------------------------------------------

def calibration_tokens(model: Model, n_sequences: int = 4, length: int = 128, *, seed: int = 0,
                       bos: int = 1) -> list:
    """Token sequences for calibration made by the float model itself (no data set needed):
    the first is greedy from ``bos``, the others sampled at temperature 1 from ``bos`` with a
    seeded generator. Each has ``length`` tokens starting with ``bos``."""
    c = model.config
    if not 1 <= length <= c.seq_len:
        raise UserError(f"calibration length={length} must be 1..{c.seq_len} (the model's "
                        f"seq_len)")
    if not 0 <= bos < c.vocab_size:
        raise UserError(f"bos={bos} is not a token id of this model (0..{c.vocab_size - 1})")
    rng = np.random.default_rng([seed, 0xCA11B])
    fm = FloatModel(model, context=length)
    seqs = []
    for i in range(n_sequences):
        seq = [bos]
        fm.reset()
        for pos in range(length - 1):
            logits = fm.forward(seq[-1], pos).astype(np.float64)
            if i == 0:
                seq.append(int(np.argmax(logits)))
            else:
                p = np.exp(logits - logits.max())
                seq.append(int(rng.choice(len(p), p=p / p.sum())))
        seqs.append(seq)
    return seqs


def calibrate(model: Model, sequences, *, method: str = "max", percentile: float = 99.99) -> dict:
    """Run ``sequences`` (teacher-forced from position 0) through the float model and return
    the clip value of each observation point: ``{(point, layer): float}``. With
    ``method="percentile"`` the clip value is that percentile of ``|x|``; ``"max"`` the max-abs.
    The max-abs is also given under ``(point, layer, "max")`` whatever the method.
    """
    if method not in ("max", "percentile"):
        raise UserError(f"calibration method={method!r}: use 'max' or 'percentile'")
    if not 0 < percentile <= 100:
        raise UserError(f"percentile={percentile} must be in (0, 100]")
    seen = {}

    def hook(point, layer, value):
        seen.setdefault((point, layer), []).append(np.abs(np.asarray(value, np.float32)).ravel())

    sequences = [list(s) for s in sequences]
    if not sequences or not all(sequences):
        raise UserError("calibration needs at least one non-empty token sequence")
    longest = max(len(s) for s in sequences)
    fm = FloatModel(model, context=min(model.config.seq_len, longest), hook=hook)
    for s in sequences:
        fm.logits_sequence(s)
    out = {}
    for key, chunks in seen.items():
        values = np.concatenate(chunks)
        out[key] = float(values.max() if method == "max" else np.percentile(values, percentile))
        out[key + ("max",)] = float(values.max())
    return out


# the quantized model -------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedModel:
    """A model quantized by :func:`quantize_model`.

    Attributes
    ----------
    model : Model
        The float model it came from (norm gains and biases in float are read from it).
    weights : dict of str to QuantizedTensor
        Every weight matrix (the keys of :func:`hdlgen.model.checkpoint.weight_shapes` that are
        matrices, stacked per layer), plus ``token_embedding`` (also the tied classifier).
    scales : dict of str to numpy.ndarray
        Activation scale of each point of :data:`ACT_BITS`: shape ``()`` for ``residual``,
        ``final_norm``, ``logits``, ``(n_layers,)`` for the others; plus the fixed
        ``att_scores`` (``2**-SCORE_FRAC``) and ``att_prob`` (``2**-PROB_BITS``).
    requant : dict of str to Requant
        Per matmul (``(n_layers, rows)``), ``cls`` (``(vocab,)``), ``embedding``
        (``(vocab,)``), gpt2 ``pos_embedding`` (``(seq_len,)``), ``att_scores``,
        ``att_value`` and llama ``ffn_mul`` (``(n_layers,)``).
    act_bits : dict of str to int
        Width of each activation tensor (:data:`ACT_BITS` with the overrides applied).
    calibration : dict
        How the scales were calibrated (method, percentile, sequences, tokens, headroom).
    """
    model: Model
    weights: dict
    scales: dict
    requant: dict
    act_bits: dict
    calibration: dict = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def weight_bytes(self) -> int:
        """Bytes of quantized weights (the tied classifier counted once)."""
        return int(sum(t.q.nbytes for t in self.weights.values()))

    def dequantized_model(self) -> Model:
        """The float model with every quantized matrix replaced by its dequantized int8 copy."""
        return self.model.with_weights(**{k: t.dequantize() for k, t in self.weights.items()})

    def scale_of(self, name: str, layer: int = -1) -> float:
        """Scale of activation ``name`` (a key of :attr:`scales`) at ``layer`` (ignored for
        the model-wide ones)."""
        if name not in self.scales:
            raise UserError(f"no activation scale {name!r}; expected one of "
                            f"{', '.join(self.scales)}")
        s = self.scales[name]
        return float(s if s.ndim == 0 else s[layer])

    def to_int(self, name: str, layer: int, x) -> np.ndarray:
        """Quantize real values ``x`` of activation ``name`` to its integer grid (round half
        up, saturate to its width; ``att_prob`` unsigned)."""
        s = self.scale_of(name, layer)
        if name == "att_prob":
            lo, hi = 0, 2 ** PROB_BITS - 1
        else:
            b = 16 if name == "att_scores" else self.act_bits[name]
            lo, hi = -_qmax(b) - 1, _qmax(b)
        return np.clip(np.floor(np.asarray(x, np.float64) / s + 0.5), lo, hi).astype(np.int64)

    def to_real(self, name: str, layer: int, q) -> np.ndarray:
        """Real values of integers ``q`` of activation ``name``."""
        return np.asarray(q, np.float64) * self.scale_of(name, layer)

    def fake_quant(self, context: int = None) -> FloatModel:
        """A float reference that snaps every activation to its integer grid (see the module
        docstring) and uses the dequantized weights."""
        bits = self.act_bits
        grid = {}
        for name, b in bits.items():
            for point in _COVERS.get(name, (name,)):
                grid[point] = (name, b)

        def hook(point, layer, value):
            if point == "att_scores":
                s = self.scales["att_scores"]
                return np.clip(np.floor(value / s + 0.5), -32768, 32767) * s
            if point == "att_prob":
                s = self.scales["att_prob"]
                return np.clip(np.floor(value / s + 0.5), 0, 2 ** PROB_BITS - 1) * s
            if point not in grid:
                return None
            name, b = grid[point]
            scale = self.scales[name]
            s = scale if scale.ndim == 0 else scale[layer]
            m = _qmax(b)
            return np.clip(np.floor(value / s + 0.5), -m - 1, m) * s

        return FloatModel(self.dequantized_model(), context=context, hook=hook)

    def manifest(self) -> dict:
        """JSON-serialisable summary: scales, bits and requantization parameters."""
        return {
            "model": self.model.name,
            "arch": self.config.arch,
            "act_bits": dict(self.act_bits, att_scores=16, att_prob=PROB_BITS),
            "weight_bits": {k: t.width for k, t in self.weights.items()},
            "scales": {k: np.asarray(v).tolist() for k, v in self.scales.items()},
            "weight_scales": {k: t.scale.tolist() for k, t in self.weights.items()},
            "requant": {k: r.to_json() for k, r in self.requant.items()},
            "calibration": dict(self.calibration),
        }


def quantize_model(model: Model, sequences=None, *, method: str = "max",
                   percentile: float = 99.99, residual_headroom: float = 2.0,
                   logit_headroom: float = 1.5, act_bits: dict = None,
                   weight_bits: dict = None, act_headroom: float = 1.0) -> QuantizedModel:
    """Quantize ``model`` to the int8 scheme of this module.

    Parameters
    ----------
    model : Model
    sequences : list of list of int, optional
        Calibration token sequences; default :func:`calibration_tokens` (4 x up to 128).
    method, percentile
        Clip values of the 8-bit points (see :func:`calibrate`).
    residual_headroom, logit_headroom : float
        Factors (>= 1) on the calibrated max-abs of the 16-bit residual stream and logits,
        against inputs that push them further than the calibration set did.
    act_bits : dict, optional
        Width overrides (8 or 16) of points of :data:`ACT_BITS` (e.g. ``{"attn_norm": 16}``
        for a matmul input fed in two int8 passes).
    weight_bits : dict, optional
        Width overrides (8..16, see :func:`quantize_weights`) of weight matrices by key (e.g.
        ``{"token_embedding": 16}``).
    act_headroom : float
        Factor (>= 1) on the calibrated max-abs of the other 16-bit points (not the residual
        or the logits): a 16-bit grid has resolution to spare, and without headroom the values
        beyond the calibration set's range saturate (on stories260K, a few per 256 positions
        at ``q``, ``ffn_gate``, ``ffn_up``, ``ffn_hidden``, which is measurable).

    Notes
    -----
    16-bit widths serve accuracy studies (:meth:`QuantizedModel.fake_quant`) and the choice of
    where to spend two MAC passes. A 16-bit x 16-bit dot product does not fit the int32
    accumulator the requantizer takes: the integer pipeline must requantize each int8 pass (or
    widen the requantizer) for those points; the parameters here assume one accumulator.
    """
    c = model.config
    bits = dict(ACT_BITS[c.arch])
    for k, v in (act_bits or {}).items():
        if k not in bits or isinstance(v, bool) or v not in range(8, 17):
            raise UserError(f"act_bits {k}={v!r}: expected a point of {', '.join(bits)} and "
                            f"8..16")
        bits[k] = v
    matrices = {spec[0] for spec in _MATMULS[c.arch].values()} | {"token_embedding"}
    matrices |= {"pos_embedding"} if c.arch == "gpt2" else set()
    matrices |= set() if c.shared_classifier else {"wcls"}
    wbits = {k: 8 for k in matrices}
    for k, v in (weight_bits or {}).items():
        if k not in wbits or isinstance(v, bool) or v not in range(8, 17):
            raise UserError(f"weight_bits {k}={v!r}: expected a matrix of "
                            f"{', '.join(sorted(wbits))} and 8..16")
        wbits[k] = v
    if residual_headroom < 1 or logit_headroom < 1 or act_headroom < 1:
        raise UserError(f"residual_headroom={residual_headroom}, logit_headroom="
                        f"{logit_headroom} and act_headroom={act_headroom} must be >= 1")
    if sequences is None:
        sequences = calibration_tokens(model, 4, min(128, c.seq_len))
    stats = calibrate(model, sequences, method=method, percentile=percentile)
    L = c.n_layers
    scales = {}
    for name, b in bits.items():
        points = _COVERS.get(name, (name,))
        suffix = ("max",) if b == 16 else ()     # 16-bit points: max-abs (with headroom)
        if name in _GLOBAL:
            layer_sets = [[-1] + list(range(L))]
        else:
            layer_sets = [[layer] for layer in range(L)]
        clip = np.array([max(stats.get((p, layer) + suffix, 0.0)
                             for p in points for layer in layers) for layers in layer_sets])
        if name == "residual":
            clip = clip * residual_headroom
        elif name == "logits":
            clip = clip * logit_headroom
        elif b == 16:
            clip = clip * act_headroom
        clip = np.where(clip > 0, clip, 1.0)
        scale = clip / _qmax(b)
        scales[name] = scale[0] if name in _GLOBAL else scale
    scales = {k: np.asarray(v, np.float64) for k, v in scales.items()}
    scales["att_scores"] = np.asarray(2.0 ** -SCORE_FRAC)
    scales["att_prob"] = np.asarray(2.0 ** -PROB_BITS)

    def per_layer(name):
        s = scales[name]
        return s if s.ndim else np.full(L, float(s))

    weights, requant = {}, {}
    w = model.weights
    for name, (key, s_in, s_out, bias_key) in _MATMULS[c.arch].items():
        qt = quantize_weights(w[key], wbits[key])
        weights[key] = qt
        acc_scale = per_layer(s_in)[:, None] * qt.scale                 # (L, rows)
        real = acc_scale / per_layer(s_out)[:, None]
        bias = None
        if bias_key is not None:
            bias = np.rint(w[bias_key].astype(np.float64) / acc_scale).astype(np.int64)
        requant[name] = Requant.from_real(name, real, bits[s_out], bias)
    emb = quantize_weights(w["token_embedding"], wbits["token_embedding"])
    weights["token_embedding"] = emb
    requant["embedding"] = Requant.from_real("embedding", emb.scale / scales["residual"], 16)
    if c.arch == "gpt2":
        pos = quantize_weights(w["pos_embedding"], wbits["pos_embedding"])
        weights["pos_embedding"] = pos
        requant["pos_embedding"] = Requant.from_real("pos_embedding",
                                                     pos.scale / scales["residual"], 16)
    cls = emb if c.shared_classifier else quantize_weights(w["wcls"], wbits["wcls"])
    if not c.shared_classifier:
        weights["wcls"] = cls
    requant["cls"] = Requant.from_real("cls", scales["final_norm"] * cls.scale / scales["logits"],
                                       16)
    requant["att_scores"] = Requant.from_real(
        "att_scores", scales["q"] * scales["k"] / math.sqrt(c.head_size) * 2.0 ** SCORE_FRAC, 16)
    requant["att_value"] = Requant.from_real(
        "att_value", 2.0 ** -PROB_BITS * scales["v"] / scales["att_out"], bits["att_out"])
    if c.arch == "llama":
        requant["ffn_mul"] = Requant.from_real(
            "ffn_mul", scales["ffn_silu"] * scales["ffn_up"] / scales["ffn_hidden"],
            bits["ffn_hidden"])
    calibration = {"method": method, "percentile": percentile if method == "percentile" else None,
                   "sequences": len(sequences), "tokens": int(sum(len(s) for s in sequences)),
                   "residual_headroom": residual_headroom, "logit_headroom": logit_headroom,
                   "act_headroom": act_headroom}
    return QuantizedModel(model=model, weights=weights, scales=scales, requant=requant,
                          act_bits=bits, calibration=calibration)


# block-RAM fit -------------------------------------------------------------------------------

#: EBR (DP16KD) blocks of each ECP5 device.
DEVICE_EBR = {"12F": 56, "25F": 56, "45F": 108, "85F": 208}
#: Bytes one EBR holds as byte-wide memory (16 Kbit data; the 9th bits stay unused).
EBR_BYTES = 2048


def _device_name(device: str) -> str:
    d = str(device).upper()
    for prefix in ("LFE5U-", "LFE5UM-", "LFE5UM5G-", "ULX3S-"):
        if d.startswith(prefix):
            d = d[len(prefix):]
    if d not in DEVICE_EBR:
        raise UserError(f"device {device!r} is not known; expected one of "
                        f"{', '.join(DEVICE_EBR)} (ECP5 LFE5U-xxF)")
    return d


def memory_needs(config: ModelConfig, context: int) -> dict:
    """Bytes of on-chip memory a model needs at ``context`` positions, by item:

    ``weights``
        int8 matrices and the token embedding (tied classifier once; gpt2 position rows only
        for the positions used).
    ``quant_params``
        4 bytes per requantized output row (16-bit multiplier + shift), 4 per int32 bias,
        2 per norm gain/bias element.
    ``kv_cache``
        ``n_layers x kv_dim x 2 x context`` int8.
    ``scratch``
        Activation buffers: int16 residual, int8 vectors, int16 FFN gate, scores and
        probabilities of one head (2 + 2 bytes per position), int16 logits.
    """
    c = config
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise UserError(f"context={context!r} must be a positive integer")
    L, D, H, KV, V = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.vocab_size
    ffn_mats = 3 if c.arch == "llama" else 2
    per_layer_w = D * D + 2 * KV * D + D * D + ffn_mats * H * D
    weights = L * per_layer_w + V * D + (0 if c.shared_classifier else V * D)
    rows = L * (D + 2 * KV + D + (2 if c.arch == "llama" else 1) * H + D) + 2 * V
    norm_elems = (2 * L + 1) * D
    if c.arch == "gpt2":
        weights += context * D
        rows += context
        bias_bytes = 4 * L * (D + 2 * KV + D + H + D)
        norm_elems *= 2
    else:
        bias_bytes = 0
    quant = 4 * rows + bias_bytes + 2 * norm_elems
    kv = L * KV * 2 * context
    scratch = 2 * D + 4 * max(D, H) + 2 * KV + 2 * H + 4 * context + 2 * V
    scratch = (scratch + 3) // 4 * 4
    return {"weights": weights, "quant_params": quant, "kv_cache": kv, "scratch": scratch}


@dataclass(frozen=True)
class FitReport:
    """What a model needs against what a device has.

    Attributes
    ----------
    device : str
    context : int
    needs : dict of str to int
        Bytes per item (see :func:`memory_needs`), plus ``reserved`` when given.
    available : int
        Block-RAM bytes of the device.
    max_context : int
        Longest context that fits (0: none, capped at the model's ``seq_len``).
    """
    device: str
    context: int
    needs: dict
    available: int
    max_context: int

    @property
    def total(self) -> int:
        return int(sum(self.needs.values()))

    @property
    def fits(self) -> bool:
        return self.total <= self.available


def fit_report(config: ModelConfig, context: int, device: str = "85F",
               reserved_bytes: int = 0) -> FitReport:
    """Compare :func:`memory_needs` (plus ``reserved_bytes`` the rest of the accelerator keeps
    in block RAM: program, host scratch) with ``device``'s block RAM."""
    dev = _device_name(device)
    if reserved_bytes < 0:
        raise UserError(f"reserved_bytes={reserved_bytes} must be >= 0")
    available = DEVICE_EBR[dev] * EBR_BYTES

    def total(ctx):
        return sum(memory_needs(config, ctx).values()) + reserved_bytes

    needs = memory_needs(config, context)
    if reserved_bytes:
        needs["reserved"] = int(reserved_bytes)
    fixed = total(1) - (total(2) - total(1))
    per_pos = total(2) - total(1)
    max_ctx = max(0, min(config.seq_len, (available - fixed) // per_pos))
    return FitReport(device=dev, context=context, needs=needs, available=available,
                     max_context=int(max_ctx))


def check_fit(config: ModelConfig, context: int, device: str = "85F", reserved_bytes: int = 0,
              model_name: str = "the model") -> FitReport:
    """:func:`fit_report`, raising :class:`UserError` when the model does not fit: the message
    gives the bytes needed per item against the bytes available and what would fit (the
    longest context, or the devices that can hold it)."""
    if context > config.seq_len:
        raise UserError(f"context={context} exceeds {model_name}'s seq_len={config.seq_len}; "
                        f"use a context of at most {config.seq_len}")
    r = fit_report(config, context, device, reserved_bytes)
    if r.fits:
        return r
    items = ", ".join(f"{k} {v:,}" for k, v in r.needs.items())
    msg = (f"{model_name} with a context of {context} needs {r.total:,} bytes of block RAM "
           f"({items}) but the {r.device} has {r.available:,} ({DEVICE_EBR[r.device]} EBR x "
           f"{EBR_BYTES} bytes)")
    if r.max_context >= 1:
        msg += f": the longest context that fits is {r.max_context}"
    else:
        msg += ": it does not fit at any context"
    bigger = [d for d in DEVICE_EBR if DEVICE_EBR[d] > DEVICE_EBR[r.device]
              and fit_report(config, context, d, reserved_bytes).fits]
    if bigger:
        msg += f"; with this context it fits the {bigger[0]}"
    raise UserError(msg)
