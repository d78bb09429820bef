"""Model compiler: model + accelerator config -> quantized model, decode-step program, memory
image and manifest (:func:`compile_model`); prefill programs that run up to ``lanes`` prompt
tokens per job with ``MATMAT`` tiles (:func:`with_prefill`, :func:`prefill_program`)."""

from hdlgen.compiler.compile import CompileOptions, Compiled, compile_model, fit_check
from hdlgen.compiler.image import MemoryImage
from hdlgen.compiler.prefill import prefill_program, with_prefill

__all__ = ["CompileOptions", "Compiled", "compile_model", "fit_check", "MemoryImage",
           "prefill_program", "with_prefill"]
