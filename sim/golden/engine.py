"""Integer golden model of the transformer engine: executes a program
(:mod:`hdlgen.engine.isa`) on a memory image (:class:`hdlgen.compiler.image.MemoryImage`)
exactly as the hardware does, by composing the block golden models of :mod:`sim.golden` (MAC
array, requantizer, norm, RoPE, KV cache, softmax, activation, element-wise, argmax). It
defines the accelerator's output bit for bit; every instruction's result can be captured with
a trace hook ``trace(pc, layer, instr, values)``.

The engine's own glue, besides moving data between memories, is one piece of arithmetic: the
**pass combiner** between the MAC array and the requantizer. The MAC-array model multiplies
int8 by int8; a 16-bit operand is fed as int8 planes and the per-pass accumulators are
combined exactly, ``acc = sum(factor_p * acc_p)`` wrapped to ``acc_width`` bits. For a 16-bit
shared operand ``x`` the planes are ``lo = ((x + 128) & 255) - 128`` (factor 1) and
``hi = (x - lo) >> 8`` (factor 256; when ``hi`` reaches 128, for ``x >= 32640``, it is fed as
127 plus a carry plane of 0/1 with factor 256); for a 16-bit weight the compiler stores the
high and low planes (``256 * hi + lo``). The result equals the exact dot product, which is
what a MAC array with a 16-bit shared operand (MULT18X18D: 18 x 18 signed) computes in one
pass: an RTL engine using either form is bit-exact with this model.

Extensions (``image.ext``, empty by default; each needs an RTL change, see
:mod:`hdlgen.compiler.compile`): a scheme the compiler emits only on request and the RTL engine
does not run yet. The instruction encoding is unchanged; the image says how to read it.

* ``"norm_out_bits": 16``: ``NORM`` writes int16: the norm blocks' integer definition
  (:mod:`sim.golden.norm`) with the final clamp at ``-32768..32767`` instead of
  ``-128..127`` (same rounding, same guard bits).
* ``"kv_bits": 9``: the KV cache holds int9 rows. ``KVAPPEND`` reads its source as int16
  and saturates each element to ``-256..255`` (the compiler writes ``k``/``v`` as 16-bit
  ``MATVEC``/``ROPE`` outputs on the 9-bit grid); ``SCORES`` and ``ATTV`` multiply int9
  cache rows exactly (a 9-bit per-lane operand).
* ``"weight_exp": 1``: the weight bank holds int8 values ``q`` plus one shift bit ``s`` per
  lane and bank row (the ``macs_per_lane`` weights one lane reads in one beat); the weight is
  ``q << s`` (int9 range, even where ``s = 1``). The image holds the weights ``q << s``; this
  model checks each lane slice is representable and multiplies them like ``weight_bits`` 9.
  A bank row is ``8 * lanes * macs_per_lane + lanes`` bits.
* ``"planes_x16": 1``: ``MATVEC`` of a two-plane weight (``w_planes`` 2) with a 16-bit input
  runs every weight plane against every input plane (four passes, six with carry planes),
  combined as always. The compiler uses it for 11-bit weights (``|w| <= 1023`` as two
  planes) on matrices of at most 64 inputs, whose dot products stay within int32
  (``1023 * 32768 * 64 < 2**31``).
* ``"weight_bits": 9``: the weight bank holds int9 weights (``-256..255``, one plane; the
  bank row is ``lanes * macs_per_lane`` 9-bit values). A product is exact and the dot
  product is the exact sum wrapped to ``acc_width`` as before; this model computes it as two
  int8 planes of the weight (``lo = ((w + 128) & 255) - 128``, ``hi = (w - lo) >> 8``,
  factor 256), which equals a MAC array with a 9-bit per-lane operand (one MULT18X18D per
  product). With 16-bit shared operands any dot product of up to 256 elements stays within
  int32 (``256 * 32768 * 256 = 2**31``, reached only by ``-256 * -32768`` in every term).

``SCORES_SOFTMAX`` computes each head's scores exactly as ``SCORES`` and its probabilities
exactly as ``SOFTMAX`` of those scores, and writes only the probabilities (at ``dst``): the
scores never reach the scratchpad, so a program using it leaves a ``SCORES`` destination
untouched (the RTL does the same; the whole scratchpad is compared after each step). Its trace
values are the probabilities, one row per head.

Errors: a bad program (unknown opcode, a region outside a memory, a missing ``HALT``, a nested
``LOOP``) and a position at or beyond the KV cache's context raise :class:`EngineError`
naming the instruction and the value, and, where it is known, the RTL's error code
(:attr:`EngineError.code`). An 8-bit operand of the MAC array (the input of a ``MATVEC``
with ``in_width`` 8, every ``MATMAT`` input, an 8-bit ``SCORES`` query), of ``KVAPPEND``
(int8 KV cache) and of an 8-bit ``ROPE`` must be int8, and ``ATTV``'s probabilities unsigned
``prob_bits`` wide: an element outside that range is refused with ``INPUT_RANGE`` (the RTL
ends the job with it instead of computing on a truncated or wider value), after the
instruction's region checks, as in the RTL. (8-bit ``ACT`` and ``ELTWISE`` operands outside
int8 are refused too, without a code: the RTL does not check them.)
"""

from dataclasses import dataclass

import numpy as np

from hdlgen.engine.isa import (GLU_MAX_COLS, EltOp, Func, Instruction, ISAError, NormKind,
                               Opcode, Reg, Width, decode_program, glu_rows, kv_append_parts)
from hdlgen.errors import UserError
from sim.golden.activation import activation
from sim.golden.argmax import argmax_packets
from sim.golden.eltwise import residual_add, swiglu
from sim.golden.kv_cache import KVCacheModel
from sim.golden.mac_array import Beat, mac_array_model, matmat_beats, reference_matvec, wrap
from sim.golden.norm import NormParams, norm_golden
from sim.golden.requant import requantize
from sim.golden.rope import rope
from sim.golden.softmax import softmax_golden

__all__ = ["Engine", "EngineError", "StepResult", "shared_planes", "norm_wide", "EXTENSIONS"]

_FUNC = {Func.SILU: "silu", Func.GELU: "gelu", Func.GELU_TANH: "gelu_tanh", Func.RELU: "relu"}


_LAYER_REL = (Opcode.MATVEC, Opcode.MATMAT, Opcode.NORM, Opcode.SCORES, Opcode.SCORES_SOFTMAX,
              Opcode.ATTV, Opcode.ACT, Opcode.ELTWISE)
_SCORES = (Opcode.SCORES, Opcode.SCORES_SOFTMAX)


class EngineError(UserError):
    """A program or memory image the engine cannot run, or a step it refuses.

    Attributes
    ----------
    code : str or None
        Where the model names it, the :class:`hdlgen.engine.core.ErrorCode` (its name, e.g.
        ``"INPUT_RANGE"``) the RTL engine ends the job with for the same refusal.
    """

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StepResult:
    """Result of one decode step.

    Attributes
    ----------
    token : int
        ``RESULT`` register: the argmax next-token id.
    value : int
        The largest logit (integer).
    logits : numpy.ndarray of int64 or None
        What ``OUTPUT`` copied out (the integer logits), if the program has one.
    instructions : int
        Instructions executed.
    """
    token: int
    value: int
    logits: np.ndarray
    instructions: int


def shared_planes(x) -> list:
    """int8 planes ``[(factor, plane)]`` of 16-bit values ``x`` with
    ``x == sum(factor * plane)`` (see the module docstring)."""
    x = np.asarray(x, dtype=np.int64)
    if x.size and (x.min() < -32768 or x.max() > 32767):
        raise ValueError("shared operand outside int16")
    lo = ((x + 128) & 255) - 128
    hi = (x - lo) >> 8
    planes = [(256, np.minimum(hi, 127))]
    carry = hi - planes[0][1]
    if carry.any():
        planes.append((256, carry))
    planes.append((1, lo))
    return planes


#: Image extensions and their allowed values (the first is the default: the RTL's behaviour).
EXTENSIONS = {"norm_out_bits": (8, 16), "kv_bits": (8, 9), "weight_bits": (8, 9),
              "weight_exp": (0, 1), "planes_x16": (0, 1)}


def _check_ext(ext) -> dict:
    ext = dict(ext or {})
    for k, v in ext.items():
        if k not in EXTENSIONS or v not in EXTENSIONS[k]:
            allowed = "; ".join(f"{n} in {vals}" for n, vals in EXTENSIONS.items())
            raise EngineError(f"image extension {k}={v!r} is not known: use {allowed}")
    return {k: ext.get(k, vals[0]) for k, vals in EXTENSIONS.items()}


def _int8_planes(m) -> list:
    """``[(factor, plane)]`` int8 planes of a signed matrix within int16 (``256 * hi + lo``)."""
    m = np.asarray(m, dtype=np.int64)
    if m.size == 0 or (m.min() >= -128 and m.max() <= 127):
        return [(1, m)]
    lo = ((m + 128) & 255) - 128
    return [(256, (m - lo) >> 8), (1, lo)]


def norm_wide(p: NormParams, x, gamma, beta=None, out_bits: int = 16) -> np.ndarray:
    """:func:`sim.golden.norm.norm_golden` with the output clamped to ``out_bits`` (signed)
    instead of int8: the ``norm_out_bits`` extension."""
    return norm_golden(p, x, gamma, beta, out_bits)


def _s16(words) -> np.ndarray:
    w = np.asarray(words, dtype=np.int64) & 0xFFFF
    return np.where(w >= 0x8000, w - 0x10000, w)


def _s32(words) -> np.ndarray:
    w = np.asarray(words, dtype=np.int64) & 0xFFFFFFFF
    return np.where(w >= 0x80000000, w - 0x100000000, w)


class Engine:
    """The integer golden model of the engine.

    Parameters
    ----------
    image : MemoryImage
        Memory contents (:class:`hdlgen.compiler.image.MemoryImage`).
    program : list of Instruction or of int
        Instructions, or 128-bit words (decoded here).
    acc_width : int
        MAC-array accumulator width.
    trace : callable, optional
        ``trace(pc, layer, instr, values)`` after every instruction that writes a tensor
        (``values``: what it wrote; for attention instructions an array per head).
    mac : str
        ``"beats"`` (default): every dot product is fed beat by beat through
        :func:`sim.golden.mac_array.mac_array_model`; ``"reference"``: the MAC array model's
        stated equivalent, :func:`sim.golden.mac_array.reference_matvec` wrapped to
        ``acc_width`` (identical results, much faster; for long accuracy runs).
    """

    def __init__(self, image, program, *, acc_width: int = 32, trace=None, mac: str = "beats"):
        if mac not in ("beats", "reference"):
            raise EngineError(f"mac={mac!r}: use 'beats' or 'reference'")
        self.mac = mac
        self._mcache = {}
        self.image = image
        if program and not isinstance(program[0], Instruction):
            try:
                program = decode_program(list(program))
            except ISAError as e:
                raise EngineError(f"bad program: {e}") from None
        self.program = list(program)
        if not self.program or self.program[-1].op != Opcode.HALT:
            raise EngineError("bad program: it must end with HALT (the sequencer would run off "
                              "the end of the program memory)")
        self.acc_width = acc_width
        self.trace = trace
        self.lanes, self.K = image.lanes, image.macs_per_lane
        if image.weights.ndim != 2 or image.weights.shape[1] != self.lanes * self.K:
            raise EngineError(f"weight bank rows are {image.weights.shape[1:]} bytes, expected "
                              f"lanes*macs_per_lane={self.lanes * self.K}")
        self.ext = _check_ext(getattr(image, "ext", None))
        self._wbank = image.weights.astype(np.int64).reshape(-1, self.lanes, self.K)
        wb = 9 if self.ext["weight_exp"] else self.ext["weight_bits"]
        if self._wbank.size and (self._wbank.min() < -(1 << (wb - 1))
                                 or self._wbank.max() >= 1 << (wb - 1)):
            raise EngineError(f"weight bank values {self._wbank.min()}..{self._wbank.max()} "
                              f"are outside int{wb} (image ext {self.ext})")
        if self.ext["weight_exp"]:
            fine = np.all((self._wbank >= -128) & (self._wbank <= 127), axis=-1)
            even = np.all(self._wbank % 2 == 0, axis=-1)
            bad = np.argwhere(~(fine | even))
            if bad.size:
                r, l = bad[0]
                raise EngineError(f"weight bank row {r}, lane {l}: {self._wbank[r, l].tolist()} "
                                  f"is neither int8 nor an int8 shifted left by one (ext "
                                  f"weight_exp: q << s with one s per lane and row)")
        self._wplanes = None
        if wb > 8:
            lo = ((self._wbank + 128) & 255) - 128
            self._wplanes = [(256, (self._wbank - lo) >> 8), (1, lo)]
        self._params = np.asarray(image.params, dtype=np.int64)
        self._check_tables()
        hs = image.head_size
        beat = max(b for b in (8, 4, 2, 1) if hs % b == 0)
        self._kv_args = dict(layers=image.kv_layers, kv_heads=image.kv_heads, head_dim=hs,
                             beat_bytes=beat, context_length=image.context)
        self._norms = {}
        self.reset()

    # ---- state --------------------------------------------------------------------------------
    def reset(self):
        """Empty KV cache and scratchpad (a new sequence)."""
        self.kv = KVCacheModel(**self._kv_args)
        im = self.image
        self._kv_wide = None
        if self.ext["kv_bits"] > 8:        # int9 rows: [layer, head, k/v, position, element]
            self._kv_wide = np.zeros((im.kv_layers, im.kv_heads, 2, im.context, im.head_size),
                                     dtype=np.int64)
        self.act = np.zeros(self.image.act_elements, dtype=np.int64)
        self.regs = {r: 0 for r in Reg}
        self.output = None

    def _check_tables(self):
        from hdlgen.compiler.image import act_table_words, rope_table_words
        for addr, d in self.image.tables.items():
            if d["kind"] == "rope":
                words, at = rope_table_words(d["context"], d["head_size"], d["theta"]), addr
            elif d["kind"] == "act":
                words, at = act_table_words(d["func"], d["in_bits"], d["out_bits"],
                                            d["in_scale"], d["out_scale"]), addr
            elif d["kind"] == "swiglu":
                words, at = act_table_words("silu", d["a_bits"], 16, d["a_scale"],
                                            d["silu_scale"]), d["table"]
            else:
                raise EngineError(f"table at parameter word {addr}: unknown kind {d['kind']!r}")
            got = self._params[at:at + len(words)]
            if len(got) != len(words) or np.any(got != words):
                raise EngineError(f"{d['kind']} table at parameter word {at} does not match its "
                                  f"descriptor {d}: the memory image is corrupt")

    # ---- memory access with bounds checks -----------------------------------------------------
    def _err(self, msg, code=None):
        raise EngineError(f"instruction {self._pc} ({self._instr}): {msg}", code)

    def _span(self, addr, n):
        if addr < 0 or n < 0 or addr + n > len(self.act):
            self._err(f"scratchpad region {addr}..{addr + n - 1} is outside the scratchpad of "
                      f"{len(self.act)} elements", "SCRATCH_RANGE")

    def _int8_input(self, x, addr):
        """Refuse an 8-bit MAC operand ``x`` (read at ``addr``) with an element outside int8."""
        bad = np.nonzero((x < -128) | (x > 127))[0]
        if bad.size:
            i = int(bad[0])
            self._err(f"scratchpad element {addr + i} = {int(x[i])} is outside int8 "
                      f"(-128..127), the range of this 8-bit input: use a 16-bit input or "
                      f"requantize it to int8 first", "INPUT_RANGE")

    def _read(self, addr, n, bits=16, unsigned=False):
        self._span(addr, n)
        v = self.act[addr:addr + n].copy()
        lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        if v.size and (v.min() < lo or v.max() > hi):
            self._err(f"scratchpad values at {addr}..{addr + n - 1} are outside the "
                      f"{'unsigned' if unsigned else 'signed'} {bits}-bit range of this operand")
        return v

    def _write(self, addr, values):
        values = np.asarray(values, dtype=np.int64)
        self._span(addr, values.size)
        self.act[addr:addr + values.size] = values.reshape(-1)

    def _pwords(self, addr, n):
        if addr < 0 or n < 0 or addr + n > len(self._params):
            self._err(f"parameter region {addr}..{addr + n - 1} is outside the parameter memory "
                      f"of {len(self._params)} words", "PARAM_RANGE")
        return self._params[addr:addr + n]

    def _requant_params(self, addr, n):
        w = self._pwords(addr, n)
        return w & 0xFFFF, (w >> 16) & 0x3F

    def _wrows(self, waddr, rows, cols):
        ob_n, ib_n = -(-rows // self.lanes), -(-cols // self.K)
        if waddr < 0 or waddr + ob_n * ib_n > len(self._wbank):
            self._err(f"weight region rows {waddr}..{waddr + ob_n * ib_n - 1} is outside the "
                      f"weight bank of {len(self._wbank)} rows", "WEIGHT_RANGE")
        return ob_n, ib_n

    def _matrix(self, waddr, rows, cols, bank=None) -> np.ndarray:
        """The int8 (int9 with ``weight_bits`` 9) matrix ``[rows, cols]`` stored at ``waddr``
        (for row reads)."""
        ob_n, ib_n = self._wrows(waddr, rows, cols)
        bank = self._wbank if bank is None else bank
        blk = bank[waddr:waddr + ob_n * ib_n].reshape(ob_n, ib_n, self.lanes, self.K)
        return blk.transpose(0, 2, 1, 3).reshape(ob_n * self.lanes, ib_n * self.K)[:rows, :cols]

    # ---- the MAC array ------------------------------------------------------------------------
    def _bank_matvec(self, waddr, rows, cols, x8):
        """``W @ x8`` through the MAC-array model, beats read straight from the weight bank
        (a wide bank, ``weight_bits`` 9, as its exact int8 planes)."""
        if self._wplanes is not None:
            return self._combine([(f, self._plane_matvec(bank, waddr, rows, cols, x8, i))
                                  for i, (f, bank) in enumerate(self._wplanes)])
        return self._plane_matvec(self._wbank, waddr, rows, cols, x8, 0)

    def _plane_matvec(self, bank, waddr, rows, cols, x8, tag):
        if self.mac == "reference":
            key = (waddr, rows, cols, tag)
            if key not in self._mcache:
                self._mcache[key] = self._matrix(waddr, rows, cols, bank)
            return wrap(reference_matvec(self._mcache[key], x8), self.acc_width)
        ob_n, ib_n = self._wrows(waddr, rows, cols)
        xp = np.zeros(ib_n * self.K, dtype=np.int64)
        xp[:cols] = x8
        beats = []
        for ob in range(ob_n):
            for ib in range(ib_n):
                beats.append(Beat(xp[ib * self.K:(ib + 1) * self.K],
                                  bank[waddr + ob * ib_n + ib], ib == 0, ib == ib_n - 1))
        out = mac_array_model(beats, self.lanes, self.K, self.acc_width)
        return np.concatenate(out)[:rows]

    def _combine(self, parts):
        acc = np.zeros_like(parts[0][1])
        for f, a in parts:
            acc = acc + f * a
        return wrap(acc, self.acc_width)

    def _matvec(self, waddr, rows, cols, x, in_bits, w_planes):
        xs = shared_planes(x) if in_bits == 16 else [(1, x)]
        ws = [(1, waddr)] if w_planes == 1 else \
            [(256, waddr), (1, waddr + int(np.prod(self._wrows(waddr, rows, cols))))]
        if w_planes == 2 and in_bits == 16 and not self.ext["planes_x16"]:
            self._err("a 16-bit weight needs an 8-bit input (a 16 x 16 product does not fit "
                      "the accumulator; image ext planes_x16 runs the four to six passes)")
        parts = [(fx * fw, self._bank_matvec(a, rows, cols, p)) for fw, a in ws for fx, p in xs]
        return self._combine(parts)

    def _small_matvec(self, M, x, in_bits):
        """``M @ x`` for an int8 matrix held outside the weight bank (KV-cache rows): the same
        beats as :func:`sim.golden.mac_array.matvec_beats` (rows on the lanes, ``x`` shared,
        zero padding), built with array slicing."""
        xs = shared_planes(x) if in_bits == 16 else [(1, x)]
        rows, cols = M.shape
        ob_n, ib_n = -(-rows // self.lanes), -(-cols // self.K)
        parts = []
        for fm, Mpl in _int8_planes(M):      # int9 KV rows: exact int8 planes
            parts += [(fm * f, a) for f, a in self._small_planes(Mpl, xs, ob_n, ib_n)]
        return self._combine(parts)

    def _small_planes(self, M, xs, ob_n, ib_n):
        rows, cols = M.shape
        Mp = np.zeros((ob_n * self.lanes, ib_n * self.K), dtype=np.int64)
        Mp[:rows, :cols] = M
        parts = []
        for f, p in xs:
            if self.mac == "reference":
                parts.append((f, wrap(reference_matvec(M, p), self.acc_width)))
                continue
            xp = np.zeros(ib_n * self.K, dtype=np.int64)
            xp[:cols] = p
            beats = [Beat(xp[ib * self.K:(ib + 1) * self.K],
                          Mp[ob * self.lanes:(ob + 1) * self.lanes, ib * self.K:(ib + 1) * self.K],
                          ib == 0, ib == ib_n - 1)
                     for ob in range(ob_n) for ib in range(ib_n)]
            out = mac_array_model(beats, self.lanes, self.K, self.acc_width)
            parts.append((f, np.concatenate(out)[:rows]))
        return parts

    # ---- execution ----------------------------------------------------------------------------
    def step(self, token: int, pos: int) -> StepResult:
        """One decode step: ``TOKEN = token``, ``POS = pos``, run to ``HALT``."""
        ctx = self.image.context
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or pos < 0:
            raise EngineError(f"position {pos!r} must be a non-negative integer")
        if pos >= ctx:
            raise EngineError(f"position {pos} is beyond the KV cache's context of {ctx} "
                              f"positions (0..{ctx - 1}); compile with a longer context or "
                              f"start a new sequence", "POS_RANGE")
        self.regs[Reg.TOKEN] = int(token)
        self.regs[Reg.POS] = int(pos)
        self.output = None
        prog = self.program
        pc, count = 0, 0
        loop = None     # (start, end, count)
        wbase = pbase = 0
        while True:
            if pc >= len(prog):
                raise EngineError(f"program counter {pc} ran past the end of the program")
            ins = prog[pc]
            self._pc, self._instr = pc, ins
            count += 1
            if count > 10_000_000:
                raise EngineError("program does not halt")
            op = ins.op
            if op == Opcode.HALT:
                break
            if op == Opcode.LOOP:
                if loop is not None:
                    self._err("LOOP inside a LOOP body: loops do not nest")
                if ins.count == 0 or ins.body == 0 or pc + ins.body >= len(prog):
                    self._err(f"LOOP count={ins.count} body={ins.body} is empty or runs past the "
                              f"end of the program ({len(prog)} instructions)")
                loop = (pc + 1, pc + ins.body, ins.count, ins.wstride, ins.pstride)
                self.regs[Reg.LAYER] = 0
                wbase = pbase = 0
                pc += 1
                continue
            self._exec(ins, wbase, pbase, pc)
            if loop is not None and pc == loop[1]:
                self.regs[Reg.LAYER] += 1
                if self.regs[Reg.LAYER] < loop[2]:
                    wbase += loop[3]
                    pbase += loop[4]
                    pc = loop[0]
                    continue
                loop = None
                wbase = pbase = 0
            pc += 1
        return StepResult(token=int(self.regs[Reg.RESULT]), value=int(self.regs[Reg.RESULT_VALUE]),
                          logits=None if self.output is None else self.output.copy(),
                          instructions=count)

    def _emit(self, pc, ins, values):
        if self.trace is not None:
            self.trace(pc, int(self.regs[Reg.LAYER]), ins, np.array(values, copy=True))

    def _exec(self, ins, wbase, pbase, pc):
        op = ins.op
        regs = self.regs
        rel = ins.layer_rel if op in _LAYER_REL else 0
        wb, pb = (wbase, pbase) if rel else (0, 0)
        pos, layer = regs[Reg.POS], regs[Reg.LAYER]
        if op in (Opcode.NOP, Opcode.SYNC):
            return
        if op == Opcode.SETREG:
            if ins.reg == Reg.POS and ins.value >= self.image.context:
                self._err(f"POS={ins.value} is beyond the context of {self.image.context}",
                          "POS_RANGE")
            regs[ins.reg] = ins.value
            return
        if op == Opcode.EMBED:
            idx = regs[ins.index_reg]
            if not 0 <= idx < ins.rows:
                self._err(f"index {idx} (register {ins.index_reg.name}) is outside the table's "
                          f"{ins.rows} rows", "BAD_INDEX")
            if ins.w_planes not in (1, 2):
                self._err(f"w_planes={ins.w_planes}: use 1 (int8) or 2 (16-bit as two planes)")
            self._span(ins.dst, ins.cols)     # (the scratchpad region first, as the RTL)
            row = self._matrix(ins.waddr, ins.rows, ins.cols)[idx]
            if ins.w_planes == 2:
                lo = self._matrix(ins.waddr + int(np.prod(self._wrows(ins.waddr, ins.rows,
                                                                      ins.cols))),
                                  ins.rows, ins.cols)[idx]
                row = self._combine([(256, row), (1, lo)])
            m, s = self._requant_params(ins.paddr + idx, 1)
            y = requantize(row, m[0], s[0], out_bits=16)
            if ins.accumulate:
                y = residual_add(self._read(ins.dst, ins.cols), y, 16)
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.MATVEC:
            in_bits = 16 if ins.in_width == Width.W16 else 8
            out_bits = 16 if ins.out_width == Width.W16 else 8
            if ins.w_planes not in (1, 2):
                self._err(f"w_planes={ins.w_planes}: use 1 (int8) or 2 (16-bit as two planes)")
            if ins.rows == 0 or ins.cols == 0:
                self._err(f"rows={ins.rows}, cols={ins.cols}: a MATVEC needs at least one of each")
            if ins.rope_heads:
                d = (self.image.rope_table() or (None, None))[1]
                if d is None:
                    self._err(f"rope_heads={ins.rope_heads} but the image has no RoPE table")
                if ins.accumulate or ins.rows % 2 or ins.rope_heads * d["head_size"] > ins.rows:
                    self._err(f"rope_heads={ins.rope_heads} (head size {d['head_size']}) with "
                              f"rows={ins.rows}, accumulate={ins.accumulate}: the rotated heads "
                              f"must fit in an even number of rows, without accumulate")
                if pos >= d["context"]:
                    self._err(f"POS={pos} is beyond the RoPE table's {d['context']} positions")
            parts = kv_append_parts(ins)
            if parts:
                hs, im, n = self.image.head_size, self.image, parts[0][2]
                if (out_bits != 8 or ins.accumulate or ins.rows % (len(parts) * hs)
                        or n // hs > im.kv_heads):
                    self._err(f"kv_append={ins.kv_append} with rows={ins.rows}, out_width "
                              f"{out_bits}, accumulate={ins.accumulate}: the results must be "
                              f"{len(parts)} part(s) of at most {im.kv_heads} int8 rows of "
                              f"{hs}, without accumulate")
                if not 0 <= layer < im.kv_layers:
                    self._err(f"LAYER={layer} is outside the KV cache's {im.kv_layers} layers",
                              "KV_CACHE")
            if ins.glu:
                sw = self._glu_params(ins, pb, out_bits)
            # the regions first, then the input's range (the RTL's order)
            x = self._read(ins.src, ins.cols)
            self._span(ins.dst, ins.rows // 2 if ins.glu else ins.rows)
            ob_ib = int(np.prod(self._wrows(ins.waddr + wb, ins.rows, ins.cols)))
            if ins.w_planes == 2:
                self._wrows(ins.waddr + wb + ob_ib, ins.rows, ins.cols)
            self._pwords(ins.paddr + pb, ins.rows * (2 if ins.bias else 1) + ins.glu)
            if in_bits == 8:
                self._int8_input(x, ins.src)
            # (glu: the padded blocks too, where the last block's ups sit)
            n_acc = -(-ins.rows // self.lanes) * self.lanes if ins.glu else ins.rows
            acc = self._matvec(ins.waddr + wb, n_acc, ins.cols, x, in_bits, ins.w_planes)
            m, s = self._requant_params(ins.paddr + pb, ins.rows)
            bias = _s32(self._pwords(ins.paddr + pb + ins.rows, ins.rows)) if ins.bias else None
            if ins.glu:
                d, gm, gs = sw
                gate, up = glu_rows(ins.rows, self.lanes)
                y = swiglu(requantize(acc[gate], m[0::2], s[0::2], out_bits=d["a_bits"]),
                           requantize(acc[up], m[1::2], s[1::2], out_bits=d["b_bits"]),
                           gm, gs, a_bits=d["a_bits"], b_bits=d["b_bits"],
                           out_bits=d["out_bits"], a_scale=d["a_scale"],
                           silu_scale=d["silu_scale"])
                self._write(ins.dst, y)
                self._emit(pc, ins, y)
                return
            y = requantize(acc, m, s, bias=bias, out_bits=out_bits)
            if ins.accumulate:
                y = residual_add(self._read(ins.dst, ins.rows), y, 16)
            if ins.rope_heads:
                n = ins.rope_heads * d["head_size"]
                y[:n] = rope(y[:n], pos, d["head_size"], d["theta"], out_bits)
            self._write(ins.dst, y)
            for kv, first, n in parts:
                self._kv_append(kv, y[first:first + n], layer, pos)
            self._emit(pc, ins, y)
            return
        if op == Opcode.MATMAT:
            t = ins.tokens
            if not 1 <= t <= self.lanes:
                self._err(f"tokens={t}: a tile holds 1..lanes={self.lanes} tokens")
            if ins.rows == 0 or ins.cols == 0:
                self._err(f"rows={ins.rows}, cols={ins.cols}: a tile needs at least one of each")
            # the regions first, then the inputs' range (the RTL's order)
            X = self._read(ins.src, t * ins.cols)
            self._span(ins.dst, t * ins.rows)
            W = self._matrix(ins.waddr + wb, ins.rows, ins.cols)
            self._pwords(ins.paddr + pb, ins.rows * (2 if ins.bias else 1))
            self._int8_input(X, ins.src)
            X = X.reshape(t, ins.cols)
            res = mac_array_model(matmat_beats(X, W, self.lanes, self.K), self.lanes, self.K,
                                  self.acc_width)
            acc = np.stack(res, axis=1)[:t]                  # (tokens, rows)
            m, s = self._requant_params(ins.paddr + pb, ins.rows)
            bias = _s32(self._pwords(ins.paddr + pb + ins.rows, ins.rows)) if ins.bias else None
            y = requantize(acc, m, s, bias=bias,
                           out_bits=16 if ins.out_width == Width.W16 else 8)
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.REQUANT:
            x = self._read(ins.src, ins.len)
            m, s = self._requant_params(ins.paddr, ins.len if ins.per_elem else 1)
            y = requantize(x, m, s, out_bits=16 if ins.out_width == Width.W16 else 8)
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.NORM:
            n = ins.len
            ln = ins.kind == NormKind.LAYERNORM
            base = ins.paddr + pb
            self._span(ins.src, n)            # (the scratchpad regions first, as the RTL)
            self._span(ins.dst, n)
            gamma = _s16(self._pwords(base, n))
            beta = _s16(self._pwords(base + n, n)) if ln else None
            ew = self._pwords(base + (2 * n if ln else n), 2)
            eps_int = int(ew[0]) | int(ew[1]) << 32
            key = (ins.kind, n, ins.gamma_frac, ins.beta_frac, ins.out_frac, eps_int)
            p = self._norms.get(key)
            if p is None:
                try:
                    p = NormParams("layernorm" if ln else "rmsnorm", dim=n, in_width=16,
                                   gamma_width=16, gamma_frac=ins.gamma_frac,
                                   beta_width=16, beta_frac=ins.beta_frac,
                                   out_frac=ins.out_frac,
                                   eps=eps_int / ((n * n if ln else n) * 256))
                except ValueError as e:
                    self._err(str(e))
                if p.eps_int != eps_int:
                    self._err(f"epsilon word {eps_int} is not representable by the norm block")
                self._norms[key] = p
            if self.ext["norm_out_bits"] == 8:
                y = norm_golden(p, self._read(ins.src, n), gamma, beta)
            else:
                y = norm_wide(p, self._read(ins.src, n), gamma, beta, self.ext["norm_out_bits"])
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.ROPE:
            d = self.image.tables.get(ins.paddr)
            if d is None or d["kind"] != "rope":
                self._err(f"no RoPE table at parameter word {ins.paddr}")
            if d["head_size"] != ins.head_size:
                self._err(f"head_size={ins.head_size} but the table at {ins.paddr} is for "
                          f"{d['head_size']}")
            if pos >= d["context"]:
                self._err(f"POS={pos} is beyond the RoPE table's {d['context']} positions")
            bits = 16 if ins.width == Width.W16 else 8
            x = self._read(ins.src, ins.n_heads * ins.head_size)
            self._span(ins.dst, x.size)
            if bits == 8:
                self._int8_input(x, ins.src)
            y = rope(x, pos, ins.head_size, d["theta"], bits)
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.KVAPPEND:
            hs = ins.head_size
            if hs != self.image.head_size or ins.kv_heads > self.image.kv_heads:
                self._err(f"kv_heads={ins.kv_heads} x head_size={hs} does not match the KV cache "
                          f"({self.image.kv_heads} x {self.image.head_size})")
            kvb = self.ext["kv_bits"]
            if not 0 <= layer < self.image.kv_layers:
                self._err(f"LAYER={layer} is outside the KV cache's {self.image.kv_layers} "
                          f"layers", "KV_CACHE")
            x = self._read(ins.src, ins.kv_heads * hs)
            if kvb > 8:
                x = np.clip(x, -(1 << (kvb - 1)), (1 << (kvb - 1)) - 1)
            else:
                self._int8_input(x, ins.src)
            self._kv_append(ins.kv, x, layer, pos)
            self._emit(pc, ins, x)
            return
        if op in (Opcode.SCORES, Opcode.SCORES_SOFTMAX, Opcode.ATTV):
            self._attention(ins, pos, layer, pc, pb)
            return
        if op == Opcode.SOFTMAX:
            n = pos + 1 if ins.causal else ins.len
            out = []
            for r in range(ins.rows):
                p = self._softmax(self._read(ins.src + r * ins.stride, n), ins.in_frac,
                                  ins.out_bits)
                self._write(ins.dst + r * ins.stride, p)
                out.append(p)
            self._emit(pc, ins, np.stack(out))
            return
        if op == Opcode.ACT:
            d = self.image.tables.get(ins.paddr + pb)
            if d is None or d["kind"] != "act" or d["func"] != _FUNC[ins.func]:
                self._err(f"no {_FUNC[ins.func]} table at parameter word {ins.paddr + pb}")
            in_bits = 16 if ins.in_width == Width.W16 else 8
            out_bits = 16 if ins.out_width == Width.W16 else 8
            if (in_bits, out_bits) != (d["in_bits"], d["out_bits"]):
                self._err(f"widths {in_bits}->{out_bits} do not match the table's "
                          f"{d['in_bits']}->{d['out_bits']}")
            y = activation(self._read(ins.src, ins.len, in_bits), d["func"], in_bits, out_bits,
                           d["in_scale"], d["out_scale"])
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.ELTWISE:
            bits = 16 if ins.width == Width.W16 else 8
            if ins.eop == EltOp.ADD:
                y = residual_add(self._read(ins.a, ins.len, bits), self._read(ins.b, ins.len, bits),
                                 bits)
            elif ins.eop == EltOp.SWIGLU:
                d = self.image.tables.get(ins.paddr + pb)
                if d is None or d["kind"] != "swiglu":
                    self._err(f"no SwiGLU parameters at parameter word {ins.paddr + pb}")
                if d["out_bits"] != bits:
                    self._err(f"width {bits} does not match the SwiGLU parameters' {d['out_bits']}")
                m, s = self._requant_params(ins.paddr + pb, 1)
                y = swiglu(self._read(ins.a, ins.len, d["a_bits"]),
                           self._read(ins.b, ins.len, d["b_bits"]), int(m[0]), int(s[0]),
                           a_bits=d["a_bits"], b_bits=d["b_bits"], out_bits=d["out_bits"],
                           a_scale=d["a_scale"], silu_scale=d["silu_scale"])
            else:
                self._err(f"element-wise operation {ins.eop!r} is not implemented")
            self._write(ins.dst, y)
            self._emit(pc, ins, y)
            return
        if op == Opcode.ARGMAX:
            if ins.len < 1:
                self._err("ARGMAX of an empty vector")
            (i, v), = argmax_packets([self._read(ins.src, ins.len)], bits=16)
            regs[Reg.RESULT], regs[Reg.RESULT_VALUE] = i, v
            self._emit(pc, ins, np.array([i, v]))
            return
        if op == Opcode.OUTPUT:
            self.output = self._read(ins.src, ins.len)
            self._emit(pc, ins, self.output)
            return
        self._err(f"opcode {op.name} cannot execute here")

    def _glu_params(self, ins, pb, out_bits):
        """``(descriptor, mult, shift)`` of a ``MATVEC``'s ``glu``: the SwiGLU parameters at
        ``paddr + rows``, after checking the instruction's other fields allow it."""
        if (ins.rows % 2 or self.lanes % 2 or ins.bias or ins.accumulate or ins.rope_heads
                or ins.kv_append):
            self._err(f"glu with rows={ins.rows}, bias={ins.bias}, accumulate={ins.accumulate}, "
                      f"rope_heads={ins.rope_heads}, kv_append={ins.kv_append} on "
                      f"{self.lanes} lanes: the rows must be gate/up pairs (an even number, "
                      f"an even number of lanes), without the others")
        if ins.in_width != Width.W8 or ins.w_planes != 1 or ins.cols > GLU_MAX_COLS:
            self._err(f"glu with in_width={ins.in_width.name}, w_planes={ins.w_planes}, "
                      f"cols={ins.cols}: its input must be int8 (W8), its weights one plane, "
                      f"its cols at most {GLU_MAX_COLS}")
        fmts = {(d["a_bits"], d["b_bits"], d["out_bits"], d["a_scale"], d["silu_scale"])
                for d in self.image.tables.values() if d["kind"] == "swiglu"}
        at = ins.paddr + pb + ins.rows
        d = self.image.tables.get(at)
        if d is None or d["kind"] != "swiglu" or len(fmts) != 1:
            self._err(f"glu needs the SwiGLU parameters at parameter word {at} (paddr + rows) "
                      f"and one SwiGLU format in the image (it has {len(fmts)})")
        if d["out_bits"] != out_bits:
            self._err(f"out_width {out_bits} does not match the SwiGLU parameters' "
                      f"{d['out_bits']}")
        m, s = self._requant_params(at, 1)
        return d, int(m[0]), int(s[0])

    def _kv_append(self, kv, x, layer, pos):
        """Rows ``x`` (``head_size`` each, KV heads 0, 1, ...) into the K (``kv`` 0) or V (1)
        cache of ``layer`` at ``pos``."""
        hs = self.image.head_size
        for h in range(len(x) // hs):
            if self._kv_wide is not None and layer < self.image.kv_layers \
                    and kv in (0, 1) and pos < self.image.context:
                self._kv_wide[layer, h, kv, pos] = x[h * hs:(h + 1) * hs]
            row8 = ((x[h * hs:(h + 1) * hs] + 128) & 255) - 128     # low byte (int8 cache)
            if not self.kv.append_row(layer, h, kv, pos, row8):
                self._err(f"KV append at layer {layer}, head {h}, position {pos} is outside "
                          f"the cache ({self.image.kv_layers} layers, context "
                          f"{self.image.context})")

    def _attention(self, ins, pos, layer, pc, pb):
        hs, n = ins.head_size, pos + 1
        if hs != self.image.head_size:
            self._err(f"head_size={hs} does not match the KV cache's {self.image.head_size}")
        if ins.kv_mul < 1 or ins.n_heads > ins.kv_mul * self.image.kv_heads:
            self._err(f"n_heads={ins.n_heads} with kv_mul={ins.kv_mul} needs more than the KV "
                      f"cache's {self.image.kv_heads} heads")
        if ins.op in _SCORES and n > ins.stride:
            self._err(f"POS+1={n} scores do not fit the row stride {ins.stride}")
        if ins.op == Opcode.ATTV and n > ins.stride:
            self._err(f"POS+1={n} probabilities do not fit the row stride {ins.stride}")
        if ins.op == Opcode.ATTV and ins.prob_bits > 15:
            self._err(f"prob_bits={ins.prob_bits}: at most 15")
        if not (0 <= layer < self.image.kv_layers):
            self._err(f"LAYER={layer} is outside the KV cache's {self.image.kv_layers} layers",
                      "KV_CACHE")
        # the regions first (the RTL's order), then the operands' ranges head by head
        rows = (ins.n_heads - 1) * ins.stride + n
        if ins.op in _SCORES:
            self._span(ins.q, ins.n_heads * hs)
            self._span(ins.dst, rows)
        else:
            self._span(ins.p, rows)
            self._span(ins.dst, ins.n_heads * hs)
        m, s = self._requant_params(ins.paddr + pb, 1)
        out = []
        for h in range(ins.n_heads):
            kvh = h // ins.kv_mul
            if ins.op in _SCORES:
                q = self._read(ins.q + h * hs, hs)
                qb = 16 if ins.q_width == Width.W16 else 8
                if qb == 8:
                    self._int8_input(q, ins.q + h * hs)
                keys = self._kv_rows(layer, kvh, 0, pos)                     # (n, hs)
                acc = self._small_matvec(keys, q, qb)
                y = requantize(acc, m[0], s[0], out_bits=16)
                if ins.op == Opcode.SCORES_SOFTMAX:     # the scores stay in the datapath
                    y = self._softmax(y, ins.in_frac, ins.out_bits)
                self._write(ins.dst + h * ins.stride, y)
            else:
                p = self._read(ins.p + h * ins.stride, n)
                bad = np.nonzero((p < 0) | (p >> ins.prob_bits != 0))[0]
                if bad.size:
                    i = int(bad[0])
                    self._err(f"probability {int(p[i])} at scratchpad element "
                              f"{ins.p + h * ins.stride + i} is outside the unsigned "
                              f"prob_bits={ins.prob_bits} range", "INPUT_RANGE")
                vals = self._kv_rows(layer, kvh, 1, pos)                     # (n, hs)
                acc = self._small_matvec(vals.T, p, 16)
                y = requantize(acc, m[0], s[0],
                               out_bits=16 if ins.out_width == Width.W16 else 8)
                self._write(ins.dst + h * hs, y)
            out.append(y)
        self._emit(pc, ins, np.stack(out))

    def _softmax(self, x, in_frac, out_bits):
        try:
            return softmax_golden(x, max_len=self.image.context, in_width=16, in_frac=in_frac,
                                  out_bits=out_bits)
        except ValueError as e:
            self._err(str(e))

    def _kv_rows(self, layer, head, kv, pos):
        if self._kv_wide is not None:
            return self._kv_wide[layer, head, kv, :pos + 1].copy()
        return self.kv.rows(layer, head, kv, pos).astype(np.int64)

    # ---- sequences ----------------------------------------------------------------------------
    def run(self, prompt, steps: int = 0):
        """Prompt position by position, then ``steps`` greedy tokens. Returns
        ``(predictions, tokens, results)``."""
        self.reset()
        preds, results, toks = [], [], []
        pos = 0
        for t in prompt:
            r = self.step(int(t), pos)
            results.append(r)
            preds.append(r.token)
            pos += 1
        nxt = preds[-1] if preds else 0
        for _ in range(steps):
            toks.append(nxt)
            if len(toks) == steps:
                break
            r = self.step(nxt, pos)
            results.append(r)
            nxt = r.token
            pos += 1
        return preds, toks, results
