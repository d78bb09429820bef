"""Bit-exact model of :class:`hdlgen.blocks.mac_array.MACArray`.

Integer definition: each beat carries a shared slice ``s`` (``K`` int8, or signed
``shared_width`` bits) and one slice ``w[l]`` (``K`` int8) per lane ``l``. Lane ``l`` adds
``sum_k s[k] * w[l][k]`` (exact products) to its accumulator; ``first`` restarts the accumulator from that sum; on
``last`` the ``lanes`` accumulators are emitted as one result beat. Accumulation wraps modulo
``2**acc_width`` (two's complement), exactly as the hardware adder does; for dot products of
at most ``max_dot_length`` int8 elements the accumulator width is checked to be wide enough,
so no wrap happens there and the result equals the mathematical dot product
(:func:`reference_matvec`, plain int64 NumPy, is the reference).

Helpers build the beats for the two uses of the array: :func:`matvec_beats` (decode,
``W @ x``) and :func:`matmat_beats` (prefill tile, ``X @ W.T``).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Beat", "wrap", "mac_array_model", "matvec_beats", "matmat_beats",
           "reference_matvec", "reference_matmat"]


@dataclass(frozen=True)
class Beat:
    """One input beat: ``shared`` shape ``(K,)``, ``per_lane`` shape ``(lanes, K)``, int8."""
    shared: np.ndarray
    per_lane: np.ndarray
    first: bool
    last: bool


def wrap(values, width: int) -> np.ndarray:
    """Two's-complement wrap of integers to ``width`` bits (as int64)."""
    v = np.asarray(values, dtype=np.int64)
    mask = (1 << width) - 1
    v = v & mask
    return np.where(v >> (width - 1) != 0, v - (1 << width), v)


def _check_int8(name, a, bits: int = 8):
    a = np.asarray(a)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        kind = "int8" if bits == 8 else f"signed {bits} bits"
        raise ValueError(f"{name} has values outside {kind} [{lo}, {hi}]: min {a.min()}, "
                         f"max {a.max()}")
    return a.astype(np.int64)


def mac_array_model(beats, lanes: int, macs_per_lane: int, acc_width: int = 32,
                    shared_width: int = 8) -> list[np.ndarray]:
    """The result beats (each an int64 array of ``lanes``) the array emits for ``beats``
    (shared operands signed ``shared_width`` bits, per-lane operands int8).

    The accumulator state carries across beats exactly as in the hardware: a beat without
    ``first`` adds to whatever the accumulators hold (zero after reset).
    """
    acc = np.zeros(lanes, dtype=np.int64)
    out = []
    for n, b in enumerate(beats):
        s = _check_int8(f"beat {n} shared", b.shared, shared_width)
        w = _check_int8(f"beat {n} per_lane", b.per_lane)
        if s.shape != (macs_per_lane,) or w.shape != (lanes, macs_per_lane):
            raise ValueError(f"beat {n}: shapes {s.shape} and {w.shape} do not match "
                             f"lanes={lanes}, macs_per_lane={macs_per_lane}")
        total = w @ s
        acc = wrap((0 if b.first else acc) + total, acc_width)
        if b.last:
            out.append(acc.copy())
    return out


def _slices(vec_len: int, K: int) -> list[slice]:
    return [slice(j, min(j + K, vec_len)) for j in range(0, vec_len, K)]


def _pad(a, K):
    out = np.zeros(K, dtype=np.int64)
    out[:len(a)] = a
    return out


def matvec_beats(W, x, lanes: int, macs_per_lane: int) -> list[Beat]:
    """Decode: beats computing ``W @ x`` (``W`` rows x d, ``x`` d), ``lanes`` rows per pass.

    ``x`` is the shared operand; missing rows of the last pass and the tail of the last beat
    are zero-padded. Results: one beat per pass, rows ``[p*lanes, (p+1)*lanes)``.
    """
    W = _check_int8("W", W)
    x = _check_int8("x", x)
    rows, d = W.shape
    beats = []
    for r in range(0, rows, lanes):
        block = np.zeros((lanes, d), dtype=np.int64)
        block[:min(lanes, rows - r)] = W[r:r + lanes]
        sl = _slices(d, macs_per_lane)
        for j, s in enumerate(sl):
            pl = np.stack([_pad(block[l, s], macs_per_lane) for l in range(lanes)])
            beats.append(Beat(_pad(x[s], macs_per_lane), pl, j == 0, j == len(sl) - 1))
    return beats


def matmat_beats(X, W, lanes: int, macs_per_lane: int) -> list[Beat]:
    """Prefill tile: beats computing ``X @ W.T`` for ``X`` (tokens <= lanes, d) and ``W``
    (n, d). Weight row ``n`` is the shared operand of pass ``n``; lane ``l`` gets token ``l``.
    Result beat ``n`` holds column ``n`` (lane ``l`` = token ``l``; lanes beyond the tokens
    are zero)."""
    X = _check_int8("X", X)
    W = _check_int8("W", W)
    tokens, d = X.shape
    if tokens > lanes:
        raise ValueError(f"a tile holds at most lanes={lanes} tokens, got {tokens}")
    tile = np.zeros((lanes, d), dtype=np.int64)
    tile[:tokens] = X
    beats = []
    sl = _slices(d, macs_per_lane)
    for n in range(W.shape[0]):
        for j, s in enumerate(sl):
            pl = np.stack([_pad(tile[l, s], macs_per_lane) for l in range(lanes)])
            beats.append(Beat(_pad(W[n, s], macs_per_lane), pl, j == 0, j == len(sl) - 1))
    return beats


def reference_matvec(W, x) -> np.ndarray:
    """Mathematical ``W @ x`` in int64."""
    return np.asarray(W, dtype=np.int64) @ np.asarray(x, dtype=np.int64)


def reference_matmat(X, W) -> np.ndarray:
    """Mathematical ``X @ W.T`` in int64."""
    return np.asarray(X, dtype=np.int64) @ np.asarray(W, dtype=np.int64).T
