"""Per-channel scales for the int8 norm outputs, folded into the weights (SmoothQuant-style).

The norm blocks output int8 with one scale per tensor. Channels of a norm output differ a lot in
range (a few carry outliers), so one scale wastes most of the int8 grid on the quiet channels.
An exact reparametrisation of the float model moves a per-channel factor ``s_i`` out of the
norm's gain into the matrices that read it::

    W @ (g * n(x)) == (W * s) @ ((g / s) * n(x))        (LayerNorm: the bias b / s as well)

so after it every channel of the norm output has a similar range and the int8 grid serves all
of them; the weight matrices absorb ``s`` in their columns (their per-row int8 scales follow).
``s_i = cmax_i ** alpha / wmax_i ** (1 - alpha)`` with ``cmax_i`` the calibrated max-abs of
channel ``i`` and ``wmax_i`` the largest weight of column ``i`` of the consumers: ``alpha = 1``
equalises the activations fully, smaller values share the difficulty with the weights.
The final norm is smoothed only when the classifier is not the token embedding (the embedding
rows are also looked up as they are), unless ``untie`` makes the classifier a separate copy.

:func:`smooth_kv` does the same for the int8 KV cache: each key channel is divided by its
range (``wk`` rows, ``bk``) and the query channels that meet it are multiplied by it (``wq``
rows, ``bq``; the two channels of a RoPE pair share one factor, the rotation mixes them), so
``q . k`` is unchanged; each value channel is divided by its range (``wv`` rows, ``bv``) and
the ``wo`` columns of the query heads that read it are multiplied by it.
"""

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.checkpoint import Model
from sim.float_ref import FloatModel

__all__ = ["smooth_norms", "smooth_kv", "channel_max"]

_SITES = {
    "llama": [("rms_att", None, "attn_norm", ("wq", "wk", "wv")),
              ("rms_ffn", None, "ffn_norm", ("w1", "w3")),
              ("rms_final", None, "final_norm", ("wcls",))],
    "gpt2": [("ln1_w", "ln1_b", "attn_norm", ("wq", "wk", "wv")),
             ("ln2_w", "ln2_b", "ffn_norm", ("w_fc",)),
             ("lnf_w", "lnf_b", "final_norm", ("wcls",))],
}


def channel_max(model: Model, sequences, points) -> dict:
    """``{(point, layer): max|x_i|}`` per channel over teacher-forced ``sequences``."""
    out = {}

    def hook(point, layer, value):
        if point in points:
            v = np.abs(np.asarray(value, dtype=np.float64).reshape(-1))
            key = (point, layer)
            out[key] = v if key not in out else np.maximum(out[key], v)
        return None

    longest = max(len(s) for s in sequences)
    fm = FloatModel(model, context=min(model.config.seq_len, longest), hook=hook)
    for s in sequences:
        fm.logits_sequence(s)
    return out


def smooth_norms(model: Model, sequences, alpha: float = 1.0, untie: bool = False) -> Model:
    """The equivalent model with per-channel norm-output scales folded into the weights."""
    if not 0 <= alpha <= 1:
        raise UserError(f"smoothing alpha={alpha} must be in [0, 1]")
    c = model.config
    w = {k: np.asarray(v, dtype=np.float64).copy() for k, v in model.weights.items()}
    config = c
    if untie and c.shared_classifier:
        config = c.replace(shared_classifier=False)
        w["wcls"] = w["token_embedding"].copy()
    cm = channel_max(model, sequences, {p for _, _, p, _ in _SITES[c.arch]})
    for gkey, bkey, point, mats in _SITES[c.arch]:
        if "wcls" in mats and "wcls" not in w:
            continue
        layers = [None] if w[gkey].ndim == 1 else range(c.n_layers)
        for l in layers:
            a = cm[(point, -1 if l is None else l)]
            cols = [w[m] if l is None else w[m][l] for m in mats]
            wmax = np.max(np.abs(np.concatenate(cols, axis=0)), axis=0)
            ok = (a > 0) & (wmax > 0)
            s = np.ones_like(a)
            s[ok] = a[ok] ** alpha / wmax[ok] ** (1 - alpha)
            s[ok] /= np.exp(np.mean(np.log(s[ok])))            # geometric mean 1
            idx = (slice(None),) if l is None else (l,)
            w[gkey][idx] = w[gkey][idx] / s
            if bkey is not None:
                w[bkey][idx] = w[bkey][idx] / s
            for m in mats:
                if l is None:
                    w[m] = w[m] * s[None, :]
                else:
                    w[m][l] = w[m][l] * s[None, :]
    weights = {k: v.astype(np.float32) for k, v in w.items()}
    return Model(config, weights, name=model.name, source=dict(model.source))


def smooth_kv(model: Model, sequences) -> Model:
    """The equivalent model with per-channel key and value ranges equalised (module docstring)."""
    c = model.config
    w = {k: np.asarray(v, dtype=np.float64).copy() for k, v in model.weights.items()}
    kpoint = "k_rope" if c.arch == "llama" else "k"
    cm = channel_max(model, sequences, {kpoint, "v"})
    hs, kvm = c.head_size, c.kv_mul
    # query channel -> the key/value channel it meets
    qmap = np.array([(h // kvm) * hs + j for h in range(c.n_heads) for j in range(hs)])

    def norm(a):
        a = np.where(a > 0, a, np.max(a) if np.max(a) > 0 else 1.0)
        return a / np.exp(np.mean(np.log(a)))

    for l in range(c.n_layers):
        ka = cm[(kpoint, l)]
        if c.arch == "llama":
            ka = np.repeat(np.maximum(ka[0::2], ka[1::2]), 2)
        sk = norm(ka)
        sv = norm(cm[("v", l)])
        w["wk"][l] /= sk[:, None]
        w["wq"][l] *= sk[qmap][:, None]
        w["wv"][l] /= sv[:, None]
        w["wo"][l] *= sv[qmap][None, :]
        if c.arch == "gpt2":
            w["bk"][l] /= sk
            w["bq"][l] *= sk[qmap]
            w["bv"][l] /= sv
    weights = {k: v.astype(np.float32) for k, v in w.items()}
    return Model(c, weights, name=model.name, source=dict(model.source))
