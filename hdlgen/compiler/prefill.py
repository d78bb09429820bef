"""Prefill programs: a chunk of up to ``lanes`` prompt tokens in one job, the projections run as
``MATMAT`` tiles.

The decode program (:func:`hdlgen.compiler.compile_model`) processes one token at ``POS``. A
prefill program is derived from it instruction by instruction:

* every scratchpad buffer of one token (``x``, ``xb``, ``q``, ``kv`` (or ``k`` and ``v``
  without ``fuse_kv``), ``att``, ``hb``, ``hb2``, ``hh``) gets a *prefill* copy of ``tokens`` rows (:func:`with_prefill` adds them to
  the scratchpad: buffer ``prefill_<name>``, row ``t`` at ``t * n``); ``probs``, ``logits``
  and ``scores`` (only an unfused program, ``fuse_softmax=False``, has it) stay shared (each
  token's attention uses them and is done with them);
* a ``MATVEC`` with an int8 input, one weight plane, no ``accumulate``, whose input and output
  are whole buffers becomes one ``MATMAT`` of all the chunk's tokens (rows of the prefill
  copies are exactly ``cols`` and ``rows`` apart);
* a tiled ``MATVEC`` with ``rope_heads`` (q and k) or ``kv_append`` (k and v) is followed by
  each token's ``ROPE`` of those heads and ``KVAPPEND`` of those rows (a tile has neither on
  its way out);
* every other instruction runs once per token on the token's rows, in runs of consecutive
  per-token instructions (token 0's run, then token 1's...), each run preceded by ``SETREG
  POS`` (and ``SETREG TOKEN`` before ``EMBED``) when it needs them: token ``t`` sits at
  position ``pos + t``, its key and value are appended before its scores are taken, so
  causality is that of ``t`` decode steps;
* after the layer loop, the final norm, classifier, ``ARGMAX`` and ``OUTPUT`` run for the last
  token only (its prediction is the next token).

With int8 inputs a ``MATMAT`` tile equals ``tokens`` ``MATVEC`` bit for bit (same products,
same requantization), so the prefill program leaves the KV cache, every token's residual
stream and the last token's logits exactly as ``tokens`` decode steps do
(``tests/test_engine_matmat.py`` checks it on the golden model and on the RTL). It saves the
per-instruction overhead of the projections and reads every weight once per chunk instead of
once per token.

The engine needs a tile buffer for the longest ``MATMAT`` input and a program memory for the
longest prefill program: :func:`with_prefill` records both in ``manifest["prefill"]``, which
:class:`hdlgen.engine.core.Engine` reads.
"""

import dataclasses

from hdlgen.engine.isa import Instruction, Opcode, Reg, Width, kv_append_parts
from hdlgen.errors import UserError

__all__ = ["with_prefill", "prefill_program", "SHARED_BUFFERS"]

#: Buffers every token's instructions share (used and done with inside one token's run);
#: a program need not have all of them (``scores`` exists only without ``fuse_softmax``).
SHARED_BUFFERS = ("scores", "probs", "logits")

# scratchpad-address fields of each opcode
_ADDR_FIELDS = {
    Opcode.EMBED: ("dst",), Opcode.MATVEC: ("src", "dst"), Opcode.REQUANT: ("src", "dst"),
    Opcode.NORM: ("src", "dst"), Opcode.ROPE: ("src", "dst"), Opcode.KVAPPEND: ("src",),
    Opcode.SCORES: ("q", "dst"), Opcode.SOFTMAX: ("src", "dst"), Opcode.ATTV: ("p", "dst"),
    Opcode.SCORES_SOFTMAX: ("q", "dst"),
    Opcode.ACT: ("src", "dst"), Opcode.ELTWISE: ("a", "b", "dst"), Opcode.ARGMAX: ("src",),
    Opcode.OUTPUT: ("src",),
}
_NEEDS_POS = (Opcode.ROPE, Opcode.KVAPPEND, Opcode.SCORES, Opcode.SOFTMAX, Opcode.ATTV,
              Opcode.SCORES_SOFTMAX)


def _per_token(buffers: dict) -> dict:
    return {name: an for name, an in buffers.items()
            if name not in SHARED_BUFFERS and not name.startswith("prefill_")}


def with_prefill(compiled, tokens: int):
    """A copy of ``compiled`` whose scratchpad also holds the prefill buffers for chunks of up
    to ``tokens`` tokens (``2 <= tokens <= lanes``), with ``manifest["prefill"]`` = ``{"tokens",
    "matmat_cols", "program_words"}`` for the engine's generation."""
    lanes = compiled.image.lanes
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 2 <= tokens <= lanes:
        raise UserError(f"prefill tokens={tokens!r}: a MATMAT tile holds 2..lanes={lanes} tokens")
    if compiled.image.ext:
        raise UserError(f"prefill needs the default scheme (int8 weight bank); this model uses "
                        f"the extensions {compiled.image.ext}")
    buffers = {k: v for k, v in compiled.buffers.items() if not k.startswith("prefill_")}
    top = compiled.image.act_elements
    for name, (_, n) in _per_token(buffers).items():
        buffers[f"prefill_{name}"] = (top, tokens * n)
        top += tokens * n
    if top > 1 << 16:
        raise UserError(f"the scratchpad with prefill buffers for {tokens} tokens needs {top} "
                        f"elements, beyond the 16-bit addresses; use fewer tokens")
    image = dataclasses.replace(compiled.image, act_elements=top)
    out = dataclasses.replace(compiled, image=image, buffers=buffers,
                              manifest=dict(compiled.manifest))
    prog = prefill_program(out, [0] * tokens, 0)
    cols = [i.cols for i in prog if i.op == Opcode.MATMAT]
    out.manifest["prefill"] = {"tokens": tokens, "matmat_cols": max(cols, default=0),
                               "program_words": len(prog)}
    return out


def prefill_program(compiled, tokens, pos: int) -> list:
    """The program that runs prompt ``tokens`` at positions ``pos .. pos + len(tokens) - 1``
    in one job (``compiled`` from :func:`with_prefill`; start the job with any ``TOKEN`` and
    ``POS = pos``). ``RESULT`` is then the prediction after the last token."""
    buffers = compiled.buffers
    if "prefill_x" not in buffers:
        raise UserError("this compiled model has no prefill buffers: use with_prefill(compiled, "
                        "tokens) first")
    per_tok = _per_token(buffers)
    T = buffers["prefill_x"][1] // per_tok["x"][1]
    tokens = [int(t) for t in tokens]
    if not 1 <= len(tokens) <= T:
        raise UserError(f"{len(tokens)} tokens: a prefill chunk holds 1..{T} (with_prefill)")
    if pos < 0 or pos + len(tokens) > compiled.image.context:
        raise UserError(f"positions {pos}..{pos + len(tokens) - 1} are beyond the context of "
                        f"{compiled.image.context}: start at a position >= 0 and give at most "
                        f"{compiled.image.context - max(pos, 0)} tokens from there")
    n_tok = len(tokens)
    spans = [(name, a, n) for name, (a, n) in per_tok.items()]

    def where(addr):
        for name, a, n in spans:
            if a <= addr < a + n:
                return name, addr - a
        return None, None

    def moved(ins, t):
        fields = dict(ins.fields)
        for f in _ADDR_FIELDS.get(ins.op, ()):
            name, off = where(fields[f])
            if name is not None:
                fields[f] = buffers[f"prefill_{name}"][0] + t * per_tok[name][1] + off
        return Instruction.make(ins.op, **fields)

    def tile(ins):
        """The MATMAT for a MATVEC, or None when it has to run token by token."""
        if ins.op != Opcode.MATVEC or n_tok < 2:
            return None
        if ins.in_width != Width.W8 or ins.w_planes != 1 or ins.accumulate:
            return None
        src, s_off = where(ins.src)
        dst, d_off = where(ins.dst)
        if (src is None or dst is None or s_off or d_off or per_tok[src][1] != ins.cols
                or per_tok[dst][1] != ins.rows):
            return None
        return Instruction.make(Opcode.MATMAT, out_width=ins.out_width, layer_rel=ins.layer_rel,
                                bias=ins.bias, tokens=n_tok,
                                src=buffers[f"prefill_{src}"][0],
                                dst=buffers[f"prefill_{dst}"][0], waddr=ins.waddr,
                                rows=ins.rows, cols=ins.cols, paddr=ins.paddr)

    def unfused(ins):
        """The ``ROPE`` and ``KVAPPEND`` instructions that do what a tiled ``MATVEC``'s
        ``rope_heads`` and ``kv_append`` did."""
        out, hs = [], compiled.image.head_size
        if ins.rope_heads:
            at, _ = compiled.image.rope_table()
            out.append(Instruction.make(Opcode.ROPE, width=ins.out_width, src=ins.dst,
                                        dst=ins.dst, n_heads=ins.rope_heads, head_size=hs,
                                        paddr=at))
        for kv, first, n in kv_append_parts(ins):
            out.append(Instruction.make(Opcode.KVAPPEND, kv=kv, src=ins.dst + first,
                                        kv_heads=n // hs, head_size=hs))
        return out

    def emit(seq, token_range, tiles=True):
        """``seq`` (decode instructions) for the tokens of ``token_range``: tiles alone (if
        ``tiles``), runs of per-token instructions token by token."""
        out, run = [], []

        def flush():
            for t in token_range:
                if any(i.op in _NEEDS_POS or (i.op == Opcode.EMBED and i.index_reg == Reg.POS)
                       or (i.op == Opcode.MATVEC and (i.rope_heads or i.kv_append))
                       for i in run):
                    out.append(Instruction.make(Opcode.SETREG, reg=Reg.POS, value=pos + t))
                if any(i.op == Opcode.EMBED and i.index_reg == Reg.TOKEN for i in run):
                    out.append(Instruction.make(Opcode.SETREG, reg=Reg.TOKEN, value=tokens[t]))
                out.extend(moved(i, t) for i in run)
            run.clear()

        for ins in seq:
            if ins.op not in _ADDR_FIELDS and ins.op != Opcode.NOP:
                raise UserError(f"prefill cannot derive {ins} (only straight-line decode "
                                f"instructions inside and around one LOOP)")
            mm = tile(ins) if tiles else None
            if mm is not None:
                flush()
                out.append(mm)
                run.extend(unfused(ins))    # (a tile has no RoPE or KV append)
            elif ins.op != Opcode.NOP:
                run.append(ins)
        flush()
        return out

    prog = list(compiled.program)
    if prog[-1].op != Opcode.HALT:
        raise UserError("the decode program does not end with HALT")
    prog = prog[:-1]
    loops = [n for n, i in enumerate(prog) if i.op == Opcode.LOOP]
    if len(loops) > 1:
        raise UserError("prefill derives programs with at most one LOOP")
    everyone = range(n_tok)
    if loops:
        n = loops[0]
        lp = prog[n]
        head, body, tail = prog[:n], prog[n + 1:n + 1 + lp.body], prog[n + 1 + lp.body:]
        new_body = emit(body, everyone)
        if len(new_body) >= 1 << 12:
            raise UserError(f"the prefill layer body has {len(new_body)} instructions, more "
                            f"than LOOP's 4095; use fewer tokens")
        out = emit(head, everyone)
        out.append(Instruction.make(Opcode.LOOP, count=lp.count, body=len(new_body),
                                    wstride=lp.wstride, pstride=lp.pstride))
        out += new_body
        out += emit(tail, [n_tok - 1], tiles=False)
    else:
        out = emit(prog, everyone)
    return out + [Instruction.make(Opcode.HALT)]
