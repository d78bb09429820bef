"""Float32 reference models of both architectures, with a KV cache.

:class:`FloatModel` runs one decode step at a time, ``forward(token, pos) -> logits``, exactly
as llama2.c's ``run.c`` does for ``arch="llama"``:

- RMSNorm ``o = w * (x * (1 / sqrt(sum(x*x)/n + eps)))`` with the sum in float32;
- rotary embedding recomputed per position as ``run.c`` does (it ignores the checkpoint's
  ``freq_cis`` tables): for element pair ``(i, i+1)`` of each head, ``freq = 1 /
  theta^((i mod head_size) / head_size)``, angle ``pos * freq`` in float32, rotation
  ``(v0 cos - v1 sin, v0 sin + v1 cos)`` applied to the query and the key;
- grouped-query attention: query head ``h`` reads key/value head ``h // (n_heads/n_kv_heads)``,
  scores ``q.k / sqrt(head_size)``, softmax over positions ``0..pos`` (max-subtracted);
- SwiGLU ``w2((w1 x * sigmoid(w1 x)) * w3 x)``, residual adds, final RMSNorm, classifier.

``arch="gpt2"`` follows GPT-2: ``x = wte[token] + wpe[pos]``; per layer ``x += attn(LN1(x))``
and ``x += mlp(LN2(x))`` with LayerNorm ``(x - mean) / sqrt(var + eps) * w + b`` (biased
variance), biased projections, GELU tanh approximation
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; final LayerNorm and classifier.

Every value is float32 (as in ``run.c``); only the order of additions inside dot products
differs from ``run.c``'s sequential loops (BLAS), a difference of a few float32 ulps that does
not change greedy decoding of stories260K (pinned by ``tests/test_float_ref.py``).

Quantization calibration observes the activations through ``hook(point, layer, value)``,
called at each named point of :data:`POINTS` (``layer`` is ``-1`` outside the layers). A hook
that returns an array replaces the value (same shape): that is how
:mod:`hdlgen.model.quantize` simulates rounding to the integer grids of the int8 scheme.
:meth:`FloatModel.forward_sequence` recomputes a whole sequence without a cache (matrix form,
causal mask): an independent implementation used to check the incremental one.
"""

from dataclasses import dataclass

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.checkpoint import Model

__all__ = ["FloatModel", "Generation", "POINTS", "rope_tables", "rmsnorm", "layernorm",
           "gelu_tanh", "silu", "softmax"]

F32 = np.float32

#: Observation points of each architecture, in execution order (``layer == -1`` for the first
#: and the last two). ``q``/``k`` are observed before and again after the rotary embedding.
POINTS = {
    "llama": ("embedding", "attn_norm", "q", "k", "v", "q_rope", "k_rope", "att_scores",
              "att_prob", "att_out", "attn_proj", "residual_attn", "ffn_norm", "ffn_gate",
              "ffn_up", "ffn_silu", "ffn_hidden", "ffn_out", "residual", "final_norm",
              "logits"),
    "gpt2": ("embedding", "attn_norm", "q", "k", "v", "att_scores", "att_prob", "att_out",
             "attn_proj", "residual_attn", "ffn_norm", "ffn_fc", "ffn_hidden", "ffn_out",
             "residual", "final_norm", "logits"),
}


def rmsnorm(x, weight, eps):
    """``run.c``'s rmsnorm in float32 (works on the last axis)."""
    x = np.asarray(x, dtype=F32)
    ss = np.sum(x * x, axis=-1, keepdims=True, dtype=F32) / F32(x.shape[-1])
    ss = F32(1.0) / np.sqrt(ss + F32(eps))
    return (weight * (ss * x)).astype(F32)


def layernorm(x, weight, bias, eps):
    """LayerNorm over the last axis in float32 (biased variance, as PyTorch)."""
    x = np.asarray(x, dtype=F32)
    mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)
    d = x - mean
    var = np.mean(d * d, axis=-1, keepdims=True, dtype=F32)
    return (d / np.sqrt(var + F32(eps)) * weight + bias).astype(F32)


def gelu_tanh(x):
    """GPT-2's GELU (tanh approximation) in float32."""
    x = np.asarray(x, dtype=F32)
    c = F32(np.sqrt(2.0 / np.pi))
    return (F32(0.5) * x * (F32(1.0) + np.tanh(c * (x + F32(0.044715) * x * x * x)))).astype(F32)


def silu(x):
    """``run.c``'s SiLU ``x * (1 / (1 + exp(-x)))`` in float32 (``exp`` overflowing to inf
    for ``x < -88`` gives ``-0.0``, as in C, without a warning)."""
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore"):
        return (x * (F32(1.0) / (F32(1.0) + np.exp(-x)))).astype(F32)


def softmax(x, axis=-1):
    """Max-subtracted softmax in float32, as ``run.c``."""
    x = np.asarray(x, dtype=F32)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True, dtype=F32)).astype(F32)


def rope_tables(head_size, positions, theta=10000.0):
    """``(cos, sin)`` of shape ``(len(positions), head_size // 2)``, float32, computed as
    ``run.c``: ``freq_j = 1 / theta^(2j / head_size)``, angle ``pos * freq_j``."""
    head_dim = np.arange(0, head_size, 2, dtype=F32)
    freq = F32(1.0) / np.power(F32(theta), head_dim / F32(head_size))
    angle = np.asarray(positions, dtype=F32)[:, None] * freq[None, :]
    return np.cos(angle).astype(F32), np.sin(angle).astype(F32)


def _rope(vec, cos, sin):
    """Rotate pairs ``(2i, 2i+1)`` of each head of ``vec`` (``(..., heads, head_size)``) by
    ``cos``/``sin`` (``(..., 1, head_size/2)`` broadcastable)."""
    v0 = vec[..., 0::2]
    v1 = vec[..., 1::2]
    out = np.empty_like(vec)
    out[..., 0::2] = v0 * cos - v1 * sin
    out[..., 1::2] = v0 * sin + v1 * cos
    return out


@dataclass(frozen=True)
class Generation:
    """Result of :meth:`FloatModel.generate`.

    Attributes
    ----------
    tokens : list of int
        Generated token ids.
    predictions : list of int
        Argmax next-token id after each prompt position (one per prompt token).
    """
    tokens: list
    predictions: list


class FloatModel:
    """Float32 reference of ``model`` with a KV cache of ``context`` positions.

    Parameters
    ----------
    model : Model
        Weights and config (either architecture).
    context : int, optional
        KV-cache capacity in positions; default and maximum ``config.seq_len``.
    hook : callable, optional
        ``hook(point, layer, value)`` called with each activation of :data:`POINTS`; it may
        return a replacement array of the same shape (``None`` keeps the value). ``q_rope`` and
        ``k_rope`` values have shape ``(heads, head_size)``, ``att_scores`` and ``att_prob``
        ``(n_kv_heads, kv_mul, pos + 1)``, the others are vectors.
    """

    def __init__(self, model: Model, context: int = None, hook=None):
        self.model = model
        self.config = c = model.config
        if context is None:
            context = c.seq_len
        if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= c.seq_len:
            raise UserError(f"context={context!r} must be an integer from 1 to the model's "
                            f"seq_len={c.seq_len}")
        self.context = context
        self.hook = hook
        self.w = model.weights
        self.wcls = model.classifier
        self.key_cache = np.zeros((c.n_layers, context, c.n_kv_heads, c.head_size), F32)
        self.value_cache = np.zeros_like(self.key_cache)
        self.length = 0
        if c.arch == "llama":
            self._cos, self._sin = rope_tables(c.head_size, np.arange(context), c.rope_theta)

    def reset(self):
        """Forget the cached positions."""
        self.length = 0

    def _hook(self, point, layer, value):
        if self.hook is None:
            return value
        out = self.hook(point, layer, value)
        return value if out is None else np.asarray(out, dtype=F32).reshape(value.shape)

    # one decode step -------------------------------------------------------------------------
    def forward(self, token: int, pos: int) -> np.ndarray:
        """Logits ``(vocab,)`` float32 of the token following ``token`` at position ``pos``.

        Positions are fed in order: ``pos`` may be at most the number of cached positions
        (a smaller ``pos`` rewinds the cache to it).
        """
        c = self.config
        token, pos = int(token), int(pos)
        if not 0 <= token < c.vocab_size:
            raise UserError(f"token id {token} is out of range; the model's vocabulary has "
                            f"ids 0..{c.vocab_size - 1}")
        if not 0 <= pos < self.context:
            raise UserError(f"position {pos} is beyond the context: positions 0.."
                            f"{self.context - 1} fit the KV cache of {self.context}")
        if pos > self.length:
            raise UserError(f"position {pos} skips positions {self.length}..{pos - 1}: feed "
                            f"positions in order")
        if c.arch == "llama":
            logits = self._forward_llama(token, pos)
        else:
            logits = self._forward_gpt2(token, pos)
        self.length = pos + 1
        return logits

    def _attention(self, l, q, pos):
        """Attention of query ``q`` (``(n_heads, head_size)``) over cached positions ``0..pos``
        of layer ``l``; returns ``(dim,)``."""
        c = self.config
        qg = q.reshape(c.n_kv_heads, c.kv_mul, c.head_size)
        keys = self.key_cache[l, :pos + 1]            # (t, g, hs)
        vals = self.value_cache[l, :pos + 1]
        scores = np.einsum("gmh,tgh->gmt", qg, keys).astype(F32) / np.sqrt(F32(c.head_size))
        scores = self._hook("att_scores", l, scores)
        prob = softmax(scores, axis=-1)
        prob = self._hook("att_prob", l, prob)
        out = np.einsum("gmt,tgh->gmh", prob, vals).astype(F32)
        return out.reshape(c.dim)

    def _forward_llama(self, token, pos):
        c, w = self.config, self.w
        x = w["token_embedding"][token].copy()
        x = self._hook("embedding", -1, x)
        cos = self._cos[pos][None, :]
        sin = self._sin[pos][None, :]
        for l in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][l], c.norm_eps)
            xb = self._hook("attn_norm", l, xb)
            q = w["wq"][l] @ xb
            k = w["wk"][l] @ xb
            v = w["wv"][l] @ xb
            q = self._hook("q", l, q)
            k = self._hook("k", l, k)
            v = self._hook("v", l, v)
            q = _rope(q.reshape(c.n_heads, c.head_size), cos, sin)
            k = _rope(k.reshape(c.n_kv_heads, c.head_size), cos, sin)
            q = self._hook("q_rope", l, q)
            k = self._hook("k_rope", l, k)
            self.key_cache[l, pos] = k
            self.value_cache[l, pos] = v.reshape(c.n_kv_heads, c.head_size)
            att = self._attention(l, q, pos)
            att = self._hook("att_out", l, att)
            xb2 = w["wo"][l] @ att
            xb2 = self._hook("attn_proj", l, xb2)
            x = x + xb2
            x = self._hook("residual_attn", l, x)
            xb = rmsnorm(x, w["rms_ffn"][l], c.norm_eps)
            xb = self._hook("ffn_norm", l, xb)
            hb = w["w1"][l] @ xb
            hb2 = w["w3"][l] @ xb
            hb = self._hook("ffn_gate", l, hb)
            hb2 = self._hook("ffn_up", l, hb2)
            hb = silu(hb)
            hb = self._hook("ffn_silu", l, hb)
            hb = hb * hb2
            hb = self._hook("ffn_hidden", l, hb)
            xb = w["w2"][l] @ hb
            xb = self._hook("ffn_out", l, xb)
            x = x + xb
            x = self._hook("residual", l, x)
        x = rmsnorm(x, w["rms_final"], c.norm_eps)
        x = self._hook("final_norm", -1, x)
        logits = self.wcls @ x
        logits = self._hook("logits", -1, logits)
        return logits

    def _forward_gpt2(self, token, pos):
        c, w = self.config, self.w
        x = w["token_embedding"][token] + w["pos_embedding"][pos]
        x = self._hook("embedding", -1, x)
        for l in range(c.n_layers):
            h = layernorm(x, w["ln1_w"][l], w["ln1_b"][l], c.norm_eps)
            h = self._hook("attn_norm", l, h)
            q = w["wq"][l] @ h + w["bq"][l]
            k = w["wk"][l] @ h + w["bk"][l]
            v = w["wv"][l] @ h + w["bv"][l]
            q = self._hook("q", l, q)
            k = self._hook("k", l, k)
            v = self._hook("v", l, v)
            self.key_cache[l, pos] = k.reshape(c.n_kv_heads, c.head_size)
            self.value_cache[l, pos] = v.reshape(c.n_kv_heads, c.head_size)
            att = self._attention(l, q.reshape(c.n_heads, c.head_size), pos)
            att = self._hook("att_out", l, att)
            a = w["wo"][l] @ att + w["bo"][l]
            a = self._hook("attn_proj", l, a)
            x = x + a
            x = self._hook("residual_attn", l, x)
            h = layernorm(x, w["ln2_w"][l], w["ln2_b"][l], c.norm_eps)
            h = self._hook("ffn_norm", l, h)
            f = w["w_fc"][l] @ h + w["b_fc"][l]
            f = self._hook("ffn_fc", l, f)
            g = gelu_tanh(f)
            g = self._hook("ffn_hidden", l, g)
            m = w["w_proj"][l] @ g + w["b_proj"][l]
            m = self._hook("ffn_out", l, m)
            x = x + m
            x = self._hook("residual", l, x)
        x = layernorm(x, w["lnf_w"], w["lnf_b"], c.norm_eps)
        x = self._hook("final_norm", -1, x)
        logits = self.wcls @ x
        logits = self._hook("logits", -1, logits)
        return logits

    # sequences -------------------------------------------------------------------------------
    def logits_sequence(self, tokens) -> np.ndarray:
        """Teacher-forced logits ``(len(tokens), vocab)``: row ``t`` predicts ``tokens[t+1]``.
        Runs :meth:`forward` from position 0 (the cache is reset first)."""
        tokens = list(tokens)
        if len(tokens) > self.context:
            raise UserError(f"{len(tokens)} tokens do not fit the context of {self.context}")
        self.reset()
        return np.stack([self.forward(t, p) for p, t in enumerate(tokens)])

    def generate(self, prompt, steps: int, stop_token=None) -> Generation:
        """Greedy decoding: feed ``prompt`` position by position from 0, then generate ``steps``
        tokens (each the argmax of the previous step's logits; ties go to the lowest id, as
        ``run.c``). Stops early after emitting ``stop_token`` when it is given (``run.c`` stops at
        BOS, id 1, and does not print it)."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise UserError("the prompt is empty; give at least one token (BOS is id 1)")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise UserError(f"steps={steps!r} must be a non-negative integer")
        need = len(prompt) + max(steps - 1, 0)
        if need > self.context:
            raise UserError(f"{len(prompt)} prompt tokens + {steps} generated need {need} "
                            f"positions, the context holds {self.context}: generate at most "
                            f"{self.context - len(prompt) + 1} tokens")
        self.reset()
        predictions = [int(np.argmax(self.forward(t, p))) for p, t in enumerate(prompt)]
        tokens = []
        nxt, pos = predictions[-1], len(prompt)
        while len(tokens) < steps:
            tokens.append(nxt)
            if (stop_token is not None and nxt == stop_token) or len(tokens) == steps:
                break
            nxt = int(np.argmax(self.forward(nxt, pos)))
            pos += 1
        return Generation(tokens=tokens, predictions=predictions)

    def forward_sequence(self, tokens) -> np.ndarray:
        """Logits ``(T, vocab)`` of a whole sequence recomputed at once without the KV cache
        (causal mask, matrix form). Independent of :meth:`forward`; does not touch the cache."""
        c, w = self.config, self.w
        tokens = np.asarray(list(tokens), dtype=np.int64)
        T = len(tokens)
        if not 1 <= T <= self.context:
            raise UserError(f"{T} tokens: expected 1..{self.context} (the context)")
        if tokens.min() < 0 or tokens.max() >= c.vocab_size:
            raise UserError(f"token ids must be in 0..{c.vocab_size - 1}")
        mask = np.triu(np.full((T, T), -np.inf, dtype=F32), k=1)
        x = w["token_embedding"][tokens]
        if c.arch == "gpt2":
            x = x + w["pos_embedding"][:T]
        else:
            cos, sin = rope_tables(c.head_size, np.arange(T), c.rope_theta)
            cos, sin = cos[:, None, :], sin[:, None, :]
        scale = np.sqrt(F32(c.head_size))
        for l in range(c.n_layers):
            if c.arch == "llama":
                h = rmsnorm(x, w["rms_att"][l], c.norm_eps)
                q = h @ w["wq"][l].T
                k = h @ w["wk"][l].T
                v = h @ w["wv"][l].T
                q = _rope(q.reshape(T, c.n_heads, c.head_size), cos, sin)
                k = _rope(k.reshape(T, c.n_kv_heads, c.head_size), cos, sin)
            else:
                h = layernorm(x, w["ln1_w"][l], w["ln1_b"][l], c.norm_eps)
                q = (h @ w["wq"][l].T + w["bq"][l]).reshape(T, c.n_heads, c.head_size)
                k = (h @ w["wk"][l].T + w["bk"][l]).reshape(T, c.n_kv_heads, c.head_size)
            v = v if c.arch == "llama" else h @ w["wv"][l].T + w["bv"][l]
            v = v.reshape(T, c.n_kv_heads, c.head_size)
            # expand key/value heads to query heads
            kh = np.repeat(k, c.kv_mul, axis=1)          # (T, n_heads, hs)
            vh = np.repeat(v, c.kv_mul, axis=1)
            scores = np.einsum("shd,thd->hst", q, kh) / scale + mask
            att = np.einsum("hst,thd->shd", softmax(scores, axis=-1), vh).reshape(T, c.dim)
            if c.arch == "llama":
                x = x + att @ w["wo"][l].T
                h = rmsnorm(x, w["rms_ffn"][l], c.norm_eps)
                g = h @ w["w1"][l].T
                x = x + (silu(g) * (h @ w["w3"][l].T)) @ w["w2"][l].T
            else:
                x = x + att @ w["wo"][l].T + w["bo"][l]
                h = layernorm(x, w["ln2_w"][l], w["ln2_b"][l], c.norm_eps)
                g = gelu_tanh(h @ w["w_fc"][l].T + w["b_fc"][l])
                x = x + g @ w["w_proj"][l].T + w["b_proj"][l]
        if c.arch == "llama":
            x = rmsnorm(x, w["rms_final"], c.norm_eps)
        else:
            x = layernorm(x, w["lnf_w"], w["lnf_b"], c.norm_eps)
        return (x @ self.wcls.T).astype(F32)
