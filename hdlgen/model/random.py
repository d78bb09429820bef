"""Small random models (``random:llama``, ``random:gpt2``) for tests and demos.

The weights are drawn from a seeded generator so a ``(arch, seed, overrides)`` triple always
gives the same model. Scales are chosen so activations look like a trained model's (unit-RMS
normalised vectors, residual stream of order 1, next-token distributions that are neither
uniform nor an echo of the input token): matrices ``N(0, 1/fan_in)``, token embedding (and
separate classifier) ``N(0, 0.2^2)`` so the layers, not the embedding, dominate the residual
stream a tied classifier reads, norm gains ``1 + N(0, 0.1^2)``.
"""

from dataclasses import fields

import numpy as np

from hdlgen.errors import UserError
from hdlgen.model.checkpoint import Model, weight_shapes
from hdlgen.model.config import ModelConfig

__all__ = ["random_model", "RANDOM_DEFAULTS"]

#: Default shapes of the random models: small, non-power-of-two widths, grouped-query attention
#: for ``llama``, multi-head for ``gpt2``.
RANDOM_DEFAULTS = {
    "llama": dict(arch="llama", dim=48, hidden_dim=128, n_layers=2, n_heads=6, n_kv_heads=2,
                  vocab_size=96, seq_len=64, shared_classifier=True),
    "gpt2": dict(arch="gpt2", dim=48, hidden_dim=192, n_layers=2, n_heads=4, n_kv_heads=4,
                 vocab_size=96, seq_len=64, shared_classifier=True),
}

_GAINS = {"rms_att", "rms_ffn", "rms_final", "ln1_w", "ln2_w", "lnf_w"}


def random_model(arch: str, *, seed: int = 0, **overrides) -> Model:
    """A random model of ``arch`` (``"llama"`` or ``"gpt2"``).

    Parameters
    ----------
    arch : str
        ``"llama"`` or ``"gpt2"``.
    seed : int
        Seed of the weight generator.
    **overrides
        :class:`~hdlgen.model.config.ModelConfig` fields replacing :data:`RANDOM_DEFAULTS`
        (e.g. ``dim=40, n_heads=5, n_kv_heads=1`` for multi-query attention). For ``gpt2``,
        overriding ``n_heads`` alone also sets ``n_kv_heads`` to it.
    """
    if arch not in RANDOM_DEFAULTS:
        raise UserError(f"random model 'random:{arch}' is not known; expected random:llama or "
                        f"random:gpt2")
    known = {f.name for f in fields(ModelConfig)} - {"arch"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"unknown random-model override(s) {', '.join(unknown)}; expected some "
                        f"of {', '.join(sorted(known))}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"random model seed={seed!r} must be a non-negative integer")
    params = dict(RANDOM_DEFAULTS[arch])
    if arch == "gpt2" and "n_heads" in overrides and "n_kv_heads" not in overrides:
        params["n_kv_heads"] = overrides["n_heads"]
    params.update(overrides)
    config = ModelConfig(**params)
    rng = np.random.default_rng([int(seed), 0x68646C67])  # "hdlg"
    weights = {}
    for key, shape in weight_shapes(config).items():
        if key in _GAINS:
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif key in ("token_embedding", "wcls"):
            w = 0.2 * rng.standard_normal(shape)
        elif key == "pos_embedding":
            w = 0.3 * rng.standard_normal(shape)
        elif len(shape) == 3:
            w = rng.standard_normal(shape) / np.sqrt(shape[-1])
        else:  # biases (gpt2)
            w = 0.02 * rng.standard_normal(shape)
        weights[key] = w.astype(np.float32)
    overrides_s = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    name = f"random:{arch}:seed{seed}" + (f":{overrides_s}" if overrides_s else "")
    return Model(config, weights, name=name,
                 source={"format": "random", "arch": arch, "seed": int(seed),
                         "overrides": dict(overrides)})
