"""DP16KD blocks of the RTL engine (:class:`hdlgen.engine.core.Engine`) from its sizing rules,
without elaborating it: what the fit check (:func:`hdlgen.compiler.compile.fit_check`) counts
before synthesis.

The engine's block RAMs are its memories (weight bank, parameter memory, scratchpad, KV cache:
:meth:`hdlgen.compiler.image.MemoryImage.memory_ebr`, which uses the helpers here) and the
units' own blocks, which no memory image shows (:class:`EngineUnits`): the softmax's logit and
exp buffers and exp table, the score queues, one vector buffer per norm unit and the
``MATMAT`` tile buffer. The ROM tables (RoPE, activation, SiLU) are the image's ``tables``.

The program's norm units (:func:`norm_formats`), whether its heads go in pairs
(:func:`scores_in_pairs`) and the score-queue depth (:func:`score_queue_depth`) are the rules
``Engine._analyse`` itself calls. The rest mirrors code of :mod:`hdlgen.engine.core`
(``Engine.__init__``: the KV beat ``self._beat`` and the weight bank's split
``self._weight_main_rows``; ``Engine._analyse``: the longest ``MATMAT`` row
``self._mm_cols``; ``Engine.elaborate``: the
memories ``act``, ``wts``, ``par``, ``tb``, ``kv`` and the units ``smax``, ``norm<n>``,
``rope``, ``act<n>``, ``swiglu``, ``smq``, ``smq2``) and of the blocks' ``elaborate`` (the
``BlockRAM`` shapes of :class:`~hdlgen.blocks.softmax.Softmax`,
:class:`~hdlgen.blocks.rmsnorm.NormEngine`, :class:`~hdlgen.blocks.rope.Rope`,
:class:`~hdlgen.blocks.activation.Activation`). ``tests/test_engine_ebr.py`` elaborates
engines and compares their ``BlockRAM`` tiles and block-RAM FIFOs with these counts: a change
there that this module does not follow fails it.

Measured on the stories260K SoC on the 85F (context 256, 16 x 8 MACs, Yosys 0.70): 200
DP16KD, 197 of them the engine's (weights 128, parameters 16, RoPE and SiLU tables 3, KV cache
40, scratchpad 3, softmax 3, score queues 2, norms 2) and 3 the SoC's (host scratch RAM 2,
the host bridge's burst buffer 1).
"""

from dataclasses import dataclass

from hdlgen.blocks.bram import ecp5_tiling
from hdlgen.engine.isa import NormKind, Opcode
from hdlgen.errors import UserError
from sim.golden.activation import INDEX_BITS

__all__ = ["bram_tiles", "fifo_tiles", "kv_beat", "layer_pbases", "norm_formats",
           "scores_in_pairs", "score_queue_depth", "softmax_tiles",
           "norm_tiles", "rope_tiles", "act_tiles", "EngineUnits", "FIFO_LUT_WORDS",
           "SCORE_WIDTH", "NORM_IN_WIDTH", "SOFTMAX_IN_WIDTH"]

#: Words of a FIFO's storage that Yosys still maps to LUT RAM (``memory_libmap``): the
#: engine's 64-entry score queue (63 words of 17 bits) went to TRELLIS_DPR16X4 in every
#: build, the 1,024-entry ones (1,023 words) to one DP16KD each. Deeper storage is counted
#: as block RAM (an upper bound for depths never built: 64 .. 511 words).
FIFO_LUT_WORDS = 63
#: Bits of a score-queue entry (16-bit score and ``last``; core.py: ``SyncFIFOBuffered(width=17``).
SCORE_WIDTH = 17
#: Input width of the engine's norm units and softmax (core.py: ``in_width=16``).
NORM_IN_WIDTH = SOFTMAX_IN_WIDTH = 16


def bram_tiles(width: int, depth: int, *, granularity: int | None = None,
               ports=("rw", "r"), init: bool = False) -> int:
    """DP16KD of one :class:`~hdlgen.blocks.bram.BlockRAM` of these arguments
    (:func:`~hdlgen.blocks.bram.ecp5_tiling`)."""
    if width <= 0 or depth <= 0:
        return 0
    return ecp5_tiling(width, depth, granularity=granularity, ports=ports, init=init).primitives


def fifo_tiles(width: int, depth: int) -> int:
    """DP16KD of an ``amaranth.lib.fifo.SyncFIFOBuffered(width, depth)``: its storage is
    ``depth - 1`` words, in LUT RAM up to :data:`FIFO_LUT_WORDS` words, else tiled as a
    pseudo-dual-port block RAM."""
    words = depth - 1
    if words <= FIFO_LUT_WORDS:
        return 0
    return bram_tiles(width, words, ports=("w", "r"))


def kv_beat(macs_per_lane: int, head_size: int) -> int:
    """Bytes of one KV-cache word: the largest power of two of ``K, K/2, K/4, 8, 4, 2, 1`` at
    most ``K`` that divides the head size (core.py ``Engine.__init__``: ``self._beat``)."""
    K = macs_per_lane
    return max(b for b in (K, K // 2, K // 4, 8, 4, 2, 1) if 1 <= b <= K and
               head_size % b == 0 and b & (b - 1) == 0)


def layer_pbases(program) -> dict:
    """The parameter bases each instruction runs at, by index: ``LOOP``'s body at every
    layer's (``k * pstride``), the others at 0 (core.py ``Engine._analyse`` uses these)."""
    pbases, loop = {}, None
    for n, ins in enumerate(program):
        if ins.op == Opcode.LOOP:
            loop = (n + 1, n + ins.body, ins.count, ins.pstride)
            continue
        inside = loop and loop[0] <= n <= loop[1]
        pbases[n] = [loop[3] * k for k in range(loop[2])] if inside else [0]
    return pbases


def norm_formats(program, params) -> list:
    """The distinct formats of the program's ``NORM`` instructions, in order of first use, one
    norm unit each: ``(kind, len, gamma_frac, beta_frac, out_frac, eps)``, the 64-bit epsilon
    read from the parameter words after the gains (and biases) of every layer the instruction
    runs at. :class:`UserError` when those words are outside ``params``."""
    pbases, norms = layer_pbases(program), []
    for n, ins in enumerate(program):
        if ins.op != Opcode.NORM:
            continue
        ln = ins.kind == NormKind.LAYERNORM
        for pb in (pbases[n] if ins.layer_rel else [0]):
            at = ins.paddr + pb + (2 * ins.len if ln else ins.len)
            if at + 2 > len(params):
                raise UserError(f"instruction {n} ({ins}): epsilon words at {at} are outside "
                                f"the parameter memory")
            key = (ins.kind, ins.len, ins.gamma_frac, ins.beta_frac, ins.out_frac,
                   params[at] | params[at + 1] << 32)
            if key not in norms:
                norms.append(key)
    return norms


def scores_in_pairs(program, lanes: int, pair_scores: bool = True) -> bool:
    """``SCORES_SOFTMAX`` runs heads in pairs: the engine's ``pair_scores``, at least 8 lanes
    and some ``SCORES_SOFTMAX`` with an even ``kv_mul`` of 2 or more."""
    return bool(pair_scores) and lanes >= 8 and any(
        i.op == Opcode.SCORES_SOFTMAX and i.kv_mul >= 2 and i.kv_mul % 2 == 0 for i in program)


def score_queue_depth(context: int, pairs: bool, score_queue: int = None) -> int:
    """Entries of each score queue (core.py ``Engine._analyse``: ``self._smq``): with pairs
    of heads the power of two holding ``context + 3`` scores, at least 1,024; otherwise 64;
    ``score_queue`` (the engine's argument) when given."""
    if score_queue:
        return score_queue
    if not pairs:
        return 64
    need = context + 3
    return max(1024, 1 << (need - 1).bit_length())


def softmax_tiles(max_len: int, in_width: int = SOFTMAX_IN_WIDTH) -> int:
    """DP16KD of :class:`~hdlgen.blocks.softmax.Softmax`: the logit and exp buffers (two halves
    of ``2**ceil(log2(max_len))`` words each) and the 256-word exp table: 3 up to
    ``max_len`` 512, 5 for 1024, 9 for 2048."""
    aw = max(1, (max_len - 1).bit_length())
    return (bram_tiles(in_width, 2 << aw, ports=("w", "r")) +
            bram_tiles(17, 2 << aw, ports=("w", "r")) +
            bram_tiles(17, 256, ports=("w", "r"), init=True))


def norm_tiles(dim: int, in_width: int = NORM_IN_WIDTH) -> int:
    """DP16KD of one norm unit (:class:`~hdlgen.blocks.rmsnorm.NormEngine`, RMSNorm or
    LayerNorm): its ``in_width`` x ``dim`` vector buffer."""
    return bram_tiles(in_width, dim, ports=("w", "r"))


def rope_tiles(max_positions: int, head_size: int) -> int:
    """DP16KD of :class:`~hdlgen.blocks.rope.Rope`: 36-bit cos/sin words, one per pair and
    position of ``2**ceil(log2(max_positions))`` (``Rope.positions``)."""
    positions = 1 << max(1, (max_positions - 1).bit_length())
    return bram_tiles(36, positions * max(1, head_size // 2), ports=("w", "r"), init=True)


def act_tiles(in_bits: int, out_bits: int = 16) -> int:
    """DP16KD of one activation table (:class:`~hdlgen.blocks.activation.Activation`, also the
    SwiGLU unit's SiLU): 256 ``out_bits`` words for an int8 input, else ``2**INDEX_BITS``
    36-bit knot pairs."""
    if in_bits == 8:
        return bram_tiles(out_bits, 256, ports=("w", "r"), init=True)
    return bram_tiles(36, 1 << INDEX_BITS, ports=("w", "r"), init=True)


@dataclass(frozen=True)
class EngineUnits:
    """What sizes the engine's units' own block RAMs, beside its memories.

    Attributes
    ----------
    norm_dims : tuple of int
        Vector length of each norm unit (one unit per distinct norm format of the program).
    pairs : bool
        ``SCORES_SOFTMAX`` runs heads in pairs: two score queues (:func:`score_queue_depth`).
    score_queue : int or None
        The engine's ``score_queue`` argument (None: its default).
    mm_cols : int
        Longest ``MATMAT`` input row (0: no ``MATMAT``, no tile buffer).
    row_bits : int
        Bits of a weight-bank row (``lanes * K * 8``), the tile buffer's width.
    macs_per_lane : int
        ``K``: the tile buffer holds ``ceil(mm_cols / K)`` words.
    """
    norm_dims: tuple = ()
    pairs: bool = False
    score_queue: int = None
    mm_cols: int = 0
    row_bits: int = 0
    macs_per_lane: int = 1

    def ebr(self, context: int) -> dict:
        """DP16KD of each kind of unit for a ``context``-position engine: ``softmax``,
        ``score_queues``, ``norms``, ``tile_buffer``."""
        smq = score_queue_depth(context, self.pairs, self.score_queue)
        tbd = -(-self.mm_cols // self.macs_per_lane) if self.mm_cols else 0
        return {"softmax": softmax_tiles(context),
                "score_queues": (2 if self.pairs else 1) * fifo_tiles(SCORE_WIDTH, smq),
                "norms": sum(norm_tiles(d) for d in self.norm_dims),
                # core.py: DistRAM up to 16 words, else a BlockRAM (granularity 8)
                "tile_buffer": bram_tiles(self.row_bits, tbd, granularity=8) if tbd > 16 else 0}

    @classmethod
    def of_program(cls, program, image, lanes: int, *, pair_scores: bool = True,
                   score_queue: int = None, matmat_cols: int = 0) -> "EngineUnits":
        """The units an engine for ``program`` (a list of
        :class:`~hdlgen.engine.isa.Instruction`) and ``image`` has, as ``Engine._analyse``
        finds them (``pair_scores``, ``score_queue``: the engine's arguments; ``matmat_cols``:
        a prefill manifest's ``matmat_cols``)."""
        norms = norm_formats(program, [int(v) for v in image.params])
        mm_cols = max([matmat_cols] + [i.cols for i in program if i.op == Opcode.MATMAT])
        return cls(norm_dims=tuple(k[1] for k in norms),
                   pairs=scores_in_pairs(program, lanes, pair_scores), score_queue=score_queue,
                   mm_cols=mm_cols, row_bits=lanes * image.macs_per_lane * 8,
                   macs_per_lane=image.macs_per_lane)
