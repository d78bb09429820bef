"""The host's view of an hdlgen device: bus reads and writes over the link protocol, with
retries, registers by name, bulk memory transfers and job control.

::

    from hdlgen.host import Device, SerialTransport
    with Device(SerialTransport("/dev/ttyUSB0"), regmap="build/regmap.json") as dev:
        dev.write_reg("SCRATCH", 0x1234)
        dev.write_bytes(dev.window("scratch")[0], data)       # bulk, 256-word bursts
        dev.start(); dev.wait(timeout=2.0); print(dev.counters())

Every transaction gets a fresh sequence number and is retried (byte for byte, so the device
recognises a repeated WRITE and does not apply it twice) after a CRC error, a truncated or
lost request, or a lost or corrupted reply, up to ``retries`` times.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from hdlgen.errors import UserError
from hdlgen.host.transport import transport_clock
from hdlgen.soc.protocol import (BRIDGE_MAGIC, MAX_BURST, PROTOCOL_VERSION, Opcode, ReplyParser,
                                 Status, encode_request, reply_length)

__all__ = ["Device", "LinkError", "LinkTimeout", "RetriesExhausted", "DeviceError", "JobError",
           "JobTimeout"]


class LinkError(Exception):
    """Base of the host link's errors."""


class LinkTimeout(LinkError):
    """The device never answered (wrong port or baud, no bitstream, simulator gone)."""


class RetriesExhausted(LinkError):
    """The device answered, but every attempt of a transaction failed (CRC errors, lost
    frames); ``reasons`` lists what happened to each attempt."""

    def __init__(self, message, reasons):
        super().__init__(message)
        self.reasons = reasons


class DeviceError(LinkError):
    """The device executed (or refused) the request and replied with an error ``status``
    (a :class:`~hdlgen.soc.protocol.Status`); ``count`` words were transferred before it."""

    def __init__(self, status, opcode, addr, count=0):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.opcode, self.addr, self.count = opcode, addr, count
        name = getattr(self.status, "name", f"status {status:#x}")
        hint = {
            Status.BUS_ERROR: "no subordinate there (see the register map) or it refused",
            Status.TIMEOUT: "the subordinate never answered",
            Status.BAD_ALIGN: "addresses must be multiples of 4",
            Status.BAD_LENGTH: f"bursts are 1..{MAX_BURST} words",
            Status.BAD_OPCODE: "the device does not know this opcode (protocol version?)",
        }.get(self.status, "")
        super().__init__(f"device replied {name} to {Opcode(opcode).name if opcode in (1, 2, 3) else opcode} "
                         f"at {addr:#010x} after {count} words" + (f": {hint}" if hint else ""))


class JobError(LinkError):
    """A job ended with STATUS.ERROR; ``code`` is STATUS.CODE."""

    def __init__(self, code, name=None):
        self.code = code
        super().__init__(f"job failed with code {code}" + (f" ({name})" if name else ""))


def job_error_name(code, unit_codes=None, prefix: str = "ENGINE_") -> str:
    """The name of a control-block ``STATUS.CODE``: the control block's own codes, and from
    ``ErrorCode.ENGINE`` on the unit's (``unit_codes``, an enum, named with ``prefix``)."""
    from hdlgen.soc.control import ErrorCode
    if code is not None and code >= ErrorCode.ENGINE.value:
        unit = code - ErrorCode.ENGINE.value
        try:
            return prefix + unit_codes(unit).name
        except (TypeError, ValueError):
            return f"{prefix}{unit}"
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class JobTimeout(LinkError):
    """:meth:`Device.wait` gave up while the job was still busy."""


def _load_regmap(regmap):
    if regmap is None:
        return None
    from hdlgen.soc.regmap import RegisterMap
    if isinstance(regmap, RegisterMap):
        return regmap
    if isinstance(regmap, (str, Path)) and not str(regmap).lstrip().startswith("{"):
        path = Path(regmap)
        if not path.exists():
            raise UserError(f"register map {str(path)!r} does not exist; it is written by the "
                            f"build (or firmware/regmap.json for the default configuration)")
        return RegisterMap.from_json(path.read_text())
    if isinstance(regmap, dict):
        return RegisterMap.from_json(json.dumps(regmap))
    return RegisterMap.from_json(regmap)


class Device:
    """An hdlgen device behind ``transport`` (see the module docstring).

    Parameters
    ----------
    transport
        Anything with ``write(bytes)``, ``read(n, timeout)``, ``latency_s``, ``byte_time_s``
        and optionally ``clock()`` (:mod:`hdlgen.host.transport`). Every timeout here counts
        on the transport's clock: simulated time on the simulator.
    regmap : RegisterMap, dict, JSON text or path, optional
        The build's register map; enables registers by name and the identity check.
    retries : int
        Extra attempts per transaction after a CRC error or a lost frame.
    timeout : float, optional
        Reply timeout in seconds; default from the transport (latency plus the frame's bytes).
    connect : bool
        PING the bridge and (with a register map) check ``ID``/``CONFIG_HASH`` now.
    seed : int, optional
        Seed for the first sequence number (random by default).
    """

    def __init__(self, transport, regmap=None, *, retries: int = 8, timeout: float | None = None,
                 connect: bool = True, seed: int | None = None):
        self.transport = transport
        self._clock = transport_clock(transport)
        self.regmap = _load_regmap(regmap)
        if not isinstance(retries, int) or retries < 0:
            raise UserError(f"retries={retries!r} must be a non-negative integer")
        self.retries = retries
        self.timeout = timeout
        self._parser = ReplyParser()
        self._seq = random.Random(seed).randrange(256)
        self.max_burst = MAX_BURST
        self.stats = {"transactions": 0, "attempts": 0, "retries": 0, "crc_errors": 0,
                      "reply_crc_errors": 0, "timeouts": 0, "truncated": 0, "stale": 0}
        self.identity = None
        if connect:
            self.connect()

    # ---- context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.transport.close()

    # ---- link layer
    def _reply_timeout(self, nbytes: int) -> float:
        if self.timeout is not None:
            return self.timeout
        t = self.transport
        return t.latency_s + 2 * t.byte_time_s * nbytes

    def transact(self, opcode, addr: int = 0, count: int = 1, payload=()):
        """One request/reply exchange with retries; returns the :class:`Reply`.

        Raises :class:`DeviceError` for an error status other than CRC_ERROR/TRUNCATED,
        :class:`LinkTimeout` if the device never answered, :class:`RetriesExhausted`
        otherwise.
        """
        op = Opcode(opcode)
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        frame = encode_request(op, seq, addr, count=count if op != Opcode.WRITE else None,
                               payload=payload)
        want = reply_length(op, count if op == Opcode.READ else (2 if op == Opcode.PING else 0))
        timeout = self._reply_timeout(len(frame) + want)
        self.stats["transactions"] += 1
        reasons = []
        heard = False
        wait = timeout
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.stats["attempts"] += 1
            self.transport.write(frame)
            reply, reason, got_bytes = self._await_reply(seq, op, wait)
            heard |= got_bytes
            # After a timeout wait longer next time (a slow link or a loaded simulator is
            # not a lost frame); back to the normal timeout once replies come again.
            wait = min(4 * timeout, 2 * wait) if reason == "timeout" else timeout
            if reply is not None:
                if reply.status == Status.OK.value:
                    return reply
                raise DeviceError(reply.status, op.value, addr, reply.count)
            reasons.append(reason)
        if not heard:
            raise LinkTimeout(f"no reply from the device to {op.name} at {addr:#010x} after "
                              f"{self.retries + 1} attempts ({timeout:.2f} s and longer): check the port, "
                              f"the baud rate and that the bitstream is loaded")
        raise RetriesExhausted(f"{op.name} at {addr:#010x} failed {self.retries + 1} times "
                               f"({', '.join(reasons)})", reasons)

    def _await_reply(self, seq, op, timeout):
        """Returns (reply or None, reason, any bytes seen)."""
        deadline = self._clock() + timeout
        crc_before = self._parser.crc_errors
        got_bytes = False
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                # A partial frame in the parser may be a false sync: look past it.
                found = self._match(self._parser.drop_partial(), seq, op)
                if found is not None:
                    return found + (True,)
                self.stats["timeouts"] += 1
                return None, "timeout", got_bytes
            data = self.transport.read(65536, remaining)
            if data:
                got_bytes = True
            found = self._match(self._parser.feed(data), seq, op)
            if found is not None:
                return found + (True,)
            if self._parser.crc_errors != crc_before and self._parser.pending() == 0:
                # Our reply was corrupted on the way back: ask again now.
                self.stats["reply_crc_errors"] += self._parser.crc_errors - crc_before
                return None, "reply CRC error", True

    def _match(self, replies, seq, op):
        """The (reply, reason) for our transaction among ``replies``, or None."""
        for r in replies:
            if r.seq != seq or r.opcode != op.value:
                self.stats["stale"] += 1
                continue
            if r.status == Status.CRC_ERROR.value:
                self.stats["crc_errors"] += 1
                return None, "request CRC error"
            if r.status == Status.TRUNCATED.value:
                self.stats["truncated"] += 1
                return None, "request truncated"
            return r, ""
        return None

    # ---- bus access
    def ping(self) -> tuple[int, int]:
        """PING the bridge; returns (protocol version, max burst). Checks the magic."""
        r = self.transact(Opcode.PING)
        if len(r.data) != 2 or r.data[0] != BRIDGE_MAGIC:
            raise LinkError(f"PING reply {r.data!r} is not from an hdlgen bridge")
        version, burst = r.data[1] >> 16, r.data[1] & 0xFFFF
        if version != PROTOCOL_VERSION:
            raise UserError(f"device speaks link protocol {version}, this host {PROTOCOL_VERSION}: "
                            f"rebuild the bitstream or update hdlgen")
        return version, burst

    def connect(self):
        """PING the bridge, and with a register map check ``ID`` and ``CONFIG_HASH``."""
        _, self.max_burst = self.ping()
        if self.regmap is not None:
            ident = self.read(self.regmap.address("ID"), 1)[0]
            chash = self.read(self.regmap.address("CONFIG_HASH"), 1)[0]
            self.regmap.check_identity(ident, chash)
            self.identity = {"id": ident, "config_hash": chash}
        return self

    @staticmethod
    def _check_addr(addr):
        if not isinstance(addr, int) or addr < 0 or addr > 0xFFFFFFFF or addr % 4:
            raise UserError(f"address {addr!r} must be a 32-bit byte address, multiple of 4")

    def read(self, addr: int, n: int = 1) -> list[int]:
        """Read ``n`` 32-bit words from byte address ``addr`` (bursts of ``max_burst``)."""
        self._check_addr(addr)
        out = []
        while n > len(out):
            k = min(self.max_burst, n - len(out))
            out += self.transact(Opcode.READ, addr + 4 * len(out), k).data
        return out

    def write(self, addr: int, words) -> None:
        """Write 32-bit ``words`` from byte address ``addr`` on (bursts of ``max_burst``)."""
        self._check_addr(addr)
        words = [int(w) & 0xFFFFFFFF for w in words]
        for i in range(0, len(words), self.max_burst):
            self.transact(Opcode.WRITE, addr + 4 * i, payload=words[i:i + self.max_burst])

    def read_bytes(self, addr: int, nbytes: int) -> bytes:
        """Bulk read; ``nbytes`` a multiple of 4 (little-endian words)."""
        if nbytes % 4:
            raise UserError(f"nbytes={nbytes} must be a multiple of 4 (32-bit bus words)")
        words = self.read(addr, nbytes // 4)
        return b"".join(w.to_bytes(4, "little") for w in words)

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Bulk write; ``len(data)`` a multiple of 4 (little-endian words)."""
        if len(data) % 4:
            raise UserError(f"{len(data)} bytes is not a multiple of 4 (32-bit bus words); pad it")
        self.write(addr, [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)])

    # ---- registers by name
    def _rm(self):
        if self.regmap is None:
            raise UserError("this Device has no register map: pass regmap= (the build's "
                            "regmap.json, or hdlgen.soc.regmap.soc_register_map(config))")
        return self.regmap

    def read_reg(self, name: str) -> int:
        return self.read(self._rm().address(name), 1)[0]

    def read_fields(self, name: str) -> dict:
        return self._rm().decode(name, self.read_reg(name))

    def write_reg(self, name: str, value: int | None = None, **fields) -> None:
        """Write a register: a whole ``value`` or named ``fields`` (others 0)."""
        rm = self._rm()
        if value is None:
            value = rm.encode(name, **fields)
        elif fields:
            raise UserError("give write_reg either a value or fields, not both")
        self.write(rm.address(name), [value])

    def window(self, name: str) -> tuple[int, int]:
        """(base, size) of a memory window of the register map, e.g. ``"scratch"``."""
        return self._rm().window(name)

    # ---- jobs
    def start(self) -> None:
        """Clear DONE/ERROR and start a job (CTRL.START)."""
        self.write_reg("STATUS", DONE=1, ERROR=1)
        self.write_reg("CTRL", START=1)

    def wait(self, timeout: float = 10.0, poll_s: float = 0.001) -> dict:
        """Poll STATUS until the job is done; returns the decoded STATUS. Raises
        :class:`JobError` when it ended with ERROR, :class:`JobTimeout` after ``timeout`` s."""
        deadline = self._clock() + timeout
        while True:
            st = self.read_fields("STATUS")
            if st.get("ERROR"):
                name = None
                try:
                    from hdlgen.soc.control import ErrorCode
                    name = ErrorCode(st["CODE"]).name
                except (ImportError, ValueError, KeyError):
                    pass
                raise JobError(st.get("CODE"), name)
            if st.get("DONE") and not st.get("BUSY"):
                return st
            if self._clock() > deadline:
                raise JobTimeout(f"job still busy after {timeout} s (STATUS {st})")
            time.sleep(poll_s)

    def counters(self) -> dict:
        """Cycle counter, last job's cycles and the per-unit busy counters, by name."""
        rm = self._rm()
        lo = self.read_reg("CYCLES_LO")
        hi = self.read_reg("CYCLES_HI")
        out = {"cycles": hi << 32 | lo, "job_cycles": self.read_reg("JOB_CYCLES")}
        for r in rm.registers:
            if r.name.startswith("BUSY_"):
                out[r.name.lower()] = self.read(r.address, 1)[0]
        return out
