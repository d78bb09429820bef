"""Decode steps on an accelerator (SoC + transformer engine) from the host.

::

    from hdlgen.host import Device
    from hdlgen.host.accelerator import Accelerator
    from hdlgen.soc.accelerator import AcceleratorDesign

    design = AcceleratorDesign(config, compiled)
    dev = Device(transport, regmap=design.register_map)     # checks ID and CONFIG_HASH
    acc = Accelerator(dev, design.engine_map, base=design.engine_base)
    acc.load(compiled)                  # program, weights, parameters (not needed if preloaded)
    acc.clear_scratch()                 # a new sequence
    step = acc.step(token=1, pos=0)     # -> Step(token, value, cycles, job_cycles, units)
    acc.logits()                        # what the program's OUTPUT exposed

A step writes ``CTRL.TOKEN``, ``CTRL.POS``, starts the job with ``CTRL.START`` and polls
``STATUS``; an engine error (position beyond the context, a bad program) raises
:class:`~hdlgen.host.device.JobError` with the engine's code name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdlgen.engine.memmap import EngineMap
from hdlgen.host.device import JobError, LinkError, job_error_name

__all__ = ["Accelerator", "Step", "engine_error_name", "open_accelerator"]


@dataclass
class Step:
    """One decode step's outcome.

    Attributes
    ----------
    token : int
        ``RESULT``: the argmax next-token id.
    value : int
        ``RESULT_VALUE``: the largest logit.
    cycles : int
        The engine's cycles for the step (its ``CYCLES`` register).
    job_cycles : int
        The control block's ``JOB_CYCLES`` (start to done, as the host sees the job).
    units : dict of str to int
        Busy cycles of each profiled unit (``BUSY_<UNIT>``).
    """
    token: int
    value: int
    cycles: int
    job_cycles: int
    units: dict


def engine_error_name(code: int) -> str:
    """The name of a control-block ``STATUS.CODE`` (engine codes as ``ENGINE_<NAME>``)."""
    from hdlgen.engine.core import ErrorCode as EngineCode
    return job_error_name(code, EngineCode, "ENGINE_")


def _runs(writes):
    """Group ``[(byte_address, word)]`` into runs of consecutive words."""
    runs, start, words = [], None, []
    for addr, value in writes:
        if start is not None and addr == start + 4 * len(words):
            words.append(value)
            continue
        if start is not None:
            runs.append((start, words))
        start, words = addr, [value]
    if start is not None:
        runs.append((start, words))
    return runs


class Accelerator:
    """Host driver of the engine behind a :class:`~hdlgen.host.device.Device` (see the module
    docstring).

    Parameters
    ----------
    device : Device
        Connected, with the design's register map.
    engine_map : EngineMap
        The engine's windows (``AcceleratorDesign.engine_map``).
    base : int
        Byte address of the engine's window on the SoC bus.
    fingerprint : str, optional
        The build's :meth:`hdlgen.engine.core.Engine.fingerprint`; :meth:`load` refuses a
        compiled model whose fingerprint differs (it would need its own build).
    """

    def __init__(self, device, engine_map: EngineMap, base: int, fingerprint: str | None = None):
        self.dev = device
        self.map = engine_map
        self.base = int(base)
        self.fingerprint = fingerprint
        self.units = [r.name[len("BUSY_"):].lower() for r in device.regmap.registers
                      if r.name.startswith("BUSY_")]

    def _addr(self, window: str, offset: int = 0) -> int:
        return self.base + self.map.word(window, offset)

    def reg(self, index: int) -> int:
        """Engine register ``index`` (:mod:`hdlgen.engine.memmap`)."""
        return self.dev.read(self._addr("regs", index), 1)[0]

    def load(self, compiled, *, weights: bool = True, verify: bool = True) -> int:
        """Write the program, and with ``weights`` the weight bank and parameters, of
        ``compiled``; with ``verify`` read everything back. Returns the words written.
        :class:`~hdlgen.errors.UserError` (before writing anything) if the build's gateware
        fixes other formats or constants than ``compiled`` needs."""
        if self.fingerprint is not None:
            from hdlgen.soc.accelerator import AcceleratorDesign
            other = AcceleratorDesign(compiled.config, compiled, preload=False).fingerprint
            if other != self.fingerprint:
                from hdlgen.errors import UserError
                raise UserError("this model cannot be loaded onto this build: the gateware fixes "
                                "other formats or constants (norm epsilons, SwiGLU/activation "
                                "tables, softmax formats or memory sizes) than it needs; build "
                                "for it with: python -m hdlgen build --model <it>")
        writes = self.map.image_writes(compiled.words, compiled.image)
        if not weights:
            writes = writes[:4 * len(compiled.program)]
        n = 0
        for addr, words in _runs(writes):
            self.dev.write(self.base + addr, words)
            n += len(words)
        if verify:
            for addr, words in _runs(writes):
                got = self.dev.read(self.base + addr, len(words))
                if got != [w & 0xFFFFFFFF for w in words]:
                    bad = next(i for i, (a, b) in enumerate(zip(got, words)) if a != b)
                    raise LinkError(f"load verify failed at {self.base + addr + 4 * bad:#x}: "
                                    f"read {got[bad]:#x}, wrote {words[bad]:#x}")
        return n

    def clear_scratch(self) -> None:
        """Zero the activation scratchpad (a new sequence starts from zeros, as the golden
        model's :meth:`reset`)."""
        n = self.map.act_elements
        self.dev.write(self._addr("scratch"), [0] * n)

    def step(self, token: int, pos: int, *, timeout: float = 60.0, poll_s: float = 0.01) -> Step:
        """Run one decode step (see the module docstring)."""
        dev = self.dev
        dev.write_reg("TOKEN", int(token))
        dev.write_reg("POS", int(pos))
        dev.start()
        try:
            dev.wait(timeout=timeout, poll_s=poll_s)
        except JobError as e:
            code = e.code if isinstance(e.code, int) else -1
            raise JobError(code, engine_error_name(code)) from None
        result, value = self.dev.read(self._addr("regs", 0), 2)
        cycles = self.reg(5)
        counters = dev.counters()
        units = {u: counters.get(f"busy_{u}", 0) for u in self.units}
        value = value - (1 << 32) if value & 0x8000_0000 else value
        return Step(token=result, value=value, cycles=cycles,
                    job_cycles=counters["job_cycles"], units=units)

    def logits(self) -> np.ndarray:
        """The elements the last ``OUTPUT`` exposed (the integer logits)."""
        n = self.reg(3)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        words = np.array(self.dev.read(self._addr("output"), n), dtype=np.int64)
        return np.where(words >= 1 << 31, words - (1 << 32), words)


class open_accelerator:
    """Context manager: an :class:`Accelerator` for ``compiled`` on ``target``.

    ``"sim"``: the SoC with the engine generated for ``compiled`` (contents preloaded) under
    Verilator over the byte-level link (:class:`~hdlgen.host.sim.SimTransport`); ``"serial"``:
    a board on ``port`` at ``config.uart_baud``, which must run a build of the same design
    (the connect checks ``CONFIG_HASH``). ``load`` writes (and verifies) the program, weights
    and parameters first.
    """

    def __init__(self, target: str, config, compiled, *, port: str | None = None,
                 load: bool = False, seed: int | None = None):
        from hdlgen.soc.accelerator import AcceleratorDesign
        self.target = target
        self.design = AcceleratorDesign(config, compiled, preload=(target == "sim"))
        self.compiled = compiled
        self.port = port
        self.load = load
        self.seed = seed
        self.transport = None

    def __enter__(self) -> Accelerator:
        from hdlgen.errors import UserError
        from hdlgen.host.device import Device
        d = self.design
        if self.target == "sim":
            from hdlgen.host.sim import SimTransport
            self.transport = SimTransport(d.config, soc=d.soc(byte_port=True,
                                                               link_timeout_cycles=2000),
                                          regmap=d.register_map, seed=self.seed)
        elif self.target == "serial":
            from hdlgen.host.transport import SerialTransport
            if not self.port:
                raise UserError("the serial target needs a port (--port /dev/ttyUSB0)")
            self.transport = SerialTransport(self.port, d.config.uart_baud)
        else:
            raise UserError(f"target {self.target!r}: use 'sim' or 'serial'")
        try:
            dev = Device(self.transport, regmap=d.register_map)
            acc = Accelerator(dev, d.engine_map, d.engine_base, d.fingerprint)
            if self.load:
                acc.load(self.compiled)
        except BaseException:
            self.transport.close()
            raise
        return acc

    def __exit__(self, *exc):
        if self.transport is not None:
            self.transport.close()
