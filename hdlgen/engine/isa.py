"""Instruction set of the transformer engine: one definition shared by the model compiler, the
integer golden model (:mod:`sim.golden.engine`), the RTL sequencer and the generated reference
``docs/isa.md``.

Machine model
-------------
A program is a list of fixed-width macro-instructions (:data:`WORD_BITS` = 128 bits) in the
program memory. The sequencer fetches one at a time; each instruction reads its operands from
memory over a stream, pushes them through one compute unit and writes the results back over
a stream. Memories:

* **activation scratchpad** (``act``): signed 16-bit elements, addressed by element
  (``BUF`` fields, 16 bits). 8-bit tensors occupy one element per value too (sign-extended).
* **weight bank** (``weights``): rows of ``lanes * macs_per_lane`` int8, the layout of
  :func:`hdlgen.blocks.membank.weight_rows`; ``WADDR`` fields are row indices. A matrix
  ``[rows, cols]`` occupies ``ceil(rows / lanes) * ceil(cols / macs_per_lane)`` rows.
* **parameter memory** (``params``): 32-bit words, ``PADDR`` fields are word indices:
  requantization pairs (one word per output row: ``mult`` in bits 0-15, ``shift`` in bits
  16-21), int32 biases, norm gains/biases (one signed 16-bit value per word), the norm epsilon
  (two words, low first), and the ROM contents of the RoPE, activation and SwiGLU tables.
* **KV cache**: per layer and KV head, ``context`` K and V rows of ``head_size`` int8
  (:class:`hdlgen.blocks.kv_cache.KVCache`).

Registers (:class:`Reg`): ``TOKEN`` and ``POS`` are written by the host before a decode step;
``LAYER`` counts the iterations of the running ``LOOP``; ``RESULT``/``RESULT_VALUE`` hold the
last ``ARGMAX``. ``LOOP`` also keeps two base registers, ``WBASE`` and ``PBASE``, added to the
weight and parameter addresses of instructions with ``layer_rel`` set; they start at 0 and
grow by the loop's ``wstride``/``pstride`` after each iteration, so one copy of a decoder layer's
instructions serves every layer (the compiler lays the layers out at a fixed stride).
``MATVEC``, ``MATMAT``, ``NORM``, ``SCORES``, ``SCORES_SOFTMAX``, ``ATTV``, ``ACT`` and
``ELTWISE`` have ``layer_rel``.

Attention instructions (``SCORES``, ``SOFTMAX``, ``SCORES_SOFTMAX``, ``ATTV``) iterate over the
query heads with an internal counter; query head ``h`` reads KV head ``h // kv_mul``
(grouped-query and multi-query attention), rows ``0 .. POS`` (causal). ``SCORES_SOFTMAX`` is
``SCORES`` followed by a causal ``SOFTMAX`` of its rows, without the scores' round trip through
the scratchpad (the compiler emits it wherever the pair occurs). Likewise a ``MATVEC`` with
``rope_heads`` rotates the heads it computes (q; k, before v in the ``kv`` projection) on
their way out, instead of a ``ROPE`` instruction after it, one with ``kv_append`` appends
its results (k and v) to the KV cache on their way out, instead of ``KVAPPEND`` instructions,
and one with ``glu`` computes gate and up as row pairs of one matrix and writes their SwiGLU,
instead of two ``MATVEC`` and an ``ELTWISE``.

Encoding: every instruction is a :class:`amaranth.lib.data.Struct` whose first field is the
6-bit :class:`Opcode`; fields are packed LSB first in declaration order and the rest of the
128-bit word is zero. :func:`encode` and :func:`decode` are the pure-Python codec; the RTL
views the same word through the same layouts.
"""

import json
import zlib
from dataclasses import dataclass

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, enum

__all__ = ["WORD_BITS", "Opcode", "Reg", "Func", "EltOp", "NormKind", "LAYOUTS", "Instruction",
           "encode", "decode", "encode_program", "decode_program", "markdown", "BUF", "WADDR",
           "PADDR", "ISAError", "layout_digest", "kv_append_parts", "glu_rows", "GLU_MAX_COLS"]

#: Width of one instruction word, bits.
WORD_BITS = 128

#: Activation-scratchpad element address.
BUF = unsigned(16)
#: Weight-bank row index.
WADDR = unsigned(20)
#: Parameter-memory word index.
PADDR = unsigned(20)
#: Vector length / matrix dimension.
LEN = unsigned(16)
#: Most ``cols`` of a ``MATVEC`` with ``glu``: int8 inputs times int8 weights (int9 with the
#: image's ``weight_exp``) sum to 27 bits at most, the width of the engine's second
#: requantizer, whose product is in LUTs.
GLU_MAX_COLS = 1024


class ISAError(ValueError):
    """A malformed instruction or program (unknown opcode, field out of range)."""


class Opcode(enum.Enum, shape=6):
    """Operation of an instruction (bits 0-5 of every word)."""
    NOP = 0
    HALT = 1
    SYNC = 2
    SETREG = 3
    LOOP = 4
    EMBED = 8
    MATVEC = 9
    MATMAT = 10
    REQUANT = 11
    NORM = 12
    ROPE = 13
    KVAPPEND = 14
    SCORES = 15
    SOFTMAX = 16
    ATTV = 17
    ACT = 18
    ELTWISE = 19
    ARGMAX = 20
    OUTPUT = 21
    SCORES_SOFTMAX = 22


class Reg(enum.Enum, shape=4):
    """Sequencer registers."""
    TOKEN = 0
    POS = 1
    LAYER = 2
    RESULT = 3
    RESULT_VALUE = 4


class Func(enum.Enum, shape=3):
    """Activation function of ``ACT`` (:mod:`sim.golden.activation`)."""
    SILU = 0
    GELU = 1
    GELU_TANH = 2
    RELU = 3


class EltOp(enum.Enum, shape=2):
    """Operation of ``ELTWISE`` (:mod:`sim.golden.eltwise`)."""
    ADD = 0
    SWIGLU = 1


class NormKind(enum.Enum, shape=1):
    """Normalisation of ``NORM`` (:mod:`sim.golden.norm`)."""
    RMSNORM = 0
    LAYERNORM = 1


class Width(enum.Enum, shape=1):
    """Element width of a tensor in the scratchpad."""
    W8 = 0
    W16 = 1


# ---- layouts -----------------------------------------------------------------------------------

class Nop(data.Struct):
    """Do nothing."""
    op: Opcode


class Halt(data.Struct):
    """End of the program: the decode step is done (the sequencer raises ``done``)."""
    op: Opcode


class Sync(data.Struct):
    """Barrier: wait until every unit in ``units`` (bit mask, all when 0) has written its last
    result before issuing the next instruction."""
    op: Opcode
    units: unsigned(8)


class SetReg(data.Struct):
    """``reg = value``."""
    op: Opcode
    reg: Reg
    value: unsigned(32)


class Loop(data.Struct):
    """Run the next ``body`` instructions ``count`` times. ``LAYER``, ``WBASE`` and ``PBASE``
    start at 0 and, after each iteration, grow by 1, ``wstride`` and ``pstride``. Loops do not
    nest."""
    op: Opcode
    count: unsigned(8)
    body: unsigned(12)
    wstride: unsigned(24)
    pstride: unsigned(24)


class Embed(data.Struct):
    """``dst[0:cols] = requant(table[index], mult[index], shift[index])`` with ``index`` the
    value of register ``index_reg`` (< ``rows``) and ``table`` the int8 matrix at ``waddr``;
    16-bit output. With ``accumulate``, the result is added to ``dst`` (saturating int16
    add), as for GPT-2's learned positions. ``w_planes`` 2: a 16-bit table stored as two int8
    matrices (high plane at ``waddr``, low plane right after it)."""
    op: Opcode
    index_reg: Reg
    accumulate: unsigned(1)
    w_planes: unsigned(2)
    dst: BUF
    waddr: WADDR
    rows: LEN
    cols: LEN
    paddr: PADDR


class MatVec(data.Struct):
    """``dst[0:rows] = requant(W @ src[0:cols] (+ bias))``: ``W`` ``[rows, cols]`` at ``waddr``,
    one requantization word per row at ``paddr`` (then ``rows`` int32 bias words when
    ``bias``). ``in_width`` 16 feeds the 16-bit input through the MAC array's shared operand,
    ``w_planes`` 2 means a 16-bit weight stored as two int8 matrices (high plane at ``waddr``,
    low plane right after it). With ``accumulate``, ``dst += result`` (saturating int16: the
    residual add). With ``in_width`` 8 every input element must be int8: one outside
    -128..127 ends the job with error ``INPUT_RANGE`` (nothing is written). With
    ``rope_heads`` > 0 the first ``rope_heads`` heads of the results (``head_size`` of the
    image's RoPE table each) are rotated at position ``POS`` before they are written, exactly
    as a ``ROPE`` of ``out_width`` over them would (the rest are written unrotated): the
    image needs its RoPE table, ``rows`` must be even and cover those heads, and
    ``accumulate`` must be 0. With ``kv_append`` 1 (K), 2 (V) or 3 (K then V) the results as
    written are also appended to the KV cache of layer ``LAYER`` at position ``POS``, as a
    ``KVAPPEND`` of them would (``rows`` = the number of parts x ``n`` x the image's
    ``head_size``, ``n`` KV heads, at most the cache's; ``out_width`` 8, no ``accumulate``;
    a ``LAYER`` beyond the cache ends the job with ``KV_CACHE``). With ``glu`` ``W`` holds
    the gate and up projections of ``rows / 2`` hidden units and ``dst[0:rows/2] =
    swiglu(gate, up)``, exactly as an ``ELTWISE SWIGLU`` of them would: the requantized
    gates saturated to the SwiGLU's ``a_bits``, the ups to its ``b_bits``, the SwiGLU's
    requantization word right after the rows' words (at ``paddr + rows``) and the image's
    one SiLU table; ``rows`` even, ``out_width`` the SwiGLU's ``out_bits``, ``in_width`` 8,
    ``w_planes`` 1, ``cols`` at most ``GLU_MAX_COLS`` (1024), no ``bias``, ``accumulate``,
    ``rope_heads`` or ``kv_append``. ``W``'s rows come in blocks of the image's ``lanes``
    (:func:`glu_rows`): block ``b`` holds the gates of units ``b * lanes/2`` on in its first
    half and their ups in its second half (the last block likewise, padded), so a pass's gate
    and up leave the MAC array ``lanes / 2`` lanes apart; the requantization words are pairs,
    unit ``i``'s gate at ``paddr + 2i``, its up at ``paddr + 2i + 1``."""
    op: Opcode
    in_width: Width
    out_width: Width
    w_planes: unsigned(2)
    bias: unsigned(1)
    layer_rel: unsigned(1)
    accumulate: unsigned(1)
    src: BUF
    dst: BUF
    waddr: WADDR
    rows: LEN
    cols: LEN
    paddr: PADDR
    rope_heads: unsigned(8)
    kv_append: unsigned(2)
    glu: unsigned(1)


class MatMat(data.Struct):
    """Prefill tile: ``dst[t, 0:rows] = requant(W @ src[t, 0:cols])`` for ``tokens`` (<= lanes)
    tokens; ``src`` rows are ``cols`` apart, ``dst`` rows ``rows`` apart. int8 inputs (the
    activations are the per-lane operand): an input element outside -128..127 ends the job
    with error ``INPUT_RANGE`` (nothing is written)."""
    op: Opcode
    out_width: Width
    layer_rel: unsigned(1)
    bias: unsigned(1)
    tokens: unsigned(8)
    src: BUF
    dst: BUF
    waddr: WADDR
    rows: LEN
    cols: LEN
    paddr: PADDR


class Requant(data.Struct):
    """``dst[i] = requant(src[i])`` for ``i < len``: one requantization word at ``paddr`` for
    all elements, or one per element when ``per_elem``."""
    op: Opcode
    out_width: Width
    per_elem: unsigned(1)
    src: BUF
    dst: BUF
    len: LEN
    paddr: PADDR


class Norm(data.Struct):
    """RMSNorm or LayerNorm of ``src[0:len]`` (int16) to ``dst`` (int8 with ``out_frac``
    fractional bits): ``len`` gains (``gamma_frac`` fractional bits) at ``paddr``, for
    LayerNorm ``len`` biases (``beta_frac``) after them, then the integer epsilon (two
    words)."""
    op: Opcode
    kind: NormKind
    layer_rel: unsigned(1)
    gamma_frac: unsigned(5)
    beta_frac: unsigned(5)
    out_frac: signed(6)
    src: BUF
    dst: BUF
    len: LEN
    paddr: PADDR


class Rope(data.Struct):
    """Rotary embedding of ``n_heads`` heads of ``head_size`` at ``src`` (in place allowed) at
    position ``POS``; the cos/sin table is at ``paddr``. With ``width`` 8, an element outside
    -128..127 ends the job with error ``INPUT_RANGE`` (``dst`` is then undefined)."""
    op: Opcode
    width: Width
    src: BUF
    dst: BUF
    n_heads: unsigned(8)
    head_size: unsigned(10)
    paddr: PADDR


class KVAppend(data.Struct):
    """Write ``kv_heads`` rows of ``head_size`` int8 from ``src`` into the K (``kv`` = 0) or
    V (1) cache of layer ``LAYER`` at position ``POS``. An element outside -128..127 ends the
    job with error ``INPUT_RANGE`` (the rows written are then undefined)."""
    op: Opcode
    kv: unsigned(1)
    src: BUF
    kv_heads: unsigned(8)
    head_size: unsigned(10)


class Scores(data.Struct):
    """For each query head ``h < n_heads``: ``dst[h * stride + t] = requant(q_h . K[t])`` for
    ``t = 0 .. POS`` (K of layer ``LAYER``, KV head ``h // kv_mul``), 16-bit scores; one
    requantization word at ``paddr``. On the MAC array: ``q_h`` is the shared operand, key row
    ``t`` the operand of lane ``t mod lanes`` (passes of ``lanes`` positions). With
    ``q_width`` 8, a query element outside -128..127 ends the job with error ``INPUT_RANGE``
    (``dst`` is then undefined)."""
    op: Opcode
    layer_rel: unsigned(1)
    q_width: Width
    q: BUF
    dst: BUF
    stride: LEN
    n_heads: unsigned(8)
    kv_mul: unsigned(8)
    head_size: unsigned(10)
    paddr: PADDR


class Softmax(data.Struct):
    """Softmax of ``rows`` rows of ``stride`` apart, each of length ``POS + 1`` when
    ``causal`` (else ``len``): signed 16-bit logits with ``in_frac`` fractional bits in,
    unsigned ``out_bits`` probabilities out."""
    op: Opcode
    causal: unsigned(1)
    in_frac: unsigned(5)
    out_bits: unsigned(5)
    src: BUF
    dst: BUF
    stride: LEN
    rows: unsigned(8)
    len: LEN


class ScoresSoftmax(data.Struct):
    """``SCORES`` with its ``SOFTMAX`` fused: for each query head ``h < n_heads``, the scores
    ``s_t = requant(q_h . K[t])`` (16-bit, as ``SCORES``) for ``t = 0 .. POS`` go straight into
    the softmax (``in_frac``, ``out_bits`` as ``SOFTMAX``; causal length ``POS + 1``) and
    ``dst[h * stride + t] = softmax(s)_t``. The scores are not written to the scratchpad; head
    ``h + 1``'s scores are computed while head ``h``'s probabilities are written. ``q_width`` 8
    as for ``SCORES``."""
    op: Opcode
    layer_rel: unsigned(1)
    q_width: Width
    in_frac: unsigned(5)
    out_bits: unsigned(5)
    q: BUF
    dst: BUF
    stride: LEN
    n_heads: unsigned(8)
    kv_mul: unsigned(8)
    head_size: unsigned(10)
    paddr: PADDR


class AttV(data.Struct):
    """For each query head ``h``: ``dst[h * head_size + i] = requant(sum_t p[h * stride + t]
    V[t, i])`` over ``t = 0 .. POS`` (V of layer ``LAYER``, KV head ``h // kv_mul``);
    probabilities are unsigned ``prob_bits`` wide; one requantization word at ``paddr``. On the
    MAC array: ``p_h`` is the shared operand (16-bit: int8 planes), lane ``i`` takes column
    ``i`` of V (``V[t, i]`` for consecutive ``t``), so ``head_size`` lanes work per pass. A
    probability outside ``0 .. 2**prob_bits - 1`` ends the job with error ``INPUT_RANGE``
    (``dst`` is then undefined)."""
    op: Opcode
    layer_rel: unsigned(1)
    out_width: Width
    prob_bits: unsigned(5)
    p: BUF
    dst: BUF
    stride: LEN
    n_heads: unsigned(8)
    kv_mul: unsigned(8)
    head_size: unsigned(10)
    paddr: PADDR


class Act(data.Struct):
    """``dst[i] = f(src[i])`` for ``i < len`` through the table at ``paddr``
    (:mod:`sim.golden.activation`)."""
    op: Opcode
    layer_rel: unsigned(1)
    func: Func
    in_width: Width
    out_width: Width
    src: BUF
    dst: BUF
    len: LEN
    paddr: PADDR


class Eltwise(data.Struct):
    """``ADD``: ``dst = saturate(a + b)`` at ``width``; ``SWIGLU``: ``dst = requant(silu(a) *
    b)`` with the SiLU table and requantization word at ``paddr``."""
    op: Opcode
    layer_rel: unsigned(1)
    eop: EltOp
    width: Width
    a: BUF
    b: BUF
    dst: BUF
    len: LEN
    paddr: PADDR


class Argmax(data.Struct):
    """``RESULT``, ``RESULT_VALUE`` = index and value of the largest of ``src[0:len]`` (first
    on ties)."""
    op: Opcode
    src: BUF
    len: LEN


class Output(data.Struct):
    """Copy ``src[0:len]`` to the host-visible output window (the logits on request)."""
    op: Opcode
    src: BUF
    len: LEN


#: Layout of each opcode.
LAYOUTS = {
    Opcode.NOP: Nop, Opcode.HALT: Halt, Opcode.SYNC: Sync, Opcode.SETREG: SetReg,
    Opcode.LOOP: Loop, Opcode.EMBED: Embed, Opcode.MATVEC: MatVec, Opcode.MATMAT: MatMat,
    Opcode.REQUANT: Requant, Opcode.NORM: Norm, Opcode.ROPE: Rope, Opcode.KVAPPEND: KVAppend,
    Opcode.SCORES: Scores, Opcode.SOFTMAX: Softmax, Opcode.ATTV: AttV, Opcode.ACT: Act,
    Opcode.ELTWISE: Eltwise, Opcode.ARGMAX: Argmax, Opcode.OUTPUT: Output,
    Opcode.SCORES_SOFTMAX: ScoresSoftmax,
}

_OPCODES = {op.value: op for op in Opcode}


def _fields(layout):
    """``[(name, offset, width, shape, enum_or_None)]`` of a layout."""
    out = []
    for name, f in data.Layout.cast(layout):
        shape = f.shape
        en = shape if isinstance(shape, type) and issubclass(shape, enum.Enum) else None
        s = Shape.cast(shape)
        out.append((name, f.offset, s.width, s, en))
    return out


_FIELDS = {op: _fields(layout) for op, layout in LAYOUTS.items()}
for _op, _layout in LAYOUTS.items():
    assert data.Layout.cast(_layout).size <= WORD_BITS, _op


def kv_append_parts(ins) -> list:
    """``[(kv, first, n)]`` of a ``MATVEC``'s ``kv_append``: the K (``kv`` 0) and/or V (1)
    rows it appends, from result ``first`` on, ``n`` results each (``rows`` split evenly)."""
    kinds = [kv for kv in (0, 1) if ins.kv_append >> kv & 1]
    n = ins.rows // len(kinds) if kinds else 0
    return [(kv, i * n, n) for i, kv in enumerate(kinds)]


def glu_rows(rows: int, lanes: int) -> tuple[list, list]:
    """The weight-matrix rows of a ``glu`` ``MATVEC``'s gates and ups, hidden unit by unit
    (``rows / 2`` units): in blocks of ``lanes`` rows, block ``b`` holds the gates of units
    ``b * lanes/2 .. b * lanes/2 + lanes/2 - 1`` in its first half and their ups in its second
    half; the last block's rows past its units are padding (zero), inside the
    ``ceil(rows / lanes)`` blocks any ``rows``-row matrix occupies."""
    if lanes % 2 or rows % 2:
        raise ISAError(f"glu needs an even rows and lanes, not rows={rows}, lanes={lanes}")
    half = lanes // 2
    gate = [(i // half) * lanes + i % half for i in range(rows // 2)]
    return gate, [g + half for g in gate]


def layout_digest(layouts=None) -> str:
    """CRC-32 (8 hex digits) of every opcode's name, number and fields (name, offset, width,
    signedness) in ``layouts`` (default :data:`LAYOUTS`). The engine's fingerprint carries it,
    so a bitstream built for another instruction set (say, before a field was added, which its
    sequencer would ignore) has another ``CONFIG_HASH`` and the host refuses it on connect
    instead of running programs it would misread."""
    rows = []
    for op, layout in sorted((layouts or LAYOUTS).items(), key=lambda kv: kv[0].value):
        rows.append([op.name, op.value, [[n, o, w, s.signed] for n, o, w, s, _ in
                                         _fields(layout)]])
    return f"{zlib.crc32(json.dumps(rows).encode()):08x}"


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: ``op`` and its fields (enums as their members, the rest as
    ints). Unnamed fields default to 0."""
    op: Opcode
    fields: tuple

    @classmethod
    def make(cls, op: Opcode, **fields) -> "Instruction":
        known = {name for name, *_ in _FIELDS[op] if name != "op"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ISAError(f"{op.name} has no field(s) {', '.join(unknown)}; its fields are "
                           f"{', '.join(sorted(known))}")
        values = {}
        for name, _, width, shape, en in _FIELDS[op]:
            if name == "op":
                continue
            v = fields.get(name, 0 if en is None else en(0))
            if en is not None:
                if not isinstance(v, en):
                    try:
                        v = en(v)
                    except ValueError:
                        raise ISAError(f"{op.name}.{name}={v!r} is not a {en.__name__}; use one "
                                       f"of {', '.join(m.name for m in en)}") from None
            else:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ISAError(f"{op.name}.{name}={v!r} must be an integer")
                lo = -(1 << (width - 1)) if shape.signed else 0
                hi = (1 << (width - 1)) - 1 if shape.signed else (1 << width) - 1
                if not lo <= v <= hi:
                    raise ISAError(f"{op.name}.{name}={v} does not fit its {width}-bit "
                                   f"{'signed' if shape.signed else 'unsigned'} field "
                                   f"({lo}..{hi})")
            values[name] = v
        return cls(op, tuple(values.items()))

    def __getattr__(self, name):
        for k, v in object.__getattribute__(self, "fields"):
            if k == name:
                return v
        raise AttributeError(f"{self.op.name} has no field {name!r}")

    def as_dict(self) -> dict:
        return {"op": self.op.name, **{k: (v.name if isinstance(v, enum.Enum) else v)
                                       for k, v in self.fields}}

    def __str__(self):
        args = ", ".join(f"{k}={v.name if isinstance(v, enum.Enum) else v}"
                         for k, v in self.fields)
        return f"{self.op.name} {args}".rstrip()


def encode(instr: Instruction) -> int:
    """The 128-bit word of ``instr``."""
    word = 0
    values = dict(instr.fields)
    for name, offset, width, shape, en in _FIELDS[instr.op]:
        v = instr.op if name == "op" else values[name]
        if en is not None:
            v = v.value
        word |= (v & ((1 << width) - 1)) << offset
    return word


def decode(word: int) -> Instruction:
    """The instruction of a 128-bit word; :class:`ISAError` on an unknown opcode or stray
    bits beyond the layout."""
    if not isinstance(word, int) or not 0 <= word < (1 << WORD_BITS):
        raise ISAError(f"instruction word {word!r} is not a {WORD_BITS}-bit unsigned integer")
    code = word & 0x3F
    if code not in _OPCODES:
        raise ISAError(f"unknown opcode {code} in instruction word {word:#034x}; known: "
                       f"{', '.join(f'{o.value}={o.name}' for o in Opcode)}")
    op = _OPCODES[code]
    size = data.Layout.cast(LAYOUTS[op]).size
    if word >> size:
        raise ISAError(f"{op.name} word {word:#034x} has bits set beyond its {size}-bit layout")
    values = {}
    for name, offset, width, shape, en in _FIELDS[op]:
        if name == "op":
            continue
        v = (word >> offset) & ((1 << width) - 1)
        if shape.signed and v >> (width - 1):
            v -= 1 << width
        if en is not None:
            try:
                v = en(v)
            except ValueError:
                raise ISAError(f"{op.name}.{name}={v} is not a {en.__name__} in word "
                               f"{word:#034x}") from None
        values[name] = v
    return Instruction(op, tuple(values.items()))


def encode_program(program) -> list[int]:
    """Words of a list of :class:`Instruction`."""
    return [encode(i) for i in program]


def decode_program(words) -> list[Instruction]:
    """Instructions of a list of words; errors name the bad word's index."""
    out = []
    for n, w in enumerate(words):
        try:
            out.append(decode(w))
        except ISAError as e:
            raise ISAError(f"program word {n}: {e}") from None
    return out


def markdown() -> str:
    """The ISA reference (``docs/isa.md``), generated from the layouts above."""
    import inspect
    lines = ["# Transformer engine instruction set", "",
             "Generated from `hdlgen/engine/isa.py` by `python -m hdlgen.engine.isa`; do not "
             "edit by hand.", ""]
    doc = inspect.getdoc(__import__(__name__, fromlist=["x"]))
    lines += [doc, ""]
    lines += ["## Enumerations", ""]
    for en in (Opcode, Reg, Func, EltOp, NormKind, Width):
        lines += [f"### {en.__name__} ({Shape.cast(en).width} bits)", "",
                  "| name | value |", "|---|---|"]
        lines += [f"| `{m.name}` | {m.value} |" for m in en]
        lines.append("")
    lines += ["## Instructions", ""]
    for op, layout in LAYOUTS.items():
        size = data.Layout.cast(layout).size
        lines += [f"### {op.name} (opcode {op.value}, {size} bits used)", "",
                  " ".join(inspect.getdoc(layout).split()), "",
                  "| field | bits | type |", "|---|---|---|"]
        for name, offset, width, shape, en in _FIELDS[op]:
            kind = en.__name__ if en is not None else ("signed" if shape.signed else "unsigned")
            bits = f"{offset}" if width == 1 else f"{offset + width - 1}:{offset}"
            lines.append(f"| `{name}` | {bits} | {kind}({width}) |" if en is None
                         else f"| `{name}` | {bits} | {kind} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _main():
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "docs" / "isa.md"
    path.write_text(markdown())
    print(f"wrote {path}")


if __name__ == "__main__":
    _main()
