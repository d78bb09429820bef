"""ISA: encode/decode round trip, field checks, agreement with the Amaranth layouts, and the
generated docs/isa.md kept in sync."""

from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data, enum

from hdlgen.engine import isa
from hdlgen.engine.isa import (ISAError, Instruction, Opcode, WORD_BITS, decode, decode_program,
                               encode, encode_program)

ROOT = Path(__file__).resolve().parents[1]


def _random_fields(op, rng):
    out = {}
    for name, f in data.Layout.cast(isa.LAYOUTS[op]):
        if name == "op":
            continue
        shape = f.shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            out[name] = list(shape)[rng.integers(len(list(shape)))]
        else:
            s = Shape.cast(shape)
            lo = -(1 << (s.width - 1)) if s.signed else 0
            hi = (1 << (s.width - 1)) if s.signed else (1 << s.width)
            out[name] = int(rng.integers(lo, hi))
    return out


def test_round_trip_every_opcode():
    rng = np.random.default_rng(5)
    for op in Opcode:
        for _ in range(50):
            ins = Instruction.make(op, **_random_fields(op, rng))
            w = encode(ins)
            assert 0 <= w < 1 << WORD_BITS
            assert w & 0x3F == op.value
            assert decode(w) == ins


def test_encoding_matches_amaranth_layout():
    """The RTL sees the word through the same Struct: the layout's constant has the same bits."""
    rng = np.random.default_rng(6)
    for op, layout in isa.LAYOUTS.items():
        fields = _random_fields(op, rng)
        const = data.Layout.cast(layout).const({"op": op, **fields})
        assert const.as_bits() == encode(Instruction.make(op, **fields)), op


def test_field_checks():
    with pytest.raises(ISAError, match="MATVEC.rows=70000 does not fit"):
        Instruction.make(Opcode.MATVEC, rows=70000)
    with pytest.raises(ISAError, match="NORM.out_frac=-40"):
        Instruction.make(Opcode.NORM, out_frac=-40)
    with pytest.raises(ISAError, match="has no field"):
        Instruction.make(Opcode.HALT, rows=1)
    with pytest.raises(ISAError, match="is not a Reg"):
        Instruction.make(Opcode.SETREG, reg=9)


def test_decode_errors():
    with pytest.raises(ISAError, match="unknown opcode 63"):
        decode(63)
    with pytest.raises(ISAError, match="bits set beyond"):
        decode(Opcode.HALT.value | 1 << 100)
    with pytest.raises(ISAError, match="program word 1"):
        decode_program([Opcode.HALT.value, 7])
    with pytest.raises(ISAError, match="128-bit"):
        decode(1 << 128)


def test_program_round_trip_and_str():
    prog = [Instruction.make(Opcode.LOOP, count=5, body=1, wstride=360, pstride=7),
            Instruction.make(Opcode.MATVEC, in_width=isa.Width.W16, rows=64, cols=172),
            Instruction.make(Opcode.HALT)]
    assert decode_program(encode_program(prog)) == prog
    assert str(prog[1]).startswith("MATVEC in_width=W16")
    assert prog[0].as_dict()["wstride"] == 360


def test_docs_in_sync():
    doc = ROOT / "docs" / "isa.md"
    assert doc.read_text() == isa.markdown(), \
        "docs/isa.md is stale: run `python -m hdlgen.engine.isa`"
    for op in Opcode:
        assert f"### {op.name} (opcode {op.value}" in doc.read_text()


def test_layout_digest_follows_the_instruction_set():
    """The digest in the engine's fingerprint (and so in ``CONFIG_HASH``) is stable and
    changes when an instruction gains a field, so a bitstream of the older set is refused."""
    from amaranth.hdl import unsigned as u
    d = isa.layout_digest()
    assert d == isa.layout_digest() and len(d) == 8
    grown = dict(isa.LAYOUTS)
    grown[Opcode.MATVEC] = data.StructLayout({**{n: f.shape for n, f in
                                                 data.Layout.cast(isa.LAYOUTS[Opcode.MATVEC])},
                                              "extra": u(1)})
    assert isa.layout_digest(grown) != d


def test_glu_rows_blocks_of_lanes():
    # 60 hidden units on 16 lanes: 7 full blocks of 8 gates then 8 ups, and a last block of
    # 4 gates (lanes 0-3) and 4 ups (lanes 8-11), inside the 8 blocks of a 120-row matrix
    gate, up = isa.glu_rows(120, 16)
    assert gate[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 16] and up[:9] == [8, 9, 10, 11, 12, 13, 14, 15, 24]
    assert gate[-4:] == [112, 113, 114, 115] and up[-4:] == [120, 121, 122, 123]
    rows = sorted(gate + up)
    assert len(set(rows)) == 120 and rows[-1] < 8 * 16
    assert all(u - g == 8 and g // 16 == u // 16 for g, u in zip(gate, up))
    for rows, lanes in ((15, 16), (120, 7)):
        with pytest.raises(ISAError, match="even"):
            isa.glu_rows(rows, lanes)
