"""Shape of a transformer language model: one frozen :class:`ModelConfig` per model.

Two architectures are described by the same object:

``"llama"``
    llama2.c / LLaMA: RMSNorm, rotary position embedding (pairs ``(2i, 2i+1)`` within each
    head), grouped-query attention (``n_kv_heads`` divides ``n_heads``), SwiGLU feed-forward
    ``w2(silu(w1 x) * w3 x)``, final RMSNorm, shared or separate classifier.
``"gpt2"``
    GPT-2: LayerNorm with bias, learned absolute positions, GELU (tanh approximation) MLP with
    biases, multi-head attention with biased projections, final LayerNorm, classifier tied to
    the token embedding or separate (no bias).
"""

from dataclasses import asdict, dataclass, replace

from hdlgen.errors import UserError

__all__ = ["ModelConfig", "ARCHS"]

#: Architectures a :class:`ModelConfig` can describe.
ARCHS = ("llama", "gpt2")


@dataclass(frozen=True)
class ModelConfig:
    """Dimensions and numeric constants of one model.

    Attributes
    ----------
    arch : str
        ``"llama"`` or ``"gpt2"``.
    dim : int
        Width of the residual stream (model dimension).
    hidden_dim : int
        Width of the feed-forward hidden layer.
    n_layers : int
        Number of decoder layers.
    n_heads : int
        Query heads; must divide ``dim``.
    n_kv_heads : int
        Key/value heads; must divide ``n_heads`` (``1``: multi-query, ``< n_heads``:
        grouped-query, ``== n_heads``: multi-head).
    vocab_size : int
        Number of tokens.
    seq_len : int
        Longest context the model was trained for (GPT-2: rows of the position table).
    shared_classifier : bool
        The classifier is the token embedding table (tied weights).
    norm_eps : float
        Epsilon of RMSNorm (llama) or LayerNorm (gpt2).
    rope_theta : float
        Base of the rotary frequencies (llama only).
    """
    arch: str = "llama"
    dim: int = 64
    hidden_dim: int = 172
    n_layers: int = 5
    n_heads: int = 8
    n_kv_heads: int = 4
    vocab_size: int = 512
    seq_len: int = 512
    shared_classifier: bool = True
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self):
        self.check()

    # derived values --------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        """Width of one attention head, ``dim // n_heads``."""
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) vector of one position, ``n_kv_heads * head_size``."""
        return self.n_kv_heads * self.head_size

    @property
    def kv_mul(self) -> int:
        """Query heads sharing one key/value head."""
        return self.n_heads // self.n_kv_heads

    # validation ------------------------------------------------------------------------------
    def check(self) -> "ModelConfig":
        """Validate invariants; raises :class:`UserError` naming the field, its value and what is
        expected."""
        if self.arch not in ARCHS:
            raise UserError(f"model arch={self.arch!r} is not supported; expected one of "
                            f"{', '.join(repr(a) for a in ARCHS)}")
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                     "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"model {name}={value!r} must be an integer")
            if value <= 0:
                raise UserError(f"model {name}={value} must be a positive integer")
        if self.dim % self.n_heads:
            raise UserError(f"model n_heads={self.n_heads} does not divide dim={self.dim}: "
                            f"every head must have the same width")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model n_kv_heads={self.n_kv_heads} does not divide "
                            f"n_heads={self.n_heads}: each key/value head must serve the same "
                            f"number of query heads")
        if self.arch == "llama" and self.head_size % 2:
            raise UserError(f"model head size dim/n_heads={self.dim}/{self.n_heads}="
                            f"{self.head_size} is odd; rotary embedding needs an even head size")
        if not (self.norm_eps > 0):
            raise UserError(f"model norm_eps={self.norm_eps!r} must be positive")
        if not (self.rope_theta > 0):
            raise UserError(f"model rope_theta={self.rope_theta!r} must be positive")
        if not isinstance(self.shared_classifier, bool):
            raise UserError(f"model shared_classifier={self.shared_classifier!r} must be a bool")
        return self

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`UserError`."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown model config key(s) {', '.join(unknown)}; expected a "
                            f"subset of {', '.join(sorted(known))}")
        return cls(**d)
