"""Model compiler: a :class:`~hdlgen.model.checkpoint.Model` and an
:class:`~hdlgen.config.AcceleratorConfig` in; a program for one decode step, a memory image and
a manifest out.

Numeric scheme
--------------
Every tensor is a signed integer ``v`` with real value ``v * scale`` (symmetric, per
:mod:`hdlgen.model.quantize`, which calibrates the scales on sequences of the float model).
The widths are set by what the blocks take:

================================ ====== ===================================================
tensor                           bits   where the width comes from
================================ ====== ===================================================
weights                          8      per output row, rounded with error feedback (GPTQ);
                                        16 (two int8 planes, two MAC passes, values within
                                        +-32639) per matrix on request (``weight_bits``);
                                        extensions: int9 (``weight_width``), int8 with a
                                        shift bit per lane and row (``weight_exp``)
residual stream                  16     one scale for the model; residual adds saturate
norm outputs                     8      (16 with ``norm_bits``) the norm blocks' output;
                                        the calibrated scale is folded into the gains
                                        (``gamma``), so the output
                                        grid is exactly the calibrated one; per-channel
                                        ranges are equalised first (smoothing, folded into
                                        the next matrices)
q                                16     RoPE at 16 bits; fed to the scores as the MAC
                                        array's shared operand
k, v (KV cache)                  8      (9 with ``kv_bits``) the KV cache rows (channel
                                        ranges equalised, folded into wq/wk/wv/wo)
attention scores                 16     ``2**-8`` (softmax ``in_frac = 8``)
probabilities                    14     unsigned, ``2**-14`` (softmax ``out_bits = 14``)
att_out, ffn_up, ffn_hidden      16     requantizer ``out_bits = 16``
ffn_gate / ffn_fc                16     SiLU/GELU blocks' interpolated int16 input
logits                           16     argmax on them
================================ ====== ===================================================

Matrix-vector products: int8 weights (the per-lane operand) times the activation (the shared
operand), accumulated exactly in int32 (``acc_width``); a 16-bit shared operand is an exact
16 x 8 product on the MULT18X18D (the golden model composes it from int8 passes of the MAC
array model; see :mod:`sim.golden.engine`). Rounding happens only in the requantizer
(``saturate((acc * mult + 2**(shift-1)) >> shift)``, round half up, 16-bit ``mult``,
:func:`sim.golden.requant.quantize_multiplier`) and inside the norm, RoPE, softmax and
activation blocks (their golden models define it).

Before quantizing, the float model is reparametrised exactly (:mod:`hdlgen.compiler.smooth`)
and after it the int8 weights are re-rounded (:mod:`hdlgen.compiler.gptq`): both cost nothing
in hardware. FFN nonlinearity scales are one per model so one table ROM serves every layer.
The 16-bit activations other than the residual stream and the logits get twice their
calibrated range (``act_headroom``; parameters only). Measured on stories260K (``python -m
hdlgen bench accuracy``, 256 positions, context 256 on the 85F): top-1 agreement with the
float model 0.867, mean KL 0.063 (without the headroom 0.852 / 0.065; the table of schemes is
in :mod:`hdlgen.bench.accuracy`).

Schemes beyond the RTL (image extensions, :data:`sim.golden.engine.EXTENSIONS`; the golden
model runs them, ``CompileOptions`` asks for them, the instruction encoding is unchanged):
``norm_bits=16`` (int16 norm outputs, the matrices after the norms read 16-bit inputs),
``kv_bits=9`` (int9 KV cache in the same block RAM), ``weight_width=9`` (int9 weight bank),
``weight_exp`` (int8 weights with one shift bit per lane and bank row), ``planes_x16``
(two-plane weights against 16-bit inputs, used by 11-bit ``weight_bits``). With
``norm_bits=16, kv_bits=9, weight_exp=True, weight_bits={"token_embedding": 11, "wq": 11,
"wk": 11}`` stories260K reaches 0.961 / 0.0099; counted as the RTL engine builds its block RAM
(the whole parameter memory, the units' own blocks) that scheme needs 216 EBR at context 256,
more than the 85F's 208, and fits at 128 (the default scheme: 197 at 256; its 1,040-bit bank
rows are planned in all 36 bits of 29 columns, 145 EBR for 2,552 rows).

Fit: :func:`plan_image` sizes every memory from the shapes alone, :func:`plan_units` the units
(at most one norm unit per norm site), and :func:`fit_check` refuses (before quantizing) when
the engine's block RAM (:mod:`hdlgen.engine.ebr`: the memories as the RTL tiles them and the
units' own blocks) exceeds the device's, naming the bytes and blocks of each memory, the
units' blocks and what would fit; after the layout it counts again from the program (the
norm units it really has). stories260K at context 256: 198 DP16KD planned, 197 after, the
routed SoC 200 with the SoC's 3 (:func:`hdlgen.soc.soc.soc_ebr`).

Memory layout: weights in the weight bank in :func:`hdlgen.blocks.membank.weight_rows` order,
the decoder layers at a fixed stride (the program's ``LOOP`` steps the base registers); the
parameter memory holds per-row requantization words, biases, norm gains and epsilons, the RoPE
and activation ROM tables. ``wk`` and ``wv`` are one stacked matrix with one ``MATVEC`` into a
``kv`` buffer (``fuse_kv``, the default); LLaMA's ``w1`` and ``w3`` are one matrix (blocks of
``lanes / 2`` gates, then their ups) with one ``MATVEC`` (``glu``) writing their SwiGLU
(``fuse_glu``, the default).
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np

from hdlgen.config import AcceleratorConfig
from hdlgen.engine.ebr import EngineUnits
from hdlgen.engine.isa import (GLU_MAX_COLS, EltOp, Func, Instruction, NormKind, Opcode, Reg,
                               Width, encode_program, glu_rows)
from hdlgen.errors import UserError
from hdlgen.compiler.image import (MemoryImage, ParamAllocator, WeightAllocator, act_table_words,
                                   requant_word, rope_table_words)
from hdlgen.model.checkpoint import Model
from hdlgen.model.quantize import DEVICE_EBR, Requant, quantize_model
from sim.golden.requant import quantize_multiplier

__all__ = ["CompileOptions", "Compiled", "compile_model", "PROB_BITS", "SCORE_FRAC",
           "DEFAULT_ACT_BITS", "fit_check", "plan_units", "units_text"]

#: Width of the softmax probabilities (unsigned; < 2**14 keeps the int8 plane split exact).
PROB_BITS = 14
#: Fractional bits of the attention scores.
SCORE_FRAC = 8
#: Activation widths of the default scheme (points of :data:`hdlgen.model.quantize.ACT_BITS`).
DEFAULT_ACT_BITS = {"llama": {"q": 16, "att_out": 16, "ffn_up": 16, "ffn_hidden": 16},
                    "gpt2": {"q": 16, "att_out": 16, "ffn_hidden": 16}}
# Points fixed by the blocks.
_FIXED8 = ("attn_norm", "ffn_norm", "final_norm", "k", "v")
#: Largest 16-bit weight that splits into two signed int8 planes (``256 * hi + lo``).
W16_MAX = 127 * 256 + 127


@dataclass(frozen=True)
class CompileOptions:
    """Choices of the compiler.

    Attributes
    ----------
    context : int or None
        KV-cache positions (default: ``config.context_length`` capped at the model's seq_len).
    device : str
        ECP5 device for the fit check (``"85F"``...).
    act_bits : dict
        Overrides of the activation widths (8 or 16) of ``q``, ``att_out``, ``ffn_up``,
        ``ffn_hidden``.
    weight_bits : dict
        16 for matrices to run as two int8 planes (e.g. ``{"w2": 16}``); 11 for two planes
        holding 11-bit weights (``|w| <= 1023``), which may meet a 16-bit input on a matrix of
        at most 64 inputs (the ``planes_x16`` extension, RTL change needed; e.g. the
        embedding/classifier, ``wq``, ``wk`` in the weight bank's spare rows).
    calibration : list of list of int or None
        Token sequences to calibrate on (default: :func:`hdlgen.model.quantize.calibration_tokens`).
    residual_headroom, logit_headroom : float
        See :func:`hdlgen.model.quantize.quantize_model`.
    method, percentile
        Clip values of the 8-bit points (norm outputs, k, v): max-abs (``"max"``) or a
        percentile of ``|x|`` (:func:`hdlgen.model.quantize.calibrate`).
    gptq : bool
        Round the weights with error feedback (:mod:`hdlgen.compiler.gptq`) instead of to
        nearest (same grid and scales).
    smooth : float or None
        Fold per-channel norm-output scales into the weights with this ``alpha``
        (:mod:`hdlgen.compiler.smooth`); None: off.
    untie : bool
        With ``smooth``, give a tied classifier its own copy of the embedding so the final
        norm can be smoothed too (the weight bank grows by one table).
    smooth_kv : bool
        Equalise the key and value channels' ranges for the int8 KV cache
        (:func:`hdlgen.compiler.smooth.smooth_kv`).
    logits_out : bool
        End the program with ``OUTPUT`` of the logits (readable by the host).
    fit : bool
        Refuse (``UserError``) when the image does not fit the device.
    act_headroom : float
        Factor (>= 1) on the calibrated max-abs of the 16-bit activations other than the
        residual stream and the logits (``q``, ``att_out``, ``ffn_gate``, ``ffn_up``,
        ``ffn_hidden``, 16-bit norm outputs), against saturation beyond the calibration
        set's range (:func:`hdlgen.model.quantize.quantize_model`). Parameters only: the RTL
        runs any value. Default 2 (one bit of the 16 spent on range: on stories260K top-1
        0.852 -> 0.867, mean KL 0.065 -> 0.063; 1 is the earlier scheme).
    norm_bits : int
        8 (the norm blocks' int8 output) or 16: the ``norm_out_bits`` extension (RTL change
        needed): norm outputs int16 and the matrices reading them take a 16-bit input.
    kv_bits : int
        8 or 9: the ``kv_bits`` extension (RTL change needed): int9 KV-cache rows, ``k``/``v``
        requantized to 16-bit outputs on the 9-bit grid (RoPE at 16 bits) and saturated to
        int9 by ``KVAPPEND``. Same block RAM (a 72-bit row of 8 values uses the DP16KD's
        ninth bits, empty with int8 rows).
    weight_width : int
        8 or 9: the ``weight_bits`` extension (RTL change needed): every matrix int9 in one
        plane (per-row scales, GPTQ on the int9 grid), the weight bank ``9 * lanes *
        macs_per_lane`` bits wide. Excludes 16-bit ``weight_bits``.
    weight_exp : bool
        The ``weight_exp`` extension (RTL change needed): int8 weights with one shift bit per
        lane and bank row (a group of ``macs_per_lane`` weights of one row): the row's grid
        step is ``max|row| / 254``; a group whose float max-abs fits ``127`` steps keeps that
        step, the others use twice it (stored ``q``, weight ``q << 1``). GPTQ rounds on these
        grids. The bank row grows by ``lanes`` bits (16 bits on the default 16 x 8 array,
        which the 29 DP16KD columns of a 1024-bit row already have spare: same EBR).
    fuse_softmax : bool
        Emit each layer's attention scores and their softmax as one ``SCORES_SOFTMAX``
        (default; the scores go from the requantizer straight into the softmax, which works on
        head ``h`` while head ``h + 1``'s scores are computed; the scratchpad has no
        ``scores`` buffer) instead of ``SCORES`` then ``SOFTMAX`` (a round trip through a
        ``scores`` buffer of ``n_heads x context`` 16-bit elements).
    fuse_kv : bool
        Emit each layer's ``k`` and ``v`` projections as one ``MATVEC`` (default): they read
        the same input and write the same width, so ``wk`` and ``wv`` are stacked into one
        matrix of ``2 * kv_dim`` rows, their requantization words (and biases) side by side,
        and the outputs go to one ``kv`` buffer (``k`` then ``v``). The results are the same
        bit for bit; a layer has one instruction less and one pipeline drain less (about 50
        cycles: ``python -m sim.benches.engine_profile``). Not done when the two matrices
        have different plane counts (``weight_bits``).
    fuse_rope : bool
        LLaMA: rotate q and k in the ``MATVEC`` that computes them (its ``rope_heads``: the
        requantized results pass the RoPE unit on their way to the writer; v, after k in the
        fused ``kv``, passes unrotated) instead of two ``ROPE`` instructions after the
        projections (default). The results are the same bit for bit; a layer has two
        instructions and one scratchpad round trip of q and k less.
    fuse_append : bool
        The k and v projections append their results to the KV cache as they are written (the
        ``MATVEC``'s ``kv_append``) instead of two ``KVAPPEND`` instructions reading them back
        (default). Not done with ``kv_bits`` above 8 (16-bit k and v) or, for LLaMA, without
        ``fuse_rope`` (k is rotated after the projection then).
    fuse_glu : bool
        LLaMA: the gate and up projections as one ``MATVEC`` with ``glu`` (default): ``w1``
        and ``w3`` are one matrix ``w13`` in blocks of ``lanes`` rows (the gates of
        ``lanes / 2`` hidden units, then their ups: :func:`hdlgen.engine.isa.glu_rows`),
        their requantization words interleaved (gate ``i``, up ``i``), followed by the
        SwiGLU's word, and the results
        pass the SwiGLU unit on their way to the writer, instead of two ``MATVEC`` and an
        ``ELTWISE`` (and the ``hb``, ``hb2`` buffers). The results are the same bit for bit.
        Not done when ``w1`` or ``w3`` takes two planes (``weight_bits``), the ffn norm's
        output is 16-bit (``norm_bits``) or the model's ``dim`` is above
        :data:`hdlgen.engine.isa.GLU_MAX_COLS`: ``glu`` takes int8 inputs and one-plane
        weights.
    """
    context: int = None
    device: str = "85F"
    act_bits: dict = field(default_factory=dict)
    weight_bits: dict = field(default_factory=dict)
    calibration: list = None
    residual_headroom: float = 2.0
    logit_headroom: float = 1.5
    method: str = "max"
    percentile: float = 99.99
    gptq: bool = True
    smooth: float = 0.75
    untie: bool = False
    smooth_kv: bool = True
    logits_out: bool = True
    fit: bool = True
    act_headroom: float = 2.0
    norm_bits: int = 8
    kv_bits: int = 8
    weight_width: int = 8
    weight_exp: bool = False
    fuse_softmax: bool = True
    fuse_kv: bool = True
    fuse_rope: bool = True
    fuse_append: bool = True
    fuse_glu: bool = True

    def ext(self) -> dict:
        """The image extensions these options need (:data:`sim.golden.engine.EXTENSIONS`)."""
        out = {}
        if self.norm_bits != 8:
            out["norm_out_bits"] = self.norm_bits
        if self.kv_bits != 8:
            out["kv_bits"] = self.kv_bits
        if self.weight_width != 8:
            out["weight_bits"] = self.weight_width
        if self.weight_exp:
            out["weight_exp"] = 1
        return out


@dataclass
class Compiled:
    """Result of :func:`compile_model`.

    Attributes
    ----------
    program : list of Instruction
    image : MemoryImage
    manifest : dict
    qmodel : hdlgen.model.quantize.QuantizedModel
    buffers : dict of str to (int, int)
        Scratchpad regions ``(address, elements)``.
    logit_scale : float
        Real value of one logit LSB.
    """
    program: list
    image: MemoryImage
    manifest: dict
    qmodel: object
    buffers: dict
    logit_scale: float
    config: AcceleratorConfig = None

    @property
    def words(self) -> list:
        return encode_program(self.program)

    def save(self, directory) -> list:
        """Write the artefacts to ``directory``: ``program.bin`` (128-bit words, little-endian),
        ``program.txt`` (one instruction per line), ``weights.bin`` (weight-bank rows),
        ``params.bin`` (32-bit little-endian words) and ``manifest.json`` (with the ROM
        tables' descriptors). Returns the paths."""
        import json
        from pathlib import Path
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = {
            "program.bin": b"".join(w.to_bytes(16, "little") for w in self.words),
            "program.txt": "".join(f"{n:4d}  {i}\n" for n, i in enumerate(self.program)).encode(),
            "weights.bin": (self.image.weights.astype(np.int8).tobytes()
                            if self.image.weights.dtype == np.int8 else
                            self.image.weights.astype("<i2").tobytes()),
            "params.bin": self.image.params.astype("<u4").tobytes(),
            "manifest.json": (json.dumps({**self.manifest, "tables": {
                str(k): v for k, v in self.image.tables.items()}}, indent=1) + "\n").encode(),
        }
        paths = []
        for name, data in out.items():
            (d / name).write_bytes(data)
            paths.append(d / name)
        return paths


def _pow2_at_most(v: float) -> int:
    return math.floor(math.log2(v))


def _eps_words(eps_int: int) -> list:
    return [eps_int & 0xFFFFFFFF, eps_int >> 32]


# matmul -> (weight key, input point, output point, bias key), as hdlgen.model.quantize
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


def _redo_requant(qm, scales, weights, names):
    """Requantization of matmuls ``names`` (and ``cls``) for changed scales or weights."""
    c = qm.config
    requant = dict(qm.requant)

    def pl(n):
        v = scales[n]
        return np.full(c.n_layers, float(v)) if np.ndim(v) == 0 else np.asarray(v)

    for name in names:
        if name in ("embedding", "pos_embedding"):
            t = weights["token_embedding" if name == "embedding" else "pos_embedding"]
            requant[name] = Requant.from_real(name, t.scale / float(scales["residual"]), 16)
            continue
        if name == "cls":
            t = weights["token_embedding" if c.shared_classifier else "wcls"]
            requant["cls"] = Requant.from_real(
                "cls", float(scales["final_norm"]) * t.scale / float(scales["logits"]), 16)
            continue
        key, s_in, s_out, bkey = _MATMULS[c.arch][name]
        acc_scale = pl(s_in)[:, None] * weights[key].scale
        bias = None
        if bkey is not None:
            bias = np.rint(qm.model.weights[bkey].astype(np.float64) / acc_scale).astype(np.int64)
        requant[name] = Requant.from_real(name, acc_scale / pl(s_out)[:, None],
                                          qm.act_bits[s_out], bias)
    return requant


def _w16_planes(qm):
    """16-bit weights re-quantized to +-W16_MAX so they split exactly into two int8 planes."""
    weights = dict(qm.weights)
    changed = []
    for key, t in qm.weights.items():
        if t.width != 16:
            continue
        w = qm.model.weights[key].astype(np.float64)
        amax = np.max(np.abs(w), axis=-1)
        scale = np.where(amax > 0, amax / W16_MAX, 1.0)
        q = np.clip(np.rint(w / scale[..., None]), -W16_MAX, W16_MAX).astype(np.int16)
        weights[key] = type(t)(q=q, scale=scale, bits=16)
        changed += [n for n, spec in _MATMULS[qm.config.arch].items() if spec[0] == key]
        if key == "wcls" or (key == "token_embedding" and qm.config.shared_classifier):
            changed.append("cls")
        if key in ("token_embedding", "pos_embedding"):
            changed.append("embedding" if key == "token_embedding" else "pos_embedding")
    if not changed:
        return qm
    return replace(qm, weights=weights, requant=_redo_requant(qm, qm.scales, weights, changed))


def _bfp_steps(w, K):
    """Grid multipliers (1 or 2) of the ``weight_exp`` scheme for float matrices ``w``
    (``(..., rows, cols)``): 2 for the groups of ``K`` columns of a row whose max-abs exceeds
    127 of the row's steps ``max|row| / 254``."""
    w = np.asarray(w, dtype=np.float64)
    amax = np.max(np.abs(w), axis=-1, keepdims=True)
    step = np.where(amax > 0, amax / 254, 1.0)
    cols = w.shape[-1]
    mult = np.ones_like(w)
    for j in range(0, cols, K):
        g = np.max(np.abs(w[..., j:j + K]), axis=-1, keepdims=True)
        mult[..., j:j + K] = np.where(g > 127 * step, 2.0, 1.0)
    return step[..., 0], mult


def _bfp_weights(qm, K):
    """Every matrix on the ``weight_exp`` grids (rounded to nearest; :func:`_gptq` re-rounds
    the matrices it covers), requantization redone for the new row scales."""
    c = qm.config
    weights = dict(qm.weights)
    for key, t in qm.weights.items():
        if t.width != 9:
            continue                 # two-plane weights keep their grid
        w = qm.model.weights[key].astype(np.float64)
        step, mult = _bfp_steps(w, K)
        q = np.clip(np.rint(w / (step[..., None] * mult)), -127, 127) * mult
        weights[key] = type(t)(q=q.astype(np.int16), scale=step, bits=9)
    names = list(_MATMULS[c.arch]) + ["embedding", "cls"]
    names += ["pos_embedding"] if c.arch == "gpt2" else []
    return replace(qm, weights=weights, requant=_redo_requant(qm, qm.scales, weights, names))


def _gptq(qm, sequences, bfp_k=None):
    """Re-round every weight matrix with :func:`hdlgen.compiler.gptq.gptq_round` (same scales;
    the token embedding only when it is a separate table from the classifier's lookups; with
    ``bfp_k`` on the ``weight_exp`` grids of groups of ``bfp_k``)."""
    from hdlgen.compiler.gptq import INPUT_POINTS, capture_inputs, gptq_round, gptq_round_steps
    from hdlgen.model.quantize import calibration_tokens
    c = qm.config
    if sequences is None:
        sequences = calibration_tokens(qm.model, 4, min(128, c.seq_len))
    hs = capture_inputs(qm.model, sequences)
    weights = dict(qm.weights)
    for key, point in INPUT_POINTS[c.arch].items():
        if key not in weights or key == "token_embedding":
            continue          # the embedding is also read row by row: keep it rounded to nearest
        t = weights[key]
        qmax = W16_MAX if t.width == 16 else (1 << (t.width - 1)) - 1
        w = qm.model.weights[key].astype(np.float64)
        if bfp_k is not None and t.width == 9:
            step, mult = _bfp_steps(w, bfp_k)
            steps = step[..., None] * mult
            if w.ndim == 3:
                q = np.stack([gptq_round_steps(w[l], steps[l], hs[(point, l)], 127)
                              for l in range(c.n_layers)]) * mult
            else:
                q = gptq_round_steps(w, steps, hs[(point, -1)], 127) * mult
        elif w.ndim == 3:
            q = np.stack([gptq_round(w[l], t.scale[l], hs[(point, l)], qmax)
                          for l in range(c.n_layers)])
        else:
            q = gptq_round(w, t.scale, hs[(point, -1)], qmax)
        weights[key] = type(t)(q=q.astype(t.q.dtype), scale=t.scale, bits=t.width)
    return replace(qm, weights=weights)


def _global_ffn_scales(qm):
    """One scale for the FFN nonlinearity's input (and GELU's output) across the layers, so one
    table ROM serves every layer; the matmul requantizations that touch them are redone."""
    c = qm.config
    names = ("ffn_gate",) if c.arch == "llama" else ("ffn_fc", "ffn_hidden")
    scales = dict(qm.scales)
    for n in names:
        scales[n] = np.full(c.n_layers, float(np.max(scales[n])))
    redo = ("w1",) if c.arch == "llama" else ("w_fc", "w_proj")
    return replace(qm, scales=scales, requant=_redo_requant(qm, scales, qm.weights, redo))


def _matrix_rows(rows, cols, lanes, K, planes=1):
    return -(-rows // lanes) * -(-cols // K) * planes


def _weight_planes(bits: int) -> int:
    """Weight-bank planes of a matrix quantized to ``bits`` (16-bit weights as two int8)."""
    return 2 if bits >= 10 else 1


def _fused_kv(fuse_kv: bool, weight_bits: dict) -> bool:
    """Whether k and v are one ``MATVEC`` (:attr:`CompileOptions.fuse_kv`)."""
    wb = weight_bits or {}
    return bool(fuse_kv) and _weight_planes(wb.get("wk", 8)) == _weight_planes(wb.get("wv", 8))


def _fused_append(opt, arch: str) -> bool:
    """Whether the k and v projections append to the KV cache themselves
    (:attr:`CompileOptions.fuse_append`)."""
    return (bool(opt.fuse_append) and opt.kv_bits <= 8 and
            (arch == "gpt2" or bool(opt.fuse_rope)))


def _fused_glu(fuse_glu: bool, weight_bits: dict, arch: str, dim: int,
               in_bits: int = 8) -> bool:
    """Whether gate and up are one ``MATVEC`` with ``glu`` (:attr:`CompileOptions.fuse_glu`):
    one-plane weights, an int8 input (``in_bits``: the ffn norm's output) and at most
    ``GLU_MAX_COLS`` inputs, as ``glu`` needs."""
    wb = weight_bits or {}
    return (arch == "llama" and bool(fuse_glu) and dim <= GLU_MAX_COLS and in_bits == 8 and
            _weight_planes(wb.get("w1", 8)) == _weight_planes(wb.get("w3", 8)) == 1)


def _program_length(c, fuse_softmax: bool = True, fuse_kv: bool = True,
                    fuse_rope: bool = True, fuse_append: bool = True,
                    fuse_glu: bool = True) -> int:
    body = (17 if c.arch == "llama" else 14) - bool(fuse_softmax) - bool(fuse_kv)
    body -= 2 * (c.arch == "llama" and bool(fuse_rope)) + 2 * bool(fuse_append)
    body -= 2 * (c.arch == "llama" and bool(fuse_glu))
    return body + 7 + (c.arch == "gpt2")


def plan_image(c, config: AcceleratorConfig, ctx: int, weight_bits: dict = None,
               untie: bool = False, ext: dict = None, fuse_softmax: bool = True,
               fuse_kv: bool = True, fuse_glu: bool = True) -> MemoryImage:
    """A memory image of the right sizes (zero contents) for model config ``c``, computed from
    the shapes alone: what the fit check needs before quantizing anything (``ext``: the
    image extensions, which set the widths of the weight bank and the KV cache;
    ``fuse_softmax``: as :attr:`CompileOptions.fuse_softmax`, without it the scratchpad also
    holds the ``scores`` buffer; ``fuse_kv``: as :attr:`CompileOptions.fuse_kv`, which lays
    ``wk`` and ``wv`` out as one matrix; ``fuse_glu``: as :attr:`CompileOptions.fuse_glu`, which
    lays ``w1`` and ``w3`` out as one matrix and has no ``hb``, ``hb2`` buffers)."""
    wb = weight_bits or {}
    lanes, K = config.lanes, config.macs_per_lane
    L, D, H, KV, V = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.vocab_size
    mats = {"llama": {"wq": (D, D), "wk": (KV, D), "wv": (KV, D), "wo": (D, D), "w1": (H, D),
                      "w3": (H, D), "w2": (D, H)},
            "gpt2": {"wq": (D, D), "wk": (KV, D), "wv": (KV, D), "wo": (D, D), "w_fc": (H, D),
                     "w_proj": (D, H)}}[c.arch]
    if _fused_kv(fuse_kv, wb):
        mats = {("wk" if k == "wv" else k): ((2 * KV, D) if k == "wv" else rc)
                for k, rc in mats.items() if k != "wk"}
    glu = _fused_glu(fuse_glu, wb, c.arch, c.dim)
    if glu:
        mats = {("w13" if k == "w1" else k): ((2 * H, D) if k == "w1" else rc)
                for k, rc in mats.items() if k != "w3"}

    def planes(k):
        return _weight_planes(wb.get("w1" if k == "w13" else k, 8))

    rows = L * sum(_matrix_rows(r, cc, lanes, K, planes(k)) for k, (r, cc) in mats.items())
    out_rows = sum(r for r, _ in mats.values())
    rows += _matrix_rows(V, D, lanes, K, planes("token_embedding"))
    if not c.shared_classifier or untie:
        rows += _matrix_rows(V, D, lanes, K, planes("wcls"))
    gpt2 = c.arch == "gpt2"
    if gpt2:
        rows += _matrix_rows(ctx, D, lanes, K, planes("pos_embedding"))
    # requantization words (+ biases), norm gains (+ biases) and epsilons, attention and FFN words
    words = L * (out_rows * (2 if gpt2 else 1) + (2 if gpt2 else 1) * 2 * D + 4 + (2 if gpt2 else 3))
    words += 2 * V + D * (2 if gpt2 else 1) + 2 + (ctx if gpt2 else 0)
    tables, twords = {}, 0
    if not gpt2:
        tables[words] = {"kind": "rope", "context": ctx, "head_size": c.head_size}
        twords += ctx * c.head_size
    tables[words + twords] = {"kind": "act", "in_bits": 16}
    twords += 1024
    # the buffers of compile_model: x xb q att, k v, [scores] probs, hb [hb2] hh, logits
    att_rows = (1 if fuse_softmax else 2) * c.n_heads * ctx
    act = 4 * D + 2 * KV + att_rows + (2 if gpt2 else 1 if glu else 3) * H + V
    ext = dict(ext or {})
    wdt = np.int8 if ext.get("weight_bits", 8) == 8 and not ext.get("weight_exp") else np.int16
    return MemoryImage(lanes=lanes, macs_per_lane=K, weights=np.zeros((rows, lanes * K), wdt),
                       params=np.zeros(words + twords, np.int64), act_elements=act,
                       kv_layers=L, kv_heads=c.n_kv_heads, head_size=c.head_size, context=ctx,
                       tables=tables, ext=ext)


def plan_units(c, config: AcceleratorConfig, fuse_softmax: bool = True) -> EngineUnits:
    """The engine's units for model config ``c`` before quantizing
    (:class:`hdlgen.engine.ebr.EngineUnits`): a norm unit for each of the three norm sites
    (attention, FFN, final: an upper bound, as sites whose formats coincide share a unit, which
    only the quantized program tells) and pairs of heads as ``Engine._analyse`` decides them
    for the program :func:`compile_model` emits (``SCORES_SOFTMAX`` with ``fuse_softmax``, at
    least 8 lanes, an even ``kv_mul``)."""
    pairs = bool(fuse_softmax) and config.lanes >= 8 and c.kv_mul >= 2 and c.kv_mul % 2 == 0
    return EngineUnits(norm_dims=(c.dim,) * 3, pairs=pairs,
                       row_bits=config.lanes * config.macs_per_lane * 8,
                       macs_per_lane=config.macs_per_lane)


def units_text(unit_ebr: dict) -> str:
    """The units' blocks by kind, e.g. ``softmax 3, score queues 2, norms 2`` (or ``none``)."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in unit_ebr.items() if v) or "none"


def _ebr_items(ebr: dict, nbytes: dict, unit_ebr: dict) -> str:
    mem = ", ".join(f"{k} {nbytes[k]:,} bytes ({ebr[k]} EBR)" for k in nbytes)
    return f"{mem}; the units' own block RAMs {ebr['units']} EBR ({units_text(unit_ebr)})"


def fit_check(image: MemoryImage, program_words: int, device: str, model_name: str,
              per_position_ebr: float = None, units: EngineUnits = None) -> dict:
    """DP16KD use of the engine for ``image`` against the device (the memories and, with
    ``units``, the units' own block RAMs: :meth:`MemoryImage.memory_ebr`);
    :class:`UserError` when it does not fit, naming each memory's bytes and blocks, the units'
    blocks, the longest context that would fit and the next device it fits. Returns
    ``{"device", "ebr", "ebr_total", "ebr_available", "bytes", "units"}`` (``units``: the
    units' blocks by kind, their sum is ``ebr["units"]``)."""
    dev = str(device).upper().replace("LFE5U-", "")
    if dev not in DEVICE_EBR:
        raise UserError(f"device {device!r} is not known; expected one of {', '.join(DEVICE_EBR)}")
    units = units or EngineUnits()
    ebr = image.memory_ebr(units)
    unit_ebr = units.ebr(image.context)
    nbytes = image.memory_bytes(program_words)
    total = sum(ebr.values())
    avail = DEVICE_EBR[dev]
    if total > avail:
        msg = (f"{model_name} with a context of {image.context} needs {total} EBR "
               f"({sum(nbytes.values()):,} bytes: {_ebr_items(ebr, nbytes, unit_ebr)}) but the "
               f"{dev} has {avail} EBR ({avail * 2048:,} bytes)")
        # the longest context that fits (the scratchpad and parameter sizes kept: an upper bound)
        best = 0
        for ctx in (4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8):
            if ctx >= image.context:
                continue
            tables = {a: ({**d, "context": ctx} if d["kind"] == "rope" else d)
                      for a, d in image.tables.items()}
            trial = MemoryImage(**{**image.__dict__, "context": ctx, "tables": tables})
            if sum(trial.memory_ebr(units).values()) <= avail:
                best = ctx
                break
        bigger = [d for d, n in DEVICE_EBR.items() if n > avail and total <= n]
        if best:
            msg += f"; a context of {best} would fit"
        elif not bigger:
            msg += "; it does not fit at any context: use a smaller model"
        if bigger:
            msg += f"; {'or ' if best else ''}it fits the {bigger[0]} at this context"
        raise UserError(msg)
    return {"device": dev, "ebr": ebr, "ebr_total": total, "ebr_available": avail,
            "bytes": nbytes, "units": unit_ebr}


def compile_model(model: Model, config: AcceleratorConfig = None,
                  options: CompileOptions = None) -> Compiled:
    """Quantize ``model``, lay it out in the engine's memories and emit the decode-step program.

    Raises
    ------
    UserError
        When the model needs something the blocks cannot do (RoPE on a head size that is not a
        power of two), a parameter does not fit its field, or the image does not fit the device.
    """
    config = (config or AcceleratorConfig()).check()
    opt = options or CompileOptions()
    c = model.config
    arch = c.arch
    ctx = opt.context if opt.context is not None else min(config.context_length, c.seq_len)
    if isinstance(ctx, bool) or not isinstance(ctx, int) or not 1 <= ctx <= c.seq_len:
        raise UserError(f"context={ctx!r} must be an integer from 1 to the model's "
                        f"seq_len={c.seq_len}")
    if arch == "llama" and c.head_size & (c.head_size - 1):
        raise UserError(f"head size {c.head_size} (dim {c.dim} / n_heads {c.n_heads}) is not a "
                        f"power of two: the RoPE block needs one; pick n_heads so that "
                        f"dim / n_heads is 2, 4, 8, 16, ...")
    if max(c.dim, c.hidden_dim) > config.max_dot_length:
        raise UserError(f"the model's widest dot product ({max(c.dim, c.hidden_dim)}) exceeds "
                        f"max_dot_length={config.max_dot_length}; raise it in the config")
    act_bits = dict(DEFAULT_ACT_BITS[arch])
    ext = opt.ext()
    from sim.golden.engine import EXTENSIONS
    for name, key in (("norm_bits", "norm_out_bits"), ("kv_bits", "kv_bits"),
                      ("weight_width", "weight_bits")):
        if getattr(opt, name) not in EXTENSIONS[key]:
            raise UserError(f"{name}={getattr(opt, name)!r}: use one of {EXTENSIONS[key]}")
    if opt.weight_exp and (opt.weight_width != 8 or any(b != 11 for b in
                                                         opt.weight_bits.values())):
        raise UserError(f"weight_exp (int8 weights with a shift bit per lane and row) cannot be "
                        f"combined with weight_width={opt.weight_width} or weight_bits "
                        f"{opt.weight_bits} other than 11")
    if opt.weight_width != 8 and any(b != opt.weight_width for b in opt.weight_bits.values()):
        raise UserError(f"weight_width={opt.weight_width} gives every matrix one "
                        f"{opt.weight_width}-bit plane; per-matrix weight_bits "
                        f"{opt.weight_bits} cannot be combined with it")
    if opt.norm_bits == 16:
        act_bits.update(attn_norm=16, ffn_norm=16, final_norm=16)
    if opt.kv_bits == 9:
        act_bits.update(k=9, v=9)
    for k, v in opt.act_bits.items():
        if k in _FIXED8 and v != act_bits.get(k, 8):
            raise UserError(f"act_bits {k}={v}: this tensor is int8 in the blocks (norm "
                            f"output / KV cache); only q, att_out, ffn_up, ffn_hidden can be 16 "
                            f"(norm outputs: norm_bits=16; KV cache: kv_bits=9)")
        act_bits[k] = v
    for key, b in opt.weight_bits.items():
        if b not in (8, 11, 16):
            raise UserError(f"weight_bits {key}={b}: use 16 (two int8 planes) or 11 (two planes "
                            f"of an 11-bit weight)")
        readers = [(s_in, c.hidden_dim if wkey in ("w2", "w_proj") else c.dim)
                   for wkey, s_in, _, _ in _MATMULS[arch].values() if wkey == key]
        if key in ("token_embedding", "wcls"):
            readers.append(("final_norm", c.dim))
        for s_in, cols in readers:
            if act_bits.get(s_in, 8) != 16:
                continue
            if b == 16:
                raise UserError(f"weight_bits {key}=16 needs an 8-bit input, but {s_in} is 16-bit "
                                f"(a 16 x 16 product does not fit the int32 accumulator); also "
                                f"set act_bits {s_in}=8 (bench accuracy: --act8 {s_in}), or use "
                                f"11-bit weights")
            if b == 11:
                if cols > 64:
                    raise UserError(f"weight_bits {key}=11 with a 16-bit input needs at most 64 "
                                    f"inputs (1023 * 32768 * n < 2**31); {key} has {cols}")
                ext["planes_x16"] = 1
    fuse_kv = _fused_kv(opt.fuse_kv, opt.weight_bits)
    fuse_glu = _fused_glu(opt.fuse_glu, opt.weight_bits, c.arch, c.dim,
                          act_bits.get("ffn_norm", 8))
    if opt.fit:                     # refuse before anything long (quantization, layout)
        fit_check(plan_image(c, config, ctx, opt.weight_bits, opt.untie and opt.smooth is not None,
                             ext, opt.fuse_softmax, fuse_kv, fuse_glu),
                  _program_length(c, opt.fuse_softmax, fuse_kv, opt.fuse_rope,
                                  _fused_append(opt, c.arch), fuse_glu), opt.device,
                  model.name, units=plan_units(c, config, opt.fuse_softmax))
    calibration = opt.calibration
    if opt.smooth is not None or opt.smooth_kv:
        from hdlgen.compiler.smooth import smooth_kv, smooth_norms
        from hdlgen.model.quantize import calibration_tokens
        if calibration is None:
            calibration = calibration_tokens(model, 4, min(128, c.seq_len))
        if opt.smooth_kv:
            model = smooth_kv(model, calibration)
        if opt.smooth is not None:
            model = smooth_norms(model, calibration, opt.smooth, opt.untie)
        c = model.config
    wbits = dict(opt.weight_bits)
    if opt.weight_width != 8 or opt.weight_exp:
        keys = {spec[0] for spec in _MATMULS[arch].values()} | {"token_embedding"}
        keys |= {"pos_embedding"} if arch == "gpt2" else set()
        keys |= set() if c.shared_classifier else {"wcls"}
        wbits = {k: opt.weight_bits.get(k, 9) if opt.weight_exp else opt.weight_width
                 for k in keys}
    qm = quantize_model(model, calibration, method=opt.method, percentile=opt.percentile,
                        residual_headroom=opt.residual_headroom,
                        logit_headroom=opt.logit_headroom, act_bits=act_bits,
                        weight_bits=wbits or None, act_headroom=opt.act_headroom)
    K = config.macs_per_lane
    qm = _w16_planes(qm)
    if opt.weight_exp:
        qm = _bfp_weights(qm, K)
    qm = _global_ffn_scales(qm)
    if opt.gptq:
        qm = _gptq(qm, calibration, K if opt.weight_exp else None)
    bits = qm.act_bits
    sc = qm.scales
    L, D, H, KV, V, hs = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.vocab_size, c.head_size
    lanes, K = config.lanes, config.macs_per_lane

    def width(b):
        return Width.W16 if b == 16 else Width.W8

    def per_layer(name):
        s = sc[name]
        return np.full(L, float(s)) if s.ndim == 0 else s

    # ---- scratchpad ---------------------------------------------------------------------------
    buffers = {}
    top = 0

    def buf(name, n):
        nonlocal top
        buffers[name] = (top, n)
        top += n
        return buffers[name][0]

    X = buf("x", D)
    XB = buf("xb", D)
    Q = buf("q", D)
    if fuse_kv:                         # one MATVEC writes k then v
        KB = buf("kv", 2 * KV)
        VB = KB + KV
    else:
        KB = buf("k", KV)
        VB = buf("v", KV)
    S = None if opt.fuse_softmax else buf("scores", c.n_heads * ctx)   # SCORES -> SOFTMAX only
    P = buf("probs", c.n_heads * ctx)
    ATT = buf("att", D)
    HB = None if fuse_glu else buf("hb", H)
    HB2 = buf("hb2", H) if arch == "llama" and not fuse_glu else None
    HH = buf("hh", H)
    LOG = buf("logits", V)

    # ---- weights and parameters ---------------------------------------------------------------
    wa = WeightAllocator(lanes, K, 9 if opt.weight_exp else opt.weight_width)
    pa = ParamAllocator()
    tables = {}

    def wplanes(key):
        return _weight_planes(qm.weights[{"wkv": "wk", "w13": "w1"}.get(key, key)].width)

    def add_matrix(q, planes):
        q = np.asarray(q, dtype=np.int64)
        if planes == 2:
            if np.abs(q).max(initial=0) > W16_MAX:
                raise AssertionError("16-bit weight beyond the two-plane range")
            lo = ((q + 128) & 255) - 128
            hi = (q - lo) >> 8
            addr = wa.add(hi)
            wa.add(lo)
            return addr, 2
        return wa.add(q), 1

    def add_requant(rq, index=(), interleave=False):
        """One word per row, then the biases (if any); ``rq`` is a :class:`Requant` or a
        list of them (the rows of a stacked matrix, in order, or with ``interleave`` row by
        row: the first's row 0, the second's row 0, ...)."""
        rqs = rq if isinstance(rq, list) else [rq]

        def rows(f):
            parts = [np.atleast_1d(f(r)[index]) for r in rqs]
            return np.stack(parts, 1).reshape(-1) if interleave else np.concatenate(parts)
        mult, shift = rows(lambda r: r.mult), rows(lambda r: r.shift)
        addr = pa.add([requant_word(m, s) for m, s in zip(mult, shift)])
        if any(r.bias is not None for r in rqs):
            pa.add(rows(lambda r: r.bias))
        return addr

    def add_requant_real(name, real, out_bits):
        try:
            m, s = quantize_multiplier(float(real))
        except ValueError as e:
            raise UserError(f"requantization {name}: {e}") from None
        return pa.add([requant_word(m, s)])

    emb = qm.weights["token_embedding"]
    emb_w, emb_planes = add_matrix(emb.q, wplanes("token_embedding"))
    emb_p = add_requant(qm.requant["embedding"])
    if arch == "gpt2":
        posq = qm.weights["pos_embedding"]
        pos_w, pos_planes = add_matrix(posq.q[:ctx], wplanes("pos_embedding"))
        pos_p = add_requant(qm.requant["pos_embedding"], slice(0, ctx))
    if c.shared_classifier:
        cls_w, cls_planes = emb_w, emb_planes
    else:
        cls_w, cls_planes = add_matrix(qm.weights["wcls"].q, wplanes("wcls"))
    cls_p = add_requant(qm.requant["cls"])

    # norms: the calibrated output scale is folded into the gains; one (gamma_frac, out_frac)
    # per norm site shared by all layers (the instruction is shared by the loop)
    gkeys = {"llama": ("rms_att", "rms_ffn", "rms_final"),
             "gpt2": ("ln1_w", "ln2_w", "lnf_w")}[arch]
    bkeys = {"llama": (None, None, None), "gpt2": ("ln1_b", "ln2_b", "lnf_b")}[arch]
    s_res = float(sc["residual"])
    kind = NormKind.RMSNORM if arch == "llama" else NormKind.LAYERNORM
    eps_lsb = c.norm_eps / s_res ** 2
    if eps_lsb >= 2 ** 20:
        raise UserError(f"norm epsilon {c.norm_eps} is {eps_lsb:.3g} residual LSB squared, "
                        f"beyond the norm block's 2**20; the residual scale {s_res:.3g} is too "
                        f"fine")
    eps_int = round(eps_lsb * (D if kind == NormKind.RMSNORM else D * D) * 256)

    def norm_site(gkey, bkey, out_scale):
        g = np.atleast_2d(model.weights[gkey].astype(np.float64))          # (L or 1, D)
        s_out = np.atleast_1d(out_scale)[:, None]
        gr = g / s_out
        e = _pow2_at_most(32767 / max(np.abs(gr).max(), 1e-30))
        e = min(e, 24)
        if e < -8:
            raise UserError(f"norm gains of {gkey} are too large for the int16 gain field")
        gf, of = (e, 0) if e >= 0 else (0, -e)
        gamma = np.clip(np.floor(gr * 2.0 ** e + 0.5), -32768, 32767).astype(np.int64)
        beta, bf = None, 0
        if bkey is not None:
            br = np.atleast_2d(model.weights[bkey].astype(np.float64)) / s_out
            bf = _pow2_at_most(32767 / max(np.abs(br).max(), 1e-30)) + of
            bf = max(0, min(bf, 24))
            beta = np.clip(np.floor(br * 2.0 ** (bf - of) + 0.5), -32768, 32767).astype(np.int64)
        return gamma, beta, gf, of, bf

    def add_norm_params(gamma, beta, layer):
        addr = pa.add(gamma[layer])
        if beta is not None:
            pa.add(beta[layer])
        pa.add(_eps_words(eps_int))
        return addr

    n_att = norm_site(gkeys[0], bkeys[0], per_layer("attn_norm"))
    n_ffn = norm_site(gkeys[1], bkeys[1], per_layer("ffn_norm"))
    n_fin = norm_site(gkeys[2], bkeys[2], float(sc["final_norm"]))
    fin_p = add_norm_params(n_fin[0], n_fin[1], 0)

    rope_p = None
    if arch == "llama":
        rope_p = pa.add(rope_table_words(ctx, hs, c.rope_theta))
        tables[rope_p] = {"kind": "rope", "context": ctx, "head_size": hs,
                          "theta": float(c.rope_theta)}
    # FFN nonlinearity: one table ROM for all layers (global scales, see _global_ffn_scales)
    if arch == "llama":
        silu_scale = per_layer("ffn_gate")
        silu_t = pa.add(act_table_words("silu", 16, 16, float(silu_scale[0]),
                                        float(silu_scale[0])))
    else:
        gelu_t = pa.add(act_table_words("gelu_tanh", 16, bits["ffn_hidden"],
                                        qm.scale_of("ffn_fc", 0), qm.scale_of("ffn_hidden", 0)))
        tables[gelu_t] = {"kind": "act", "func": "gelu_tanh", "in_bits": 16,
                          "out_bits": bits["ffn_hidden"], "in_scale": qm.scale_of("ffn_fc", 0),
                          "out_scale": qm.scale_of("ffn_hidden", 0)}

    # attention requantization (per layer)
    s_q, s_k, s_v = per_layer("q"), per_layer("k"), per_layer("v")
    score_real = s_q * s_k / math.sqrt(hs) * 2.0 ** SCORE_FRAC
    attv_real = 2.0 ** -PROB_BITS * s_v / per_layer("att_out")

    # ---- per-layer blocks at a fixed stride ---------------------------------------------------
    mats = {"llama": ("wq", "wk", "wv", "wo", "w1", "w3", "w2"),
            "gpt2": ("wq", "wk", "wv", "wo", "w_fc", "w_proj")}[arch]
    stacked = {m: [m] for m in mats}
    if fuse_kv:                         # wk and wv as one matrix "wkv" (k's rows, then v's)
        stacked = {("wkv" if m == "wk" else m): ([m, "wv"] if m == "wk" else [m])
                   for m in mats if m != "wv"}
    if fuse_glu:                        # w1 and w3 as one matrix "w13" (glu_rows)
        stacked = {("w13" if m == "w1" else m): (["w1", "w3"] if m == "w1" else parts)
                   for m, parts in stacked.items() if m != "w3"}
    waddr, paddr = [], []
    for layer in range(L):
        wl, pl = {}, {}
        w0, p0 = wa.rows, pa.words
        for m, parts in stacked.items():
            qs = [qm.weights[p].q[layer] for p in parts]
            if m == "w13":              # gates and ups in blocks of lanes (glu_rows)
                gate, up = glu_rows(2 * H, wa.lanes)
                q = np.zeros((up[-1] + 1, qs[0].shape[1]), dtype=qs[0].dtype)
                q[gate], q[up] = qs
            else:
                q = np.concatenate(qs)
            wl[m], _ = add_matrix(q, wplanes(m))
            wl[m] -= w0
        if arch == "llama":
            mul_real = float(silu_scale[layer]) * qm.scale_of("ffn_up", layer) / \
                qm.scale_of("ffn_hidden", layer)
            swiglu_d = {"kind": "swiglu", "a_bits": 16, "b_bits": bits["ffn_up"],
                        "out_bits": bits["ffn_hidden"],
                        "a_scale": qm.scale_of("ffn_gate", layer),
                        "silu_scale": float(silu_scale[layer]), "table": silu_t}
        for m, parts in stacked.items():
            # (w13: word pairs gate i, up i, then the SwiGLU's word; LLaMA has no biases)
            pl[m] = add_requant([qm.requant[p] for p in parts], layer, m == "w13") - p0
            if m == "w13":
                a = add_requant_real("ffn_mul", mul_real, bits["ffn_hidden"])
                tables[a] = swiglu_d
                pl["ffn_mul"] = a - p0
        pl["att_norm"] = add_norm_params(n_att[0], n_att[1], layer) - p0
        pl["ffn_norm"] = add_norm_params(n_ffn[0], n_ffn[1], layer) - p0
        pl["scores"] = add_requant_real("att_scores", score_real[layer], 16) - p0
        pl["attv"] = add_requant_real("att_value", attv_real[layer], bits["att_out"]) - p0
        if arch == "llama" and not fuse_glu:
            a = add_requant_real("ffn_mul", mul_real, bits["ffn_hidden"])
            tables[a] = swiglu_d
            pl["ffn_mul"] = a - p0
        waddr.append((w0, wl))
        paddr.append((p0, pl))
    wstride = (waddr[1][0] - waddr[0][0]) if L > 1 else 0
    pstride = (paddr[1][0] - paddr[0][0]) if L > 1 else 0
    for layer in range(1, L):
        if (waddr[layer][0] - waddr[0][0] != layer * wstride or waddr[layer][1] != waddr[0][1]
                or paddr[layer][0] - paddr[0][0] != layer * pstride
                or paddr[layer][1] != paddr[0][1]):
            raise AssertionError("decoder layers are not laid out at a fixed stride")
    W0, WL = waddr[0][0], waddr[0][1]
    P0, PL = paddr[0][0], paddr[0][1]

    def wa_(m):
        return W0 + WL[m]

    def pa_(m):
        return P0 + PL[m]

    # ---- program ------------------------------------------------------------------------------
    I = Instruction.make
    prog = [I(Opcode.EMBED, index_reg=Reg.TOKEN, dst=X, waddr=emb_w, w_planes=emb_planes,
              rows=V, cols=D, paddr=emb_p)]
    if arch == "gpt2":
        prog.append(I(Opcode.EMBED, index_reg=Reg.POS, accumulate=1, dst=X, waddr=pos_w,
                      w_planes=pos_planes, rows=ctx, cols=D, paddr=pos_p))

    def mv(m, src, dst, rows, cols, in_bits, out_bits, accumulate=0, bias=0, rope_heads=0,
           kv_append=0, glu=0):
        return I(Opcode.MATVEC, in_width=width(in_bits), out_width=width(out_bits),
                 w_planes=wplanes(m), bias=bias, layer_rel=1, accumulate=accumulate, src=src,
                 dst=dst, waddr=wa_(m), rows=rows, cols=cols, paddr=pa_(m),
                 rope_heads=rope_heads, kv_append=kv_append, glu=glu)

    g = int(arch == "gpt2")
    fuse_rope = int(arch == "llama" and bool(opt.fuse_rope))
    fuse_append = int(_fused_append(opt, arch))
    nb = opt.norm_bits                  # norm outputs: the width of the matrices' inputs
    kvo = 16 if opt.kv_bits > 8 else 8  # k, v written as 16-bit on the 9-bit grid
    body = [
        I(Opcode.NORM, kind=kind, layer_rel=1, gamma_frac=n_att[2], beta_frac=n_att[4],
          out_frac=n_att[3], src=X, dst=XB, len=D, paddr=pa_("att_norm")),
        mv("wq", XB, Q, D, D, nb, bits["q"], bias=g, rope_heads=c.n_heads * fuse_rope),
    ]
    rk = c.n_kv_heads * fuse_rope       # k's heads come first in the kv buffer
    ka = 3 * fuse_append                # (kv_append: 1 K, 2 V, 3 K then V)
    body += ([mv("wkv", XB, KB, 2 * KV, D, nb, kvo, bias=g, rope_heads=rk, kv_append=ka)]
             if fuse_kv else
             [mv("wk", XB, KB, KV, D, nb, kvo, bias=g, rope_heads=rk, kv_append=ka & 1),
              mv("wv", XB, VB, KV, D, nb, kvo, bias=g, kv_append=ka & 2)])
    if arch == "llama" and not fuse_rope:
        body += [I(Opcode.ROPE, width=width(bits["q"]), src=Q, dst=Q, n_heads=c.n_heads,
                   head_size=hs, paddr=rope_p),
                 I(Opcode.ROPE, width=width(kvo), src=KB, dst=KB, n_heads=c.n_kv_heads,
                   head_size=hs, paddr=rope_p)]
    if not fuse_append:
        body += [
            I(Opcode.KVAPPEND, kv=0, src=KB, kv_heads=c.n_kv_heads, head_size=hs),
            I(Opcode.KVAPPEND, kv=1, src=VB, kv_heads=c.n_kv_heads, head_size=hs),
        ]
    if opt.fuse_softmax:
        body.append(I(Opcode.SCORES_SOFTMAX, layer_rel=1, q_width=width(bits["q"]),
                      in_frac=SCORE_FRAC, out_bits=PROB_BITS, q=Q, dst=P, stride=ctx,
                      n_heads=c.n_heads, kv_mul=c.kv_mul, head_size=hs, paddr=pa_("scores")))
    else:
        body += [
            I(Opcode.SCORES, layer_rel=1, q_width=width(bits["q"]), q=Q, dst=S, stride=ctx,
              n_heads=c.n_heads, kv_mul=c.kv_mul, head_size=hs, paddr=pa_("scores")),
            I(Opcode.SOFTMAX, causal=1, in_frac=SCORE_FRAC, out_bits=PROB_BITS, src=S, dst=P,
              stride=ctx, rows=c.n_heads, len=ctx)]
    body += [
        I(Opcode.ATTV, layer_rel=1, out_width=width(bits["att_out"]), prob_bits=PROB_BITS, p=P, dst=ATT,
          stride=ctx, n_heads=c.n_heads, kv_mul=c.kv_mul, head_size=hs, paddr=pa_("attv")),
        mv("wo", ATT, X, D, D, bits["att_out"], 16, accumulate=1, bias=g),
        I(Opcode.NORM, kind=kind, layer_rel=1, gamma_frac=n_ffn[2], beta_frac=n_ffn[4],
          out_frac=n_ffn[3], src=X, dst=XB, len=D, paddr=pa_("ffn_norm")),
    ]
    if fuse_glu:
        body += [
            mv("w13", XB, HH, 2 * H, D, nb, bits["ffn_hidden"], glu=1),
            mv("w2", HH, X, D, H, bits["ffn_hidden"], 16, accumulate=1),
        ]
    elif arch == "llama":
        body += [
            mv("w1", XB, HB, H, D, nb, 16),
            mv("w3", XB, HB2, H, D, nb, bits["ffn_up"]),
            I(Opcode.ELTWISE, layer_rel=1, eop=EltOp.SWIGLU, width=width(bits["ffn_hidden"]), a=HB, b=HB2,
              dst=HH, len=H, paddr=pa_("ffn_mul")),
            mv("w2", HH, X, D, H, bits["ffn_hidden"], 16, accumulate=1),
        ]
    else:
        body += [
            mv("w_fc", XB, HB, H, D, nb, 16, bias=1),
            I(Opcode.ACT, func=Func.GELU_TANH, in_width=Width.W16,
              out_width=width(bits["ffn_hidden"]), src=HB, dst=HH, len=H, paddr=gelu_t),
            mv("w_proj", HH, X, D, H, bits["ffn_hidden"], 16, accumulate=1, bias=1),
        ]
    prog.append(I(Opcode.LOOP, count=L, body=len(body), wstride=wstride, pstride=pstride))
    prog += body
    prog += [
        I(Opcode.NORM, kind=kind, gamma_frac=n_fin[2], beta_frac=n_fin[4], out_frac=n_fin[3],
          src=X, dst=XB, len=D, paddr=fin_p),
        I(Opcode.MATVEC, in_width=width(nb), out_width=Width.W16, w_planes=cls_planes, src=XB,
          dst=LOG, waddr=cls_w, rows=V, cols=D, paddr=cls_p),
        I(Opcode.ARGMAX, src=LOG, len=V),
    ]
    if opt.logits_out:
        prog.append(I(Opcode.OUTPUT, src=LOG, len=V))
    prog.append(I(Opcode.HALT))

    image = MemoryImage(lanes=lanes, macs_per_lane=K, weights=wa.array(), params=pa.array(),
                        act_elements=top, kv_layers=L, kv_heads=c.n_kv_heads, head_size=hs,
                        context=ctx, tables=tables, ext=ext)
    fit = None
    units = EngineUnits.of_program(prog, image, lanes)
    if opt.fit:
        fit = fit_check(image, len(prog), opt.device, model.name, units=units)
    manifest = {
        "model": {"name": model.name, "config": c.to_dict()},
        "accelerator": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "context": ctx,
        "scheme": {"act_bits": dict(bits, att_scores=16, att_prob=PROB_BITS),
                   "weight_planes": {k: wplanes(k) for k in qm.weights},
                   "weight_bits": {k: t.width for k, t in qm.weights.items()},
                   "act_headroom": opt.act_headroom, "ext": ext,
                   "score_frac": SCORE_FRAC, "prob_bits": PROB_BITS},
        "quantization": qm.manifest(),
        "memory_map": {
            "scratch": {k: {"addr": a, "elements": n} for k, (a, n) in buffers.items()},
            "weights": {"rows": int(image.weights.shape[0]), "row_bytes": lanes * K,
                        "layer0": W0, "layer_stride": wstride},
            "params": {"words": int(image.params.size), "layer0": P0, "layer_stride": pstride},
            "kv_cache": {"layers": L, "kv_heads": c.n_kv_heads, "head_size": hs,
                         "context": ctx},
        },
        "fit": fit or {"bytes": image.memory_bytes(len(prog)),
                       "ebr": (ebr := image.memory_ebr(units)),
                       "ebr_total": sum(ebr.values()), "units": units.ebr(ctx)},
        "program": [str(i) for i in prog],
        "logit_scale": float(sc["logits"]),
    }
    return Compiled(program=prog, image=image, manifest=manifest, qmodel=qm, buffers=buffers,
                    logit_scale=float(sc["logits"]), config=config)
