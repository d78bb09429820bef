"""Reference model of :class:`hdlgen.soc.bridge.Bridge`, byte for byte, in plain Python.

It parses the request byte stream exactly as the gateware does (sync hunt, header, payload,
CRC, dedup cache of the last WRITE) and executes requests on a word-addressed memory map
given as callbacks, producing the reply bytes the device must send. Frame encoding and CRC
come from :mod:`hdlgen.soc.protocol` (the one definition shared with the host).

Use::

    model = BridgeModel(bus_read, bus_write, max_burst=256)
    replies = model.feed(request_bytes)   # bytes the device answers
    replies += model.timeout()            # the inter-byte timeout expired: drop a partial frame
"""

import struct

from hdlgen.soc.protocol import (BRIDGE_MAGIC, MAX_BURST, PROTOCOL_VERSION, SYNC, Opcode, Status,
                                 crc32, encode_reply)

__all__ = ["BridgeModel", "DictBus"]


class DictBus:
    """A word memory map for the model: RAM windows ``(base_word, n_words)``, windows whose
    subordinate never answers (``silent``: the bridge's bus timeout); everything else is
    unmapped (``err``). ``read(w) -> (Status, value)``, ``write(w, value) -> Status``."""

    def __init__(self, windows, silent=(), accumulators=()):
        self.windows = list(windows)
        self.silent = list(silent)
        self.accumulators = set(accumulators)   # words where a write adds to the value
        self.mem = {}

    def _status(self, w):
        if w in self.accumulators or any(b <= w < b + n for b, n in self.windows):
            return Status.OK
        if any(b <= w < b + n for b, n in self.silent):
            return Status.TIMEOUT
        return Status.BUS_ERROR

    def read(self, w):
        st = self._status(w)
        return st, (self.mem.get(w, 0) if st == Status.OK else 0)

    def write(self, w, value):
        st = self._status(w)
        if st == Status.OK:
            if w in self.accumulators:
                value = (self.mem.get(w, 0) + value) & 0xFFFFFFFF
            self.mem[w] = value
        return st


class BridgeModel:
    def __init__(self, bus_read, bus_write, *, max_burst: int = MAX_BURST, addr_width: int = 30):
        self.read, self.write = bus_read, bus_write
        self.max_burst = max_burst
        self.addr_mask = (1 << addr_width) - 1
        self.state = "HUNT"
        self.buf = bytearray()
        self.need = 0
        self.last = None       # (crc, status, done) of the last executed WRITE
        self.stats = {"frame_ok": 0, "crc_error": 0, "dropped": 0, "duplicate": 0}

    def timeout(self) -> bytes:
        """The inter-byte timeout expired: drop a partial frame; returns the reply bytes
        (``TRUNCATED`` once the header had arrived, nothing before)."""
        out = b""
        if self.state in ("HEADER", "BODY"):
            self.stats["dropped"] += 1
        if self.state == "BODY":
            op, seq = self.buf[0], self.buf[1]
            out = encode_reply(op, seq, Status.TRUNCATED, 0)
        self.state = "HUNT"
        return out

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self.state == "HUNT":
                if b == SYNC[0]:
                    self.state = "SYNC1"
            elif self.state == "SYNC1":
                if b == SYNC[1]:
                    self.state, self.buf = "HEADER", bytearray()
                elif b != SYNC[0]:
                    self.state = "HUNT"
            elif self.state == "HEADER":
                self.buf.append(b)
                if len(self.buf) == 8:
                    op, _, count, _ = struct.unpack("<BBHI", self.buf)
                    if op == Opcode.WRITE.value:
                        if not 1 <= count <= self.max_burst:
                            self.stats["dropped"] += 1
                            self.state = "HUNT"
                            continue
                        self.need = 8 + 4 * count + 4
                    else:
                        self.need = 8 + 4
                    self.state = "BODY"
            elif self.state == "BODY":
                self.buf.append(b)
                if len(self.buf) == self.need:
                    out += self._execute(bytes(self.buf))
                    self.state = "HUNT"
        return bytes(out)

    def _execute(self, frame: bytes) -> bytes:
        op, seq, count, addr = struct.unpack_from("<BBHI", frame)
        body, got = frame[:-4], struct.unpack("<I", frame[-4:])[0]
        if crc32(body) != got:
            self.stats["crc_error"] += 1
            return encode_reply(op, seq, Status.CRC_ERROR, 0)
        self.stats["frame_ok"] += 1
        if op == Opcode.WRITE.value and self.last is not None and self.last[0] == got:
            self.stats["duplicate"] += 1
            return encode_reply(op, seq, self.last[1], self.last[2])
        self.last = None
        if op == Opcode.PING.value:
            return encode_reply(op, seq, Status.OK, 2,
                                [BRIDGE_MAGIC, PROTOCOL_VERSION << 16 | self.max_burst])
        if op not in (Opcode.READ.value, Opcode.WRITE.value):
            return encode_reply(op, seq, Status.BAD_OPCODE, 0)
        if not 1 <= count <= self.max_burst:
            return encode_reply(op, seq, Status.BAD_LENGTH, 0)
        if addr & 3:
            return encode_reply(op, seq, Status.BAD_ALIGN, 0)
        base = addr >> 2
        if op == Opcode.WRITE.value:
            words = struct.unpack_from(f"<{count}I", frame, 8)
            status, done = Status.OK, 0
            for i, w in enumerate(words):
                st = self.write((base + i) & self.addr_mask, w)
                if st != Status.OK:
                    status = st
                    break
                done += 1
            self.last = (got, status, done)
            return encode_reply(op, seq, status, done)
        data, status = [], Status.OK
        for i in range(count):
            st, v = self.read((base + i) & self.addr_mask)
            if st != Status.OK:
                status = st
                break
            data.append(v)
        return encode_reply(op, seq, status, len(data), data)


def random_segments(rng, n, *, ram_words, max_burst, silent_word=None, acc_word=None,
                    corrupt=0.1):
    """Random request traffic for bridge benches: a list of ``(data, long_gap)`` segments.

    ``acc_word`` is a word where writes add (side effects make a re-applied retry visible).
    ``long_gap`` asks the driver to stay idle for more than the bridge's inter-byte timeout
    after ``data`` (and the model to :meth:`BridgeModel.timeout`). Mixes good READ/WRITE/PING
    frames (mostly in the RAM at word 0, some unmapped, silent, misaligned, bad count or
    opcode), exact repeats of the previous WRITE (retries), frames with flipped bits,
    truncated frames and garbage. The rng is a ``random.Random``.
    """
    from hdlgen.soc.protocol import encode_request

    segs = []
    seq = rng.randrange(256)
    last_write = None
    for _ in range(n):
        seq = (seq + 1) & 0xFF
        r = rng.random()
        if r < 0.08 and last_write is not None:
            segs.append((last_write, False))              # host retry of the same WRITE
            continue
        last_write = None
        if r < 0.09:
            g = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 12)))
            if rng.random() < 0.3:
                g += b"\xA5\x5A"[:rng.randrange(1, 3)]
            segs.append((g, rng.random() < 0.5))
            continue
        kind = rng.random()
        count = rng.randrange(1, max_burst + 1) if rng.random() < 0.5 else rng.randrange(1, 3)
        word = rng.randrange(max(1, ram_words - count + 1))
        addr = 4 * word
        a = rng.random()
        if a < 0.05:
            addr = 4 * (ram_words + rng.randrange(64))    # unmapped
        elif a < 0.08 and silent_word is not None:
            addr = 4 * silent_word
        elif a < 0.10:
            addr += rng.randrange(1, 4)                   # misaligned
        elif a < 0.25 and acc_word is not None:
            addr, count = 4 * acc_word, 1
        if kind < 0.02:
            frame = encode_request(Opcode.WRITE, seq, addr, count=rng.choice([0, max_burst + 1]),
                                   payload=[rng.getrandbits(32) for _ in range(count)])
        elif kind < 0.45:
            frame = encode_request(Opcode.WRITE, seq, addr,
                                   payload=[rng.getrandbits(32) for _ in range(count)])
        elif kind < 0.9:
            rc = count if rng.random() >= 0.1 else rng.choice([0, max_burst + 1])
            frame = encode_request(Opcode.READ, seq, addr, count=rc)
        elif kind < 0.95:
            frame = encode_request(Opcode.PING, seq)
        else:
            frame = encode_request(rng.choice([0, 4, 0x7F, 0xFF]), seq, addr, count=count)
        if frame[2] == Opcode.WRITE.value:
            last_write = frame
        long_gap = False
        if rng.random() < corrupt:
            f = bytearray(frame)
            c = rng.random()
            if c < 0.6:
                for _ in range(rng.randrange(1, 4)):
                    f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
            elif c < 0.9:
                f = f[:rng.randrange(1, len(f))]
                long_gap = True
            else:
                f[rng.randrange(len(f))] = rng.getrandbits(8)
                long_gap = rng.random() < 0.5
            frame = bytes(f)
        segs.append((frame, long_gap or rng.random() < 0.02))
    return segs


class ModelTransport:
    """A host transport whose "device" is :class:`BridgeModel` on a :class:`DictBus`: the
    host API can be tested without a simulator. ``write`` feeds a request, the reply is
    readable at once. ``silent`` makes the device never answer."""

    latency_s = 0.01
    byte_time_s = 0.0

    def __init__(self, bus: DictBus, *, max_burst: int = MAX_BURST, silent: bool = False):
        self.bus = bus
        self.model = BridgeModel(bus.read, bus.write, max_burst=max_burst)
        self.silent = silent
        self._out = bytearray()
        self.frames_in = 0

    def write(self, data: bytes) -> None:
        self.frames_in += 1
        reply = self.model.feed(data)
        if self.model.state != "HUNT":      # a partial frame: the device's timeout drops it
            reply += self.model.timeout()
        if not self.silent:
            self._out += reply

    def read(self, n: int, timeout: float) -> bytes:
        if not self._out:
            return b""
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def model_device_bus(regmap) -> DictBus:
    """A :class:`DictBus` laid out like the SoC of ``regmap`` (a
    :class:`hdlgen.soc.regmap.RegisterMap`): the control bank as plain words holding the
    identification values, the scratch window as RAM."""
    windows = [(b["base"] // 4, b["size"] // 4) for b in regmap.banks]
    windows += [(w.base // 4, w.size // 4) for w in regmap.windows]
    bus = DictBus(windows)
    for r in regmap.registers:
        if r.reset:
            bus.mem[r.address // 4] = r.reset
    return bus
