"""llama2.c ``tokenizer.bin`` reader with the encoder and decoder of llama2.c's ``run.c``.

File format (little-endian): int32 ``max_token_length``, then for each of the ``vocab_size``
tokens: float32 ``score``, int32 ``len``, ``len`` bytes of the piece. Ids 0, 1, 2 are
``<unk>``, ``<s>`` (BOS) and ``</s>`` (EOS); ids 3..258 are the byte-fallback pieces
``<0x00>``..``<0xFF>`` in sentencepiece-exported vocabularies.

:meth:`Tokenizer.encode` follows ``run.c``'s ``encode``: optional BOS; a dummy-prefix space
piece when the text is not empty; each UTF-8 code point looked up as a piece, else its bytes
as byte-fallback tokens (``byte + 3``); then repeatedly merge the adjacent pair whose
concatenation is a piece with the highest score (leftmost on ties) until none is; optional
EOS. :meth:`Tokenizer.decode` follows ``run.c``'s ``decode``: a piece following BOS loses its
leading space, ``<0xHH>`` pieces decode to that byte.
"""

import os
import re

import numpy as np

from hdlgen.errors import UserError

__all__ = ["Tokenizer", "BOS", "EOS"]

BOS, EOS = 1, 2
_BYTE_PIECE = re.compile(rb"^<0x([0-9A-Fa-f]{2})>$")


class Tokenizer:
    """A llama2.c tokenizer.

    Parameters
    ----------
    pieces : list of bytes
        Piece of each token id.
    scores : list of float
        Merge score of each token id.
    max_token_length : int
        As stored in the file (informational).
    """

    def __init__(self, pieces, scores, max_token_length=None):
        if len(pieces) != len(scores):
            raise UserError(f"tokenizer: {len(pieces)} pieces but {len(scores)} scores")
        self.pieces = [bytes(p) for p in pieces]
        self.scores = np.asarray(scores, dtype=np.float32)
        self.max_token_length = (max(len(p) for p in self.pieces) if max_token_length is None
                                 else int(max_token_length))
        self._lookup = {}
        for i, p in enumerate(self.pieces):
            self._lookup.setdefault(p, i)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    # file I/O --------------------------------------------------------------------------------
    @classmethod
    def read(cls, path, vocab_size: int = None) -> "Tokenizer":
        """Read a ``tokenizer.bin``. With ``vocab_size`` (the model's), exactly that many
        tokens are read, as ``run.c`` does, and a shorter file is an error; without it, tokens
        are read to the end of the file.

        Raises
        ------
        UserError
            Missing file, truncated entry, negative length, or a token count that does not
            match ``vocab_size``.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UserError(f"cannot read tokenizer {path!r}: {e.strerror}") from None
        if len(data) < 4:
            raise UserError(f"{path}: {len(data)} bytes is too short for a llama2.c tokenizer "
                            f"(it starts with an int32 max_token_length)")
        max_len = int(np.frombuffer(data, "<i4", 1)[0])
        pieces, scores, off = [], [], 4
        while off < len(data) and (vocab_size is None or len(pieces) < vocab_size):
            if off + 8 > len(data):
                raise UserError(f"{path}: token {len(pieces)} is truncated at byte {off}")
            score = float(np.frombuffer(data, "<f4", 1, off)[0])
            n = int(np.frombuffer(data, "<i4", 1, off + 4)[0])
            if n < 0 or off + 8 + n > len(data):
                raise UserError(f"{path}: token {len(pieces)} has length {n} at byte {off + 4}, "
                                f"beyond the file's {len(data)} bytes; not a llama2.c tokenizer")
            pieces.append(data[off + 8:off + 8 + n])
            scores.append(score)
            off += 8 + n
        if vocab_size is not None and len(pieces) != vocab_size:
            raise UserError(f"{path}: holds {len(pieces)} tokens but the model's vocab_size is "
                            f"{vocab_size}; use the tokenizer the model was trained with")
        if not pieces:
            raise UserError(f"{path}: holds no tokens")
        return cls(pieces, scores, max_len)

    def write(self, path) -> None:
        """Write in the llama2.c format."""
        with open(os.fspath(path), "wb") as f:
            f.write(np.int32(self.max_token_length).astype("<i4").tobytes())
            for p, s in zip(self.pieces, self.scores):
                f.write(np.float32(s).astype("<f4").tobytes())
                f.write(np.int32(len(p)).astype("<i4").tobytes())
                f.write(p)

    # encode / decode -------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list:
        """Token ids of ``text`` (see the module docstring)."""
        raw = text.encode("utf-8")
        tokens = [BOS] if bos else []
        if raw:
            space = self._lookup.get(b" ")
            if space is None:
                raise UserError("tokenizer has no ' ' piece for the dummy prefix")
            tokens.append(space)
        i = 0
        while i < len(raw):
            j = i + 1
            while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = raw[i:j]
            tid = self._lookup.get(cp)
            if tid is not None:
                tokens.append(tid)
            else:
                for b in cp:
                    if b + 3 >= self.vocab_size:
                        raise UserError(f"byte 0x{b:02X} of {text!r} is not in the vocabulary "
                                        f"and its byte-fallback id {b + 3} is beyond it")
                    tokens.append(b + 3)
            i = j
        while True:
            best_score, best_id, best_idx = -1e10, -1, -1
            for k in range(len(tokens) - 1):
                tid = self._lookup.get(self.pieces[tokens[k]] + self.pieces[tokens[k + 1]])
                if tid is not None and self.scores[tid] > best_score:
                    best_score, best_id, best_idx = self.scores[tid], tid, k
            if best_idx < 0:
                break
            tokens[best_idx:best_idx + 2] = [best_id]
        if eos:
            tokens.append(EOS)
        return tokens

    def piece_bytes(self, prev_token: int, token: int) -> bytes:
        """Bytes ``run.c``'s ``decode(prev_token, token)`` prints for ``token``."""
        if not 0 <= token < self.vocab_size:
            raise UserError(f"token id {token} is out of range 0..{self.vocab_size - 1}")
        piece = self.pieces[token]
        if prev_token == BOS and piece.startswith(b" "):
            piece = piece[1:]
        m = _BYTE_PIECE.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece

    def decode(self, tokens, prev_token: int = BOS) -> str:
        """Text of ``tokens`` (each decoded after its predecessor; the first after
        ``prev_token``), invalid UTF-8 replaced."""
        out, prev = [], prev_token
        for t in tokens:
            t = int(t)
            out.append(self.piece_bytes(prev, t))
            prev = t
        return b"".join(out).decode("utf-8", errors="replace")
