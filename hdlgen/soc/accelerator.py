"""The accelerator for a compiled model: the SoC with the transformer engine on its bus.

The engine (:class:`hdlgen.engine.core.Engine`) is generated for one compiled model (the
model's shapes and number formats size its memories and units); it sits on the SoC bus as the
window ``engine`` at :data:`ENGINE_BASE` (its own windows inside: registers, program,
scratch, weights, parameters, output; :mod:`hdlgen.engine.memmap`), and the control block
starts its jobs (``CTRL.TOKEN``, ``CTRL.POS``, ``CTRL.START``), watches them (watchdog,
``STATUS``) and profiles its units (``BUSY_<UNIT>``)::

    design = AcceleratorDesign(config, compiled)
    soc = design.soc()                    # UART pins, for the board top level
    soc = design.soc(byte_port=True)      # byte streams, for simulation
    design.register_map                   # what the host needs (regmap.json of the build)

``CONFIG_HASH`` covers what the engine's gateware fixes (:meth:`hdlgen.engine.core.Engine.fingerprint`: memory
map, context, head layout and the formats and constants baked into its units): a host with the
register map of another build is refused on connect, and a compiled model is loaded at run
time (:meth:`hdlgen.host.accelerator.Accelerator.load`) only onto a build with the same
fingerprint — other contents are refused, never run with the wrong constants.
"""

from __future__ import annotations

from hdlgen.config import AcceleratorConfig
from hdlgen.soc import regmap

__all__ = ["ENGINE_BASE", "AcceleratorDesign"]

#: Byte address of the engine's window on the SoC bus.
ENGINE_BASE = 0x0100_0000


class AcceleratorDesign:
    """The SoC + engine for ``compiled`` (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        The configuration ``compiled`` was compiled for.
    compiled : hdlgen.compiler.Compiled
    preload : bool
        Bake the program, weights and parameters into the block RAMs' initial contents (the
        device runs the model right after configuration); otherwise the host loads them.
    """

    def __init__(self, config: AcceleratorConfig, compiled, *, preload: bool = True):
        from hdlgen.engine.core import Engine
        from hdlgen.errors import UserError
        ext = getattr(compiled.image, "ext", None)
        if ext:
            raise UserError(f"the model was compiled with scheme extensions {sorted(ext)} that "
                            f"only the golden model runs (the RTL engine does not yet): compile "
                            f"without them (e.g. without --norm16/--kv9/--weight-width/"
                            f"--weight-exp) to build or run it on the accelerator")
        self.config = config.check()
        self.compiled = compiled
        self.preload = bool(preload)
        # Built once for its memory map (a cheap check of the shapes); soc() builds its own.
        probe = Engine(self.config, compiled)
        probe._MustUse__silence = True          # built for its memory map only
        self.engine_map = probe.memory_map
        size = 4 << self.engine_map.addr_width
        if size > ENGINE_BASE:
            from hdlgen.errors import UserError
            raise UserError(f"the engine's bus window ({size} bytes) is larger than the "
                            f"{ENGINE_BASE} bytes reserved for it: the model is too large for "
                            f"this address map")
        self.window = regmap.Window(
            "engine", ENGINE_BASE, size,
            f"Transformer engine: registers, program, scratch, weights, parameters and output "
            f"windows of {4 << self.engine_map.window_bits} bytes each (hdlgen.engine.memmap).")
        self.fingerprint = probe.fingerprint()
        self.register_map = regmap.soc_register_map(self.config, (self.window,),
                                                    self.fingerprint)

    @property
    def engine_base(self) -> int:
        return ENGINE_BASE

    def soc(self, *, byte_port: bool = False, **kwargs):
        """A :class:`~hdlgen.soc.soc.SoC` with a new engine (``kwargs`` go to the SoC)."""
        from hdlgen.engine.core import Engine
        from hdlgen.soc.soc import SoC
        engine = Engine(self.config, self.compiled, preload=self.preload)
        return SoC(self.config, byte_port=byte_port, subordinates={"engine": engine},
                   extra_layout=(self.window,), engine=engine, fingerprint=self.fingerprint,
                   **kwargs)

    def soc_factory(self, config: AcceleratorConfig):
        """For :class:`hdlgen.soc.top.Top` (``soc_factory=design.soc_factory``)."""
        if config != self.config:
            from hdlgen.errors import UserError
            raise UserError("the top level's config differs from the one the model was "
                            "compiled for")
        return self.soc()
