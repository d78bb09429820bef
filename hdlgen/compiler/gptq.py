"""Error-compensating rounding of the weights (GPTQ, Frantar et al. 2022) on the int8 grid.

Per-row scales stay as :func:`hdlgen.model.quantize.quantize_weights` chose them (max-abs /
qmax), so the requantization parameters do not change; only the rounding of each weight
moves. Columns are quantized one at a time and each column's rounding error is spread over the
columns not yet quantized, weighted by the inverse Hessian ``H = X^T X`` of the layer's
calibration inputs ``X`` (the float model's activations at that matrix's input), which
minimizes ``||X W^T - X Q^T||`` far better than rounding to nearest. Costs nothing in
hardware: the same int8 weights, chosen better.
"""

import numpy as np

from hdlgen.model.checkpoint import Model
from sim.float_ref import FloatModel

__all__ = ["gptq_round", "gptq_round_steps", "capture_inputs", "INPUT_POINTS"]

#: Matrix -> the float-reference observation point holding its input.
INPUT_POINTS = {
    "llama": {"wq": "attn_norm", "wk": "attn_norm", "wv": "attn_norm", "wo": "att_out",
              "w1": "ffn_norm", "w3": "ffn_norm", "w2": "ffn_hidden", "wcls": "final_norm",
              "token_embedding": "final_norm"},
    "gpt2": {"wq": "attn_norm", "wk": "attn_norm", "wv": "attn_norm", "wo": "att_out",
             "w_fc": "ffn_norm", "w_proj": "ffn_hidden", "wcls": "final_norm",
             "token_embedding": "final_norm"},
}


def capture_inputs(model: Model, sequences) -> dict:
    """``{(point, layer): H}`` with ``H = X^T X`` (float64) of each input point over the
    teacher-forced ``sequences``."""
    hs = {}
    points = set(INPUT_POINTS[model.config.arch].values())

    def hook(point, layer, value):
        if point in points:
            x = np.asarray(value, dtype=np.float64).reshape(-1)
            h = hs.get((point, layer))
            hs[(point, layer)] = np.outer(x, x) if h is None else h + np.outer(x, x)
        return None

    longest = max(len(s) for s in sequences)
    fm = FloatModel(model, context=min(model.config.seq_len, longest), hook=hook)
    for s in sequences:
        fm.logits_sequence(s)
    return hs


def gptq_round(w, scale, H, qmax: int = 127, damp: float = 0.01) -> np.ndarray:
    """Integer weights ``Q`` (``w.shape``) on the grid ``scale[:, None] * Q``, ``|Q| <= qmax``,
    chosen column by column with error feedback through ``H``'s inverse."""
    scale = np.asarray(scale, dtype=np.float64)
    return gptq_round_steps(w, np.broadcast_to(scale[:, None], np.shape(w)), H, qmax, damp)


def gptq_round_steps(w, steps, H, qmax: int = 127, damp: float = 0.01) -> np.ndarray:
    """:func:`gptq_round` with one grid step per weight (``steps``, ``w.shape``; e.g. a
    coarser step for some groups of a row): ``w ~ steps * Q``, ``|Q| <= qmax``."""
    W = np.asarray(w, dtype=np.float64).copy()
    rows, cols = W.shape
    steps = np.asarray(steps, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64).copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * np.mean(np.diag(H)) * np.eye(cols)
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky(Hinv).T                      # upper triangular, Hinv = U^T U
    Q = np.zeros((rows, cols), dtype=np.int64)
    for j in range(cols):
        col = W[:, j]
        q = np.clip(np.rint(col / steps[:, j]), -qmax, qmax)
        Q[:, j] = q
        err = (col - q * steps[:, j]) / U[j, j]
        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])
    return Q
