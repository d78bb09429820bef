"""Models: configs, checkpoint import/export, random models, tokenizer, int8 quantization.

Entry points: :func:`load_model` (``random:llama``, ``random:gpt2``, the built-in
``stories260K``, a llama2.c ``.bin`` or an hdlgen ``.npz``), :class:`ModelConfig`, :class:`Model`, :class:`Tokenizer`; quantization and
the block-RAM fit check in :mod:`hdlgen.model.quantize`, accuracy metrics in
:mod:`hdlgen.model.accuracy`; the float reference models live in :mod:`sim.float_ref`.
"""

from hdlgen.model.config import ModelConfig
from hdlgen.model.checkpoint import (BUILTIN_MODELS, Model, builtin_model_path, load_model, read_llama2c, read_npz, weight_shapes,
                                     write_llama2c, write_npz)
from hdlgen.model.random import random_model
from hdlgen.model.tokenizer import Tokenizer

__all__ = ["ModelConfig", "Model", "load_model", "BUILTIN_MODELS", "builtin_model_path", "read_llama2c", "read_npz", "write_llama2c",
           "write_npz", "weight_shapes", "random_model", "Tokenizer"]
