"""Model weights in memory, and the two checkpoint formats hdlgen reads and writes.

A :class:`Model` is a :class:`~hdlgen.model.config.ModelConfig` plus a ``dict`` of float32
NumPy arrays. Matrices are row-major *out x in* (``y = W @ x``) and per-layer tensors are
stacked on a leading layer axis. The names and shapes are given by :func:`weight_shapes`:

LLaMA (``arch="llama"``; the llama2.c names)
    ============== ============================ =========================================
    key            shape                        meaning
    ============== ============================ =========================================
    token_embedding (vocab, dim)                token embedding table
    rms_att        (layers, dim)                RMSNorm gain before attention
    wq             (layers, dim, dim)           query projection
    wk             (layers, kv_dim, dim)        key projection
    wv             (layers, kv_dim, dim)        value projection
    wo             (layers, dim, dim)           attention output projection
    rms_ffn        (layers, dim)                RMSNorm gain before the feed-forward
    w1             (layers, hidden, dim)        SwiGLU gate projection (through SiLU)
    w2             (layers, dim, hidden)        feed-forward down projection
    w3             (layers, hidden, dim)        SwiGLU up projection
    rms_final      (dim,)                       final RMSNorm gain
    wcls           (vocab, dim)                 classifier; absent when shared_classifier
    ============== ============================ =========================================

GPT-2 (``arch="gpt2"``)
    ============== ============================ =========================================
    key            shape                        meaning
    ============== ============================ =========================================
    token_embedding (vocab, dim)                token embedding table (GPT-2 ``wte``)
    pos_embedding  (seq_len, dim)               learned positions (GPT-2 ``wpe``)
    ln1_w, ln1_b   (layers, dim)                LayerNorm before attention
    wq, bq         (layers, dim, dim), (layers, dim)       query projection and bias
    wk, bk         (layers, kv_dim, dim), (layers, kv_dim) key projection and bias
    wv, bv         (layers, kv_dim, dim), (layers, kv_dim) value projection and bias
    wo, bo         (layers, dim, dim), (layers, dim)       attention output projection
    ln2_w, ln2_b   (layers, dim)                LayerNorm before the MLP
    w_fc, b_fc     (layers, hidden, dim), (layers, hidden) MLP up projection (then GELU)
    w_proj, b_proj (layers, dim, hidden), (layers, dim)    MLP down projection
    lnf_w, lnf_b   (dim,)                       final LayerNorm
    wcls           (vocab, dim)                 classifier (no bias); absent when shared
    ============== ============================ =========================================

GPT-2's fused ``c_attn`` splits into ``wq``/``wk``/``wv`` (transposed: Hugging Face's Conv1D
stores in x out).

Formats
-------
llama2.c ``.bin`` (legacy "version 0" export, read by ``run.c``)
    Seven little-endian int32 ``dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
    seq_len`` (a negative ``vocab_size`` means a separate classifier follows), then the
    float32 tensors in the order of the LLaMA table above, with ``freq_cis_real`` and
    ``freq_cis_imag`` ``(seq_len, head_size/2)`` between ``rms_final`` and ``wcls``
    (``run.c`` recomputes the rotary table and so does hdlgen; they are read and dropped).
hdlgen ``.npz`` (any architecture; the format for GPT-2-style models)
    A NumPy ``.npz`` archive (no pickles) holding ``format`` = ``"hdlgen-model/1"`` and
    ``config`` = the JSON of :meth:`ModelConfig.to_dict` (both 0-d string arrays), plus one
    float array per key of the table of its architecture, exactly those keys with exactly
    those shapes.
"""

import hashlib
import json
import os
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.config import ModelConfig

__all__ = ["Model", "weight_shapes", "read_llama2c", "write_llama2c", "read_npz", "write_npz",
           "load_model", "NPZ_FORMAT", "LLAMA2C_HEADER_FIELDS"]

NPZ_FORMAT = "hdlgen-model/1"

#: The seven int32 fields of a llama2.c checkpoint header, in file order.
LLAMA2C_HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                         "vocab_size", "seq_len")

# Magic number of llama2.c's newer "version 1/2" exports ("ak42" little-endian).
_LLAMA2C_V1_MAGIC = 0x616B3432


def weight_shapes(config: ModelConfig) -> dict:
    """The weight keys of a model with ``config`` and their shapes, in checkpoint order."""
    c = config
    L, D, H, KV, V = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.vocab_size
    if c.arch == "llama":
        shapes = {
            "token_embedding": (V, D),
            "rms_att": (L, D),
            "wq": (L, D, D),
            "wk": (L, KV, D),
            "wv": (L, KV, D),
            "wo": (L, D, D),
            "rms_ffn": (L, D),
            "w1": (L, H, D),
            "w2": (L, D, H),
            "w3": (L, H, D),
            "rms_final": (D,),
        }
    else:
        shapes = {
            "token_embedding": (V, D),
            "pos_embedding": (c.seq_len, D),
            "ln1_w": (L, D), "ln1_b": (L, D),
            "wq": (L, D, D), "bq": (L, D),
            "wk": (L, KV, D), "bk": (L, KV),
            "wv": (L, KV, D), "bv": (L, KV),
            "wo": (L, D, D), "bo": (L, D),
            "ln2_w": (L, D), "ln2_b": (L, D),
            "w_fc": (L, H, D), "b_fc": (L, H),
            "w_proj": (L, D, H), "b_proj": (L, D),
            "lnf_w": (D,), "lnf_b": (D,),
        }
    if not c.shared_classifier:
        shapes["wcls"] = (V, D)
    return shapes


@dataclass(frozen=True)
class Model:
    """A model: its config, its float32 weights (see the module docstring for the keys) and a
    name for reports and manifests.

    The constructor checks that the weights are exactly the keys and shapes of
    :func:`weight_shapes` and finite; it stores float32 copies marked read-only.
    """
    config: ModelConfig
    weights: dict
    name: str = "model"
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        expected = weight_shapes(self.config)
        missing = [k for k in expected if k not in self.weights]
        extra = sorted(k for k in self.weights if k not in expected)
        if missing or extra:
            raise UserError(f"model {self.name!r}: weights do not match its config "
                            f"(arch={self.config.arch}, shared_classifier="
                            f"{self.config.shared_classifier}): missing {missing or 'none'}, "
                            f"unexpected {extra or 'none'}")
        clean = {}
        for key, shape in expected.items():
            arr = np.array(self.weights[key], dtype=np.float32)
            if arr.shape != shape:
                raise UserError(f"model {self.name!r}: weight {key} has shape {arr.shape}, "
                                f"expected {shape} from the config")
            if not np.all(np.isfinite(arr)):
                raise UserError(f"model {self.name!r}: weight {key} holds non-finite values "
                                f"(NaN or inf); the checkpoint is damaged")
            arr.setflags(write=False)
            clean[key] = arr
        object.__setattr__(self, "weights", clean)

    @property
    def classifier(self) -> np.ndarray:
        """The classifier matrix ``(vocab, dim)``: ``wcls`` or the shared token embedding."""
        if self.config.shared_classifier:
            return self.weights["token_embedding"]
        return self.weights["wcls"]

    @property
    def n_params(self) -> int:
        """Number of stored parameters (a shared classifier counted once)."""
        return int(sum(a.size for a in self.weights.values()))

    def digest(self) -> str:
        """sha256 of the config and weights (identifies the model in manifests)."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for key in weight_shapes(self.config):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.weights[key]).tobytes())
        return h.hexdigest()

    def with_weights(self, **changes) -> "Model":
        """A copy with some weight arrays replaced (for perturbation tests)."""
        w = dict(self.weights)
        w.update(changes)
        return Model(self.config, w, name=self.name, source=dict(self.source))


# llama2.c ------------------------------------------------------------------------------------

def _llama2c_tensor_floats(config: ModelConfig) -> list:
    """``(key, shape)`` of every float32 tensor of a llama2.c file, in file order."""
    order = [(k, s) for k, s in weight_shapes(config).items() if k != "wcls"]
    half = config.head_size // 2
    order += [("freq_cis_real", (config.seq_len, half)), ("freq_cis_imag", (config.seq_len, half))]
    if not config.shared_classifier:
        order.append(("wcls", (config.vocab_size, config.dim)))
    return order


def read_llama2c(path) -> Model:
    """Read a llama2.c checkpoint (legacy version-0 export, as ``run.c`` reads it).

    Raises
    ------
    UserError
        The file is missing, too short, a newer llama2.c export version, its header holds a
        non-positive or inconsistent value (the message names it and what was expected), or its
        size does not match the tensors the header describes.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read llama2.c checkpoint {path!r}: {e.strerror}") from None
    if len(data) < 28:
        raise UserError(f"{path}: {len(data)} bytes is too short for a llama2.c checkpoint "
                        f"(the header alone is 7 int32 = 28 bytes)")
    header = np.frombuffer(data, dtype="<i4", count=7)
    if int(np.frombuffer(data, dtype="<u4", count=1)[0]) == _LLAMA2C_V1_MAGIC:
        raise UserError(f"{path}: this is a llama2.c 'version 1/2' export (magic 'ak42'); hdlgen "
                        f"reads the legacy version-0 format that run.c reads: re-export with "
                        f"llama2.c's export.py --version 0")
    values = dict(zip(LLAMA2C_HEADER_FIELDS, (int(v) for v in header)))
    shared = values["vocab_size"] > 0
    values["vocab_size"] = abs(values["vocab_size"])
    for name in LLAMA2C_HEADER_FIELDS:
        if values[name] <= 0:
            raise UserError(f"{path}: header field {name}={int(header[LLAMA2C_HEADER_FIELDS.index(name)])} "
                            f"is not a positive integer; expected a llama2.c checkpoint header "
                            f"(7 int32: {', '.join(LLAMA2C_HEADER_FIELDS)})")
    try:
        config = ModelConfig(arch="llama", shared_classifier=shared, **values)
    except UserError as e:
        raise UserError(f"{path}: inconsistent llama2.c header: {e}") from None
    order = _llama2c_tensor_floats(config)
    n_floats = sum(int(np.prod(s)) for _, s in order)
    expected = 28 + 4 * n_floats
    if len(data) != expected:
        hdr = ", ".join(f"{k}={v}" for k, v in values.items())
        raise UserError(f"{path}: file is {len(data)} bytes but its header ({hdr}, "
                        f"{'shared' if shared else 'separate'} classifier) describes "
                        f"{expected} bytes (28-byte header + {n_floats} float32); the file is "
                        f"truncated, padded or not a version-0 llama2.c checkpoint")
    flat = np.frombuffer(data, dtype="<f4", offset=28, count=n_floats)
    weights, offset = {}, 0
    for key, shape in order:
        n = int(np.prod(shape))
        if not key.startswith("freq_cis"):
            weights[key] = flat[offset:offset + n].reshape(shape)
        offset += n
    name = os.path.splitext(os.path.basename(path))[0]
    return Model(config, weights, name=name,
                 source={"format": "llama2c", "path": path,
                         "sha256": hashlib.sha256(data).hexdigest()})


def write_llama2c(model: Model, path) -> None:
    """Write ``model`` (arch ``"llama"``) as a version-0 llama2.c checkpoint that ``run.c`` reads,
    with the ``freq_cis`` tables computed as llama2.c's ``precompute_freqs_cis``."""
    c = model.config
    if c.arch != "llama":
        raise UserError(f"model {model.name!r} has arch={c.arch!r}; the llama2.c format holds "
                        f"only 'llama' models: write it with write_npz")
    if c.rope_theta != 10000.0 or c.norm_eps != 1e-5:
        raise UserError(f"model {model.name!r}: the llama2.c format fixes rope_theta=10000 and "
                        f"norm_eps=1e-5, this model has {c.rope_theta} and {c.norm_eps}: write "
                        f"it with write_npz")
    hdr = [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
           c.vocab_size if c.shared_classifier else -c.vocab_size, c.seq_len]
    half = c.head_size // 2
    freqs = 1.0 / (c.rope_theta ** (np.arange(0, c.head_size, 2)[:half].astype(np.float32)
                                    / c.head_size))
    angles = np.outer(np.arange(c.seq_len, dtype=np.float32), freqs.astype(np.float32))
    extra = {"freq_cis_real": np.cos(angles), "freq_cis_imag": np.sin(angles)}
    with open(os.fspath(path), "wb") as f:
        f.write(np.asarray(hdr, dtype="<i4").tobytes())
        for key, shape in _llama2c_tensor_floats(c):
            arr = extra[key] if key in extra else model.weights[key]
            f.write(np.ascontiguousarray(arr, dtype="<f4").reshape(shape).tobytes())


# .npz ----------------------------------------------------------------------------------------

def write_npz(model: Model, path) -> None:
    """Write ``model`` in the hdlgen ``.npz`` format (see the module docstring)."""
    arrays = {"format": np.array(NPZ_FORMAT),
              "config": np.array(json.dumps(model.config.to_dict(), sort_keys=True))}
    for key in weight_shapes(model.config):
        arrays[key] = np.asarray(model.weights[key], dtype=np.float32)
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays)


def read_npz(path) -> Model:
    """Read an hdlgen ``.npz`` model.

    Raises
    ------
    UserError
        The file is missing or not an ``.npz`` archive, lacks ``format``/``config``, has an
        unknown format version or config key, or its arrays are not exactly the keys and shapes
        the config implies.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as e:
        raise UserError(f"cannot read model {path!r}: {e.strerror or e}") from None
    except ValueError as e:
        raise UserError(f"{path}: not a NumPy .npz archive without pickles ({e})") from None
    if not hasattr(archive, "files"):
        raise UserError(f"{path}: holds a single array, expected an .npz archive with "
                        f"'format', 'config' and the weights")
    with archive:
        files = set(archive.files)
        for key in ("format", "config"):
            if key not in files:
                raise UserError(f"{path}: no '{key}' entry; expected an hdlgen model archive "
                                f"(format {NPZ_FORMAT!r}) written by hdlgen.model.write_npz")
        fmt = str(archive["format"][()])
        if fmt != NPZ_FORMAT:
            raise UserError(f"{path}: format {fmt!r} is not supported; expected {NPZ_FORMAT!r}")
        try:
            cfg = json.loads(str(archive["config"][()]))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: 'config' is not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{path}: 'config' is {type(cfg).__name__}, expected a JSON object")
        try:
            config = ModelConfig.from_dict(cfg)
        except TypeError as e:
            raise UserError(f"{path}: bad config ({e})") from None
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        weights = {k: archive[k] for k in files - {"format", "config"}}
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        return Model(config, weights, name=name, source={"format": "npz", "path": path})
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


# any source ----------------------------------------------------------------------------------

#: Models shipped with the package (``hdlgen/model/builtin/``, see its README): name -> (file,
#: sha256). ``load_model(name)`` and ``--model name`` read them from any checkout.
BUILTIN_MODELS = {
    "stories260K": ("stories260K.bin",
                    "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6"),
}


def builtin_model_path(name: str) -> Path:
    """The file of the built-in model ``name`` (:data:`BUILTIN_MODELS`), its checksum checked."""
    if name not in BUILTIN_MODELS:
        raise UserError(f"no built-in model {name!r}: built-in models are "
                        f"{', '.join(sorted(BUILTIN_MODELS))}")
    fname, sha = BUILTIN_MODELS[name]
    path = Path(__file__).resolve().parent / "builtin" / fname
    if not path.exists():
        raise UserError(f"built-in model {name!r}: {path} is missing from this installation; "
                        f"reinstall hdlgen or give the checkpoint's path")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        raise UserError(f"built-in model {name!r}: {path} has sha256 {digest}, expected {sha}; "
                        f"the file was modified: restore it from the repository")
    return path

def load_model(spec, *, seed: int = 0, **overrides) -> Model:
    """Load a model from a CLI-style ``spec``.

    Parameters
    ----------
    spec : str or path
        ``random:llama`` or ``random:gpt2`` (a small random model, see
        :func:`hdlgen.model.random.random_model`), the name of a built-in model
        (:data:`BUILTIN_MODELS`: ``stories260K``), a llama2.c ``.bin`` checkpoint or an hdlgen
        ``.npz`` archive.
    seed : int
        Seed of a random model.
    **overrides
        :class:`ModelConfig` fields of a random model (e.g. ``dim=40, n_kv_heads=1``); a file's
        shapes cannot be overridden.
    """
    spec_s = os.fspath(spec)
    if spec_s.startswith("random:"):
        from hdlgen.model.random import random_model
        return random_model(spec_s[len("random:"):], seed=seed, **overrides)
    if overrides:
        raise UserError(f"shape overrides {sorted(overrides)} apply only to random:llama / "
                        f"random:gpt2 models, not to the checkpoint {spec_s!r}")
    if spec_s in BUILTIN_MODELS and not os.path.exists(spec_s):
        return read_llama2c(builtin_model_path(spec_s))
    if not os.path.exists(spec_s):
        raise UserError(f"model {spec_s!r} not found: give a llama2.c .bin checkpoint, an "
                        f"hdlgen .npz model, a built-in model "
                        f"({', '.join(sorted(BUILTIN_MODELS))}), random:llama or random:gpt2")
    if spec_s.endswith(".npz"):
        return read_npz(spec_s)
    if spec_s.endswith(".bin"):
        return read_llama2c(spec_s)
    raise UserError(f"model {spec_s!r}: unknown file type; expected a llama2.c '.bin' "
                    f"checkpoint or an hdlgen '.npz' model")
