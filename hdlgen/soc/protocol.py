"""Host link protocol, defined once: frame layout, opcodes, statuses and CRC-32.

The gateware (:mod:`hdlgen.soc.bridge`) uses the enums in ``m.Switch`` and builds its CRC
network from :func:`crc32_update_bits`; the host (:mod:`hdlgen.host`) and the simulation
benches use the pure-Python :func:`encode_request` / :func:`decode_request` /
:func:`encode_reply` / :class:`ReplyParser` below.

Request (host -> device), multi-byte fields little-endian::

    A5 5A | opcode u8 | seq u8 | count u16 | addr u32 | payload (4*count bytes, WRITE only) | crc u32

Reply (device -> host)::

    A5 5A | opcode u8 | seq u8 | status u8 | count u16 | data (4*count bytes) | crc u32

``count`` is in 32-bit words (1..:data:`MAX_BURST` for READ/WRITE); ``addr`` is a byte address,
a multiple of 4; bursts increment the address by 4 per word. In a reply, ``count`` is the
number of words transferred (a burst that hit a bus error stops there) and data follows only
for READ and PING. The CRC is CRC-32 (IEEE 802.3, reflected, as ``zlib.crc32``) over every
byte after the two sync bytes.

Device behaviour the host relies on: a request is executed only when its CRC is right (a
WRITE's payload is buffered and applied after the check); a CRC failure is answered with
``CRC_ERROR`` (echoing the opcode and seq as received, which may themselves be corrupted);
garbage between frames is skipped; a frame that stops arriving is dropped after an
inter-byte timeout: with a ``TRUNCATED`` reply if its header had arrived, silently if not.
A WRITE whose bytes are identical to the last executed WRITE (a host retry after a lost
reply: same seq, same CRC) is not executed again: the device answers with the cached
status. Any other verified frame clears that cache, so the host
must use a new seq for every new transaction and repeat a transaction byte for byte.
"""

import struct
from dataclasses import dataclass

from amaranth.lib import enum

__all__ = ["SYNC", "MAX_BURST", "PROTOCOL_VERSION", "BRIDGE_MAGIC", "Opcode", "Status",
           "CRC32_POLY", "crc32_update_bits", "crc32_step", "crc32", "crc32_matrix",
           "REQUEST_HEADER", "REPLY_HEADER", "CRC_BYTES", "Request", "Reply",
           "encode_request", "decode_request", "encode_reply", "ReplyParser", "ProtocolError",
           "request_length", "reply_length"]

#: Two sync bytes open every frame in both directions.
SYNC = b"\xA5\x5A"
#: Longest burst, in words (the bridge buffers a whole burst before applying it).
MAX_BURST = 256
#: Bumped when the frame format changes; PING returns it.
PROTOCOL_VERSION = 1
#: First word of a PING reply ("HDLG" as little-endian bytes).
BRIDGE_MAGIC = int.from_bytes(b"HDLG", "little")

#: Bytes of a request header after SYNC: opcode, seq, count(2), addr(4).
REQUEST_HEADER = 8
#: Bytes of a reply header after SYNC: opcode, seq, status, count(2).
REPLY_HEADER = 5
CRC_BYTES = 4


class Opcode(enum.Enum, shape=8):
    """Request opcodes."""
    #: No bus access; replies OK with two words: BRIDGE_MAGIC and
    #: ``PROTOCOL_VERSION << 16 | MAX_BURST``.
    PING = 0x01
    #: Read ``count`` words from ``addr``, ``addr + 4``, ...
    READ = 0x02
    #: Write the ``count`` payload words to ``addr``, ``addr + 4``, ...
    WRITE = 0x03


class Status(enum.Enum, shape=8):
    """Reply status."""
    OK = 0x00
    #: The request's CRC did not match; nothing was executed.
    CRC_ERROR = 0x01
    #: Unknown opcode (CRC was right); nothing was executed.
    BAD_OPCODE = 0x02
    #: ``count`` is 0 or above MAX_BURST; nothing was executed.
    BAD_LENGTH = 0x03
    #: ``addr`` is not a multiple of 4; nothing was executed.
    BAD_ALIGN = 0x04
    #: A subordinate answered ``err`` (or no subordinate at that address); the burst stopped.
    BUS_ERROR = 0x05
    #: A subordinate did not answer within the bridge's bus timeout; the burst stopped.
    TIMEOUT = 0x06
    #: The frame stopped arriving after its header (inter-byte timeout); nothing was
    #: executed. Opcode and seq are echoed as received (unverified).
    TRUNCATED = 0x07


# ---------------------------------------------------------------------------------------------
# CRC-32: the one definition. Bitwise, table-free; everything else is derived from it.

#: Reflected CRC-32 polynomial (IEEE 802.3).
CRC32_POLY = 0xEDB88320


def crc32_update_bits(crc: int, byte: int) -> int:
    """One byte of CRC-32, bit by bit (no init/xorout): the definition of the link's CRC.

    It is linear over GF(2) in ``(crc, byte)``; the gateware's XOR network is derived from
    it by :func:`crc32_matrix`.
    """
    crc ^= byte & 0xFF
    for _ in range(8):
        crc = (crc >> 1) ^ (CRC32_POLY if crc & 1 else 0)
    return crc


def crc32_matrix():
    """For each of the 32 output bits of :func:`crc32_update_bits`, the input bits it XORs:
    a list of ``(crc_bits, byte_bits)`` pairs of index lists. Used to build the gateware."""
    out = [([], []) for _ in range(32)]
    for i in range(32):
        r = crc32_update_bits(1 << i, 0)
        for o in range(32):
            if r >> o & 1:
                out[o][0].append(i)
    for j in range(8):
        r = crc32_update_bits(0, 1 << j)
        for o in range(32):
            if r >> o & 1:
                out[o][1].append(j)
    return out


# Byte-wise table derived from the definition above (a cache for host speed, not a second
# definition).
_TABLE = [crc32_update_bits(0, b) for b in range(256)]


def crc32_step(crc: int, byte: int) -> int:
    """Same as :func:`crc32_update_bits`, via the derived table."""
    return (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]


def crc32(data: bytes) -> int:
    """CRC-32 of ``data`` with init and xorout ``0xFFFFFFFF`` (equals ``zlib.crc32``)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Frames


class ProtocolError(Exception):
    """A byte string is not a valid frame (bad sync, length or CRC)."""


@dataclass(frozen=True)
class Request:
    opcode: int
    seq: int
    addr: int = 0
    count: int = 1
    payload: tuple = ()


@dataclass(frozen=True)
class Reply:
    opcode: int
    seq: int
    status: int
    count: int = 0
    data: tuple = ()


def _val(x) -> int:
    return x.value if isinstance(x, (Opcode, Status)) else int(x)


def request_length(opcode, count: int) -> int:
    """Bytes of a request frame with this opcode and count."""
    payload = 4 * count if _val(opcode) == Opcode.WRITE.value else 0
    return len(SYNC) + REQUEST_HEADER + payload + CRC_BYTES


def reply_length(opcode, count: int) -> int:
    """Bytes of a reply frame carrying ``count`` words for this opcode."""
    data = 4 * count if _val(opcode) in (Opcode.READ.value, Opcode.PING.value) else 0
    return len(SYNC) + REPLY_HEADER + data + CRC_BYTES


def encode_request(opcode, seq: int, addr: int = 0, count: int | None = None, payload=()) -> bytes:
    """Bytes of a request frame. ``count`` defaults to ``len(payload)`` for WRITE, 1 otherwise.

    No range checks beyond field widths: the tests use it to build invalid frames too.
    """
    op = _val(opcode)
    payload = [int(w) & 0xFFFFFFFF for w in payload]
    if count is None:
        count = len(payload) if op == Opcode.WRITE.value else 1
    body = struct.pack("<BBHI", op, seq & 0xFF, count & 0xFFFF, addr & 0xFFFFFFFF)
    body += struct.pack(f"<{len(payload)}I", *payload)
    return SYNC + body + struct.pack("<I", crc32(body))


def decode_request(frame: bytes) -> Request:
    """Inverse of :func:`encode_request` for one whole frame; raises :class:`ProtocolError`."""
    if len(frame) < len(SYNC) + REQUEST_HEADER + CRC_BYTES or frame[:2] != SYNC:
        raise ProtocolError(f"not a request frame: {frame[:12].hex()}...")
    op, seq, count, addr = struct.unpack_from("<BBHI", frame, 2)
    body = frame[2:-4]
    if struct.unpack("<I", frame[-4:])[0] != crc32(body):
        raise ProtocolError("request CRC mismatch")
    n_payload = len(body) - REQUEST_HEADER
    if n_payload % 4 or (op == Opcode.WRITE.value and n_payload != 4 * count) or \
            (op != Opcode.WRITE.value and n_payload):
        raise ProtocolError(f"request length {len(frame)} does not match opcode {op:#x}, count {count}")
    payload = struct.unpack_from(f"<{n_payload // 4}I", body, REQUEST_HEADER)
    return Request(op, seq, addr, count, tuple(payload))


def encode_reply(opcode, seq: int, status, count: int = 0, data=()) -> bytes:
    """Bytes of a reply frame (what the device sends; used by models and tests)."""
    data = [int(w) & 0xFFFFFFFF for w in data]
    body = struct.pack("<BBBH", _val(opcode), seq & 0xFF, _val(status), count & 0xFFFF)
    body += struct.pack(f"<{len(data)}I", *data)
    return SYNC + body + struct.pack("<I", crc32(body))


class ReplyParser:
    """Incremental reply decoder for the host: feed bytes, collect :class:`Reply` objects.

    Skips garbage until SYNC; a frame whose CRC fails is counted in :attr:`crc_errors` and
    scanning restarts one byte after its sync (so a real frame hidden behind a false sync is
    still found). The data length of a reply follows from its opcode and count
    (:func:`reply_length`); a count above :data:`MAX_BURST` marks a false sync.
    """

    def __init__(self):
        self._buf = bytearray()
        self.crc_errors = 0
        self.skipped = 0

    def feed(self, data: bytes) -> list:
        self._buf += data
        out = []
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.skipped += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if i:
                self.skipped += i
                del buf[:i]
            if len(buf) < len(SYNC) + REPLY_HEADER:
                break
            op, seq, status, count = struct.unpack_from("<BBBH", buf, 2)
            if count > MAX_BURST:
                self.skipped += 1
                del buf[:1]
                continue
            n = reply_length(op, count)
            if len(buf) < n:
                break
            body = bytes(buf[2:n - 4])
            if struct.unpack_from("<I", buf, n - 4)[0] != crc32(body):
                self.crc_errors += 1
                del buf[:1]
                continue
            words = struct.unpack_from(f"<{(n - 11) // 4}I", body, REPLY_HEADER)
            out.append(Reply(op, seq, status, count, tuple(words)))
            del buf[:n]
        return out

    def drop_partial(self) -> list:
        """Give up on the partial frame at the head of the buffer (a false sync, or a reply
        whose length field was corrupted): skip one byte and rescan; returns any replies
        found behind it."""
        if self._buf:
            del self._buf[:1]
            self.skipped += 1
        return self.feed(b"")

    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def clear(self):
        self._buf.clear()
