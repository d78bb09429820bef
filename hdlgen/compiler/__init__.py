"""Model compiler: model + accelerator config -> quantized model, decode-step program, memory
image and manifest (:func:`compile_model`)."""

from hdlgen.compiler.compile import CompileOptions, Compiled, compile_model, fit_check
from hdlgen.compiler.image import MemoryImage

__all__ = ["CompileOptions", "Compiled", "compile_model", "fit_check", "MemoryImage"]
