"""The transformer engine: program memory, memories, the compute blocks and the instruction
sequencer that runs one decode step (:mod:`hdlgen.engine.isa`) without the host.

Structure
---------
Memories (all :class:`~hdlgen.blocks.bram.BlockRAM`, registered outputs, 2-cycle reads): the
program (128-bit words), the activation scratchpad (16-bit elements), the weight bank
(``lanes * macs_per_lane`` int8 per row), the parameter memory (32-bit words) and a *vector
buffer* of ``macs_per_lane`` 16-bit elements per word, which holds the shared operand of a
``MATVEC`` (and operand ``a`` of an ``ELTWISE``) so that the MAC array gets a whole slice per
cycle. When the program has ``MATMAT``, a *tile buffer* of ``lanes * macs_per_lane`` int8 per
word (``ceil(cols / macs_per_lane)`` words for the longest ``MATMAT`` input row; LUT RAM up to
16 words, block RAM beyond) holds a prefill tile's inputs, one beat's per-lane operand per
word. The host reaches the first four through the Wishbone port (:mod:`hdlgen.engine.memmap`
defines the windows) while no job runs.

Units, each instantiated once from the blocks in :mod:`hdlgen.blocks`: the MAC array, the
requantizer (16-bit out; 8-bit results are clamped again, which is the same saturation), the
softmax, RoPE, the KV cache, argmax, the element-wise add and SwiGLU, an activation per table
in the image and a norm per distinct norm configuration of the program (the norm and table
blocks bake their formats and tables at elaboration, so the engine is generated for a compiled
model: :class:`Engine` takes the :class:`~hdlgen.compiler.Compiled` result).

Execution, one instruction at a time: fetch, decode, range checks (every scratchpad, weight and
parameter region the instruction touches, the position against the KV capacity), then the
instruction's phases, which stream operands through one unit and the results back. The next
instruction's fetch, decode and checks (eleven cycles) overlap the end of a ``MATVEC``,
``MATMAT``, ``REQUANT``, ``NORM``, ``ROPE``, ``SOFTMAX``, ``ACT`` or ``ELTWISE``: once its
readers are idle and its MAC beats issued, only unit pipelines and the writer are left, and
the sequencer moves on (``WAIT_WRITER``; a ``SCORES_SOFTMAX`` once its last score is in the
softmax's queue: the softmax's last row then still takes about ``2 n + 45`` cycles); the next
instruction starts (``CHECK3`` to ``EXEC``) when the writer is done, so it sees every result, and ``HALT``, ``SYNC``, ``SETREG``, ``LOOP``
and a failure wait for the writer too (a refused instruction leaves every earlier result
written). One exception: a ``MATVEC`` whose input the vector buffer holds follows a ``MATVEC``
as soon as that one's MAC results are all taken and none of its results lands in that input
(q then k and v, gate then up): it issues its beats while the first one's results drain and
holds its own in front of the serializer until the writer has finished them, then its writer
run starts (``MV_WCFG``, ``MV_WSTART``). Another: an ``ATTV`` that reads its probabilities
where the ``SCORES_SOFTMAX`` before it writes them (same base and stride) starts once that
one's scores are all in the softmax (``AV_CHAIN``): its probability reader reads only rows the
softmax has written (:class:`~hdlgen.engine.streams.ElementReader`'s row limit), its results
wait in front of the serializer, and its writer run starts when the softmax's has ended:

* ``ElementReader`` (:mod:`hdlgen.engine.streams`) streams scratchpad rows (and the vector
  buffer in lockstep) into a unit; a second one streams norm gains/biases from the parameter
  memory.
* ``MATVEC``: the input is loaded into the vector buffer, then for each block of ``lanes``
  output rows and each operand *pass* the weight rows and vector-buffer words are read at one
  per cycle into the MAC array (a 16-bit input runs as int8 planes, high then low and, only
  when an element is >= 32640, a carry plane; a 16-bit weight as its two stored planes; the
  pass results are combined exactly, ``acc = sum(factor * acc_pass)``, see
  :mod:`sim.golden.engine`), the ``lanes`` sums are serialised into the requantizer with their
  per-row parameters and the writer stores them (adding to the destination for ``accumulate``).
  With ``rope_heads`` (q, and k in the ``kv`` projection) the requantized results are
  saturated to the output width, paired and sent through the RoPE unit on their way to the
  writer (pairs after the rotated heads at position 0, where the table's rotation is the
  identity), so q and k never make the scratchpad round trip of a ``ROPE`` instruction.
  With ``kv_append`` the int8 values the writer writes also go into the KV cache's append
  packer (K rows, V rows, or K then V: it turns to V after K's last row), so k and v need no
  ``KVAPPEND`` reading them back; the layer and the K/V flag are taken with the run's
  configuration, so the next instruction's decode (which overlaps the drain) cannot change
  them, and every row is appended before the next instruction starts (the writer's last
  result is counted two cycles after it enters the packer).
  With ``glu`` (gate and up in blocks of ``lanes`` rows: :func:`hdlgen.engine.isa.glu_rows`)
  a block's gate ``j`` leaves the MAC array on lane ``j`` and its up on lane ``lanes/2 + j``,
  so the serializer sends ``lanes / 2`` pairs per block, one per cycle: the gate (``ser[0]``)
  into the requantizer, the up (``ser[lanes/2]``, no per-lane mux) into a second one
  (``rq2``) whose word is read on parameter port a (a glu run has no biases). ``rq2`` takes
  no DSP: its product is in LUTs, for the 27-bit sums of a glu ``MATVEC`` (int8 inputs, at
  most ``GLU_MAX_COLS`` columns, as the ISA requires). The pair (the gate saturated to the
  SwiGLU unit's ``a_bits``, the up to its ``b_bits``) goes into the SwiGLU unit, whose values
  the writer takes: one result per pair, so the pairs' SwiGLU costs no instruction and no
  pass over the scratchpad, and the run is bound by its MAC beats, not by one result per
  cycle. The unit's requantization word (at ``paddr + rows``)
  is read from EXEC on, while port b of the parameter memory is free (a glu ``MATVEC`` never
  follows another one's drain), and taken three cycles later.
  The vector buffer remembers which scratchpad region it holds: a ``MATVEC`` reading the same
  input as the previous one (q, k and v; gate and up) skips the load, unless a write touched
  that region since. ``NORM``, ``ACT``, ``REQUANT``, ``ELTWISE`` and ``ATTV`` (one row of
  results each) also write their results into the vector buffer when they fit, and its tag
  then names their destination, so the ``MATVEC`` that reads them (q, k and v after the
  attention norm, the output projection after ``ATTV``, gate and up after the MLP norm, down
  after SwiGLU) skips its load too; the buffer's flags (``vb_wide``, ``mv_carry``) are
  computed from the written values as a load computes them from the read ones. A ``MATVEC``'s
  results go to the buffer's *side region* (words after the main ones, sized for the longest
  ``ELTWISE`` whose length is some ``MATVEC``'s rows) with a tag of their own, so an
  ``ELTWISE`` with one operand there (SwiGLU after gate and up: ``b``, the last one written)
  streams only the other from the scratchpad and skips its load; a write into the tagged
  region since makes it load as before. A ``MATVEC`` whose input is the side region's
  (the down projection after a ``glu`` one) reads it there (the MAC feed's vector-buffer
  address counts from the region's first word): no load, its own results stay out of the
  region, and the main region's tag and flags are left alone; the region keeps flags of its
  own (``sd_w8``: int8 values, which an 8-bit ``MATVEC`` needs; ``sd_carry``: a value >=
  32640, the carry plane of a 16-bit one).
* ``NORM``'s load overlaps the instruction before it: a writer run of one row (``EMBED``,
  ``MATVEC``, ``REQUANT``, ``ROPE``, ``ATTV``, ``ACT``, ``ELTWISE``) whose length is a norm
  unit's resets that unit and streams the values it writes (after ``accumulate``) into it, so
  the unit's ``LOAD`` phase (its buffer and sums) runs with the writer. A ``NORM`` whose input
  is exactly that run, with no writer run between (the residual norms after the output
  projection and the down projection, the first after ``EMBED``), starts with the unit's
  scalar phase and streams only its gains; any other ``NORM`` resets the unit and loads.
  The argmax unit does the same with a one-row run of the longest ``ARGMAX``'s length (the
  classifier's logits): the result of that packet is kept aside (``am_idx``, ``am_val``), and
  an ``ARGMAX`` of exactly that run takes it instead of reading the logits again. (The norm's
  sum of squares counts a DSP product only beside its element's valid pulse, so a reset never
  leaves squares in flight to be summed into the next vector.)
* ``MATMAT`` (prefill tile, ``tokens`` <= ``lanes``; the beats of
  :func:`sim.golden.mac_array.matmat_beats`): the ``tokens x cols`` int8 inputs are loaded
  into the tile buffer (element ``c`` of token ``t`` at byte ``c % K`` of lane ``t``'s slice in
  word ``c // K``; the first byte of a slice clears the rest, so the last word's tail is zero
  against the weight bank's padding). Then for each output row ``n`` (a *pass*) and each input
  block ``j`` one beat per cycle, passes back to back: the weight-bank row holding ``W[n,
  jK:jK+K]`` is read and lane ``n % lanes``'s slice selected into a register (the shared
  operand, one weight read serving every token), tile-buffer word ``j`` is read two cycles
  after the issue so that both arrive together, five cycles after it (the per-lane operands,
  token ``t`` on lane ``t``); the beat then takes MATVEC's path (beat register, FIFO).
  Each result beat is column ``n`` of the tile: its ``tokens`` sums go through the serializer
  into the requantizer with row ``n``'s parameters (and bias), and the writer walks ``dst + t
  * rows + n`` (a "row" of ``tokens`` elements ``rows`` apart, the next one a step of 1 on).
  Like the vector buffer, the tile buffer remembers its tile (``src``, ``cols``, ``tokens``):
  the q, k and v tiles of one input load it once. The input is loaded at one element per cycle,
  so a tile costs about ``tokens * cols`` (unless reused) plus ``rows * ceil(cols / K)`` cycles,
  or ``tokens * rows`` when that is more (one requantized result per cycle).
* ``SCORES``: the head's query sits in registers; K rows stream from the KV cache one beat per
  cycle as the MAC array's shared operand against the query's planes on lanes 0-2.
* ``SCORES_SOFTMAX``: ``SCORES`` with the requantizer's scores going into the softmax (with a
  row's ``last`` counted from ``POS``) and the softmax's probabilities to the writer, so head
  ``h``'s softmax overlaps head ``h + 1``'s scores. The requantizer cannot stall, so its
  scores pass a 64-entry FIFO in which a K row's last beat reserves a place before it enters
  the MAC array: a softmax that falls behind (short rows) holds the KV stream back. (A score
  finding the FIFO full anyway would end the job with ``OVERRUN``.)
  With an even ``kv_mul`` (GQA/MQA; ``pair_scores``, ``lanes >= 8``) the heads go in pairs:
  one query load holds heads ``h`` and ``h + 1`` (adjacent in ``q``), their planes sit on
  lanes 0-2 and 3-5, so each K row streams once for both; ``h + 1``'s score goes through
  ``rq2`` (``GLU_ACC_BITS`` wide: a 16-bit query only while ``head_size * 2**22`` fits, else
  one head at a time) into a second FIFO, and the softmax takes a row from each FIFO in turn
  (head order). The K stream then runs ahead of the softmax (two scores per beat, one per
  cycle into the softmax), so both FIFOs are a block RAM deep (1,024 scores); the MAC array is
  free after half the beats, and the ``ATTV`` after it (``AV_CHAIN``) starts then, following
  the softmax's rows.
* ``ATTV``: V rows stream from the KV cache and are gathered; one MAC beat per position puts the
  probability planes on the shared operand and the row's elements on the lanes (one group of
  ``lanes // 2`` outputs per pass over V). With one group per head (``head_size <= lanes //
  2``) one reader job streams all the heads' probabilities and the heads' V commands follow
  each other without waiting for the previous head's last beat.
* ``NORM``, ``ROPE``, ``SOFTMAX``, ``ACT``, ``ELTWISE``, ``REQUANT``, ``ARGMAX``,
  ``KVAPPEND``: scratchpad -> unit -> scratchpad (or registers, or the KV cache).
* ``OUTPUT`` exposes ``src[0:len]`` in the host's output window (a view of the scratchpad; the
  values stay until the next job).

Timing (ECP5 speed 6; the SoC's clock is 125 MHz or more, which the engine does **not** meet
yet: see the figures below). Control decisions are registered before they fan out, and wide
datapaths load every cycle with their valid bits and selects copied per lane
(:func:`hdlgen.blocks.dsp.keep_register`):

* sequencer: one-hot (one flip-flop per state); one copy of the opcode and of the instruction
  register per piece (DECODE, CHECK2, EXEC); DECODE's field checks each set a flag, the code
  is chosen from them in CHECK1 and the whole verdict (with the region ends: a base and a
  product select set in CHECK1, the product, from a registered ``MULT18X18D``, added in
  CHECK2) is registered before CHECK3 (four check cycles per instruction besides DECODE); a
  failure's status is applied from registers a cycle later; NEXT, the attention loops and the MATVEC and MATMAT issue counters decide on
  registered flags and sums; the host's start is registered;
* MAC feed: the weight bank reads every cycle at a registered address with ``latency=4``
  (its requests fan out as a tree: a first-stage copy per two groups of four DP16KD, then a
  copy per group; the host's write word is also held in one copy per four lanes before it),
  the vector buffer's operand planes are registered (and delayed to meet the weight row),
  each beat passes a register in front of the beat FIFO whose source (MATVEC, SCORES, ATTV,
  MATMAT) is selected by a copy of the mode flags per lane; the FIFO
  (:class:`~hdlgen.engine.memories.WideFIFO`) is a column group per lane's slice with its own
  pointers and write enable, and its occupancy (credits, beats issued or in flight) is one
  register; the KV cache's read stream passes a skid buffer; the lane slice EMBED and MATMAT
  take from a weight row (and the host's weight reads, through port b) is selected in two
  registered levels (within groups of four lanes, then across the groups), and a block-RAM
  tile buffer has ``latency=3``;
* floorplan (LFE5U-85F, :func:`hdlgen.blocks.ecp5.mac_floorplan`): each lane's eight DSPs
  side by side in a DSP row and its weight tiles in the EBR row next to it, in the same
  columns, so a lane's weights never cross the die and no logic gathers a whole weight row in
  one cycle;
* MAC results: a skid buffer, then a take decided by a flip-flop (``tk_ok``) and a
  combine/serialize stage a cycle later whose controls are copied per lane;
* reader and writer: the element reader's output passes a skid buffer (with the vector-buffer
  lane already selected); the writer selects its unit by one flip-flop per source (AND-OR) and
  registers the value twice (selection, then saturation) before its address logic; the
  requantizer's parameter addresses and the host's memory requests are registered.

Measured (``python -m hdlgen bench blocks --only engine``: stories260K-shaped model, 16x8 MACs,
context 256, LFE5U-85F, nextpnr seed 1): 62.3 MHz estimated after placement (57.9 before these
changes, which routed at 46.4 MHz); the router did not converge within the session, so no
routed figure yet. Inside the whole SoC (``python -m hdlgen build --board ulx3s --device 85F
--model stories260K --freq 50 --seed 1 --allow-timing-failure``), with the floorplan and no
weight row gathered in one place: 57.5 MHz estimated after placement, placed wirelength 405,000
against 678,000 before; router2 brought the overused wires from 51,461 to about 3,300 in 16
iterations (65,186 to 30,105 before) and then stalled, so still no routed figure. What
overflows is in the lower 60 % of the die, where 12 of the 16 lanes sit. With one register
after each DSP (``post_dsp_registers=1``, below): 48.4 MHz estimated, 49,450 overused wires at
the first iteration, 737 at the 24th, then rising again (1,477 at the 41st). After nextpnr's
static placer (``build --placer static``, now the default for a build with the engine) it
routes: 57.0 MHz at a 50 MHz target, 55.0 MHz at a 75 MHz target (seed 1; placement estimates
66.8 and 69.6 MHz); with the input-range checks (``INPUT_RANGE``) added since, 53.6 MHz at 50
(seed 1, placement estimate 73.3), which is why a build with the engine defaulted to 50 MHz
(:data:`hdlgen.build.MODEL_SYS_CLK_MHZ`); with the vector buffer's side region, 52.2 MHz at 50
(seed 1); with the norm and argmax units' early load, 48.3 MHz at 50 (seed 1: **not met**, by
0.7 ns), its critical path again a host weight-write data bit, one flip-flop driving a DP16KD's
``DIA`` across the die (20.0 ns of routing), and 50.45 MHz at seed 2 (met; critical path a
port-b address group copy, loaded from the MAC feed's row register across the die, 19.3 ns of
routing). The routed critical paths had been the weight bank's request fan-out: the 32-bit host
write word replicated across the 1,024-bit port, merged by Yosys into 32 flip-flops each
driving block RAMs across the die (17.4 ns of routing), and the address copies, each loaded
across the die (holding the write data per group of four tiles alone, branch ``bram-wdata``,
moved the critical path to the write address's group copies: 19.3 ns of routing). Since both
ports of the weight bank have ``latency=4`` (a first-stage copy per two groups, then a copy per
group, for address, enable and byte enables; the write data held per group,
``wdata_per_group``) and the host's write word is held in one copy per four lanes before the
bank, the SoC routes at **64.1 MHz** (seed 1) and **60.8 MHz** (seed 2) at 50, LUT4 37,148 /
37,490, FF 29,438 (+2,156), MULT18X18D and DP16KD unchanged; seed 2's critical path is still
the MAC feed's row register to a first-stage address copy (15.9 ns of routing), seed 1's a path
through the engine's control logic (15.6 ns, 13.9 of it routing; the names its cells keep after
synthesis do not tell which). The MAC feed pays a cycle more per ``MATVEC`` and ``MATMAT`` (and
per weight row ``EMBED`` reads): +44 cycles in a stories260K decode step (``python -m hdlgen
bench model --model stories260K``: 16,811 -> 16,855 at position 64). With the chained
``MATVEC`` (``MV_WCFG``) and ``SCORES_SOFTMAX``'s early hand-over it routes at **66.8 MHz**
(seed 1, before the hand-over) and **64.6 MHz** (seed 2) at 50, LUT4 37,771 / 37,884, FF 29,466
/ 29,491; seed 2's critical path is again the MAC feed's row register to a first-stage address
copy (``b_addr_t13``, 15.0 ns of routing). At a 55 MHz target (the default from then until the
fused gate/up, :data:`hdlgen.build.MODEL_SYS_CLK_MHZ`) the same code routes at **64.08 MHz**
(seed 1) and **61.56 MHz** (seed 2), LUT4 37,607, FF 29,492; at 60 MHz seed 1's router2
diverged (overused wires 1,035 at the 26th iteration, 1,345 at the 35th). With the fused RoPE
and KV append (``rope_heads``, ``kv_append``): **64.90 MHz** (seed 1) and **59.41 MHz** (seed
2) at 55, LUT4 38,340, FF 29,606; seed 2's critical path is a flip-flop to a weight bank port-a
address copy (``a_addr_t5_ff2``) across the die, 16.3 ns of routing. With the fused gate/up
(``glu``) and the side-region read: **65.79 MHz** (seed 1) and **67.0 MHz** (seed 2) at 55,
LUT4 36,757, FF 29,674, MULT18X18D 151 of 156, DP16KD 198; at a 60 MHz target (the default
since) **64.98 MHz** (seed 1) and **65.36 MHz** (seed 2), LUT4 36,737, FF 29,675. The
serializer's pair mode for ``glu`` (commit ``ecf3fa7``, reverted by the next: a second
requantizer takes each gate's up, the gate/up ``MATVEC`` of stories260K 421 -> 249 cycles)
routed at 63.06 MHz at seed 1 (LUT4 37,479, FF 30,289, MULT18X18D 153) but router2 diverged at
seed 2 (overused wires 419 at the 25th iteration, 1,944 at the 55th), so it is not in main; nor
was its successor without per-lane muxes (commit ``e91c145``, reverted by ``3af4970``: gate/up
rows in blocks of ``lanes``, the up from ``ser[lanes/2]``), whose router2 diverged at 60 MHz at
both seeds (555 overused wires at the 23rd iteration, 436 at the 43rd; 874 at the 55th): the
second requantizer on two DSPs, common to both, was what to avoid. With ``AV_CHAIN`` (an
``ATTV`` that starts while the softmax before it drains; taken off in session 16 when it routed
at 2 of 6 seed/target pairs) the SoC routes at 60 MHz at **63.39 MHz** (seed 1) and **60.91
MHz** (seed 2), LUT4 37,023, FF 29,720, MULT18X18D 151, DP16KD 198; with the norms' square root
and division at two steps per cycle at **66.05 MHz** and **61.43 MHz**, LUT4 37,183, FF 29,724.
The glu block layout is back since session 19, its ``rq2`` with the product in LUTs (no DSP; a
glu ``MATVEC`` is int8 x int8, at most ``GLU_MAX_COLS`` columns): router2 converges (at most
289 overused wires at the 16th iteration, none by the 64th), LUT4 38,612, FF 30,640, MULT18X18D
151, DP16KD 198, but fmax spreads with the placement: at 60 MHz **60.64** and **68.82 MHz**
(seeds 1 and 2, ``GLU_MAX_COLS`` 2048) and **59.08** and **60.76 MHz** (the same design with
1024: seed 1 missed); at 57 MHz (the default since, 57.14 from the PLL) **65.34** and **57.52
MHz**. The critical paths are single nets across the die: in the two slowest runs (59.08,
57.52) the MAC feed's beat-FIFO write enable (``bw_en``, combinational from the KV read queue)
to a far lane group's copy, 8-9 ns of routing (the next thing to pipeline), in the others the
check multiplier ``chk_mul2``, ``ir_exe``, a weight-bank write-enable copy, the bus decoder.
Pipelining that write enable (two registered steps, the beat one register later: session 20,
commit ``8de3823``, reverted) routed at 60 MHz at **57.91** and **57.63 MHz**, the critical
paths then a weight-bank address copy (16.7 ns of routing from one flip-flop) and the FIFO's
read-pointer enable, so it is not in main. ``SCORES_SOFTMAX`` in pairs of heads (session 20:
two score queues in block RAM, ``qr2``, ``x_pair``) routes at 57 MHz at **62.57** and **61.98
MHz** (seeds 1 and 2), LUT4 39,563, FF 31,079, MULT18X18D 151, DP16KD 200; at 60 MHz at
**60.34** and **58.99 MHz** (seed 2 missed), so the default stays 57. Both 60 MHz runs'
critical paths start at an opcode copy (``op_chk``, ``op_exe``) and cross several LUT and
carry-chain levels with 15 ns of routing (nets named after ``chk_mul2``'s sums: CHECK2's
region ends are the likely part). With those region ends in two steps (a base and a product
select set in CHECK1, the product added in CHECK2; session 22) it routed at 60 MHz at **58.13**
and **47.99 MHz**: both critical paths were then one net from a single write-request register
to the weight bank's LUT-RAM tail (its write enables, 15-20 ns of routing across the die).
With the tail's last write-request stage copied per column group (:class:`DistRAM`; session
23) the SoC routes at 60 MHz, the default since, at **66.54** and **61.98 MHz** (seeds 1 and
2), LUT4 38,813, FF 31,250, MULT18X18D 151, DP16KD 200 (critical paths: a check
multiplier's sum, 14 ns of routing; the score queues' read data into the softmax).
A 17-bit shared operand on the MAC array (session 21, commit ``67c6159``, reverted by the next:
a 16-bit ``MATVEC`` input in one pass instead of int8 planes, ``ATTV``'s probability as one
operand) takes 495 cycles off a stories260K step (``wo`` and ``w2`` in one pass), but its build
did not route at 57 MHz: router2 stayed at 1,720 and 1,110 overused wires (seeds 1 and 2,
iterations 22 and 38, 40 minutes in) where the design in main has none by the 64th; it has
3,700 more flip-flops (34,777: the wider shared copies, product registers and adder trees in
the lanes) and 1,400 fewer LUT4 (38,128: no plane muxes).
The port of ``engine-timing2``'s logic-depth changes (branch ``timing3``: EXEC's configuration
registered a state early, the reader's output queue, registered check verdicts) estimated 63.9
MHz at 75 instead of 69.6 and did not route at 50 (router2 at 628 overused wires, then rising):
its registers crowd the sequencer's corner, so it is not in main. What limits fmax next (by
logic depth in the synthesized netlist): the sequencer's EXEC state (an opcode-selected load of
~200 configuration bits: pre-compute them into registers before EXEC), the reader's ready into
its skid buffer (the units' ready OR), and the attention loop's state decisions.

An 8-bit MAC input (a ``MATVEC`` with ``in_width`` 8, every ``MATMAT``) must be int8: the
vector-buffer and tile-buffer loads set a sticky flag (``vb_wide``, ``tb_wide``) for an element
outside -128..127 (a compare at the reader's registered output), and the load's last state
(``MV_LOAD``, ``MM_LOAD``) ends the job with ``INPUT_RANGE`` instead of starting the MAC
array on the elements' low bytes. ``vb_wide`` describes the buffer's contents, so a
``MATVEC`` that reuses the vector buffer (loaded by a 16-bit ``MATVEC`` of the same input)
is refused too. ``KVAPPEND``, an 8-bit ``ROPE``, an 8-bit ``SCORES`` query and ``ATTV``'s
probabilities (unsigned ``prob_bits``) stream into their units, so their flag (``in_bad``)
ends the job in ``NEXT``, after the instruction (whose results are then undefined). Not
checked (the golden model refuses them, the compiler emits none): 8-bit ``ACT`` and
``ELTWISE`` operands.

What the generated units fix (checked at run time, ``BAD_FIELD`` otherwise): the norm
formats (kind, length, gain/bias/output fractions; the epsilon is baked from the image and not
re-read), the softmax formats, the RoPE and activation tables (by parameter address) and the
SwiGLU scales, the head size, the longest ``ARGMAX``, the longest ``MATMAT`` input row (the
tile buffer's depth; ``tokens`` outside ``1 .. lanes``, zero ``rows`` or ``cols`` are
``BAD_FIELD`` too). An engine whose program has no ``MATMAT`` has no tile buffer and ends a
``MATMAT`` with ``UNSUPPORTED``.
"""

import json
from dataclasses import asdict

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.activation import Activation
from hdlgen.blocks.argmax import Argmax
from hdlgen.blocks.bram import BlockRAM
from hdlgen.blocks.dsp import DSPMultiplier, keep_register
from hdlgen.blocks.ecp5 import spare_dsp_sites, weight_floorplan
from hdlgen.blocks.eltwise import Eltwise
from hdlgen.blocks.kv_cache import KVCache
from hdlgen.blocks.layernorm import LayerNorm
from hdlgen.blocks.mac_array import MACArray
from hdlgen.blocks.pointwise_kit import delay, saturate
from hdlgen.blocks.requant import Requant
from hdlgen.blocks.rmsnorm import RMSNorm
from hdlgen.blocks.rope import Rope
from hdlgen.blocks.softmax import Softmax
from hdlgen.blocks.stream_parts import SkidBuffer
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.ebr import norm_formats, score_queue_depth, scores_in_pairs
from hdlgen.engine.isa import (GLU_MAX_COLS, EltOp, LAYOUTS, NormKind, Opcode, Reg, Width,
                               encode_program, layout_digest)
from hdlgen.engine.memmap import EngineMap, WINDOWS
from hdlgen.engine.memories import DistRAM, SplitRAM, WideFIFO, split_depth
from hdlgen.engine.streams import ElementReader
from hdlgen.errors import UserError
from hdlgen.soc import wishbone
from sim.golden.rope import FRAC_BITS as ROPE_FRAC

__all__ = ["Engine", "ErrorCode", "UNITS"]

#: Width of a glu MATVEC's sums (int8 inputs, int8 or weight_exp's int9 weights, at most
#: GLU_MAX_COLS columns): rq2's input.
GLU_ACC_BITS = (128 * 256 * GLU_MAX_COLS).bit_length() + 1

#: Per-unit busy outputs (``unit_busy`` bit ``n`` is ``UNITS[n]``), for the profiling counters.
UNITS = ("mac_array", "kv_cache", "softmax", "norm", "requant", "rope", "activation", "eltwise",
         "argmax", "loader")


class ErrorCode(enum.Enum, shape=4):
    """``error_code`` of a failed job."""
    NONE = 0
    BAD_OPCODE = 1          # an opcode the ISA does not define
    UNSUPPORTED = 2         # not in this engine (MATMAT without a tile buffer, nested LOOP)
    SCRATCH_RANGE = 3       # a scratchpad region outside the scratchpad
    WEIGHT_RANGE = 4        # a weight region outside the weight bank
    PARAM_RANGE = 5         # a parameter region outside the parameter memory
    POS_RANGE = 6           # POS at or beyond the KV cache's context
    BAD_FIELD = 7           # a field the generated units cannot serve (format, head size...)
    BAD_INDEX = 8           # EMBED index outside the table
    KV_CACHE = 9            # the KV cache refused an access
    PROGRAM_RANGE = 10      # the program counter left the program memory
    OVERRUN = 11            # a unit refused an item it was guaranteed to take (internal)
    INPUT_RANGE = 12        # an 8-bit MATVEC or MATMAT input element outside int8


# routes of the element reader's output
_R_VB, _R_Q, _R_NORM, _R_ROPE, _R_KV, _R_SMAX, _R_ACT, _R_ELT, _R_ARGMAX, _R_RQ, _R_P, _R_TB = \
    range(12)
# writer sources
_W_RQ, _W_NORM, _W_ROPE, _W_SMAX, _W_ACT, _W_ELT = range(6)
_PA, _PA2, _PB, _PC = 1, 2, 4, 8      # a region end's check product (CHECK1's select, one-hot)
# MAC modes
_M_MATVEC, _M_SCORES, _M_ATTV, _M_MATMAT = range(4)
# operand planes
_P_X8, _P_HI, _P_LO, _P_CARRY = range(4)


#: Instructions after which the next one is fetched, decoded and checked while the writer
#: finishes (their results pass only unit pipelines and the writer once the reader and the MAC
#: issue are done, and read nothing the next DECODE sets).
_EARLY_OPS = (Opcode.MATVEC, Opcode.MATMAT, Opcode.REQUANT, Opcode.NORM, Opcode.ROPE,
              Opcode.SOFTMAX, Opcode.ACT, Opcode.ELTWISE)


def _in(op, ops):
    """``op`` (a 6-bit opcode value) is one of ``ops``."""
    return _or_all([op == o.value for o in ops])


def _or_all(values):
    """Bitwise OR of a list of values (a balanced tree)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _pow2(n):
    return n >= 1 and not n & (n - 1)


def _bits(n):
    return max(1, (max(1, n) - 1).bit_length())


def _hi_plane(x):
    """High int8 plane ``(x - lo) >> 8`` of a 16-bit value (range -128..128), 9 bits signed."""
    return (x.as_signed() >> 8) + x[7]


def _plane(x, sel):
    """int8 plane ``sel`` of a signed 16-bit value (see :func:`sim.golden.engine.shared_planes`)."""
    hi = Signal(signed(10))
    out = Signal(signed(8))
    lo = x[0:8].as_signed()
    return out, [hi.eq(_hi_plane(x)),
                 out.eq(Mux(sel == _P_X8, lo, Mux(sel == _P_LO, lo,
                            Mux(sel == _P_HI, Mux(hi > 127, 127, hi[0:8].as_signed()),
                                Mux(hi > 127, 1, 0)))))]


class _OneHotFSM:
    """The sequencer's state machine, one flip-flop per state (``m.FSM`` encodes states in
    binary, and every state test then decodes several bits before it reaches the wide clock
    enables of the registers it loads).

    ``with fsm.state(name):`` opens a state's body (an ``If`` on its bit); inside it
    ``fsm.goto(other)`` clears that bit and sets ``other``'s at the next edge. At most one
    ``goto`` takes effect per cycle in each state (the bodies use ``If``/``Elif`` for that).
    ``fsm(name)`` is a state's flip-flop (created on first use; ``init`` starts set).
    """

    def __init__(self, m, init):
        self._m, self._init = m, init
        self.bits = {}
        self._cur = None

    def __call__(self, name):
        if name not in self.bits:
            self.bits[name] = Signal(name=f"st_{name.lower()}", init=int(name == self._init))
        return self.bits[name]

    def state(self, name):
        fsm = self

        class _Body:
            def __enter__(self):
                fsm._cur = name
                self._ctx = fsm._m.If(fsm(name))
                self._ctx.__enter__()

            def __exit__(self, *exc):
                fsm._cur = None
                return self._ctx.__exit__(*exc)
        return _Body()

    def goto(self, name):
        if self._cur is None:
            raise RuntimeError(f"goto({name!r}) outside a state body")
        if name != self._cur:
            self._m.d.sync += [self(self._cur).eq(0), self(name).eq(1)]


class Engine(wiring.Component):
    """The transformer engine for a compiled model.

    Parameters
    ----------
    config : AcceleratorConfig
        MAC-array shape and accumulator (``lanes`` and ``macs_per_lane`` powers of two,
        ``lanes >= 4``).
    compiled : hdlgen.compiler.Compiled
        The model's program and memory image: they size the memories and choose the formats
        and tables of the norm, softmax, RoPE and activation units. The contents are loaded by
        the host through ``bus`` (:meth:`EngineMap.image_writes`).
    program_words : int, optional
        Program-memory depth (default: the program's length).
    preload : bool
        Bake the program, the weights and the parameters into the memories' initial contents
        (the bitstream then runs the model after configuration; the host can still load other
        contents of the same shapes through ``bus``).
    weight_main_rows : int, optional
        Weight rows kept in block RAM (a power of two), the rows beyond in LUT RAM. Default
        (:func:`hdlgen.engine.memories.split_depth`): split only where it saves DP16KD tiles,
        e.g. stories260K's 2056 rows of 128 bytes take 128 tiles plus 8 rows of LUT RAM instead
        of 192 tiles.
    pair_scores : bool
        A ``SCORES_SOFTMAX`` with an even ``kv_mul`` computes two query heads per K row
        (default ``True``; used when the program has one and ``lanes >= 8``). ``False``: one
        head per K row, as an MHA model's (the results are the same integers).
    score_queue : int, optional
        Depth of the softmax's score queue (two with pairs), a power of two >= 8, and with
        pairs at least the context + 3. Default: 64, or with pairs 1,024 (one block RAM each)
        or the next power of two above the context + 3.

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width=map.addr_width))
        Host access (windows in :mod:`hdlgen.engine.memmap`).
    start : In(1)
        One-cycle pulse: run a decode step with ``token`` and ``pos``.
    token, pos : In(32)
        ``TOKEN`` and ``POS``, sampled at ``start``.
    busy : Out(1)
    done, error : Out(1)
        One-cycle pulses at the end of a job; ``error_code`` holds the :class:`ErrorCode`.
    result, result_value : Out(32)
        ``RESULT`` and ``RESULT_VALUE`` (the argmax).
    unit_busy : Out(len(UNITS))
        One bit per unit in :data:`UNITS`.
    """

    def __init__(self, config: AcceleratorConfig, compiled, *, program_words: int = None,
                 preload: bool = False, weight_main_rows: int = None, pair_scores: bool = True,
                 score_queue: int = None):
        self._MustUse__silence = True       # not "unused" if the arguments are rejected
        config = config.check()
        image, program = compiled.image, list(compiled.program)
        lanes, K = config.lanes, config.macs_per_lane
        if not (_pow2(lanes) and _pow2(K) and lanes >= 4 and K >= 2):
            raise UserError(f"the engine needs lanes (>= 4) and macs_per_lane (>= 2) to be powers "
                            f"of two, not lanes={lanes}, macs_per_lane={K}")
        if (image.lanes, image.macs_per_lane) != (lanes, K):
            raise UserError(f"the image is laid out for lanes={image.lanes}, macs_per_lane="
                            f"{image.macs_per_lane} but the config has {lanes}, {K}: compile "
                            f"with the same config")
        self._cfg, self._image, self._program = config, image, program
        self._preload = bool(preload)
        self._lanes, self._K = lanes, K
        self._hs = image.head_size
        self._beat = max(b for b in (K, K // 2, K // 4, 8, 4, 2, 1) if 1 <= b <= K and
                         self._hs % b == 0 and _pow2(b))
        self._ctx = image.context
        # a model compiled with prefill (hdlgen.compiler.prefill) also runs its longer programs
        prefill = (getattr(compiled, "manifest", None) or {}).get("prefill", {})
        pw = program_words or max(len(program), prefill.get("program_words", 0))
        if pw < len(program):
            raise UserError(f"program_words={pw} is smaller than the program ({len(program)})")
        self._map = EngineMap(program_words=pw, act_elements=max(1, image.act_elements),
                              weight_rows=max(1, image.weights.shape[0]), row_bytes=lanes * K,
                              param_words=max(1, int(image.params.size)))
        wr = self._map.weight_rows
        self._weight_main_rows = (split_depth(lanes * K * 8, wr) if weight_main_rows is None
                                  else weight_main_rows)
        if not (self._weight_main_rows == wr or
                (_pow2(self._weight_main_rows) and self._weight_main_rows < wr)):
            raise UserError(f"weight_main_rows={weight_main_rows} must be the weight bank's "
                            f"{wr} rows or a power of two below that")
        self._pair_scores = bool(pair_scores)
        if score_queue is not None and (score_queue < 8 or not _pow2(score_queue)):
            raise UserError(f"score_queue={score_queue}: the score queue's depth must be a power "
                            f"of two >= 8 (default 64, 1024 with pairs)")
        self._score_queue = score_queue
        self._analyse()
        self._mm_cols = max(self._mm_cols, prefill.get("matmat_cols", 0))
        self._MustUse__silence = False
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=self._map.addr_width)),
            "start": In(1), "token": In(32), "pos": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(ErrorCode),
            "result": Out(32), "result_value": Out(32),
            "unit_busy": Out(len(UNITS)),
        })

    @property
    def memory_map(self) -> EngineMap:
        return self._map

    def fingerprint(self) -> str:
        """What this engine's gateware fixes at generation time, as text: its memory map,
        context and head layout, and the formats and constants baked into its units (norm formats and epsilons, softmax formats, SwiGLU and
        activation tables, RoPE table, longest argmax, longest ``MATMAT`` input row if the
        program has ``MATMAT``) and the instruction set its sequencer decodes
        (:func:`~hdlgen.engine.isa.layout_digest`). Two compiled models with the same
        fingerprint run on the same bitstream (one is loaded over the link); otherwise the model
        needs its own build."""
        image = self._image

        def plain(v):
            if isinstance(v, dict):
                return {k: plain(x) for k, x in sorted(v.items()) if k != "words"}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if hasattr(v, "value") and not isinstance(v, (int, float)):
                return v.value                      # enum members
            return v if isinstance(v, (int, float, str, type(None))) else str(v)

        return json.dumps({
            "engine_map": asdict(self.memory_map), "context": image.context,
            "head_size": image.head_size, "kv_layers": image.kv_layers, "kv_heads": image.kv_heads,
            "norms": plain(self._norms), "softmax": plain(self._smax),
            "swiglu": plain(self._swiglu), "acts": plain(self._acts), "rope": plain(self._rope),
            "rope_addr": self._rope_addr, "argmax_len": self._argmax_len,
            "isa": layout_digest(),
            **({"matmat_cols": self._mm_cols} if self._mm_cols else {}),
        }, sort_keys=True, separators=(",", ":"))

    @property
    def kv_beat_bytes(self) -> int:
        return self._beat

    # ---- elaboration-time analysis of the program ---------------------------------------------
    def _analyse(self):
        prog, image = self._program, self._image
        # one norm unit per distinct format (the epsilon read at every layer the NORM runs at)
        norms = norm_formats(prog, [int(v) for v in image.params])
        smax, self._vb_len = set(), 1
        self._mm_cols = 0                   # longest MATMAT input row: sizes the tile buffer
        for n, ins in enumerate(prog):
            if ins.op in (Opcode.SOFTMAX, Opcode.SCORES_SOFTMAX):
                smax.add((ins.in_frac, ins.out_bits))
            elif ins.op == Opcode.MATVEC:
                self._vb_len = max(self._vb_len, ins.cols)
            elif ins.op == Opcode.ELTWISE:
                self._vb_len = max(self._vb_len, ins.len)
            elif ins.op == Opcode.MATMAT:
                self._mm_cols = max(self._mm_cols, ins.cols)
        # the vector buffer's side region: a MATVEC's results, for an ELTWISE that reads them
        # (SwiGLU's gate and up); sized for the longest ELTWISE some MATVEC's rows match
        mv_rows = {ins.rows for ins in prog if ins.op == Opcode.MATVEC}
        self._side_len = max([ins.len for ins in prog
                              if ins.op == Opcode.ELTWISE and ins.len in mv_rows] +
                             [ins.rows // 2 for ins in prog if ins.op == Opcode.MATVEC and
                              ins.glu] + [0])
        if len(smax) > 1:
            raise UserError(f"the program uses several softmax formats {sorted(smax)}; the "
                            f"engine has one softmax unit")
        self._norms = norms
        self._smax = smax.pop() if smax else (8, 14)
        self._rope_addr, self._rope = image.rope_table() or (0, None)
        self._acts = [(a, d) for a, d in sorted(image.tables.items()) if d["kind"] == "act"]
        sw = {(d["a_bits"], d["b_bits"], d["out_bits"], d["a_scale"], d["silu_scale"])
              for d in image.tables.values() if d["kind"] == "swiglu"}
        if len(sw) > 1:
            raise UserError(f"the image has several SwiGLU formats {sorted(sw)}; the engine "
                            f"has one SwiGLU unit (the compiler shares one across layers)")
        self._swiglu = sw.pop() if sw else None
        self._argmax_len = max([i.len for i in prog if i.op == Opcode.ARGMAX] + [2])
        self._pair_scores = scores_in_pairs(prog, self._lanes, self._pair_scores)
        # (pairs: the softmax reads one queue while the K stream also fills the other, which
        # must then hold a whole row: the context plus sm_space's margin of 3)
        need = self._ctx + 3 if self._pair_scores else 8
        if self._score_queue is not None and self._score_queue < need:
            raise UserError(f"score_queue={self._score_queue} is too shallow for pairs of heads "
                            f"over a context of {self._ctx}: give at least {need} (the power "
                            f"of two {1 << (need - 1).bit_length()}), or pair_scores=False")
        self._smq = score_queue_depth(self._ctx, self._pair_scores, self._score_queue)
        self._swiglu_addrs = sorted(a for a, d in image.tables.items() if d["kind"] == "swiglu")

    # ---- gateware ---------------------------------------------------------------------------
    def _initial_contents(self) -> dict:
        """``{"prog", "wts", "par"}``: one int per word of the program memory (128-bit
        instructions), the weight bank (row bytes little-endian: byte ``lane * K + k`` in bits
        ``8 (lane * K + k)``) and the parameter memory."""
        image = self._image
        wb = np.asarray(image.weights, dtype=np.int64) & 0xFF
        rows = [int.from_bytes(bytes(int(b) for b in row), "little") for row in wb]
        return {"prog": encode_program(self._program),
                "wts": rows,
                "par": [int(v) & 0xFFFFFFFF for v in np.asarray(image.params, dtype=np.int64)]}

    def elaborate(self, platform):
        m = Module()
        cfg, image, mp = self._cfg, self._image, self._map
        lanes, K, hs, B = self._lanes, self._K, self._hs, self._beat
        acc_w = cfg.acc_width
        A, WR, PM = mp.act_elements, mp.weight_rows, mp.param_words
        PD = mp.program_words
        VBD = -(-self._vb_len // K)
        SVD = -(-self._side_len // K)        # side region: words VBD .. VBD + SVD - 1
        ctx = self._ctx
        G = lanes // 2                       # ATTV outputs per pass
        NG = -(-hs // G)                     # ATTV groups
        BPR = hs // B                        # KV beats per row
        # SCORES_SOFTMAX in pairs (GQA/MQA, kv_mul even): heads h and h + 1 share each K row,
        # h's query planes on lanes 0-2, h + 1's on lanes 3-5, h + 1's score through rq2
        # (GLU_ACC_BITS wide: a 16-bit query only while head_size * 2**22 fits, an 8-bit one
        # always) into a second score queue; see the softmax's queues
        PAIR = self._pair_scores
        PAIR16 = hs * 2 ** 22 < 2 ** (GLU_ACC_BITS - 1)
        aw_act, aw_w, aw_p = _bits(A), _bits(WR), _bits(PM)

        # ---- memories -------------------------------------------------------------------------
        init = self._initial_contents() if self._preload else {}
        # program and vector buffer: a few dozen wide words, LUT RAM; the weight bank in block
        # RAM, but a tail of a few rows past a power of two in LUT RAM (see memories.py)
        m.submodules.prog = prog = DistRAM(width=128, depth=PD, granularity=8,
                                           init=init.get("prog"))
        m.submodules.act = act = BlockRAM(width=16, depth=A)
        main_rows = self._weight_main_rows
        # lane l's weight tiles beside its DSPs (:func:`hdlgen.blocks.ecp5.weight_floorplan`)
        dsp_sites, wts_sites = weight_floorplan(platform, lanes, K, main_rows,
                                                init=bool(init.get("wts")))
        # (the weight bank spans the die's EBR rows: latency 4, each port's requests fan out
        # as a tree of copies; the host's write data has a level of its own, see hw_copy)
        if main_rows < WR:
            m.submodules.wts = wts = SplitRAM(width=lanes * K * 8, depth=WR, granularity=8,
                                              main_depth=main_rows, init=init.get("wts"),
                                              latency=4, sites=wts_sites,
                                              wdata_per_group=True)
        else:
            m.submodules.wts = wts = BlockRAM(width=lanes * K * 8, depth=WR, granularity=8,
                                              init=init.get("wts"), latency=4,
                                              sites=wts_sites, wdata_per_group=True)
        m.submodules.par = par = BlockRAM(width=32, depth=PM, init=init.get("par"))
        m.submodules.vb = vb = DistRAM(width=16 * K, depth=VBD + SVD, granularity=8)
        # the MATMAT tile buffer: word j holds the input slices [j*K, j*K+K) of all the tile's
        # tokens (token l at bytes l*K ..), the per-lane operand of one beat; only in an
        # engine whose program has MATMAT
        TBD = -(-self._mm_cols // K)
        tb = None
        # (in block RAM it spans as many DP16KD columns as the weight bank: latency 3, its
        # request registers replicated)
        if TBD:
            if TBD <= 16:
                m.submodules.tb = tb = DistRAM(width=lanes * K * 8, depth=TBD, granularity=8)
            else:
                m.submodules.tb = tb = BlockRAM(width=lanes * K * 8, depth=TBD, granularity=8,
                                                latency=3)

        # ---- units ----------------------------------------------------------------------------
        # (one register after each DSP, not the array's default three: on the floorplan a
        # lane's DSPs sit next to its adder tree, and the 4,096 flip-flops saved are in the die's
        # most crowded rows; in the stories260K SoC build router2's overused wires fell to 3,919
        # in 9 iterations with one, 5,485 with three)
        m.submodules.mac = mac = MACArray(lanes, K, acc_w, cfg.max_dot_length,
                                          dsp_sites=dsp_sites, post_dsp_registers=1)
        m.submodules.rq = rq = Requant(out_bits=16, has_bias=True)
        m.submodules.smax = smax = Softmax(max_len=ctx, in_width=16, in_frac=self._smax[0],
                                           out_bits=self._smax[1])
        am_rst = Signal()                    # see am_on
        amax = Argmax(bits=16, max_length=self._argmax_len)
        m.submodules.argmax = ResetInserter({"sync": am_rst})(amax)
        kv_cfg = cfg.replace(context_length=ctx)
        m.submodules.kv = kv = KVCache(layers=image.kv_layers, kv_heads=image.kv_heads,
                                       head_dim=hs, beat_bytes=B, config=kv_cfg)
        m.submodules.eadd = eadd = Eltwise("add", bits=16)
        norms = []
        nm_rst = [Signal(name=f"nm_rst{n}") for n in range(len(self._norms))]  # see nm_feed
        for n, (kind, dim, gf, bf, of, eps_int) in enumerate(self._norms):
            ln = kind == NormKind.LAYERNORM
            eps = eps_int / ((dim * dim if ln else dim) * 256)
            # (two square-root and division steps per cycle: 16 cycles off each NORM's
            # scalar phase, which nothing overlaps)
            if ln:
                blk = LayerNorm(dim=dim, in_width=16, gamma_width=16, gamma_frac=gf,
                                beta_width=16, beta_frac=bf, out_frac=of, eps=eps,
                                steps_per_cycle=2)
            else:
                blk = RMSNorm(dim=dim, in_width=16, gamma_width=16, gamma_frac=gf,
                              out_frac=of, eps=eps, steps_per_cycle=2)
            m.submodules[f"norm{n}"] = ResetInserter({"sync": nm_rst[n]})(blk)
            norms.append(blk)
        rope = None
        if self._rope is not None:
            m.submodules.rope = rope = Rope(head_size=self._rope["head_size"],
                                            theta=self._rope["theta"], bits=16,
                                            max_positions=self._rope["context"])
            # the fused RoPE sends unrotated pairs at position 0: its words must be the
            # identity (cos 1.0, sin 0 in the unit's format)
            assert set(rope.table_words()[:self._rope["head_size"] // 2]) == {1 << ROPE_FRAC}
        acts = []
        for n, (addr, d) in enumerate(self._acts):
            blk = Activation(d["func"], d["in_bits"], d["out_bits"], d["in_scale"],
                             d["out_scale"])
            m.submodules[f"act{n}"] = blk
            acts.append((addr, d, blk))
        swig = rq2 = None
        if PAIR and self._swiglu is None:
            m.submodules.rq2 = rq2 = Requant(out_bits=16, has_bias=False, acc_bits=GLU_ACC_BITS,
                                             lut_mult=True)
        if self._swiglu is not None:
            ab, bb, ob, a_sc, s_sc = self._swiglu
            m.submodules.swiglu = swig = Eltwise("swiglu", a_bits=ab, b_bits=bb, out_bits=ob,
                                                 a_scale=a_sc, silu_scale=s_sc)
            # a glu MATVEC's ups (its gates go through rq, beside them), the product in LUTs:
            # glu is int8 x int8 with at most GLU_MAX_COLS columns (DECODE refuses others)
            m.submodules.rq2 = rq2 = Requant(out_bits=16, has_bias=False, acc_bits=GLU_ACC_BITS,
                                             lut_mult=True)

        m.submodules.rd = rd = ElementReader(addr_width=aw_act, width=16,
                                             aux_addr_width=_bits(VBD + SVD), aux_width=16 * K,
                                             aux_shift=(K - 1).bit_length())
        m.submodules.prd = prd = ElementReader(addr_width=aw_p, width=32, aux_addr_width=aw_p,
                                               aux_width=32, aux_shift=0)
        # the reader's output through a skid buffer: the reader's FIFO sees a registered
        # ready, the units a registered valid and payload (the element's vector-buffer lane
        # selected before it: fewer bits under the buffer's enable)
        ro_l = data.StructLayout({"data": 16, "lane": signed(16), "row_end": 1, "last": 1})
        m.submodules.rd_skid = rdo_skid = SkidBuffer(ro_l)
        rp_ = rd.o.payload
        m.d.comb += [rdo_skid.i.valid.eq(rd.o.valid), rd.o.ready.eq(rdo_skid.i.ready),
                     rdo_skid.i.payload.data.eq(rp_.data),
                     rdo_skid.i.payload.lane.eq(rp_.aux.word_select(rp_.sub[:(K - 1).bit_length()],
                                                                    16)),
                     rdo_skid.i.payload.row_end.eq(rp_.row_end),
                     rdo_skid.i.payload.last.eq(rp_.last)]
        rdo = rdo_skid.o

        # ---- sequencer state ------------------------------------------------------------------
        busy = Signal()
        pc = Signal(16)
        ir = Signal(128)
        regs = Array(Signal(32, name=f"reg_{r.name.lower()}") for r in Reg)
        r_token, r_pos, r_layer = regs[Reg.TOKEN.value], regs[Reg.POS.value], regs[Reg.LAYER.value]
        r_result, r_rvalue = regs[Reg.RESULT.value], regs[Reg.RESULT_VALUE.value]
        wbase = Signal(24)
        pbase = Signal(24)
        lp_active = Signal()
        lp_start = Signal(16)
        lp_end = Signal(16)
        lp_count = Signal(8)
        err_code = Signal(ErrorCode)
        out_addr = Signal(16)
        out_len = Signal(16)
        cycles = Signal(32)
        st_done = Signal()
        st_err = Signal()
        m.d.comb += [self.busy.eq(busy), self.result.eq(r_result),
                     self.result_value.eq(r_rvalue), self.error_code.eq(err_code)]
        m.d.sync += [self.done.eq(0), self.error.eq(0)]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        v = {op: data.View(lay, ir[:data.Layout.cast(lay).size]) for op, lay in LAYOUTS.items()}
        # the opcode and the instruction: one registered copy per sequencer piece (DECODE,
        # CHECK2, EXEC), loaded with ir, so that no decode net fans out to all of them
        op_copies = {}

        # per-instruction operands (set in DECODE)
        npos = Signal(17)                     # POS + 1, a register (no adder on control paths)
        wb_eff = Signal(24)
        pb_eff = Signal(24)
        x_w = Signal(24)                      # effective weight address
        x_p = Signal(24)                      # effective parameter address
        ob_n = Signal(16)
        ib_n = Signal(16)
        ob_m1, ib_m1 = Signal(16), Signal(16)   # ob_n - 1, ib_n - 1
        m.d.sync += [ob_m1.eq(ob_n - 1), ib_m1.eq(ib_n - 1)]
        plane_sz = Signal(32)
        # checks
        mul_a1, mul_a2, mul_b1, mul_b2 = (Signal(16, name=n) for n in ("ma1", "ma2", "mb1", "mb2"))
        prod_a, prod_b = Signal(32), Signal(32)
        chk = {n: Signal(33, name=f"chk_{n}") for n in ("r1", "r2", "wr", "w", "p")}
        # each region end in two steps: CHECK1 sets its base (the end less a check product)
        # and a one-hot select of that product (_PA, _PA2, _PB, _PC), CHECK2 adds it
        chk_base = {n: Signal(33, name=f"chkb_{n}") for n in chk}
        chk_sel = {n: Signal(4, name=f"chks_{n}") for n in chk}
        chk_psz = Signal()                    # CHECK2 sets plane_sz (EMBED, MATVEC)
        chk_hard = Signal(ErrorCode)          # a field error found in DECODE

        # what the vector buffer holds: a MATVEC whose input is already there skips the load
        vb_tag_valid = Signal()
        vb_tag_src = Signal(16)
        vb_tag_len = Signal(16)
        vb_tag_end = Signal(17)               # src + len, a cycle after them
        m.d.sync += vb_tag_end.eq(vb_tag_src + vb_tag_len)
        # the side region's tag: the MATVEC results it holds (sd_on: a MATVEC is writing them)
        sd_on, sd_tag_valid = Signal(), Signal()
        sd_tag_src, sd_tag_len = Signal(16), Signal(16)
        sd_tag_end = Signal(17)
        m.d.sync += sd_tag_end.eq(sd_tag_src + sd_tag_len)
        # the same for the MATMAT tile buffer (q, k and v of a tile read one input)
        tb_tag_valid = Signal()
        tb_tag_src = Signal(16)
        tb_tag_cols = Signal(16)
        tb_tag_tok = Signal(8)
        tb_tag_end = Signal(17)               # src + tokens * cols
        # ---- the writer -----------------------------------------------------------------------
        wr_start = Signal()
        wr_base = Signal(aw_act)
        wr_rowb = Signal(aw_act)
        wr_cur = Signal(aw_act)
        wr_lm1 = Signal(16)                   # row length - 1
        wr_stride = Signal(16)
        wr_step = Signal(16, init=1)          # address step within a row (MATMAT: rows)
        wr_col = Signal(16)
        wr_total = Signal(32)
        wr_count = Signal(32)
        wr_acc = Signal()
        wr_w8 = Signal()
        wr_src = Signal(3)
        wr_done_r = Signal()                  # registered (and low the cycle after wr_start)
        m.d.sync += wr_done_r.eq(~wr_start & (wr_count == wr_total))
        # wr_idle: no started writer run is unfinished (registered; EXEC sets wr_total before
        # wr_start, and a job may fail in between)
        wr_run, wr_idle_r = Signal(), Signal(init=1)
        with m.If(wr_start):
            m.d.sync += wr_run.eq(1)
        with m.Elif(wr_count == wr_total):
            m.d.sync += wr_run.eq(0)
        m.d.sync += wr_idle_r.eq(~wr_start & (~wr_run | (wr_count == wr_total)))
        # ATTV follows SCORES_SOFTMAX (see AV_CHAIN): from its CHECK3 to its own wr_start
        # (av_hold) the softmax's run is not the instruction's, so wr_done and wr_idle are
        # low; av_pend: its writer configuration waits for the softmax's run to end (w_go:
        # it was applied, wr_start now); sm_rows: rows the running writer has written
        av_pend, av_hold, w_go = Signal(), Signal(), Signal()
        sm_rows = Signal(16)
        wr_done, wr_idle = Signal(), Signal()
        m.d.comb += [wr_done.eq(wr_done_r & ~av_hold), wr_idle.eq(wr_idle_r & ~av_hold)]
        early_ok, ww_prev, drained = Signal(), Signal(), Signal()   # see WAIT_WRITER
        # a MATVEC that reuses the vector buffer follows a MATVEC while its results drain
        # (see MV_CHAIN): wr_mv, the writer's run is a MATVEC's; mv_taken, every MAC result of
        # the last MATVEC is in the serializer; mv_chain, this MATVEC follows one: its writer
        # and requantizer configuration wait for the writer (MV_WCFG) and its results wait in
        # front of the serializer until MV_WSTART
        wr_mv, mv_taken, mv_chain = Signal(), Signal(), Signal()
        wr_end = Signal(18)                   # wr_base + wr_total (a MATVEC's run: one row)
        m.d.sync += wr_end.eq(wr_base + wr_total[:17])
        # chaining: the results of a NORM, ACT, REQUANT, ELTWISE or ATTV are also written into
        # the vector buffer (element n of the run at element n), so that a MATVEC of them
        # finds its input there (ch_on)
        ch_on, ch_wide, ch_carry = Signal(), Signal(), Signal()

        w_in_valid = Signal()
        w_in = Signal(signed(17))
        # rope unpairer
        rp_hold = Signal()
        rp_y1 = Signal(signed(16))
        # a MATVEC's rope_heads (fz_*, see the fused RoPE pairer): fz_on, its results go
        # through the RoPE unit; fz_left, rotated pairs still to come
        fz_on, fz_have = Signal(), Signal()
        fz_left = Signal(16)
        # a MATVEC's glu (gl_on): its results are paired like the fused RoPE's (gate, up)
        # into the SwiGLU unit, whose values the writer takes
        gl_on = Signal()
        # the side region's values are int8 (sd_w8), or one is >= 32640 (sd_carry: a 16-bit
        # MATVEC of them needs the carry plane; sd_cr, of the run writing them)
        sd_w8, sd_carry, sd_cr = Signal(), Signal(), Signal()
        # the source, one flip-flop per writer source; the selected unit's output is the OR
        # of every unit's output gated by its flag and valid (one unit outputs at a time)
        ws = [Signal(name=f"ws{i}") for i in range(6)]
        m.d.sync += [w.eq(wr_src == i) for i, w in enumerate(ws)]
        w_srcs = [(ws[_W_RQ], rq.o.valid, rq.o.payload.y),
                  (ws[_W_SMAX], smax.o.valid, smax.o.payload.data)]
        w_srcs += [(ws[_W_NORM], blk.o.valid, blk.o.payload.data) for blk in norms]
        w_srcs += [(ws[_W_ACT], blk.o.valid, blk.o.payload.y) for _, _, blk in acts]
        w_srcs += [(ws[_W_ELT], eadd.o.valid, eadd.o.payload.y)]
        if rope is not None:
            w_srcs += [(ws[_W_ROPE], rp_hold | rope.o.valid,
                        Mux(rp_hold, rp_y1, rope.o.payload.y[0]))]
        if swig is not None:
            w_srcs += [(ws[_W_ELT], swig.o.valid, swig.o.payload.y)]
        w_terms, w_vals = [], []
        for n, (flag, valid, value) in enumerate(w_srcs):
            t, tv = Signal(signed(17), name=f"w_term{n}"), Signal(name=f"w_tv{n}")
            m.d.comb += [tv.eq(flag & valid), t.eq(Mux(tv, value, 0))]
            w_terms.append(t)
            w_vals.append(tv)
        m.d.comb += [w_in_valid.eq(Cat(*w_vals).any()), w_in.eq(_or_all(w_terms))]
        # every unit's output is always taken (the writer never stalls)
        m.d.comb += [rq.o.ready.eq(1), smax.o.ready.eq(1), eadd.o.ready.eq(1),
                     amax.o.ready.eq(1)]
        for blk in norms:
            m.d.comb += blk.o.ready.eq(1)
        for _, _, blk in acts:
            m.d.comb += blk.o.ready.eq(1)
        if swig is not None:
            m.d.comb += swig.o.ready.eq(1)
        if rope is not None:
            m.d.comb += rope.o.ready.eq(~rp_hold)
            with m.If(rp_hold):
                m.d.sync += rp_hold.eq(0)
            with m.Elif(rope.o.valid & (wr_src == _W_ROPE)):
                m.d.sync += [rp_hold.eq(1), rp_y1.eq(rope.o.payload.y[1])]

        # the selected unit output is registered (wj_*), then saturated and registered again
        # (wi_*) before the writer's address logic
        wj_v, wi_v = Signal(), Signal()
        wj_d = Signal(signed(17))
        wi_d = Signal(signed(16))
        m.d.sync += [wj_v.eq(w_in_valid), wj_d.eq(w_in), wi_v.eq(wj_v),
                     wi_d.eq(Mux(wr_w8, saturate(wj_d, 8), saturate(wj_d, 16)))]
        w1_v, w2_v, w1_e, w2_e = Signal(), Signal(), Signal(), Signal()
        w1_d, w2_d = Signal(signed(16)), Signal(signed(16))
        w1_a, w2_a = Signal(aw_act), Signal(aw_act)
        wr_rd_en = Signal()
        m.d.comb += wr_rd_en.eq(wi_v & wr_acc)
        m.d.sync += [w1_v.eq(wi_v), w2_v.eq(w1_v), w1_d.eq(wi_d), w2_d.eq(w1_d),
                     w1_a.eq(wr_cur), w2_a.eq(w1_a), w1_e.eq(wr_col == wr_lm1), w2_e.eq(w1_e)]
        with m.If(wr_start):
            m.d.sync += [wr_cur.eq(wr_base), wr_rowb.eq(wr_base), wr_col.eq(0), wr_count.eq(0)]
        with m.Elif(wi_v):
            with m.If(wr_col == wr_lm1):
                m.d.sync += [wr_col.eq(0), wr_rowb.eq(wr_rowb + wr_stride),
                             wr_cur.eq(wr_rowb + wr_stride)]
            with m.Else():
                m.d.sync += [wr_col.eq(wr_col + 1), wr_cur.eq(wr_cur + (wr_step if TBD else 1))]
        with m.If(w2_v & ~wr_start):
            m.d.sync += wr_count.eq(wr_count + 1)
        with m.If(wr_start):
            m.d.sync += sm_rows.eq(0)
        with m.Elif(w2_v & w2_e):                # (a row's last element is written now)
            m.d.sync += sm_rows.eq(sm_rows + 1)
        with m.If(w2_v & (w2_a >= vb_tag_src) & (w2_a < vb_tag_end)):
            m.d.sync += vb_tag_valid.eq(0)      # the buffered input was overwritten
        with m.If(w2_v & (w2_a >= tb_tag_src) & (w2_a < tb_tag_end)):
            m.d.sync += tb_tag_valid.eq(0)
        with m.If(w2_v & (w2_a >= sd_tag_src) & (w2_a < sd_tag_end)):
            m.d.sync += sd_tag_valid.eq(0)
        w_sum = Signal(signed(16))
        m.d.comb += w_sum.eq(Mux(wr_acc, saturate(act.b.rdata.as_signed() + w2_d, 16), w2_d))
        # the norms' early load: a writer run of one row whose length is a norm unit's (not a
        # NORM's own run) also streams the values it writes, a cycle later, into every such
        # unit (nm_feed: one bit per unit, nm_on: any; set in EXEC, which also resets the
        # units: nm_rst), so that a unit's LOAD phase (its buffer and sums) overlaps the
        # instruction that writes its input. The tag (nm_base, nm_len) names the run once it
        # has ended; the next writer run clears it, and so does a job start, so it still holds
        # when a NORM's is the next run. A NORM of exactly that region then skips its load
        # (nm_hit, registered from CHECK3's instruction: NORM_GO); any other NORM resets the
        # units first and loads as before.
        nm_feed = Signal(max(1, len(norms)))
        nm_on, nm_valid, nm_hit = Signal(), Signal(), Signal()
        nm_base, nm_len = Signal(aw_act), Signal(16)
        nm_v = Signal()
        sn_d = Signal(signed(16), reset_less=True)           # the value written, a cycle later
        m.d.sync += [nm_v.eq(nm_on & w2_v & ~wr_start), sn_d.eq(w_sum)]
        m.d.sync += [r.eq(0) for r in nm_rst]                     # (a pulse, set in EXEC)
        with m.If(wr_start):
            m.d.sync += nm_valid.eq(0)
        with m.Elif(nm_on & wr_run & (wr_count == wr_total)):
            m.d.sync += [nm_on.eq(0), nm_valid.eq(1), nm_base.eq(wr_base),
                         nm_len.eq(wr_total)]
        # the same for the argmax unit: a one-row run of the longest ARGMAX's length (the
        # classifier's logits) streams into it as one packet (am_on; EXEC resets the unit:
        # am_rst); its result goes to am_idx / am_val (am_sn: the unit's packet is such a
        # run's, am_sgot: its result is in), not to the result registers. An ARGMAX of exactly
        # that run (am_hit) takes them (AM_TAKE) instead of reading the logits again.
        am_on, am_valid, am_hit, am_sn, am_sgot = Signal(), Signal(), Signal(), Signal(), Signal()
        am_base, am_len = Signal(aw_act), Signal(16)
        am_v, am_last = Signal(), Signal()
        am_idx = Signal.like(amax.o.payload.index)
        am_val = Signal(signed(16))
        m.d.sync += [am_v.eq(am_on & w2_v & ~wr_start),
                     am_last.eq(wr_count + 1 == wr_total), am_rst.eq(0)]
        with m.If(wr_start):
            m.d.sync += am_valid.eq(0)
        with m.Elif(am_on & wr_run & (wr_count == wr_total)):
            m.d.sync += [am_on.eq(0), am_valid.eq(1), am_base.eq(wr_base), am_len.eq(wr_total)]

        # ---- bus (host) -----------------------------------------------------------------------
        bus = self.bus
        h_token, h_pos, h_start = Signal(32), Signal(32), Signal()   # host-started jobs
        m.d.sync += h_start.eq(0)             # (a registered one-cycle pulse)
        WBITS = mp.window_bits
        b_win = Signal(3)
        b_off = Signal(WBITS)
        m.d.comb += [b_win.eq(bus.adr[WBITS:WBITS + 3]), b_off.eq(bus.adr[:WBITS])]
        # 0 idle; 1, 2 (and 6, 7 for the weights' third and fourth cycle) read wait; 3
        # capture (8: a wait for a lane slice through port b); 5 weight word select; 4
        # ack/err. The memory requests are registered (hq_*: the memories see them the cycle
        # after state 0)
        b_state = Signal(4)
        b_win_r = Signal(3)
        rsw = mp.row_stride_words
        rsw_bits = (rsw - 1).bit_length()
        b_sub = Signal(max(2, rsw_bits))     # word within a program word or a weight row
        b_dat = Signal(32)
        b_pre = Signal(128)
        em_slice = Signal(8 * K)             # one lane's slice of a weight row (port b)
        b_err = Signal()
        # a weight word inside one lane's slice (K/4 a power of two): the host reads weights
        # through port b and EMBED's lane select (hw_*), so the bank's port-a outputs, a
        # second 1,024-bit gather, go unused
        wpl = K // 4 if K % 4 == 0 and not (K // 4) & (K // 4 - 1) else 0   # words per lane
        hw_rd = Signal()
        hw_row = Signal(aw_w)
        hw_lane = Signal(range(lanes))
        host_act = Signal(data.StructLayout({"addr": aw_act, "en": 1, "we": 1, "wdata": 16}))
        host_w = Signal(data.StructLayout({"addr": aw_w, "en": 1, "we": lanes * K,
                                           "wdata": lanes * K * 8}))
        host_p = Signal(data.StructLayout({"addr": aw_p, "en": 1, "we": 1, "wdata": 32}))
        host_prog = Signal(data.StructLayout({"addr": _bits(PD), "en": 1, "we": 16,
                                              "wdata": 128}))
        m.d.comb += [bus.ack.eq((b_state == 4) & ~b_err), bus.err.eq((b_state == 4) & b_err),
                     bus.dat_r.eq(b_dat)]
        with m.Switch(b_state):
            with m.Case(0):
                with m.If(bus.cyc & bus.stb):
                    m.d.sync += [b_win_r.eq(b_win), b_err.eq(0), b_dat.eq(0)]
                    mem_win = (b_win >= WINDOWS["program"]) & (b_win <= WINDOWS["output"])
                    with m.If(b_win == WINDOWS["regs"]):
                        m.d.sync += b_state.eq(4)
                        with m.If(bus.we & (b_off[:4] == 6)):
                            m.d.sync += h_token.eq(bus.dat_w)
                        with m.If(bus.we & (b_off[:4] == 7)):
                            m.d.sync += h_pos.eq(bus.dat_w)
                        with m.If(bus.we & (b_off[:4] == 8) & bus.dat_w[0]):
                            m.d.sync += h_start.eq(1)
                        with m.Switch(b_off[:4]):
                            with m.Case(0):
                                m.d.sync += b_dat.eq(r_result)
                            with m.Case(1):
                                m.d.sync += b_dat.eq(r_rvalue)
                            with m.Case(2):
                                m.d.sync += b_dat.eq(Cat(busy, st_done, st_err, Const(0, 5),
                                                         err_code, Const(0, 4), pc))
                            with m.Case(3):
                                m.d.sync += b_dat.eq(out_len)
                            with m.Case(4):
                                m.d.sync += b_dat.eq(out_addr)
                            with m.Case(5):
                                m.d.sync += b_dat.eq(cycles)
                            with m.Case(6):
                                m.d.sync += b_dat.eq(h_token)
                            with m.Case(7):
                                m.d.sync += b_dat.eq(h_pos)
                    with m.Elif(busy | ~mem_win):
                        m.d.sync += [b_state.eq(4), b_err.eq(1)]
                    with m.Else():
                        m.d.sync += b_state.eq(Mux(bus.we, 4, 1))
                        with m.Switch(b_win):
                            with m.Case(WINDOWS["program"]):
                                m.d.sync += b_sub.eq(b_off[:2])
                                m.d.comb += [host_prog.addr.eq(b_off[2:]), host_prog.en.eq(1),
                                             host_prog.wdata.eq(bus.dat_w.replicate(4))]
                                with m.If(bus.we):
                                    m.d.comb += host_prog.we.eq(
                                        bus.sel << (4 * b_off[:2]))
                                with m.If(b_off[2:] >= PD):
                                    m.d.sync += [b_state.eq(4), b_err.eq(1)]
                                    m.d.comb += host_prog.en.eq(0)
                            with m.Case(WINDOWS["scratch"], WINDOWS["output"]):
                                a = Mux(b_win == WINDOWS["output"], out_addr + b_off, b_off)
                                m.d.comb += [host_act.addr.eq(a), host_act.en.eq(1),
                                             host_act.we.eq(bus.we & (b_win == WINDOWS["scratch"])),
                                             host_act.wdata.eq(bus.dat_w[:16])]
                                lim = Mux(b_win == WINDOWS["output"], out_len, A)
                                with m.If(b_off >= lim):
                                    m.d.sync += [b_state.eq(4), b_err.eq(1)]
                                    m.d.comb += host_act.en.eq(0)
                            with m.Case(WINDOWS["weights"]):
                                m.d.sync += b_sub.eq(b_off[:rsw_bits] if rsw_bits else 0)
                                row = b_off[rsw_bits:]
                                m.d.comb += [host_w.addr.eq(row), host_w.en.eq(1),
                                             host_w.wdata.eq(bus.dat_w.replicate(lanes * K // 4))]
                                if wpl:
                                    m.d.comb += [host_w.en.eq(bus.we), hw_rd.eq(~bus.we),
                                                 hw_row.eq(row),
                                                 hw_lane.eq(b_off[:rsw_bits] // wpl)]
                                with m.If(bus.we):
                                    m.d.comb += host_w.we.eq(
                                        bus.sel << (4 * (b_off[:rsw_bits] if rsw_bits else 0)))
                                with m.If((row >= WR) | ((b_off[:rsw_bits] if rsw_bits else 0)
                                                        >= mp.row_words)):
                                    m.d.sync += [b_state.eq(4), b_err.eq(1)]
                                    m.d.comb += host_w.en.eq(0)
                            with m.Case(WINDOWS["params"]):
                                m.d.comb += [host_p.addr.eq(b_off), host_p.en.eq(1),
                                             host_p.we.eq(bus.we), host_p.wdata.eq(bus.dat_w)]
                                with m.If(b_off >= PM):
                                    m.d.sync += [b_state.eq(4), b_err.eq(1)]
                                    m.d.comb += host_p.en.eq(0)
            with m.Case(1):
                m.d.sync += b_state.eq(2)
            with m.Case(2):
                m.d.sync += b_state.eq(Mux(b_win_r == WINDOWS["weights"], 6, 3))
            with m.Case(6):                  # (a weight read: port a's latency is 4; port b
                m.d.sync += b_state.eq(7)    # has 4 and the lane select's two registers: 8)
            with m.Case(7):
                m.d.sync += b_state.eq(3)
            with m.Case(3):
                m.d.sync += b_state.eq(4)
                with m.Switch(b_win_r):
                    with m.Case(WINDOWS["program"]):
                        m.d.sync += b_dat.eq(prog.a.rdata.word_select(b_sub[:2], 32))
                    with m.Case(WINDOWS["scratch"], WINDOWS["output"]):
                        m.d.sync += b_dat.eq(act.a.rdata.as_signed())
                    with m.Case(WINDOWS["weights"]):      # a group of 4 words, then one word
                        if wpl:                            # (port b: the lane slice, then)
                            m.d.sync += b_state.eq(8)
                        else:
                            grp = (wts.a.rdata.word_select(b_sub[2:], 128) if lanes * K > 16
                                   else wts.a.rdata)
                            m.d.sync += [b_pre.eq(grp), b_state.eq(5)]
                    with m.Case(WINDOWS["params"]):
                        m.d.sync += b_dat.eq(par.a.rdata)
            with m.Case(8):
                m.d.sync += b_state.eq(5)
            with m.Case(5):
                m.d.sync += b_state.eq(4)
                if wpl:
                    m.d.sync += b_dat.eq(em_slice.word_select(b_sub % wpl, 32) if wpl > 1
                                         else em_slice)
                else:
                    m.d.sync += b_dat.eq(b_pre.word_select(b_sub[:2], 32))
            with m.Case(4):
                m.d.sync += b_state.eq(0)

        # ---- memory port muxes ----------------------------------------------------------------
        hq_prog, hq_w = Signal.like(host_prog), Signal.like(host_w)
        hq_act, hq_p = Signal.like(host_act), Signal.like(host_p)
        m.d.sync += [hq_prog.eq(host_prog), hq_w.eq(host_w), hq_act.eq(host_act),
                     hq_p.eq(host_p)]
        # the host's 32-bit weight word, replicated across the row: one kept copy per HWG
        # lanes (a group of lanes sits together on the floorplan), so the weight bank's write
        # data is a tree (these copies, port a's first stage, which merges the identical bits
        # of each, then its copy per lane's tiles) and no flip-flop drives the whole die
        HWG = 4
        hw_copy = [keep_register(m, platform, Signal(32, name=f"hw_wd{g}", reset_less=True),
                                 host_w.wdata[:32]) for g in range(-(-lanes // HWG))]
        hw_wdata = Cat(hw_copy[(32 * w) // (8 * K) // HWG] for w in range(lanes * K // 4))
        host_prog, host_w, host_act, host_p = hq_prog, hq_w, hq_act, hq_p
        # program: a = host, b = fetch
        m.d.comb += [prog.a.addr.eq(host_prog.addr), prog.a.en.eq(host_prog.en),
                     prog.a.we.eq(host_prog.we), prog.a.wdata.eq(host_prog.wdata)]
        m.d.comb += [wts.a.addr.eq(host_w.addr), wts.a.en.eq(host_w.en), wts.a.we.eq(host_w.we),
                     wts.a.wdata.eq(hw_wdata)]
        with m.If(busy):
            m.d.comb += [act.a.addr.eq(w2_a), act.a.en.eq(w2_v), act.a.we.eq(w2_v),
                         act.a.wdata.eq(w_sum)]
        with m.Else():
            m.d.comb += [act.a.addr.eq(host_act.addr), act.a.en.eq(host_act.en),
                         act.a.we.eq(host_act.we), act.a.wdata.eq(host_act.wdata)]
        # act port b: the writer's accumulate read, else the reader
        with m.If(rd.busy):
            m.d.comb += [act.b.addr.eq(rd.addr), act.b.en.eq(rd.en)]
        with m.Else():
            m.d.comb += [act.b.addr.eq(wr_cur), act.b.en.eq(wr_rd_en)]
        m.d.comb += rd.rdata.eq(act.b.rdata)

        # ---- sequencer FSM --------------------------------------------------------------------
        fetch_en = Signal()
        m.d.comb += [prog.b.addr.eq(pc), prog.b.en.eq(fetch_en)]
        # MAC feed control (MATVEC)
        mv_go = Signal()
        mv_npass = Signal(2)
        mv_carry = Signal()
        vb_wide = Signal()                   # a vector-buffer element is outside int8
        in_bad = Signal()                    # a streamed operand outside its range
        mv_w2 = Signal()
        mv_x16 = Signal()
        mv_rows = Signal(16)
        em_w2 = Signal()                     # EMBED of a 16-bit (two-plane) table
        # MATMAT control
        mm_go = Signal()
        mm_tokens = Signal(8)
        mm_rows_m2 = Signal(16)               # rows - 2 and rows == 1 (set in EXEC)
        mm_rows_one = Signal()
        tb_loaded = Signal()                 # the tile's last element is in the tile buffer
        tb_wide = Signal()                   # a tile element is outside int8
        tb_lane = Signal(lanes, init=1)      # tile load: token (one-hot lane) ...
        tb_k = Signal(K, init=1)             # ... byte within its slice (one-hot) ...
        tb_word = Signal(range(max(2, TBD)))  # ... and tile-buffer word
        # attention control
        at_h = Signal(8)
        at_kvh = Signal(8)
        at_sub = Signal(8)
        at_g = Signal(8)
        at_nh = Signal(8)                    # n_heads and kv_mul - 1 of the running attention op
        at_kvm1 = Signal(8)
        at_cmd = Signal()
        at_kvsel = Signal()
        at_last_seen = Signal()
        # SCORES_SOFTMAX: the requantized scores go into the softmax (sm_fused, set in EXEC)
        # through a small FIFO; sm_in_last marks a row's last score (counted from POS)
        sm_fused = Signal()
        sm_col = Signal(16)
        sm_in_last = Signal()
        # SCORES' heads back to back: the next head's query is loaded (into qn) and its KV
        # command issued while the current head's K rows still stream; sc_busy: a head's beats
        # are expected; sc_next: the next head's command is accepted too, its query waiting in
        # qn for the current head's last beat
        sc_busy = Signal()
        sc_next = Signal()
        sc_bcnt = Signal(range(BPR + 1))     # beat of the K row
        sc_pair = Signal()                   # two heads per K row (set in EXEC, see PAIR)
        sm_rd2 = Signal()                    # (pairs) the softmax takes its row from smq2
        av_t0 = Signal()                     # ATTV: the next V row starts a dot product
        mac_mode = Signal(2)
        q_count = Signal(16)
        vb_count = Signal(16)
        # unit selection
        rd_route = Signal(4)
        # the route decoded into one flip-flop per route, a cycle after rd_route (routes are
        # set cycles before the reader's first item arrives)
        rt = [Signal(name=f"rt{r}") for r in range(12)]
        m.d.sync += [rt[r].eq(rd_route == r) for r in range(12)]
        norm_sel = Signal(range(max(1, len(norms))))
        act_sel = Signal(range(max(1, len(acts))))
        elt_swiglu = Signal()
        elt_side = Signal()                  # ELTWISE: one operand is in the side region
        elt_swap = Signal()                  # ... and it is b (a streams from the scratchpad)
        amax_got = Signal()
        kv_app_done = Signal()
        rq_base = Signal(24)
        rq_per_row = Signal()
        rq_bias = Signal()
        rq_rows = Signal(16)
        ser_cnt = Signal(range(max(lanes, K) + 1))
        embed_go = Signal()
        embed_idx = Signal(16)
        overrun = Signal()
        rp_lost = Signal()                    # the fused RoPE unit refused a pair (registered)
        gl_lost = Signal()                    # the SwiGLU unit refused a glu pair (registered)
        # a MATVEC's glu: glu_fetch, its SwiGLU word is read (at glu_p = paddr + rows) into
        # elt_m, elt_s; mv_side, its input is in the side region (the feed reads from VBD)
        glu_fetch, glu_p = Signal(), Signal(24)
        mv_side = Signal()
        # the vector-buffer word of the MAC feed's block mv_ib: mv_ib, or VBD + mv_ib in the
        # side region (mv_vb0: the first, set in EXEC)
        mv_vb, mv_vb0 = Signal(_bits(VBD + SVD)), Signal(_bits(VBD + SVD))
        rd_idx = Signal(16)
        kp_data = Signal(8 * B)
        kp_cnt = Signal(range(B + 1))
        kp_beat = Signal(range(BPR + 1))
        kp_head = Signal(8)
        kp_valid = Signal()
        kp_last = Signal()
        kp_kv = Signal()                     # K (0) or V (1) rows, set with the run
        kp_layer = Signal(8)                 # the layer, set with the run
        # a MATVEC's kv_append: ka_on, the writer's values go into the packer too; ka_both,
        # K rows then V rows (the packer turns to V after K head ka_hm1)
        ka_on, ka_both = Signal(), Signal()
        ka_hm1, ka_hm1_d = Signal(8), Signal(8)
        elt_fetch = Signal()
        cb_ps = Signal(2)
        cb_ob = Signal(16)
        cb_g = Signal(8)
        at_ptr = Signal(16)
        lp_wstride = Signal(24)
        lp_pstride = Signal(24)
        mul_c1, mul_c2 = Signal(16), Signal(16)
        prod_c = Signal(32)
        # (on the floorplan, in the DSP row with the fewest lanes, mid-die: their operands come
        # from the instruction register and the sequencer's state, and with the placer's choice
        # they sat between the lanes, where router2's overflow gathered on their inputs)
        chk_sites = spare_dsp_sites(platform, dsp_sites, 3) or (None,) * 3
        for n, (x, y, pr) in enumerate(((mul_a1, mul_a2, prod_a), (mul_b1, mul_b2, prod_b),
                                        (mul_c1, mul_c2, prod_c))):
            mul = m.submodules[f"chk_mul{n}"] = DSPMultiplier(17, 17, bel=chk_sites[n])
            m.d.comb += [mul.a.eq(x), mul.b.eq(y)]
            m.d.sync += pr.eq(mul.p[:32])
        elt_m, elt_s = Signal(16), Signal(6)
        # element-reader configuration (registered; a *_GO state pulses start)
        rdc = {n: Signal(w, name=f"rdc_{n}") for n, w in
               (("base", aw_act), ("rows", 16), ("row_len", 16), ("stride", 16),
                ("aux_base", _bits(VBD + SVD)))}
        prdc = {n: Signal(w, name=f"prdc_{n}") for n, w in
                (("base", aw_p), ("row_len", 16), ("aux_base", aw_p))}
        m.d.comb += [rd.base.eq(rdc["base"]), rd.rows.eq(rdc["rows"]),
                     rd.row_len.eq(rdc["row_len"]), rd.stride.eq(rdc["stride"]),
                     rd.aux_base.eq(rdc["aux_base"]),
                     prd.base.eq(prdc["base"]), prd.rows.eq(1), prd.row_len.eq(prdc["row_len"]),
                     prd.stride.eq(0), prd.aux_base.eq(prdc["aux_base"])]

        # a failure goes to IDLE at once; its status (busy, error, the code) is applied from
        # registers (f_req_r, f_code_r), not through every state's decisions, once the writer
        # has finished the previous instruction's results (wr_idle: an instruction may end
        # while the one before it still writes, see WAIT_WRITER)
        f_req, f_req_r = Signal(), Signal()
        f_code, f_code_r = Signal(ErrorCode), Signal(ErrorCode)
        m.d.sync += [f_req_r.eq(f_req | (f_req_r & ~wr_idle)),
                     f_code_r.eq(Mux(f_req, f_code, f_code_r))]
        with m.If(f_req_r & wr_idle):
            m.d.sync += [busy.eq(0), err_code.eq(f_code_r), self.error.eq(1), st_err.eq(1)]

        def fail(code):
            m.d.comb += [f_req.eq(1), f_code.eq(code)]
            self._fsm.goto("IDLE")

        fsm = self._fsm = _OneHotFSM(m, "IDLE")
        with fsm.state("IDLE"):
            job_token = Mux(self.start, self.token, h_token)
            job_pos = Mux(self.start, self.pos, h_pos)
            with m.If((self.start | h_start) & ~f_req_r):    # (a failure is being applied)
                m.d.sync += [busy.eq(1), pc.eq(0), r_token.eq(job_token), r_pos.eq(job_pos),
                             npos.eq(job_pos[:16] + 1),
                             r_layer.eq(0), wbase.eq(0), pbase.eq(0), lp_active.eq(0),
                             err_code.eq(ErrorCode.NONE), st_done.eq(0), st_err.eq(0),
                             cycles.eq(0), vb_tag_valid.eq(0), tb_tag_valid.eq(0),
                             sd_tag_valid.eq(0), nm_valid.eq(0), am_valid.eq(0),
                             wr_run.eq(0), ch_on.eq(0), sd_on.eq(0), nm_on.eq(0),
                             am_on.eq(0), am_sn.eq(0), am_sgot.eq(0), am_rst.eq(1),
                             wr_mv.eq(0), mv_chain.eq(0), fz_on.eq(0), fz_have.eq(0),
                             ka_on.eq(0), gl_on.eq(0), av_pend.eq(0), av_hold.eq(0)]
                m.d.sync += [r.eq(1) for r in nm_rst]    # (a job ended by OVERRUN)
                with m.If(job_pos >= ctx):
                    m.d.sync += [busy.eq(0), err_code.eq(ErrorCode.POS_RANGE),
                                 self.error.eq(1), st_err.eq(1)]
                with m.Else():
                    self._fsm.goto("FETCH")
        with fsm.state("FETCH"):
            with m.If(pc >= PD):
                fail(ErrorCode.PROGRAM_RANGE)
            with m.Else():
                m.d.comb += fetch_en.eq(1)
                self._fsm.goto("FETCH1")
        with fsm.state("FETCH1"):
            self._fsm.goto("FETCH2")
        with fsm.state("FETCH2"):
            m.d.sync += ir.eq(prog.b.rdata)
            self._fsm.goto("DECODE")
        v_copies = {}
        for name in ("dec", "chk", "exe"):
            op_copies[name] = keep_register(m, platform, Signal(6, name=f"op_{name}"),
                                            prog.b.rdata[0:6], en=fsm("FETCH2"))
            irc = keep_register(m, platform, Signal(128, name=f"ir_{name}", reset_less=True),
                                prog.b.rdata, en=fsm("FETCH2"))
            v_copies[name] = {op: data.View(lay, irc[:data.Layout.cast(lay).size])
                              for op, lay in LAYOUTS.items()}
        # HALT, SYNC, SETREG and LOOP act in DECODE: they wait there for the writer
        seq_op = keep_register(m, platform, Signal(name="seq_op"),
                               _in(prog.b.rdata[0:6], (Opcode.HALT, Opcode.SYNC, Opcode.SETREG,
                                                       Opcode.LOOP)), en=fsm("FETCH2"))
        with fsm.state("DECODE"):
            self._bad_flags = []
            with m.If(~seq_op | wr_idle):
                self._decode(m, v_copies["dec"], op_copies["dec"], locals())
        # the field errors found in DECODE: one flag each (cleared in FETCH2), the code chosen
        # in CHECK1 (the last flagged one, as the checks are written)
        with m.If(fsm("FETCH2")):
            m.d.sync += [f.eq(0) for f, _ in self._bad_flags]
        with m.If(fsm("CHECK1")):
            m.d.sync += chk_hard.eq(ErrorCode.NONE)
            for f, code in self._bad_flags:
                with m.If(f):
                    m.d.sync += chk_hard.eq(code)
        with fsm.state("CHECK1"):           # the products of the range checks: DSP input,
            self._regions(m, v_copies["chk"], op_copies["chk"], locals())
            self._fsm.goto("CHECK1B")        # DSP output and fabric registers
        with fsm.state("CHECK1B"):
            self._fsm.goto("CHECK1C")
        with fsm.state("CHECK1C"):
            self._fsm.goto("CHECK2")
        with fsm.state("CHECK2"):
            self._region_ends(m, locals())
            self._fsm.goto("CHECK2B")
        # the verdict, registered every cycle (valid in CHECK3: the region ends are set in
        # CHECK2, chk_hard in CHECK1)
        chk_code = Signal(ErrorCode)
        with m.If(chk_hard != ErrorCode.NONE):
            m.d.sync += chk_code.eq(chk_hard)
        with m.Elif((chk["r1"] > A) | (chk["r2"] > A) | (chk["wr"] > A)):
            m.d.sync += chk_code.eq(ErrorCode.SCRATCH_RANGE)
        with m.Elif(chk["w"] > WR):
            m.d.sync += chk_code.eq(ErrorCode.WEIGHT_RANGE)
        with m.Elif(chk["p"] > PM):
            m.d.sync += chk_code.eq(ErrorCode.PARAM_RANGE)
        with m.Else():
            m.d.sync += chk_code.eq(ErrorCode.NONE)
        with fsm.state("CHECK2B"):
            self._fsm.goto("CHECK3")
        nv = v_copies["chk"][Opcode.NORM]
        m.d.sync += nm_hit.eq(nm_valid & (nm_base == nv.src) & (nm_len == nv.len))
        av_ = v_copies["chk"][Opcode.ARGMAX]
        m.d.sync += am_hit.eq(am_valid & (am_base == av_.src) & (am_len == av_.len))
        # MV_CHAIN: the checked instruction is a MATVEC whose input is in the vector buffer,
        # the writer's run is a MATVEC's whose MAC results are all taken and whose results
        # do not land in that input (its tag stays true), and no chained MATVEC waits yet
        mvc = v_copies["chk"][Opcode.MATVEC]
        mv_hit_c, mv_disj, chain_ok = Signal(), Signal(), Signal()
        m.d.sync += [mv_hit_c.eq((op_copies["chk"] == Opcode.MATVEC) & vb_tag_valid &
                                 (vb_tag_src == mvc.src) & (vb_tag_len == mvc.cols) &
                                 ~mvc.glu),
                     mv_disj.eq((wr_end <= vb_tag_src) | (vb_tag_end <= wr_base))]
        m.d.sync += glu_p.eq(x_p + mvc.rows)     # (a glu MATVEC's SwiGLU word, for EXEC)
        # (chain_ok is set with the MAC feed's state, below)
        # AV_CHAIN: the checked instruction is an ATTV and the writer's run a SCORES_SOFTMAX's
        # whose scores are all in the softmax (sc_done), written where the ATTV reads its
        # probabilities (same rows: base and stride)
        avc = v_copies["chk"][Opcode.ATTV]
        sc_done, av_ok = Signal(), Signal()
        m.d.sync += av_ok.eq((op_copies["chk"] == Opcode.ATTV) & sc_done & ~av_hold &
                             (wr_base == avc.p) & (wr_stride == avc.stride))
        with fsm.state("CHECK3"):          # (an instruction starts once the writer is done,
            with m.If(wr_idle & (chk_code != ErrorCode.NONE)):     # or it is chained)
                fail(chk_code)
            with m.Elif(wr_idle | ((chain_ok | av_ok) & (chk_code == ErrorCode.NONE))):
                m.d.sync += [mv_chain.eq(~wr_idle & ~av_ok), av_pend.eq(~wr_idle & av_ok),
                             av_hold.eq(~wr_idle & av_ok)]
                self._fsm.goto("EXEC")
        with fsm.state("EXEC"):
            m.d.sync += early_ok.eq(_in(op_copies["exe"], _EARLY_OPS))
            self._exec_start(m, v_copies["exe"], op_copies["exe"], locals())
        # ---- MATVEC ---------------------------------------------------------------------
        with fsm.state("MV_GO"):
            m.d.comb += rd.start.eq(1)
            self._fsm.goto("MV_LOAD")
        with fsm.state("MV_LOAD"):
            # (a MATVEC reading the side region, mv_side: nothing loaded, the main region's
            # tag and flags left alone, the carry flag the region's)
            with m.If(((vb_count == v[Opcode.MATVEC].cols) | mv_side) & ~rd.busy):
                carry = Mux(mv_side, sd_carry, mv_carry)
                m.d.sync += mv_npass.eq(Mux(mv_w2, 2, Mux(mv_x16, Mux(carry, 3, 2), 1)))
                with m.If(~mv_side):
                    m.d.sync += [vb_tag_valid.eq(1), vb_tag_src.eq(v[Opcode.MATVEC].src),
                                 vb_tag_len.eq(v[Opcode.MATVEC].cols)]
                with m.If(vb_wide & ~mv_x16 & ~mv_side):
                    fail(ErrorCode.INPUT_RANGE)
                with m.Else():
                    self._fsm.goto("MV_FEED")
        with fsm.state("MV_FEED"):
            m.d.comb += mv_go.eq(1)
            with m.If(mv_chain):
                self._fsm.goto("MV_WCFG")
            with m.Else():
                m.d.comb += wr_start.eq(1)
                self._fsm.goto("WAIT_WRITER")
        # MV_CHAIN: a MATVEC whose input is in the vector buffer may start (CHECK3 to EXEC)
        # while the MATVEC before it still drains, once that one's MAC results are all in the
        # serializer (mv_taken) and none of its results lands in the buffered input (mv_disj):
        # EXEC configures the MAC feed and the combiner only, the beats issue, and the results
        # wait in front of the serializer (mv_chain) while the writer finishes the previous
        # run; then MV_WCFG configures the writer and the requantizer's parameters as EXEC
        # does, and MV_WSTART starts the run and releases the results
        with fsm.state("MV_WCFG"):
            with m.If(wr_idle):
                self._mv_outputs(m, v_copies["exe"][Opcode.MATVEC], locals())
                self._fsm.goto("MV_WSTART")
        with fsm.state("MV_WSTART"):
            m.d.comb += wr_start.eq(1)
            m.d.sync += mv_chain.eq(0)
            self._fsm.goto("WAIT_WRITER")
        # the next instruction is fetched, decoded and checked while the writer finishes this
        # one's results, once nothing but its unit pipelines and the writer is left (drained)
        # and nothing of what runs on reads what the next DECODE sets (early_ok: not EMBED,
        # KVAPPEND, the attention instructions); CHECK3 waits for wr_idle
        # (SCORES_SOFTMAX moves on once every score is in the softmax's queue: sc_done)
        with fsm.state("WAIT_WRITER"):
            with m.If(wr_done | (early_ok & ww_prev & drained) | (sc_done & ~av_hold)):
                self._fsm.goto("NEXT")
        m.d.sync += ww_prev.eq(fsm("WAIT_WRITER"))
        # AV_CHAIN: an ATTV that follows a SCORES_SOFTMAX starts (CHECK3 to EXEC) once every
        # score is in the softmax (sc_done, av_ok). EXEC sets up the attention loops only; the
        # probability reader reads only rows the softmax's run has written (rd.limited while
        # av_pend, rd.limit), and the MAC results wait in front of the serializer (av_hold).
        # When the softmax's run ends, the ATTV's writer run, chaining and requantizer
        # parameters are applied here as EXEC applies them, the softmax is unhooked from the
        # requantizer (sm_fused), and w_go starts the run and releases the results.
        rd_lim = Signal(16)
        m.d.sync += w_go.eq(0)
        with m.If(av_pend & wr_idle_r):
            self._writer_flags(m, locals())
            self._av_outputs(m, v_copies["exe"][Opcode.ATTV], locals())
            m.d.sync += [av_pend.eq(0), w_go.eq(1), sm_fused.eq(0)]
        with m.If(w_go):
            m.d.comb += wr_start.eq(1)
            m.d.sync += av_hold.eq(0)
        # one reader job reads every head's row (NG == 1: the rows written so far may be
        # read), else one job per group reads head at_h's row (its row 0; at_h changes two
        # cycles before the next job starts, so the limit a job sees is its head's)
        m.d.sync += rd_lim.eq(sm_rows if NG == 1 else (at_h < sm_rows))
        m.d.comb += [rd.limited.eq(av_pend), rd.limit.eq(rd_lim)]
        # ---- MATMAT ---------------------------------------------------------------------
        if TBD:
            with fsm.state("MM_GO"):
                m.d.comb += rd.start.eq(1)
                self._fsm.goto("MM_LOAD")
            with fsm.state("MM_LOAD"):
                with m.If(tb_loaded):
                    ins = v[Opcode.MATMAT]
                    m.d.sync += [tb_tag_valid.eq(1), tb_tag_src.eq(ins.src),
                                 tb_tag_cols.eq(ins.cols), tb_tag_tok.eq(ins.tokens),
                                 tb_tag_end.eq(chk["r1"])]
                    # (a reused tile has no wide element: its load ended the job otherwise)
                    with m.If(tb_wide):
                        fail(ErrorCode.INPUT_RANGE)
                    with m.Else():
                        self._fsm.goto("MM_FEED")
            with fsm.state("MM_FEED"):
                m.d.comb += [mm_go.eq(1), wr_start.eq(1)]
                self._fsm.goto("WAIT_WRITER")
        # ---- EMBED ----------------------------------------------------------------------
        with fsm.state("EMBED"):
            m.d.comb += [embed_go.eq(1), wr_start.eq(1)]
            self._fsm.goto("WAIT_WRITER")
        # ---- streaming ops (reader -> unit -> writer) -----------------------------------
        with fsm.state("STREAM"):
            m.d.comb += [rd.start.eq(1), wr_start.eq(1)]
            self._fsm.goto("WAIT_WRITER")
        with fsm.state("PSTREAM"):       # NORM: scratch reader and parameter reader
            m.d.comb += [rd.start.eq(1), prd.start.eq(1), wr_start.eq(1)]
            self._fsm.goto("WAIT_WRITER")
        with fsm.state("NORM_GO"):       # NORM whose input the unit has (nm_hit): parameters
            m.d.comb += [prd.start.eq(1), wr_start.eq(1)]
            self._fsm.goto("WAIT_WRITER")
        # ---- ELTWISE --------------------------------------------------------------------
        with fsm.state("ELT_PARAM"):
            m.d.comb += elt_fetch.eq(1)
            self._fsm.goto("ELT_PARAM1")
        with fsm.state("ELT_PARAM1"):
            self._fsm.goto("ELT_PARAM1B")
        with fsm.state("ELT_PARAM1B"):
            self._fsm.goto("ELT_PARAM2")
        with fsm.state("ELT_PARAM2"):
            m.d.sync += [elt_m.eq(par.b.rdata[0:16]), elt_s.eq(par.b.rdata[16:22])]
            m.d.comb += rd.start.eq(~elt_side)       # (load a into the vector buffer)
            self._fsm.goto("ELT_LOAD")
        with fsm.state("ELT_LOAD"):
            with m.If(((vb_count == v[Opcode.ELTWISE].len) | elt_side) & ~rd.busy):
                # stream the operand that is not in the buffer; the side region's words
                # follow the main ones
                m.d.sync += [rd_route.eq(_R_ELT),
                             rdc["base"].eq(Mux(elt_swap, v[Opcode.ELTWISE].a,
                                                v[Opcode.ELTWISE].b)),
                             rdc["aux_base"].eq(Mux(elt_side, VBD, 0))]
                self._fsm.goto("STREAM")
        # ---- KVAPPEND / ARGMAX ----------------------------------------------------------
        with fsm.state("KV_GO"):
            m.d.comb += rd.start.eq(1)
            self._fsm.goto("KV_WAIT")
        with fsm.state("KV_WAIT"):
            with m.If(kv_app_done):
                self._fsm.goto("NEXT")
        with fsm.state("AM_GO"):
            m.d.comb += rd.start.eq(1)
            self._fsm.goto("ARGMAX_WAIT")
        with fsm.state("ARGMAX_WAIT"):
            with m.If(amax_got):
                self._fsm.goto("NEXT")
        with fsm.state("AM_TAKE"):           # ARGMAX of the run the unit loaded (am_hit)
            with m.If(am_sgot):
                m.d.sync += [r_result.eq(am_idx), r_rvalue.eq(am_val), amax_got.eq(1)]
                self._fsm.goto("NEXT")
        # ---- SCORES ---------------------------------------------------------------------
        # the attention loops' decisions and sums, registered (their inputs change only when
        # a head or group ends, several states before they are used again)
        at_g_last, at_sub_last = Signal(), Signal()
        at_ptr_hs, at_ptr_st = Signal(16), Signal(16)
        m.d.sync += [at_g_last.eq(at_g == NG - 1), at_sub_last.eq(at_sub == at_kvm1),
                     at_ptr_hs.eq(at_ptr + hs), at_ptr_st.eq(at_ptr + v[Opcode.ATTV].stride)]
        if PAIR:
            # (pairs: the pair's second head is the KV head's last, the next pair's query)
            at_sub_last2, at_ptr_2hs = Signal(), Signal(16)
            m.d.sync += [at_sub_last2.eq(at_sub + 1 == at_kvm1), at_ptr_2hs.eq(at_ptr + 2 * hs)]
        npos_one, npos_m2 = Signal(), Signal(16)
        m.d.sync += [npos_one.eq(npos == 1), npos_m2.eq(npos - 2)]

        def next_head(step=1, sub_last=at_sub_last):
            # the next query head (pairs: step 2); its KV head advances after kv_mul query heads
            m.d.sync += at_h.eq(at_h + step)
            with m.If(sub_last):
                m.d.sync += [at_sub.eq(0), at_kvh.eq(at_kvh + 1)]
            with m.Else():
                m.d.sync += at_sub.eq(at_sub + step)
        with fsm.state("SC_START"):
            m.d.comb += wr_start.eq(1)
            m.d.sync += [sm_col.eq(0), sm_in_last.eq(npos_one), sc_busy.eq(0),
                         sc_next.eq(0), sc_bcnt.eq(0), sm_rd2.eq(0)]
            self._fsm.goto("SC_HEAD")
        q_len = Signal(range(2 * hs + 1))   # the query elements of a head (pair: two heads)
        m.d.sync += q_len.eq(Mux(sc_pair, 2 * hs, hs) if PAIR else hs)
        with fsm.state("SC_HEAD"):
            with m.If(at_h == at_nh):
                self._fsm.goto("WAIT_WRITER")
            with m.Elif(~sc_next):              # (qn is free)
                m.d.sync += [rd_route.eq(_R_Q), q_count.eq(0), rdc["base"].eq(at_ptr),
                             rdc["rows"].eq(1), rdc["row_len"].eq(q_len),
                             at_ptr.eq(Mux(sc_pair, at_ptr_2hs, at_ptr_hs) if PAIR
                                       else at_ptr_hs)]
                self._fsm.goto("SC_GO")
        with fsm.state("SC_GO"):
            m.d.comb += rd.start.eq(1)
            self._fsm.goto("SC_LOADQ")
        with fsm.state("SC_LOADQ"):
            with m.If(q_count == q_len):
                m.d.sync += [at_cmd.eq(1), at_kvsel.eq(0), at_last_seen.eq(0)]
                self._fsm.goto("SC_STREAM")
        with fsm.state("SC_STREAM"):
            with m.If(~at_cmd):                 # the KV cache took the head's command
                if PAIR:
                    with m.If(sc_pair):
                        next_head(2, at_sub_last2)
                    with m.Else():
                        next_head()
                else:
                    next_head()
                self._fsm.goto("SC_HEAD")
        # ---- ATTV -----------------------------------------------------------------------
        with fsm.state("AV_START"):
            m.d.comb += wr_start.eq(~av_hold)       # (else w_go starts the run)
            m.d.sync += av_t0.eq(1)
            if NG == 1:
                # one group per head: one reader job streams every head's probabilities (rows
                # stride apart) and the heads' V commands follow each other as the KV cache
                # takes them; each V row meets the next probability
                m.d.sync += [rd_route.eq(_R_P), rdc["base"].eq(at_ptr), rdc["rows"].eq(at_nh),
                             rdc["row_len"].eq(npos), rdc["stride"].eq(v[Opcode.ATTV].stride)]
                self._fsm.goto("AV_GO1")
            else:
                self._fsm.goto("AV_GROUP")
        if NG == 1:
            with fsm.state("AV_GO1"):
                m.d.comb += rd.start.eq(1)
                self._fsm.goto("AV_CMD")
            with fsm.state("AV_CMD"):
                with m.If(at_h == at_nh):
                    self._fsm.goto("WAIT_WRITER")
                with m.Else():
                    m.d.sync += [at_cmd.eq(1), at_kvsel.eq(1)]
                    self._fsm.goto("AV_CMD_WAIT")
            with fsm.state("AV_CMD_WAIT"):
                with m.If(~at_cmd):             # the KV cache took the head's command
                    next_head()
                    self._fsm.goto("AV_CMD")
        with fsm.state("AV_GROUP"):
            with m.If(at_h == at_nh):
                self._fsm.goto("WAIT_WRITER")
            with m.Else():
                m.d.sync += [rd_route.eq(_R_P), rdc["base"].eq(at_ptr), rdc["rows"].eq(1),
                             rdc["row_len"].eq(npos)]
                self._fsm.goto("AV_GO")
        with fsm.state("AV_GO"):
            m.d.comb += rd.start.eq(1)
            m.d.sync += [at_cmd.eq(1), at_kvsel.eq(1), at_last_seen.eq(0)]
            self._fsm.goto("AV_STREAM")
        with fsm.state("AV_STREAM"):
            with m.If(at_last_seen & ~at_cmd & ~rd.busy & ~rd.o.valid & ~rdo.valid):
                with m.If(at_g_last):
                    m.d.sync += [at_g.eq(0), at_ptr.eq(at_ptr_st)]
                    next_head()
                with m.Else():
                    m.d.sync += at_g.eq(at_g + 1)
                self._fsm.goto("AV_GROUP")
        # ---- next instruction -----------------------------------------------------------
        # NEXT's decisions and sums, registered (pc, the layer and the loop registers change
        # only in IDLE, DECODE and NEXT, at least five cycles before the next NEXT)
        lp_at_end, lp_more = Signal(), Signal()
        pc_inc = Signal(16)
        r_layer_inc = Signal(32)
        wb_next, pb_next = Signal(24), Signal(24)
        m.d.sync += [lp_at_end.eq(lp_active & (pc == lp_end)), lp_more.eq(r_layer + 1 < lp_count),
                     pc_inc.eq(pc + 1), r_layer_inc.eq(r_layer + 1),
                     wb_next.eq(wbase + lp_wstride), pb_next.eq(pbase + lp_pstride)]
        with fsm.state("NEXT"):
            with m.If(kv.error.append | kv.error.read):
                fail(ErrorCode.KV_CACHE)
            with m.Elif(in_bad):
                fail(ErrorCode.INPUT_RANGE)
            with m.Elif(lp_at_end):
                with m.If(lp_more):
                    m.d.sync += [r_layer.eq(r_layer_inc), pc.eq(lp_start), wbase.eq(wb_next),
                                 pbase.eq(pb_next)]
                with m.Else():
                    m.d.sync += [r_layer.eq(r_layer_inc), lp_active.eq(0), wbase.eq(0),
                                 pbase.eq(0), pc.eq(pc_inc)]
                self._fsm.goto("FETCH")
            with m.Else():
                m.d.sync += pc.eq(pc_inc)
                self._fsm.goto("FETCH")
        with m.If(overrun & busy):
            m.d.sync += [busy.eq(0), err_code.eq(ErrorCode.OVERRUN), self.error.eq(1),
                         st_err.eq(1), fsm("IDLE").eq(1), av_pend.eq(0), av_hold.eq(0)]
            m.d.sync += [b.eq(0) for n, b in fsm.bits.items() if n != "IDLE"]
        m.d.comb += kv.error_clear.eq(self.start | h_start)

        # ---- reader output routing ------------------------------------------------------------
        ro = rdo.payload
        # an element outside int8 (bits 7-15 not all equal): sets vb_wide or tb_wide, sticky
        # for the loaded vector or tile; an 8-bit MATVEC or a MATMAT ends with INPUT_RANGE at
        # the end of its load, instead of computing with the element's low byte
        ro_wide = Signal()
        m.d.comb += ro_wide.eq(ro.data[7:16].any() & ~ro.data[7:16].all())
        # the same for the operands that stream into their units: KVAPPEND's and an 8-bit
        # ROPE's or SCORES query's int8 elements, ATTV's unsigned prob_bits probabilities. The
        # compares are registered (in_bad_set) into one sticky flag, cleared as the next
        # instruction is fetched, which ends the job in NEXT (what the instruction wrote is then
        # undefined). The query width and the probability mask come from the instruction
        # register (stable while the instruction runs), registered.
        q8, p_mask, in_bad_set = Signal(), Signal(16), Signal()
        sc_op = ir[0:6] == Opcode.SCORES.value
        m.d.sync += [q8.eq(Mux(sc_op, v[Opcode.SCORES].q_width == Width.W8,
                               v[Opcode.SCORES_SOFTMAX].q_width == Width.W8)),
                     p_mask.eq((Const(0xFFFF, 16) << v[Opcode.ATTV].prob_bits)[:16]),
                     in_bad_set.eq(rdo.valid & (
                         (ro_wide & (rt[_R_KV] | (rt[_R_ROPE] & wr_w8) | (rt[_R_Q] & q8))) |
                         (rt[_R_P] & (ro.data & p_mask).any())))]
        with m.If(fsm("FETCH2")):
            m.d.sync += in_bad.eq(0)
        with m.Elif(in_bad_set):
            m.d.sync += in_bad.eq(1)
        vb_lane = Signal(signed(16))
        m.d.comb += vb_lane.eq(ro.lane)
        # vector-buffer load
        vbw = Signal(data.StructLayout({"en": 1, "addr": _bits(VBD), "we": 2 * K,
                                        "wdata": 16 * K}))
        with m.If(rt[_R_VB] & rdo.valid):
            m.d.comb += [rdo.ready.eq(1), vbw.en.eq(1),
                         vbw.addr.eq(vb_count >> (K - 1).bit_length()),
                         vbw.we.eq(Const(3, 2 * K) << (2 * vb_count[:(K - 1).bit_length()])),
                         vbw.wdata.eq(ro.data[:16].replicate(K))]
            m.d.sync += vb_count.eq(vb_count + 1)
            with m.If(ro.data[:16].as_signed() >= 32640):
                m.d.sync += mv_carry.eq(1)
            with m.If(ro_wide):
                m.d.sync += vb_wide.eq(1)
        # chaining (ch_on): each written value also goes to the vector buffer, at its index in
        # the run, through a register (ch_w); the chained instructions write one row (wr_base +
        # n for result n), so when the run ends the buffer holds [wr_base, wr_base + total)
        # and its tag says so, with the flags a load would have set (vb_wide, mv_carry); the
        # tag is set as the last value is written, two cycles before an instruction can start
        # A MATVEC's results go to the side region the same way (sd_on; words from VBD on), so
        # that an ELTWISE reading them (SwiGLU after gate and up) skips its load
        ch_w = Signal(data.StructLayout({"en": 1, "addr": _bits(VBD + SVD),
                                         "we": 2 * K, "wdata": 16 * K}))
        kb_ = (K - 1).bit_length()
        m.d.sync += [ch_w.en.eq((ch_on | sd_on) & w2_v),
                     ch_w.addr.eq(Mux(sd_on, VBD, 0) + (wr_count >> kb_)),
                     ch_w.we.eq(Const(3, 2 * K) << (2 * wr_count[:kb_])),
                     ch_w.wdata.eq(w_sum.as_unsigned().replicate(K))]
        with m.If(sd_on & w2_v & (w_sum >= 32640)):
            m.d.sync += sd_cr.eq(1)
        with m.If(ch_on & w2_v):
            with m.If(w_sum[7:16].any() & ~w_sum[7:16].all()):
                m.d.sync += ch_wide.eq(1)
            with m.If(w_sum >= 32640):
                m.d.sync += ch_carry.eq(1)
        with m.If(ch_on & wr_run & (wr_count == wr_total)):
            m.d.sync += [ch_on.eq(0), vb_tag_valid.eq(1), vb_tag_src.eq(wr_base),
                         vb_tag_len.eq(wr_total), vb_count.eq(wr_total), vb_wide.eq(ch_wide),
                         mv_carry.eq(ch_carry)]
        with m.If(sd_on & wr_run & (wr_count == wr_total)):
            m.d.sync += [sd_on.eq(0), sd_tag_valid.eq(1), sd_tag_src.eq(wr_base),
                         sd_tag_len.eq(wr_total), sd_w8.eq(wr_w8 & ~wr_acc),
                         sd_carry.eq(sd_cr)]
        # (ch_w and a load never write together: a writer run starts after its instruction's
        # load, ELTWISE's of a included, and the next load waits for the writer in CHECK3)
        with m.If(ch_w.en):
            m.d.comb += [vb.a.addr.eq(ch_w.addr), vb.a.en.eq(1), vb.a.we.eq(ch_w.we),
                         vb.a.wdata.eq(ch_w.wdata)]
        with m.Else():
            m.d.comb += [vb.a.addr.eq(vbw.addr), vb.a.en.eq(vbw.en), vb.a.we.eq(vbw.we),
                         vb.a.wdata.eq(vbw.wdata)]
        # tile-buffer load (MATMAT): element c of token t goes to byte c % K of lane t's slice
        # in word c // K; the first byte of a slice clears the slice's other bytes, so the
        # tail of the last word is zero (the weight bank's padding meets zeros)
        # (the write request is registered: the RAM's inputs come from flip-flops of their own)
        if TBD:
            tbw = Signal(data.StructLayout({"en": 1, "addr": len(tb.a.addr), "we": lanes * K,
                                            "byte": 8, "first": 1, "last": 1}))
            m.d.sync += tbw.en.eq(0)
            with m.If(rt[_R_TB] & rdo.valid):
                kmask = Mux(tb_k[0], (1 << K) - 1, tb_k)
                m.d.comb += rdo.ready.eq(1)
                m.d.sync += [tbw.en.eq(1), tbw.addr.eq(tb_word), tbw.byte.eq(ro.data[:8]),
                             tbw.we.eq(Cat(Mux(tb_lane[ln], kmask, 0) for ln in range(lanes))),
                             tbw.first.eq(tb_k[0]), tbw.last.eq(ro.last)]
                with m.If(ro_wide):
                    m.d.sync += tb_wide.eq(1)
                with m.If(ro.row_end):
                    m.d.sync += [tb_k.eq(1), tb_word.eq(0), tb_lane.eq(tb_lane.rotate_left(1))]
                with m.Else():
                    m.d.sync += [tb_k.eq(tb_k.rotate_left(1)), tb_word.eq(tb_word + tb_k[K - 1])]
            m.d.comb += [tb.a.en.eq(tbw.en), tb.a.addr.eq(tbw.addr), tb.a.we.eq(tbw.we),
                         tb.a.wdata.eq(Mux(tbw.first, tbw.byte, tbw.byte.replicate(K))
                                       .replicate(lanes))]
            with m.If(tbw.en & tbw.last):
                m.d.sync += tb_loaded.eq(1)
        # query registers (SCORES): the reader loads the next head's query into qn while the
        # current head's K rows stream against qr (rotated one beat's elements per beat);
        # q_swap moves qn into qr as the head's command is accepted, or at the last beat of
        # the head before it when that one still streams
        # (pairs: qn holds both heads' queries, the first in its low half; qr2 takes the
        # second's. One head: its query is in qn's high half after hs elements)
        qr = Signal(16 * hs)
        qr2 = Signal(16 * hs) if PAIR else None
        qn = Signal(16 * hs * (2 if PAIR else 1))
        q_rot = Signal()
        q_swap = Signal()
        with m.If(rt[_R_Q] & rdo.valid):
            m.d.comb += rdo.ready.eq(1)
            m.d.sync += [qn.eq(Cat(qn[16:], ro.data[:16])), q_count.eq(q_count + 1)]
        with m.If(q_swap):
            if PAIR:
                m.d.sync += [qr.eq(Mux(sc_pair, qn[:16 * hs], qn[16 * hs:])),
                             qr2.eq(qn[16 * hs:])]
            else:
                m.d.sync += qr.eq(qn)
        with m.Elif(q_rot):
            m.d.sync += [q.eq(Cat(q[16 * B:], q[:16 * B])) for q in (qr, qr2) if q is not None]
        # norm
        for n, blk in enumerate(norms):
            m.d.comb += blk.i.payload.data.eq(Mux(rt[_R_NORM], ro.data[:16], sn_d))
            with m.If(rt[_R_NORM] & (norm_sel == n)):
                m.d.comb += [blk.i.valid.eq(rdo.valid), rdo.ready.eq(blk.i.ready),
                             blk.g.valid.eq(prd.o.valid), prd.o.ready.eq(blk.g.ready),
                             blk.g.payload.gamma.eq(prd.o.payload.data[:16])]
                if "beta" in blk.g.payload.shape().members:
                    m.d.comb += blk.g.payload.beta.eq(prd.o.payload.aux[:16])
            with m.Elif(nm_feed[n]):             # (the early load: see nm_feed)
                m.d.comb += blk.i.valid.eq(nm_v)
        # rope pairer
        if rope is not None:
            rp_have = Signal()
            rp_x0 = Signal(16)
            with m.If(rt[_R_ROPE]):
                with m.If(~rp_have):
                    m.d.comb += rdo.ready.eq(1)
                    with m.If(rdo.valid):
                        m.d.sync += [rp_have.eq(1), rp_x0.eq(ro.data[:16])]
                with m.Else():
                    m.d.comb += [rope.i.valid.eq(rdo.valid), rdo.ready.eq(rope.i.ready),
                                 rope.i.payload.x[0].eq(rp_x0), rope.i.payload.x[1].eq(ro.data[:16]),
                                 rope.i.payload.pos.eq(r_pos), rope.i.payload.last.eq(ro.last)]
                    with m.If(rdo.valid & rope.i.ready):
                        m.d.sync += rp_have.eq(0)
        if rope is not None or swig is not None:
            # fused RoPE (a MATVEC's rope_heads): the requantized results, saturated to the
            # output width as the writer saturates them, are paired (registered) into the
            # unit; the pairs after the rotated heads go at position 0, whose table words
            # (cos 65536, sin 0) make the rotation the identity, and each carries ``last``
            # (so does the last rotated pair): every run leaves the unit's pair index at 0.
            # The writer takes the unit's pairs (wr_src ROPE). The requantizer gives at most
            # one result per cycle, so a pair enters every other cycle at most, and the writer
            # takes one every other cycle: the unit's queue never fills (rp_lost: OVERRUN).
            # A glu MATVEC's results (gl_on) come as pairs, the gate out of rq and its up out
            # of rq2 in the same cycle (see the serializer); the gate saturated to the
            # SwiGLU's a_bits and the up to its b_bits (as the writer would have stored them)
            # go into the SwiGLU unit (gl_pv), whose values the writer takes (wr_src ELT), one
            # per cycle at most (gl_lost: OVERRUN)
            fz_pv, gl_pv, fz_rot, fz_last = Signal(), Signal(), Signal(), Signal()
            fz_x0, fz_p0, fz_p1 = Signal(16), Signal(16), Signal(16)
            rq_y = rq.o.payload.y
            fz_y = Mux(wr_w8, saturate(rq_y, 8), rq_y)      # (the run's width)
            m.d.sync += [fz_pv.eq(0), gl_pv.eq(0)]
            with m.If(fz_on & rq.o.valid):
                with m.If(~fz_have):
                    m.d.sync += [fz_have.eq(1), fz_x0.eq(fz_y)]
                with m.Else():
                    m.d.sync += [fz_have.eq(0), fz_pv.eq(1), fz_p0.eq(fz_x0), fz_p1.eq(fz_y),
                                 fz_rot.eq(fz_left != 0), fz_last.eq(fz_left <= 1)]
                    with m.If(fz_left != 0):
                        m.d.sync += fz_left.eq(fz_left - 1)
            if swig is not None:
                ab, bb = self._swiglu[:2]
                with m.If(gl_on & rq.o.valid):
                    m.d.sync += [gl_pv.eq(1), fz_p0.eq(saturate(rq_y, ab)),
                                 fz_p1.eq(saturate(rq2.o.payload.y, bb))]
        if rope is not None:
            with m.If(~rt[_R_ROPE]):
                m.d.comb += [rope.i.valid.eq(fz_pv), rope.i.payload.x[0].eq(fz_p0),
                             rope.i.payload.x[1].eq(fz_p1),
                             rope.i.payload.pos.eq(Mux(fz_rot, r_pos, 0)),
                             rope.i.payload.last.eq(fz_last)]
            m.d.sync += rp_lost.eq(fz_pv & ~rope.i.ready)
        if swig is not None:
            m.d.sync += gl_lost.eq(gl_pv & ~swig.i.ready)
        # KV append packer
        ap = kv.append.payload
        m.d.comb += [kv.append.valid.eq(kp_valid), ap.layer.eq(kp_layer), ap.head.eq(kp_head),
                     ap.kv.eq(kp_kv), ap.pos.eq(r_pos), ap.beat.eq(kp_beat),
                     ap.data.eq(kp_data)]
        m.d.sync += kp_valid.eq(0)
        with m.If(kp_valid):
            with m.If(kp_beat == BPR - 1):
                m.d.sync += [kp_beat.eq(0), kp_head.eq(kp_head + 1)]
                with m.If(ka_both & ~kp_kv & (kp_head == ka_hm1)):   # K's last row: V's next
                    m.d.sync += [kp_head.eq(0), kp_kv.eq(1)]
            with m.Else():
                m.d.sync += kp_beat.eq(kp_beat + 1)
            with m.If(kp_last):
                m.d.sync += kv_app_done.eq(1)
        # the packer's elements: KVAPPEND's from the reader, a kv_append MATVEC's from the
        # writer (its saturated int8 values, as they are written)
        kp_in_v, kp_in, kp_in_last = Signal(), Signal(8), Signal()
        with m.If(rt[_R_KV]):
            m.d.comb += [rdo.ready.eq(1), kp_in_v.eq(rdo.valid), kp_in.eq(ro.data[:8]),
                         kp_in_last.eq(ro.last)]
        with m.Else():
            m.d.comb += [kp_in_v.eq(ka_on & wi_v), kp_in.eq(wi_d[:8])]
        with m.If(kp_in_v):
            nd = Cat(kp_data[8:], kp_in) if B > 1 else kp_in
            m.d.sync += kp_data.eq(nd)
            with m.If(kp_cnt == B - 1):
                m.d.sync += [kp_cnt.eq(0), kp_valid.eq(1), kp_last.eq(kp_in_last)]
            with m.Else():
                m.d.sync += kp_cnt.eq(kp_cnt + 1)
        # softmax: from the reader (SOFTMAX) or the requantizer (SCORES_SOFTMAX, sm_fused)
        # through smq, a FIFO the requantizer (which cannot stall) always finds room in: a K
        # row's last beat enters the MAC array only with a place in smq reserved for its score
        # (sm_occ counts the places reserved and not yet taken by the softmax; counted from
        # registered copies, so sm_space keeps a margin), so a slow softmax holds the KV
        # stream back and heads stream back to back when it keeps up.
        # Pairs (sc_pair): the second head's scores (rq2) go into smq2, and the softmax takes
        # a row from smq, then one from smq2 (sm_rd2), and so on: head h, then h + 1. The K
        # stream then runs two scores per beat ahead of the softmax's one per cycle, so both
        # queues are a block RAM deep (1,024 scores: half the heads of a 256-position context;
        # a longer backlog holds the K stream back as above), and every score is in them
        # (sc_done, the ATTV after it starts) when the K rows have streamed once. (Each queue
        # holds a whole row and the margin: while the softmax takes head h's row from one,
        # the other takes all of h + 1's, see Engine's score_queue)
        SMQ = self._smq
        m.submodules.smq = smq = SyncFIFOBuffered(width=17, depth=SMQ)
        sm_lost = Signal()                    # a score with no place in smq (internal)
        sm_occ = Signal(range(SMQ + 1))
        sm_res, sm_pop = Signal(), Signal()   # a place reserved / a score taken (registered)
        sm_space = Signal(init=1)
        m.d.comb += [smq.w_en.eq(sm_fused & rq.o.valid),
                     smq.w_data.eq(Cat(rq.o.payload.y, sm_in_last)),
                     sm_lost.eq(sm_fused & rq.o.valid & ~smq.w_rdy)]
        m.d.sync += [sm_occ.eq(sm_occ + sm_res - sm_pop), sm_res.eq(0),
                     sm_pop.eq(smq.r_rdy & smq.r_en)]
        sm_r_data = smq.r_data
        if PAIR:
            m.submodules.smq2 = smq2 = SyncFIFOBuffered(width=17, depth=SMQ)
            sm_occ2 = Signal(range(SMQ + 1))
            sm_pop2 = Signal()
            m.d.comb += [smq2.w_en.eq(sm_fused & sc_pair & rq2.o.valid),
                         smq2.w_data.eq(Cat(rq2.o.payload.y, sm_in_last))]
            with m.If(sm_fused & sc_pair & rq2.o.valid & ~smq2.w_rdy):
                m.d.comb += sm_lost.eq(1)
            m.d.sync += [sm_occ2.eq(sm_occ2 + (sm_res & sc_pair) - sm_pop2),
                         sm_pop2.eq(smq2.r_rdy & smq2.r_en),
                         sm_space.eq(~sm_fused | ((sm_occ < SMQ - 3) & (sm_occ2 < SMQ - 3)))]
            sm_r_data = Mux(sm_rd2, smq2.r_data, smq.r_data)
        else:
            m.d.sync += sm_space.eq(~sm_fused | (sm_occ < SMQ - 3))
        m.d.comb += [smax.i.payload.data.eq(Mux(sm_fused, sm_r_data[:16], ro.data[:16])),
                     smax.i.payload.last.eq(Mux(sm_fused, sm_r_data[16], ro.row_end))]
        with m.If(rt[_R_SMAX]):
            m.d.comb += [smax.i.valid.eq(rdo.valid), rdo.ready.eq(smax.i.ready)]
        # every score of a SCORES_SOFTMAX in smq (sc_done, registered): only the softmax and
        # the writer are left, neither reads what the next DECODE sets, so the next
        # instruction is fetched, decoded and checked while they finish (WAIT_WRITER)
        sm_in_cnt = Signal(24)
        with m.If(fsm("SC_START") | ~sm_fused):
            m.d.sync += sm_in_cnt.eq(0)
        with m.Elif(smq.w_en):
            m.d.sync += sm_in_cnt.eq(sm_in_cnt + 1 + (smq2.w_en if PAIR else 0))
        m.d.sync += sc_done.eq(sm_fused & (sm_in_cnt == wr_total[:24]))
        with m.If(sm_fused):
            if PAIR:
                m.d.comb += [smax.i.valid.eq(Mux(sm_rd2, smq2.r_rdy, smq.r_rdy)),
                             smq.r_en.eq(smax.i.ready & ~sm_rd2),
                             smq2.r_en.eq(smax.i.ready & sm_rd2)]
                with m.If(smax.i.valid & smax.i.ready & sm_r_data[16] & sc_pair):
                    m.d.sync += sm_rd2.eq(~sm_rd2)
            else:
                m.d.comb += [smax.i.valid.eq(smq.r_rdy), smq.r_en.eq(smax.i.ready)]
            with m.If(rq.o.valid):
                with m.If(sm_in_last):
                    m.d.sync += [sm_col.eq(0), sm_in_last.eq(npos_one)]
                with m.Else():
                    m.d.sync += [sm_col.eq(sm_col + 1), sm_in_last.eq(sm_col == npos_m2)]
        # activation
        for n, (_, d, blk) in enumerate(acts):
            m.d.comb += [blk.i.payload.x.eq(ro.data[:d["in_bits"]]),
                         blk.i.payload.last.eq(ro.last)]
            with m.If(rt[_R_ACT] & (act_sel == n)):
                m.d.comb += [blk.i.valid.eq(rdo.valid), rdo.ready.eq(blk.i.ready)]
        # element-wise (a from the vector buffer, b from the scratchpad; swapped when b is in
        # the side region)
        elt_a, elt_b = Signal(signed(16)), Signal(signed(16))
        m.d.comb += [elt_a.eq(Mux(elt_swap, ro.data[:16], vb_lane)),
                     elt_b.eq(Mux(elt_swap, vb_lane, ro.data[:16]))]
        m.d.comb += [eadd.i.payload.a.eq(elt_a), eadd.i.payload.b.eq(elt_b),
                     eadd.i.payload.last.eq(ro.last)]
        if swig is not None:
            with m.If(rt[_R_ELT]):
                m.d.comb += [swig.i.payload.a.eq(elt_a), swig.i.payload.b.eq(elt_b),
                             swig.i.payload.last.eq(ro.last)]
            with m.Else():                       # (a glu MATVEC's pairs)
                m.d.comb += [swig.i.valid.eq(gl_pv), swig.i.payload.a.eq(fz_p0),
                             swig.i.payload.b.eq(fz_p1)]
        with m.If(rt[_R_ELT]):
            with m.If(elt_swiglu):
                if swig is not None:
                    m.d.comb += [swig.i.valid.eq(rdo.valid), rdo.ready.eq(swig.i.ready)]
            with m.Else():
                m.d.comb += [eadd.i.valid.eq(rdo.valid), rdo.ready.eq(eadd.i.ready)]
        # argmax
        with m.If(rt[_R_ARGMAX]):
            m.d.comb += [amax.i.valid.eq(rdo.valid), rdo.ready.eq(amax.i.ready),
                         amax.i.payload.logit.eq(ro.data[:16]), amax.i.payload.last.eq(ro.last)]
        with m.Else():                       # (the early load: see am_on)
            m.d.comb += [amax.i.valid.eq(am_v), amax.i.payload.logit.eq(sn_d),
                         amax.i.payload.last.eq(am_last)]
            with m.If(am_v & ~amax.i.ready):     # (never: the unit's output is always taken)
                m.d.sync += am_on.eq(0)
        with m.If(am_v):
            m.d.sync += [am_sn.eq(1), am_sgot.eq(0)]
        with m.If(amax.o.valid & ~am_rst):       # (a reset: what it outputs now is void)
            with m.If(am_sn):
                m.d.sync += [am_idx.eq(amax.o.payload.index),
                             am_val.eq(amax.o.payload.value.as_signed()), am_sn.eq(0),
                             am_sgot.eq(1)]
            with m.Else():
                m.d.sync += [r_result.eq(amax.o.payload.index),
                             r_rvalue.eq(amax.o.payload.value.as_signed()), amax_got.eq(1)]

        # ---- MAC feed -------------------------------------------------------------------------
        beat_l = mac.i.payload.shape()
        BFD = 16                             # credits: issue -> FIFO read is 7 cycles (MATMAT 9)
        # (a WideFIFO, its pointers and write enable copied per 64 bits: one column group per
        # lane's slice, then the shared slice, then first/last, so no control net spans the
        # ~1,100 bits and each lane's slice can sit by its lane)
        m.submodules.beats = bf = WideFIFO(width=data.Layout.cast(beat_l).size, depth=BFD)
        bf_word = data.StructLayout({"per_lane": beat_l.members["per_lane"],
                                     "shared": beat_l.members["shared"],
                                     "first": 1, "last": 1})
        bf_out = data.View(bf_word, bf.r_data)
        m.d.comb += [mac.i.valid.eq(bf.r_rdy), bf.r_en.eq(mac.i.ready),
                     mac.i.payload.first.eq(bf_out.first), mac.i.payload.last.eq(bf_out.last),
                     mac.i.payload.shared.eq(bf_out.shared),
                     mac.i.payload.per_lane.eq(bf_out.per_lane)]
        bf_issue = Signal()
        WB = wts.latency                     # weight row read latency of the MAC feed
        # MATVEC issue
        mv_active = Signal()
        m.d.sync += chain_ok.eq(mv_hit_c & mv_disj & wr_mv & mv_taken & ~mv_active & ~mv_chain)
        mv_ob = Signal(16)
        mv_ps = Signal(2)
        mv_ib = Signal(16)
        mv_obrow = Signal(24)
        mv_wrow = Signal(24)
        # where the issue is, as flags (registered: no compare before the counters' muxes)
        mv_ib_first, mv_ib_last, mv_ob_last = Signal(), Signal(), Signal()
        ib_m2, ob_m2 = Signal(16), Signal(16)
        ib_one, ob_one = Signal(), Signal()
        m.d.sync += [ib_m2.eq(ib_n - 2), ob_m2.eq(ob_n - 2), ib_one.eq(ib_n == 1),
                     ob_one.eq(ob_n == 1)]
        with m.If(mv_go):
            m.d.sync += [mv_active.eq(1), mv_ob.eq(0), mv_ps.eq(0), mv_ib.eq(0), mv_vb.eq(mv_vb0),
                         mv_obrow.eq(x_w), mv_wrow.eq(x_w), mv_ib_first.eq(1),
                         mv_ib_last.eq(ib_one), mv_ob_last.eq(ob_one)]
        # beats in the FIFO or on their way to it (a register: the issue decision is one LUT);
        # a beat goes through a register (bw_*) in front of the FIFO, and the KV-cache beats
        # of SCORES and ATTV are counted when they enter it, so bf_space is the only
        # handshake they see (MATVEC and MATMAT beats are counted when they are issued)
        bf_occ = Signal(range(BFD + 1))
        bf_inc, bf_dec, bf_space = Signal(), Signal(), Signal()
        bw_en = Signal()                     # a beat goes into the beat register
        mm_active = Signal()
        mm_issue = Signal()
        m.d.comb += [bf_space.eq(bf_occ < BFD), bf_issue.eq(mv_active & bf_space),
                     mm_issue.eq(mm_active & bf_space),
                     bf_inc.eq(Mux(mac_mode == _M_MATVEC, bf_issue,
                                   Mux(mac_mode == _M_MATMAT, mm_issue, bw_en))),
                     bf_dec.eq(bf.r_rdy & bf.r_en)]
        m.d.sync += bf_occ.eq(bf_occ + bf_inc - bf_dec)
        pass_sel = Signal(2)
        with m.Switch(mv_ps):
            with m.Case(0):
                m.d.comb += pass_sel.eq(Mux(mv_x16, _P_HI, _P_X8))
            with m.Case(1):
                m.d.comb += pass_sel.eq(Mux(mv_x16, _P_LO, _P_X8))
            with m.Default():
                m.d.comb += pass_sel.eq(_P_CARRY)
        with m.If(bf_issue):
            with m.If(mv_ib_last):
                m.d.sync += [mv_ib.eq(0), mv_vb.eq(mv_vb0), mv_ib_first.eq(1),
                             mv_ib_last.eq(ib_one)]
                with m.If(mv_ps == mv_npass - 1):
                    m.d.sync += [mv_ps.eq(0), mv_ob.eq(mv_ob + 1), mv_obrow.eq(mv_obrow + ib_n),
                                 mv_wrow.eq(mv_obrow + ib_n), mv_ob_last.eq(mv_ob == ob_m2)]
                    with m.If(mv_ob_last):
                        m.d.sync += mv_active.eq(0)
                with m.Else():
                    m.d.sync += [mv_ps.eq(mv_ps + 1),
                                 mv_wrow.eq(mv_obrow + Mux(mv_w2, plane_sz, 0))]
            with m.Else():
                m.d.sync += [mv_ib.eq(mv_ib + 1), mv_vb.eq(mv_vb + 1), mv_wrow.eq(mv_wrow + 1),
                             mv_ib_first.eq(0), mv_ib_last.eq(mv_ib == ib_m2)]
        # MATMAT issue: for each output row n (a pass) and each input block j, weight bank row
        # x_w + (n // lanes) * ib_n + j, whose lane n % lanes holds W[n, jK:jK+K] (the shared
        # operand), and tile-buffer word j (the per-lane operand); passes follow each other
        # without a gap. Where the issue is, as registered flags like MATVEC's (first/last
        # block of a pass, last lane of a row block, last pass)
        mm_j = Signal(16)
        mm_n = Signal(16)
        mm_lane = Signal(range(lanes))
        mm_blk = Signal(24)                  # weight row of block j = 0 of this pass's rows
        mm_j_first, mm_j_last, mm_lane_last, mm_n_last = (
            Signal(name=n) for n in ("mm_j_first", "mm_j_last", "mm_lane_last", "mm_n_last"))
        if TBD:
            with m.If(mm_go):
                m.d.sync += [mm_active.eq(1), mm_j.eq(0), mm_n.eq(0), mm_lane.eq(0),
                             mm_blk.eq(x_w), mv_wrow.eq(x_w), mm_j_first.eq(1),
                             mm_j_last.eq(ib_one), mm_lane_last.eq(lanes == 1),
                             mm_n_last.eq(mm_rows_one)]
            with m.Elif(mm_issue):
                with m.If(mm_j_last):
                    m.d.sync += [mm_j.eq(0), mm_n.eq(mm_n + 1), mm_j_first.eq(1),
                                 mm_j_last.eq(ib_one), mm_n_last.eq(mm_n == mm_rows_m2)]
                    with m.If(mm_lane_last):
                        m.d.sync += [mm_lane.eq(0), mm_lane_last.eq(lanes == 1),
                                     mm_blk.eq(mm_blk + ib_n), mv_wrow.eq(mm_blk + ib_n)]
                    with m.Else():
                        m.d.sync += [mm_lane.eq(mm_lane + 1), mv_wrow.eq(mm_blk),
                                     mm_lane_last.eq(mm_lane == max(lanes - 2, 0))]
                    with m.If(mm_n_last):
                        m.d.sync += mm_active.eq(0)
                with m.Else():
                    m.d.sync += [mm_j.eq(mm_j + 1), mv_wrow.eq(mv_wrow + 1), mm_j_first.eq(0),
                                 mm_j_last.eq(mm_j == ib_m2)]
        # EMBED reads
        em_active = Signal()
        em_ib = Signal(16)
        em_row = Signal(24)
        EMW = wts.latency + 2                # em_wait value when em_slice holds the read row
        em_wait = Signal(range(EMW + 1))
        em_lane = Signal(range(lanes))
        em_ph = Signal()                     # 16-bit table: 0 high plane, 1 low plane
        em_hi = Signal(8 * K)
        # the first row: the index's row block x words per row, registered every cycle (x_w
        # is set in DECODE, prod_c in CHECK1C: valid from CHECK2B, before EMBED)
        em_first = Signal(24)
        m.d.sync += em_first.eq(x_w + prod_c)
        with m.If(embed_go):
            m.d.sync += [em_active.eq(1), em_ib.eq(0), em_ph.eq(0),
                         em_row.eq(em_first), mv_wrow.eq(em_first),
                         em_lane.eq(embed_idx[:(lanes - 1).bit_length()])]
        # the weight bank's port b reads mv_wrow every cycle (no enable, a registered address):
        # a read issued in cycle t is in rdata at t + 4 (latency 4) and in em_slice (one lane)
        # at t + 6. The lane select is two registered levels: within each group of EMG lanes
        # (a group's lanes sit together, see the floorplan), then across the groups, so no
        # single cycle gathers the whole 1,024-bit row
        EMG = 4
        em_grp = []
        for g in range(0, lanes, EMG):
            n = min(EMG, lanes - g)
            sel = Signal(8 * K, name=f"em_grp{g // EMG}")
            row = wts.b.rdata[8 * K * g:8 * K * (g + n)]
            m.d.sync += sel.eq(row.word_select(em_lane[:(n - 1).bit_length()], 8 * K)
                               if n > 1 else row)
            em_grp.append(sel)
        em_lane_d = Signal.like(em_lane)
        m.d.sync += [em_lane_d.eq(em_lane),
                     em_slice.eq(Array(em_grp)[em_lane_d[(EMG - 1).bit_length():]]
                                 if len(em_grp) > 1 else em_grp[0])]
        with m.If(hw_rd):                    # a host read of a weight word (the engine idles)
            m.d.sync += [mv_wrow.eq(hw_row), em_lane.eq(hw_lane)]
        # the next row's wait starts while the serializer still empties: a row's slice loads
        # EMW cycles after its wait starts, when the serializer (one value out per cycle, no
        # stall) has at most its last value left, which goes out in that cycle (the next
        # row's address was set when the previous row loaded, so its slice is there)
        with m.If(em_active & (em_wait == 0) & (ser_cnt <= EMW + 1)):
            m.d.sync += em_wait.eq(1)
        with m.Elif(em_wait != 0):
            m.d.sync += em_wait.eq(Mux(em_wait == EMW, 0, em_wait + 1))
            with m.If(em_wait == EMW):
                with m.If(em_w2 & ~em_ph):          # high plane read: now the low plane
                    m.d.sync += [em_ph.eq(1), em_hi.eq(em_slice),
                                 mv_wrow.eq(em_row + plane_sz)]
                with m.Else():
                    m.d.sync += [em_ph.eq(0), em_ib.eq(em_ib + 1), em_row.eq(em_row + 1),
                                 mv_wrow.eq(em_row + 1)]
                    with m.If(em_ib == ib_m1):
                        m.d.sync += em_active.eq(0)
        # WAIT_WRITER's early exit: no MAC issue left, both readers idle, the skid buffer empty
        # (in_bad is then final: it follows rdo.valid by two registers)
        m.d.sync += drained.eq(~mv_active & ~mm_active & ~em_active & rd.idle & prd.idle &
                               ~rdo.valid)
        m.d.comb += [wts.b.addr.eq(mv_wrow), wts.b.en.eq(1)]
        with m.If(mv_active):
            m.d.comb += [vb.b.addr.eq(mv_vb), vb.b.en.eq(bf_issue)]
        with m.Else():
            m.d.comb += [vb.b.addr.eq(rd.aux_addr), vb.b.en.eq(rd.aux_en)]
        m.d.comb += rd.aux_rdata.eq(vb.b.rdata)
        # MATVEC beat assembly, WB cycles after the issue (the weight bank's port b latency;
        # the vector buffer answers after two, and its planes are registered, then delayed)
        mv_done = delay(m, bf_issue, WB, name="mv_i", reset=True)
        s2 = delay(m, pass_sel, 2, name="mv_ps", reset=True)
        mv_beat = Signal(beat_l)
        m.d.comb += [mv_beat.first.eq(delay(m, mv_ib_first, WB, name="mv_f")),
                     mv_beat.last.eq(delay(m, mv_ib_last, WB, name="mv_l"))]
        for k in range(K):
            p, stmts = _plane(vb.b.rdata[16 * k:16 * k + 16], s2)
            m.d.comb += stmts
            m.d.comb += mv_beat.shared[k].eq(delay(m, p, WB - 2, name=f"mv_sh{k}"))
        for ln in range(lanes):
            for k in range(K):
                m.d.comb += mv_beat.per_lane[ln][k].eq(wts.b.rdata[8 * (ln * K + k):][:8])

        # MATMAT beat assembly, MMD = WB + 2 cycles after the issue: the weight row (WB
        # cycles) has the pass's lane slice selected in two registers (EMBED's em_slice, its
        # select em_lane following the issued lane WB - 1 cycles late); the tile buffer is
        # read MMD - latency cycles after the issue (from registers: word and enable delayed)
        # so that its word arrives then too
        MMD = WB + 2
        mm_beat = Signal(beat_l)
        mi_last = Const(0)                   # the MATMAT beat is complete (goes to bw_*)
        if TBD:
            tb_at = MMD - tb.latency            # WB (LUT RAM) or WB - 1 (block RAM)
            mi_tb = delay(m, mm_issue, tb_at, name="mm_i", reset=True)
            mi_last = delay(m, mi_tb, MMD - tb_at, name="mm_i_tb", reset=True)
            with m.If(mac_mode == _M_MATMAT):
                m.d.sync += em_lane.eq(delay(m, mm_lane, WB - 1, name="mm_ln"))
            m.d.comb += [tb.b.addr.eq(delay(m, mm_j[:len(tb.b.addr)], tb_at, name="tb_j")),
                         tb.b.en.eq(mi_tb),
                         mm_beat.first.eq(delay(m, mm_j_first, MMD, name="mm_f")),
                         mm_beat.last.eq(delay(m, mm_j_last, MMD, name="mm_l"))]
            for k in range(K):
                m.d.comb += mm_beat.shared[k].eq(em_slice[8 * k:8 * k + 8])
            for ln in range(lanes):
                for k in range(K):
                    m.d.comb += mm_beat.per_lane[ln][k].eq(tb.b.rdata[8 * (ln * K + k):][:8])

        # SCORES / ATTV beats from the KV cache, through a skid buffer (registered valid,
        # payload and ready)
        m.submodules.kv_skid = kv_skid = SkidBuffer(kv.read_data.payload.shape())
        wiring.connect(m, kv.read_data, kv_skid.i)
        rdd = kv_skid.o
        sc_beat = Signal(beat_l)
        for j in range(B):
            m.d.comb += sc_beat.shared[j].eq(rdd.payload.data[8 * j:8 * j + 8])
            for ln0, qreg in ((0, qr), (3, qr2)) if PAIR else ((0, qr),):
                x = qreg[16 * j:16 * j + 16]
                for ln, sel in ((ln0, _P_HI), (ln0 + 1, _P_LO), (ln0 + 2, _P_CARRY)):
                    p, stmts = _plane(x, Const(sel, 2))
                    m.d.comb += stmts + [sc_beat.per_lane[ln][j].eq(p)]
        m.d.comb += [sc_beat.first.eq(sc_bcnt == 0), sc_beat.last.eq(rdd.payload.row_end)]
        vrow = Signal(8 * hs)
        vfull = Signal(8 * hs)
        m.d.comb += vfull.eq(Cat(vrow[8 * B:], rdd.payload.data) if BPR > 1 else rdd.payload.data)
        av_beat = Signal(beat_l)
        pv = ro.data[:16]
        m.d.comb += [av_beat.shared[0].eq(_hi_plane(pv)[:8]), av_beat.shared[1].eq(pv[:8]),
                     av_beat.first.eq(av_t0), av_beat.last.eq(rdd.payload.last)]
        gsel = Array(Array(vfull[8 * (g * G + ln):][:8] if g * G + ln < hs else Const(0, 8)
                           for ln in range(G)) for g in range(NG))
        for ln in range(G):
            m.d.comb += [av_beat.per_lane[ln][0].eq(gsel[at_g][ln]),
                         av_beat.per_lane[G + ln][1].eq(gsel[at_g][ln])]
        sc_issue, sc_lastb = Signal(), Signal()  # a head's command taken; its last beat taken
        with m.If(mac_mode == _M_SCORES):
            sc_take = bf_space & sm_space
            m.d.comb += [rdd.ready.eq(sc_take), bw_en.eq(rdd.valid & sc_take),
                         sc_issue.eq(at_cmd & kv.read_cmd.ready),
                         sc_lastb.eq(rdd.valid & sc_take & rdd.payload.last)]
            m.d.sync += sm_res.eq(sm_fused & rdd.valid & sc_take & rdd.payload.row_end)
            with m.If(rdd.valid & sc_take):
                m.d.comb += q_rot.eq(1)
                m.d.sync += sc_bcnt.eq(Mux(rdd.payload.row_end, 0, sc_bcnt + 1))
        with m.Elif(mac_mode == _M_ATTV):
            end = rdd.payload.row_end
            m.d.comb += [rdd.ready.eq(~end | (rdo.valid & bf_space)),
                         bw_en.eq(rdd.valid & end & rdo.valid & bf_space)]
            with m.If(rdd.valid & rdd.ready):
                m.d.sync += vrow.eq(vfull)
                with m.If(end):
                    m.d.sync += av_t0.eq(0)
                with m.If(rdd.payload.last):    # the next V row starts a dot product
                    m.d.sync += [at_last_seen.eq(1), av_t0.eq(1)]
        with m.Elif(mac_mode == _M_MATMAT):
            m.d.comb += bw_en.eq(mi_last)
        with m.Else():
            m.d.comb += bw_en.eq(mv_done)
        # SCORES: the query of the next head moves into qr (see the query registers)
        m.d.comb += q_swap.eq((sc_issue & (~sc_busy | sc_lastb)) | (sc_lastb & sc_next))
        with m.If(sc_issue):
            m.d.sync += sc_busy.eq(1)
            with m.If(sc_busy & ~sc_lastb):
                m.d.sync += sc_next.eq(1)
        with m.Elif(sc_lastb):
            with m.If(sc_next):
                m.d.sync += sc_next.eq(0)
            with m.Else():
                m.d.sync += sc_busy.eq(0)
        with m.If(rt[_R_P]):                 # (ATTV's probabilities: registers only)
            m.d.comb += rdo.ready.eq(rdd.valid & rdd.payload.row_end & bf_space)
        # the beat register: each lane's slice (and the shared slice) selected by its own copy
        # of the mode flags (no net from mac_mode to the ~1,100 bits), loaded every cycle
        # (the copy is the mode as two select bits, a 4:1 mux per bit: bit 1 picks the KV-cache
        # sources, bit 0 SCORES over ATTV and MATMAT over MATVEC; MATMAT only in an engine
        # with a tile buffer)
        bw_v = Signal()
        bw_d = Signal(bf_word, reset_less=True)
        m.d.sync += bw_v.eq(bw_en)
        bw_vg = [keep_register(m, platform, Signal(name=f"bw_v{g}"), bw_en)   # the FIFO's write
                 for g in range(bf.groups)]                                   # enable per group

        def mode_copy(name):
            sc, av = mac_mode == _M_SCORES, mac_mode == _M_ATTV
            return keep_register(m, platform, Signal(2, name=name, reset_less=True),
                                 Cat(sc | (mac_mode == _M_MATMAT), sc | av))

        def pick(mm, sc, av, mv, mt):
            return Mux(mm[1], Mux(mm[0], sc, av), Mux(mm[0], mt, mv) if TBD else mv)

        mm = mode_copy("mm_sh")
        m.d.sync += [bw_d.first.eq(pick(mm, sc_beat.first, av_beat.first, mv_beat.first,
                                        mm_beat.first)),
                     bw_d.last.eq(pick(mm, sc_beat.last, av_beat.last, mv_beat.last,
                                       mm_beat.last)),
                     bw_d.shared.eq(pick(mm, sc_beat.shared, av_beat.shared, mv_beat.shared,
                                         mm_beat.shared))]
        for ln in range(lanes):
            mm = mode_copy(f"mm_l{ln}")
            m.d.sync += bw_d.per_lane[ln].eq(pick(mm, sc_beat.per_lane[ln],
                                                  av_beat.per_lane[ln], mv_beat.per_lane[ln],
                                                  mm_beat.per_lane[ln]))
        m.d.comb += [bf.w_en.eq(Cat(*bw_vg)), bf.w_data.eq(bw_d.as_value())]
        with m.If(at_cmd):
            m.d.comb += [kv.read_cmd.valid.eq(1), kv.read_cmd.payload.layer.eq(r_layer),
                         kv.read_cmd.payload.head.eq(at_kvh), kv.read_cmd.payload.kv.eq(at_kvsel),
                         kv.read_cmd.payload.pos.eq(r_pos)]
            with m.If(kv.read_cmd.ready):
                m.d.sync += at_cmd.eq(0)

        # ---- combiner and serializer -> requantizer -------------------------------------------
        # A MAC result is taken from the skid buffer (mo) when tk_ok, a flip-flop, says the
        # serializer will be free for it; the next cycle (stage X, loaded every cycle, its
        # valid and selects copied per lane) adds it into the pass combiner (cb) and loads the
        # serializer (ser), which shifts one value per cycle into the requantizer. The sums
        # of SCORES and ATTV are formed while the result is taken (x_alt).
        S = max(lanes, K)
        lb = (lanes - 1).bit_length()
        ser = Array(Signal(signed(acc_w), name=f"ser{n}") for n in range(S))
        ser_idx = Signal(16)
        cb = Array(Signal(signed(acc_w), name=f"cb{n}") for n in range(lanes))
        m.submodules.mac_out = mo = SkidBuffer(mac.o.payload.shape())
        wiring.connect(m, mac.o, mo.i)
        r = mo.o.payload
        tk_ok = Signal()
        take = Signal()
        m.d.comb += [mo.o.ready.eq(tk_ok), take.eq(mo.o.valid & tk_ok)]
        shift = Signal()
        with m.Switch(cb_ps):
            with m.Case(0):
                m.d.comb += shift.eq(mv_x16 | mv_w2)
            with m.Case(1):
                m.d.comb += shift.eq(0)
            with m.Default():
                m.d.comb += shift.eq(1)
        is_mv, is_mm = Signal(), Signal()
        t_load = Signal()                     # the taken result loads the serializer
        t_cnt = Signal.like(ser_cnt)          # ... with this many values
        cb_left = Signal(16)                  # MATVEC rows not yet loaded
        m.d.comb += [is_mv.eq(mac_mode == _M_MATVEC), is_mm.eq(mac_mode == _M_MATMAT),
                     t_load.eq(~is_mv | (cb_ps == mv_npass - 1))]
        mv_cnt = Signal.like(ser_cnt)         # the block's rows
        m.d.comb += mv_cnt.eq(Mux(cb_left[lb:].any(), lanes, cb_left))
        with m.Switch(mac_mode):
            with m.Case(_M_MATVEC):
                # (glu: the block's gate/up pairs, glu_rows: gate j on lane j, its up on lane
                # lanes/2 + j)
                m.d.comb += t_cnt.eq(Mux(gl_on, mv_cnt >> 1, mv_cnt))
            with m.Case(_M_SCORES):
                m.d.comb += t_cnt.eq(1)
            with m.Case(_M_MATMAT):
                m.d.comb += t_cnt.eq(mm_tokens)
            with m.Default():
                last_g = hs - (NG - 1) * G
                m.d.comb += t_cnt.eq(Mux(cb_g == NG - 1, last_g, G))
        with m.If(mv_go):
            m.d.sync += [cb_left.eq(mv_rows), mv_taken.eq(0)]
        with m.If(take):
            with m.Switch(mac_mode):
                with m.Case(_M_MATVEC):
                    with m.If(cb_ps == mv_npass - 1):
                        m.d.sync += [cb_ps.eq(0), cb_ob.eq(cb_ob + 1),
                                     cb_left.eq(cb_left - lanes)]
                        with m.If(cb_left <= lanes):        # the last block: all taken
                            m.d.sync += mv_taken.eq(1)
                    with m.Else():
                        m.d.sync += cb_ps.eq(cb_ps + 1)
                with m.Case(_M_MATMAT):            # output row cb_ob of tokens 0 .. tokens-1
                    m.d.sync += cb_ob.eq(cb_ob + 1)
                with m.Case(_M_ATTV):
                    m.d.sync += cb_g.eq(Mux(cb_g == NG - 1, 0, cb_g + 1))
        # stage X
        x_load = Signal()
        x_cnt = Signal.like(ser_cnt)
        x_idx = Signal(16)
        m.d.sync += [x_load.eq(take & t_load), x_cnt.eq(t_cnt),
                     x_idx.eq(Mux(is_mm, cb_ob, cb_ob << lb))]
        x_r = [Signal(signed(acc_w), name=f"x_r{n}", reset_less=True) for n in range(lanes)]
        x_alt = [Signal(signed(acc_w), name=f"x_alt{n}", reset_less=True) for n in range(G)]
        m.d.sync += [x_r[n].eq(r[n]) for n in range(lanes)]
        sc_mode = keep_register(m, platform, Signal(name="x_scm", reset_less=True),
                                mac_mode == _M_SCORES)
        m.d.sync += x_alt[0].eq(Mux(sc_mode, (r[0] << 8) + r[1] + (r[2] << 8),
                                    (r[0] << 8) + r[G]))
        m.d.sync += [x_alt[n].eq((r[n] << 8) + r[G + n]) for n in range(1, G)]
        # (SCORES pairs: the second head's sum, into ser[lanes // 2], which feeds rq2)
        if PAIR:
            x_pair = Signal(signed(acc_w), name="x_pair", reset_less=True)
            m.d.sync += x_pair.eq((r[3] << 8) + r[4] + (r[5] << 8))
        # the serializer's next count; emit (a value goes out) is ser_cnt != 0
        em_load, em_cnt = Signal(), Signal.like(ser_cnt)
        ser_cnt_next = Signal.like(ser_cnt)
        emit = Signal()
        m.d.comb += [emit.eq(ser_cnt != 0),
                     ser_cnt_next.eq(Mux(x_load, x_cnt, Mux(em_load, em_cnt,
                                                              Mux(emit, ser_cnt - 1, 0))))]
        m.d.sync += ser_cnt.eq(ser_cnt_next)
        # (MATMAT: the tokens of one output row share its requantization parameters, the
        # index stays; ser_adv is a register, mac_mode is set in EXEC)
        ser_adv = Signal()
        m.d.sync += ser_adv.eq(~is_mm)
        with m.If(x_load):
            m.d.sync += ser_idx.eq(x_idx)
        with m.Elif(emit & ser_adv):
            # (glu: the gate's word, the up's is the next one)
            m.d.sync += ser_idx.eq(ser_idx + 1 + gl_on)
        # a result taken now loads the serializer the next cycle, when at most one value
        # (going out then) may be left
        m.d.sync += tk_ok.eq(~em_active & ~embed_go & ~mv_chain & ~av_hold &
                             Mux(take & t_load, t_cnt <= 1, ser_cnt_next <= 2))
        # per-lane copies of X's controls (valid, first pass, shift, loads, the serializer
        # takes nv) and of emit. A MATMAT result goes through nv as it is (first pass, no
        # shift); it also lands in cb, which no MATMAT reads and every MATVEC's first pass
        # overwrites
        emit_c = []
        for n in range(S):
            ctl = None
            if n < lanes:
                ctl = keep_register(m, platform, Signal(5, name=f"x_ctl{n}"),
                                    Cat(take, (cb_ps == 0) | is_mm, shift & ~is_mm, t_load,
                                        is_mv | is_mm))
            ec = keep_register(m, platform, Signal(name=f"x_emit{n}"), ser_cnt_next != 0)
            emit_c.append(ec)
            nv = None
            if ctl is not None:
                xv, first, sh, ld, mv = ctl[0], ctl[1], ctl[2], ctl[3], ctl[4]
                term = Mux(sh, x_r[n] << 8, x_r[n])
                nv = Signal(signed(acc_w), name=f"cbn{n}")
                m.d.comb += nv.eq(Mux(first, term, cb[n] + term))
                with m.If(xv & mv):
                    m.d.sync += cb[n].eq(nv)
            nxt = ser[n + 1] if n + 1 < S else ser[n]
            if ctl is not None:
                val = Mux(mv, nv, x_alt[n]) if n < G else nv
                if PAIR and n == lanes // 2:
                    val = Mux(sc_mode, x_pair, val)
                with m.If(xv & ld):
                    m.d.sync += ser[n].eq(val)
                with m.Elif(ec):
                    m.d.sync += ser[n].eq(nxt)
            else:
                with m.If(ec):
                    m.d.sync += ser[n].eq(nxt)
        # EMBED: a weight row's lane slice into the serializer (em_load is registered: it is
        # set the cycle before em_wait reaches EMW)
        # (em_cnt registered from em_left: em_left changes at embed_go and at em_load, at
        # least four cycles before the next em_load)
        em_left = Signal(16)                  # table columns not yet loaded
        em_load_d = em_active & (em_wait == EMW - 1) & ~(em_w2 & ~em_ph)
        m.d.sync += [em_cnt.eq(Mux(em_left >= K, K, em_left)), em_load.eq(em_load_d)]
        with m.If(embed_go):
            m.d.sync += em_left.eq(v[Opcode.EMBED].cols)
        with m.If(em_load):
            m.d.sync += em_left.eq(em_left - K)
        for k in range(K):
            lo = em_slice[8 * k:8 * k + 8].as_signed()
            hi = em_hi[8 * k:8 * k + 8].as_signed()
            with m.If(keep_register(m, platform, Signal(name=f"em_load{k}"), em_load_d)):
                m.d.sync += ser[k].eq(Mux(em_w2, (hi << 8) + lo, lo))
        # reader -> requantizer (REQUANT)
        rq_src_valid = Signal()
        rq_src_acc = Signal(signed(32))
        rq_src_idx = Signal(16)
        with m.If(rt[_R_RQ]):
            m.d.comb += [rdo.ready.eq(1), rq_src_valid.eq(rdo.valid),
                         rq_src_acc.eq(ro.data[:16].as_signed()), rq_src_idx.eq(rd_idx)]
            with m.If(rdo.valid):
                m.d.sync += rd_idx.eq(rd_idx + 1)
        with m.Else():
            m.d.comb += [rq_src_valid.eq(emit), rq_src_acc.eq(ser[0]), rq_src_idx.eq(ser_idx)]
        # parameter reads for the requantizer (port b: mult/shift, port a: bias)
        # (addresses registered: the memory sees them one cycle after the source, the data
        # comes three cycles after it, beside the accumulator delayed as much)
        q0, q1, q2 = Signal(), Signal(), Signal()
        qa0, qa1, qa2 = Signal(signed(32)), Signal(signed(32)), Signal(signed(32))
        rq_bbase = Signal(24)                 # rq_base + rq_rows: the biases (glu: + 1, the ups)
        pq_b, pq_a = Signal(aw_p), Signal(aw_p)
        pq_b_en, pq_a_en = Signal(), Signal()
        m.d.sync += [q0.eq(rq_src_valid), q1.eq(q0), q2.eq(q1),
                     qa0.eq(rq_src_acc), qa1.eq(qa0), qa2.eq(qa1),
                     rq_bbase.eq(rq_base + Mux(gl_on, 1, rq_rows)),
                     pq_b.eq(Mux(glu_fetch, glu_p, rq_base + Mux(rq_per_row, rq_src_idx, 0))),
                     pq_b_en.eq(rq_src_valid | elt_fetch | glu_fetch),
                     pq_a.eq(rq_bbase + rq_src_idx),
                     pq_a_en.eq(rq_src_valid & (rq_bias | gl_on))]
        with m.If(prd.busy | prd.o.valid):
            m.d.comb += [par.b.addr.eq(prd.addr), par.b.en.eq(prd.en)]
        with m.Else():
            m.d.comb += [par.b.addr.eq(pq_b), par.b.en.eq(pq_b_en)]
        m.d.comb += [prd.rdata.eq(par.b.rdata), prd.aux_rdata.eq(par.a.rdata)]
        with m.If(busy):
            with m.If(prd.busy | prd.o.valid):
                m.d.comb += [par.a.addr.eq(prd.aux_addr), par.a.en.eq(prd.aux_en)]
            with m.Else():
                m.d.comb += [par.a.addr.eq(pq_a), par.a.en.eq(pq_a_en)]
        with m.Else():
            m.d.comb += [par.a.addr.eq(host_p.addr), par.a.en.eq(host_p.en),
                         par.a.we.eq(host_p.we), par.a.wdata.eq(host_p.wdata)]
        m.d.comb += [rq.i.valid.eq(q2), rq.i.payload.acc.eq(qa2),
                     rq.i.payload.bias.eq(Mux(rq_bias, par.a.rdata.as_signed(), 0)),
                     rq.i.payload.mult.eq(par.b.rdata[0:16]),
                     rq.i.payload.shift.eq(par.b.rdata[16:22]), rq.i.payload.last.eq(0)]
        m.d.comb += overrun.eq((q2 & ~rq.i.ready) | sm_lost | rp_lost | gl_lost)
        if rq2 is not None:
            # a glu MATVEC: the up (ser[lanes/2], glu_rows) into rq2 beside its gate, with its
            # word from port a (a glu run has no biases)
            qb0, qb1, qb2 = (Signal(signed(len(rq2.i.payload.acc)), name=f"qb{n}")
                             for n in range(3))
            m.d.sync += [qb0.eq(ser[lanes // 2]), qb1.eq(qb0), qb2.eq(qb1)]
            # (SCORES pairs: the second head's score, with the word rq reads on port b)
            q2_on = gl_on | (sc_pair & sm_fused) if PAIR else gl_on
            m.d.comb += [rq2.i.valid.eq(q2 & q2_on),
                         rq2.i.payload.acc.eq(qb2),
                         rq2.i.payload.mult.eq(Mux(gl_on, par.a.rdata[0:16], par.b.rdata[0:16])),
                         rq2.i.payload.shift.eq(Mux(gl_on, par.a.rdata[16:22],
                                                    par.b.rdata[16:22])),
                         rq2.i.payload.last.eq(0), rq2.o.ready.eq(1)]
            with m.If(q2 & q2_on & ~rq2.i.ready):
                m.d.comb += overrun.eq(1)
        if swig is not None:
            m.d.comb += [swig.mult.eq(elt_m), swig.shift.eq(elt_s)]
            # a glu MATVEC's SwiGLU word: read from EXEC on (port b is free: no writer run,
            # no results yet), taken three cycles later, as ELT_PARAM2 takes ELTWISE's
            with m.If(delay(m, glu_fetch, 3, name="glu_cap", reset=True)):
                m.d.sync += [elt_m.eq(par.b.rdata[0:16]), elt_s.eq(par.b.rdata[16:22])]

        # ---- unit busy (profiling) ------------------------------------------------------------
        ub = Signal(len(UNITS))
        fsm_busy = {
            "mac_array": bw_v | bf.r_rdy | mac.o.valid | mo.o.valid | x_load | mv_active |
                         mm_active,
            "kv_cache": kv.append.valid | kv.read_cmd.valid | rdd.valid,
            "softmax": (rt[_R_SMAX] | sm_fused) & busy & ~wr_done,
            "norm": rt[_R_NORM] & busy & ~wr_done,
            "requant": rq.i.valid | rq.o.valid,
            "rope": (rt[_R_ROPE] | fz_on) & busy & ~wr_done,
            "activation": rt[_R_ACT] & busy & ~wr_done,
            "eltwise": rt[_R_ELT] & busy & ~wr_done,
            "argmax": rt[_R_ARGMAX] & busy & ~amax_got,
            "loader": (rt[_R_VB] | rt[_R_TB]) & rd.busy,
        }
        for n, u in enumerate(UNITS):
            m.d.comb += ub[n].eq(fsm_busy[u])
        m.d.sync += self.unit_busy.eq(ub)
        return m

    # ---- sequencer pieces (emitted inside the FSM states) -----------------------------------
    def _decode(self, m, v, opcode, s):
        """DECODE state: operand set-up and the multiplier inputs of the range checks."""
        lanes, K, hs, ctx = self._lanes, self._K, self._hs, self._ctx
        lb, kb = (lanes - 1).bit_length(), (K - 1).bit_length()
        image = self._image
        ma1, ma2, mb1, mb2 = s["mul_a1"], s["mul_a2"], s["mul_b1"], s["mul_b2"]
        pb, wb = s["pbase"], s["wbase"]
        x_w, x_p, ob_n, ib_n = s["x_w"], s["x_p"], s["ob_n"], s["ib_n"]
        npos = s["npos"]
        mc1, mc2 = s["mul_c1"], s["mul_c2"]
        m.d.sync += [ma1.eq(0), ma2.eq(0), mb1.eq(0), mb2.eq(0),
                     mc1.eq(0), mc2.eq(0)]

        def rel(ins):
            return (Mux(ins.layer_rel, wb, 0), Mux(ins.layer_rel, pb, 0))

        def bad(cond, code=ErrorCode.BAD_FIELD):
            flag = Signal(name=f"bad{len(self._bad_flags)}")
            self._bad_flags.append((flag, code))
            m.d.sync += flag.eq(cond)

        fail = s["fail"]

        with m.Switch(opcode):
            with m.Case(Opcode.NOP, Opcode.SYNC):
                self._fsm.goto("NEXT")
            with m.Case(Opcode.HALT):
                m.d.sync += [s["busy"].eq(0), self.done.eq(1), s["st_done"].eq(1)]
                self._fsm.goto("IDLE")
            # SETREG and LOOP: the effect only if the fields are good; a bad field ends the
            # job in CHECK3 (chk_hard), not here
            with m.Case(Opcode.SETREG):
                ins = v[Opcode.SETREG]
                bad_pos = (ins.reg == Reg.POS) & (ins.value >= ctx)
                bad_reg = ins.reg.as_value() > Reg.RESULT_VALUE.value
                bad(bad_pos, ErrorCode.POS_RANGE)
                bad(bad_reg)
                with m.If(~bad_pos & ~bad_reg):
                    m.d.sync += s["regs"][ins.reg.as_value()].eq(ins.value)
                    with m.If(ins.reg == Reg.POS):
                        m.d.sync += s["npos"].eq(ins.value[:16] + 1)
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.LOOP):
                ins = v[Opcode.LOOP]
                bad_range = ((ins.count == 0) | (ins.body == 0) |
                             (s["pc"] + ins.body >= self._map.program_words))
                bad(bad_range, ErrorCode.PROGRAM_RANGE)
                bad(s["lp_active"], ErrorCode.UNSUPPORTED)
                with m.If(~s["lp_active"] & ~bad_range):
                    m.d.sync += [s["lp_active"].eq(1), s["lp_start"].eq(s["pc"] + 1),
                                 s["lp_end"].eq(s["pc"] + ins.body), s["lp_count"].eq(ins.count),
                                 s["r_layer"].eq(0), wb.eq(0), pb.eq(0),
                                 s["lp_wstride"].eq(ins.wstride), s["lp_pstride"].eq(ins.pstride)]
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.MATMAT):
                ins = v[Opcode.MATMAT]
                if not self._mm_cols:           # no tile buffer in this engine
                    fail(ErrorCode.UNSUPPORTED)
                else:
                    w_, p_ = rel(ins)
                    m.d.sync += [x_w.eq(ins.waddr + w_), x_p.eq(ins.paddr + p_),
                                 ob_n.eq((ins.rows + lanes - 1) >> lb),
                                 ib_n.eq((ins.cols + K - 1) >> kb),
                                 ma1.eq((ins.rows + lanes - 1) >> lb),    # weight rows
                                 ma2.eq((ins.cols + K - 1) >> kb),
                                 mb1.eq(ins.tokens), mb2.eq(ins.cols),    # input elements
                                 mc1.eq(ins.tokens), mc2.eq(ins.rows)]    # output elements
                    bad((ins.tokens == 0) | (ins.tokens > lanes))
                    bad((ins.rows == 0) | (ins.cols == 0) | (ins.cols > self._mm_cols))
                    self._fsm.goto("CHECK1")
            with m.Case(Opcode.EMBED):
                ins = v[Opcode.EMBED]
                idx = s["regs"][ins.index_reg.as_value()]
                m.d.sync += [s["embed_idx"].eq(idx), x_w.eq(ins.waddr),
                             ob_n.eq((ins.rows + lanes - 1) >> lb),
                             ib_n.eq((ins.cols + K - 1) >> kb),
                             ma1.eq((ins.rows + lanes - 1) >> lb), ma2.eq((ins.cols + K - 1) >> kb),
                             mc1.eq(idx >> lb), mc2.eq((ins.cols + K - 1) >> kb)]  # row offset
                bad(idx >= ins.rows, ErrorCode.BAD_INDEX)
                bad((ins.w_planes == 0) | (ins.w_planes == 3))
                bad(ins.index_reg.as_value() > Reg.RESULT_VALUE.value)
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.MATVEC):
                ins = v[Opcode.MATVEC]
                w_, p_ = rel(ins)
                m.d.sync += [x_w.eq(ins.waddr + w_), x_p.eq(ins.paddr + p_),
                             ob_n.eq((ins.rows + lanes - 1) >> lb),
                             ib_n.eq((ins.cols + K - 1) >> kb),
                             ma1.eq((ins.rows + lanes - 1) >> lb), ma2.eq((ins.cols + K - 1) >> kb)]
                bad((ins.w_planes == 0) | (ins.w_planes == 3))
                bad((ins.w_planes == 2) & (ins.in_width == Width.W16))
                bad(ins.cols > self._vb_len)
                bad((ins.rows == 0) | (ins.cols == 0))
                if self._rope is None:
                    bad(ins.rope_heads != 0)
                else:       # rotated heads in an even number of rows, no accumulate
                    hsb = self._rope["head_size"].bit_length() - 1
                    bad((ins.rope_heads != 0) &
                        (ins.accumulate | ins.rows[0] | ((ins.rope_heads << hsb) > ins.rows)))
                # kv_append: int8 rows, per part 1 .. kv_heads rows of head_size (ka_hm1_d:
                # the rows per part - 1, taken by the run's configuration)
                both, ka_ok = ins.kv_append == 3, 0
                for k in range(1, image.kv_heads + 1):
                    hit = Mux(both, ins.rows == 2 * k * hs, ins.rows == k * hs)
                    with m.If(hit):
                        m.d.sync += s["ka_hm1_d"].eq(k - 1)
                    ka_ok = ka_ok | hit
                bad((ins.kv_append != 0) &
                    ((ins.out_width != Width.W8) | ins.accumulate | ~ka_ok))
                bad((ins.kv_append != 0) & (s["r_layer"] >= image.kv_layers), ErrorCode.KV_CACHE)
                # glu: gate/up pairs (even rows) into the SwiGLU unit, at its output width
                if self._swiglu is None:
                    bad(ins.glu)
                else:
                    glu_w = Width.W16 if self._swiglu[2] == 16 else Width.W8
                    bad(ins.glu & (ins.rows[0] | ins.bias | ins.accumulate |
                                   (ins.rope_heads != 0) | (ins.kv_append != 0) |
                                   (ins.out_width != glu_w)))
                    bad(ins.glu & ((ins.in_width != Width.W8) | (ins.w_planes != 1) |
                                   (ins.cols > GLU_MAX_COLS)))         # (rq2: GLU_ACC_BITS)
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.REQUANT):
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.NORM):
                ins = v[Opcode.NORM]
                w_, p_ = rel(ins)
                m.d.sync += x_p.eq(ins.paddr + p_)
                match = 0
                for n, (kind, dim, gf, bf, of, _) in enumerate(self._norms):
                    hit = ((ins.kind == kind) & (ins.len == dim) & (ins.gamma_frac == gf) &
                           (ins.out_frac == of) &
                           ((ins.beta_frac == bf) | (ins.kind == NormKind.RMSNORM)))
                    with m.If(hit):
                        m.d.sync += s["norm_sel"].eq(n)
                    match = match | hit
                bad(~match if self._norms else Const(1))
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.ROPE):
                ins = v[Opcode.ROPE]
                m.d.sync += [ma1.eq(ins.n_heads), ma2.eq(ins.head_size)]
                if self._rope is None:
                    bad(Const(1))
                else:
                    bad((ins.head_size != self._rope["head_size"]) |
                        (ins.paddr != self._rope_addr) | (ins.n_heads == 0))
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.KVAPPEND):
                ins = v[Opcode.KVAPPEND]
                m.d.sync += [ma1.eq(ins.kv_heads), ma2.eq(ins.head_size)]
                bad((ins.head_size != hs) | (ins.kv_heads > image.kv_heads) |
                    (ins.kv_heads == 0))
                bad(s["r_layer"] >= image.kv_layers, ErrorCode.KV_CACHE)
                self._fsm.goto("CHECK1")
            for op in (Opcode.SCORES, Opcode.SCORES_SOFTMAX):   # (their fields' layouts differ)
                with m.Case(op):
                    ins = v[op]
                    w_, p_ = rel(ins)
                    m.d.sync += [x_p.eq(ins.paddr + p_), ma1.eq(ins.n_heads), ma2.eq(hs),
                                 mb1.eq(ins.n_heads - 1), mb2.eq(ins.stride),
                                 mc1.eq(ins.n_heads), mc2.eq(npos)]
                    bad((ins.head_size != hs) | (ins.kv_mul == 0) | (ins.n_heads == 0) |
                        (ins.n_heads > ins.kv_mul * image.kv_heads) | (npos > ins.stride))
                    if op == Opcode.SCORES_SOFTMAX:
                        bad((ins.in_frac != self._smax[0]) | (ins.out_bits != self._smax[1]))
                    bad(s["r_layer"] >= image.kv_layers, ErrorCode.KV_CACHE)
                    self._fsm.goto("CHECK1")
            with m.Case(Opcode.ATTV):
                ins = v[Opcode.ATTV]
                w_, p_ = rel(ins)
                m.d.sync += [x_p.eq(ins.paddr + p_), ma1.eq(ins.n_heads), ma2.eq(hs),
                             mb1.eq(ins.n_heads - 1), mb2.eq(ins.stride)]
                bad((ins.head_size != hs) | (ins.kv_mul == 0) | (ins.n_heads == 0) |
                    (ins.n_heads > ins.kv_mul * image.kv_heads) | (npos > ins.stride) |
                    (ins.prob_bits > 15))
                bad(s["r_layer"] >= image.kv_layers, ErrorCode.KV_CACHE)
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.SOFTMAX):
                ins = v[Opcode.SOFTMAX]
                n = Mux(ins.causal, npos, ins.len)
                m.d.sync += [mb1.eq(Mux(ins.rows == 0, 0, ins.rows - 1)), mb2.eq(ins.stride),
                             mc1.eq(ins.rows), mc2.eq(n)]
                bad((ins.in_frac != self._smax[0]) | (ins.out_bits != self._smax[1]) |
                    (ins.rows == 0) | (n == 0) | (n > ctx))
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.ACT):
                ins = v[Opcode.ACT]
                w_, p_ = rel(ins)
                m.d.sync += x_p.eq(ins.paddr + p_)
                match = 0
                fn = {"silu": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}
                for n, (addr, d) in enumerate(self._acts):
                    hit = ((ins.paddr + p_ == addr) & (ins.func.as_value() == fn[d["func"]]) &
                           (ins.in_width == (Width.W16 if d["in_bits"] == 16 else Width.W8)) &
                           (ins.out_width == (Width.W16 if d["out_bits"] == 16 else Width.W8)))
                    with m.If(hit):
                        m.d.sync += s["act_sel"].eq(n)
                    match = match | hit
                bad(~match if self._acts else Const(1))
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.ELTWISE):
                ins = v[Opcode.ELTWISE]
                w_, p_ = rel(ins)
                m.d.sync += x_p.eq(ins.paddr + p_)
                bad(ins.len > self._vb_len)
                bad(ins.len == 0)
                if self._swiglu is None:
                    bad(ins.eop != EltOp.ADD)
                else:
                    ab, bb, ob, _, _ = self._swiglu
                    ok = ins.width == (Width.W16 if ob == 16 else Width.W8)
                    bad((ins.eop == EltOp.SWIGLU) & ~ok)
                bad(ins.eop.as_value() > EltOp.SWIGLU.value)
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.ARGMAX):
                bad((v[Opcode.ARGMAX].len == 0) | (v[Opcode.ARGMAX].len > self._argmax_len))
                self._fsm.goto("CHECK1")
            with m.Case(Opcode.OUTPUT):
                self._fsm.goto("CHECK1")
            with m.Default():                   # (ends the job in CHECK3)
                bad(Const(1), ErrorCode.BAD_OPCODE)
                self._fsm.goto("CHECK1")

    def _regions(self, m, v, opcode, s):
        """CHECK1 state: the end (exclusive) of every region the instruction touches, as a
        base and the check product to add to it (the products are ready in CHECK2)."""
        base, sel = s["chk_base"], s["chk_sel"]
        npos = s["npos"]
        x_w, x_p = s["x_w"], s["x_p"]
        m.d.sync += [c.eq(0) for c in base.values()] + [c.eq(0) for c in sel.values()]
        m.d.sync += s["chk_psz"].eq(_in(opcode, (Opcode.EMBED, Opcode.MATVEC)))

        def end(r, b, product=0):
            m.d.sync += [base[r].eq(b), sel[r].eq(product)]

        with m.Switch(opcode):
            with m.Case(Opcode.EMBED):
                ins = v[Opcode.EMBED]
                end("wr", ins.dst + ins.cols)
                end("w", ins.waddr, Mux(ins.w_planes == 2, _PA2, _PA))
                end("p", ins.paddr + ins.rows)
            with m.Case(Opcode.MATVEC):
                ins = v[Opcode.MATVEC]
                end("r1", ins.src + ins.cols)
                end("wr", ins.dst + self._mv_results(ins))
                end("w", x_w, Mux(ins.w_planes == 2, _PA2, _PA))
                end("p", x_p + Mux(ins.bias, ins.rows << 1, ins.rows) + ins.glu)
            with m.Case(Opcode.MATMAT):
                ins = v[Opcode.MATMAT]
                end("r1", ins.src, _PB)
                end("wr", ins.dst, _PC)
                end("w", x_w, _PA)
                end("p", x_p + Mux(ins.bias, ins.rows << 1, ins.rows))
            with m.Case(Opcode.REQUANT):
                ins = v[Opcode.REQUANT]
                end("r1", ins.src + ins.len)
                end("wr", ins.dst + ins.len)
                end("p", ins.paddr + Mux(ins.per_elem, ins.len, 1))
            with m.Case(Opcode.NORM):
                ins = v[Opcode.NORM]
                ln = ins.kind == NormKind.LAYERNORM
                end("r1", ins.src + ins.len)
                end("wr", ins.dst + ins.len)
                end("p", x_p + Mux(ln, ins.len << 1, ins.len) + 2)
            with m.Case(Opcode.ROPE):
                ins = v[Opcode.ROPE]
                end("r1", ins.src, _PA)
                end("wr", ins.dst, _PA)
            with m.Case(Opcode.KVAPPEND):
                ins = v[Opcode.KVAPPEND]
                end("r1", ins.src, _PA)
            for op in (Opcode.SCORES, Opcode.SCORES_SOFTMAX):
                with m.Case(op):
                    ins = v[op]
                    end("r1", ins.q, _PA)
                    end("wr", ins.dst + npos, _PB)
                    end("p", x_p + 1)
            with m.Case(Opcode.ATTV):
                ins = v[Opcode.ATTV]
                end("r1", ins.p + npos, _PB)
                end("wr", ins.dst, _PA)
                end("p", x_p + 1)
            with m.Case(Opcode.SOFTMAX):
                ins = v[Opcode.SOFTMAX]
                n = Mux(ins.causal, npos, ins.len)
                end("r1", ins.src + n, _PB)
                end("wr", ins.dst + n, _PB)
            with m.Case(Opcode.ACT):
                ins = v[Opcode.ACT]
                end("r1", ins.src + ins.len)
                end("wr", ins.dst + ins.len)
            with m.Case(Opcode.ELTWISE):
                ins = v[Opcode.ELTWISE]
                end("r1", ins.a + ins.len)
                end("r2", ins.b + ins.len)
                end("wr", ins.dst + ins.len)
                end("p", x_p + 1)
            with m.Case(Opcode.ARGMAX):
                ins = v[Opcode.ARGMAX]
                end("r1", ins.src + ins.len)
            with m.Case(Opcode.OUTPUT):
                ins = v[Opcode.OUTPUT]
                end("r1", ins.src + ins.len)

    @staticmethod
    def _region_ends(m, s):
        """CHECK2 state: every region end, its base from CHECK1 plus the selected product."""
        pa, pb, pc = s["prod_a"], s["prod_b"], s["prod_c"]
        for r, c in s["chk"].items():
            sel = s["chk_sel"][r]
            add = (Mux(sel[0], pa, 0) | Mux(sel[1], pa << 1, 0) | Mux(sel[2], pb, 0) |
                   Mux(sel[3], pc, 0))
            m.d.sync += c.eq(s["chk_base"][r] + add)
        with m.If(s["chk_psz"]):
            m.d.sync += s["plane_sz"].eq(pa)

    def _writer(self, m, s, base, total, row_len=None, stride=None, acc=0, w8=0, src=_W_RQ):
        """The writer's run configuration (``wr_start`` follows a cycle or more later)."""
        m.d.sync += [s["wr_base"].eq(base), s["wr_total"].eq(total),
                     s["wr_lm1"].eq((total if row_len is None else row_len) - 1),
                     s["wr_stride"].eq(0 if stride is None else stride),
                     s["wr_acc"].eq(acc), s["wr_w8"].eq(w8), s["wr_src"].eq(src)]
        if row_len is None and src != _W_NORM and self._norms:
            # one row: the norm units of its length load it as it is written (nm_feed)
            feed = Cat(*(total == dim for _, dim, *_ in self._norms))
            m.d.sync += [s["nm_feed"].eq(feed), s["nm_on"].eq(feed.any())]
            m.d.sync += [r.eq(1) for r in s["nm_rst"]]
        if row_len is None:
            # one row of the longest ARGMAX's length: the argmax unit loads it (am_on)
            m.d.sync += [s["am_on"].eq(total == self._argmax_len), s["am_rst"].eq(1),
                         s["am_sn"].eq(0), s["am_sgot"].eq(0)]
        if self._mm_cols:
            m.d.sync += s["wr_step"].eq(1)

    @staticmethod
    def _rqcfg(m, s, base, per_row, bias=0, rows=0):
        """The requantizer's parameter addresses: one word (or one per row) at ``base``,
        biases after ``rows`` words."""
        m.d.sync += [s["rq_base"].eq(base), s["rq_per_row"].eq(per_row),
                     s["rq_bias"].eq(bias), s["rq_rows"].eq(rows)]

    @staticmethod
    def _writer_flags(m, s):
        """Every run starts with no accumulate, chaining, side region, early loads, fused
        RoPE or KV append."""
        m.d.sync += [s["wr_acc"].eq(0), s["ch_on"].eq(0), s["sd_on"].eq(0), s["nm_feed"].eq(0),
                     s["nm_on"].eq(0), s["am_on"].eq(0), s["wr_mv"].eq(0), s["fz_on"].eq(0),
                     s["ka_on"].eq(0), s["gl_on"].eq(0)]

    @staticmethod
    def _mv_results(ins):
        """The number of results a MATVEC writes: ``rows``, or ``rows / 2`` with ``glu``."""
        return Mux(ins.glu, ins.rows >> 1, ins.rows)

    def _chain(self, m, s, total):
        """The results go to the vector buffer too when they fit: what it held is lost."""
        fits = total <= self._vb_len
        m.d.sync += [s["ch_on"].eq(fits), s["ch_wide"].eq(0), s["ch_carry"].eq(0)]
        with m.If(fits):
            m.d.sync += s["vb_tag_valid"].eq(0)

    def _av_outputs(self, m, ins, s):
        """An ATTV's writer run, chaining and requantizer parameters (from EXEC, or once the
        SCORES_SOFTMAX before it has finished its run: AV_CHAIN)."""
        self._writer(m, s, ins.dst, s["prod_a"], w8=ins.out_width == Width.W8)
        self._chain(m, s, s["prod_a"])
        self._rqcfg(m, s, s["x_p"], 0)

    def _mv_outputs(self, m, ins, s):
        """A MATVEC's writer run, requantizer parameters and side region (from EXEC, or
        from MV_WCFG when it follows another MATVEC)."""
        self._writer_flags(m, s)
        self._writer(m, s, ins.dst, self._mv_results(ins), acc=ins.accumulate,
                     w8=ins.out_width == Width.W8)
        self._rqcfg(m, s, s["x_p"], 1, ins.bias, ins.rows)
        m.d.sync += s["wr_mv"].eq(1)
        if self._swiglu is not None:
            # glu: the results go in pairs through the SwiGLU unit (its values to the writer)
            m.d.sync += [s["gl_on"].eq(ins.glu), s["fz_have"].eq(0)]
            with m.If(ins.glu):
                m.d.sync += s["wr_src"].eq(_W_ELT)
        if self._rope is not None:
            # rope_heads: the results go through the RoPE unit (its pairs to the writer)
            rot = ins.rope_heads != 0
            pairs = ins.rope_heads << (self._rope["head_size"].bit_length() - 2)
            m.d.sync += [s["fz_on"].eq(rot), s["fz_left"].eq(pairs), s["fz_have"].eq(0)]
            with m.If(rot):
                m.d.sync += s["wr_src"].eq(_W_ROPE)
        # kv_append: the written values go into the KV append packer (K rows, V rows or both)
        m.d.sync += [s["ka_on"].eq(ins.kv_append != 0), s["ka_both"].eq(ins.kv_append == 3),
                     s["ka_hm1"].eq(s["ka_hm1_d"]), s["kp_kv"].eq(ins.kv_append == 2),
                     s["kp_layer"].eq(s["r_layer"]), s["kp_head"].eq(0), s["kp_beat"].eq(0),
                     s["kp_cnt"].eq(0)]
        if self._side_len:
            # the results go to the side region too when they fit (it is overwritten)
            side = self._mv_results(ins) <= self._side_len
            m.d.sync += [s["sd_on"].eq(side), s["sd_cr"].eq(0)]
            with m.If(side):
                m.d.sync += s["sd_tag_valid"].eq(0)

    def _exec_start(self, m, v, opcode, s):
        """EXEC state: configure the reader, the units and the writer; go to the op's phase."""
        rdc, prdc = s["rdc"], s["prdc"]

        def writer(*args, **kwargs):
            self._writer(m, s, *args, **kwargs)

        def reader(base, rows, row_len, stride=0, route=_R_VB):
            m.d.sync += [rdc["base"].eq(base), rdc["rows"].eq(rows), rdc["row_len"].eq(row_len),
                         rdc["stride"].eq(stride), s["rd_route"].eq(route)]

        def rqcfg(*args, **kwargs):
            self._rqcfg(m, s, *args, **kwargs)

        def chain(total):
            self._chain(m, s, total)

        # (a chained MATVEC or ATTV leaves the writer's run alone: the previous one's still
        # writes; the softmax still takes the requantizer's output during a SCORES_SOFTMAX's)
        with m.If(~s["mv_chain"] & ~s["av_pend"]):
            self._writer_flags(m, s)
            m.d.sync += s["sm_fused"].eq(0)
        m.d.sync += s["mac_mode"].eq(_M_MATVEC)
        with m.Switch(opcode):
            with m.Case(Opcode.SETREG, Opcode.LOOP):     # (their effect was in DECODE)
                self._fsm.goto("NEXT")
            with m.Case(Opcode.EMBED):
                ins = v[Opcode.EMBED]
                writer(ins.dst, ins.cols, acc=ins.accumulate)
                rqcfg(ins.paddr + s["embed_idx"], 0)
                m.d.sync += [s["rd_route"].eq(_R_VB), s["em_w2"].eq(ins.w_planes == 2)]
                self._fsm.goto("EMBED")
            with m.Case(Opcode.MATVEC):
                ins = v[Opcode.MATVEC]
                with m.If(~s["mv_chain"]):              # (else MV_WCFG configures them)
                    self._mv_outputs(m, ins, s)
                reader(ins.src, 1, ins.cols, route=_R_VB)
                m.d.sync += [s["mv_w2"].eq(ins.w_planes == 2),
                             s["mv_x16"].eq(ins.in_width == Width.W16),
                             s["mv_rows"].eq(ins.rows), s["cb_ps"].eq(0), s["cb_ob"].eq(0),
                             s["mv_side"].eq(0), s["mv_vb0"].eq(0)]
                m.d.comb += s["glu_fetch"].eq(ins.glu)     # (the SwiGLU word: see glu_cap)
                # an input in the side region (the down projection after a glu MATVEC) is read
                # there (an 8-bit one only if its values are int8): no load, and the results
                # do not go to the side region
                side_hit = 0
                if self._side_len:
                    side_hit = (s["sd_tag_valid"] & (s["sd_tag_src"] == ins.src) &
                                (s["sd_tag_len"] == ins.cols) &
                                (s["sd_w8"] | (ins.in_width == Width.W16)))
                with m.If(s["vb_tag_valid"] & (s["vb_tag_src"] == ins.src) &
                          (s["vb_tag_len"] == ins.cols)):
                    self._fsm.goto("MV_LOAD")          # the input is in the vector buffer already
                with m.Elif(side_hit):
                    m.d.sync += [s["mv_side"].eq(1), s["mv_vb0"].eq(s["VBD"]), s["sd_on"].eq(0),
                                 s["sd_tag_valid"].eq(0)]
                    self._fsm.goto("MV_LOAD")
                with m.Else():
                    m.d.sync += [s["vb_count"].eq(0), s["mv_carry"].eq(0), s["vb_wide"].eq(0),
                                 s["vb_tag_valid"].eq(0)]
                    self._fsm.goto("MV_GO")
            if self._mm_cols:
                with m.Case(Opcode.MATMAT):
                    ins = v[Opcode.MATMAT]
                    # results leave column by column (output row n of every token): the writer
                    # walks dst + t * rows + n, a "row" of tokens addresses rows apart
                    writer(ins.dst, s["prod_c"], ins.tokens, 1, w8=ins.out_width == Width.W8)
                    rqcfg(s["x_p"], 1, ins.bias, ins.rows)
                    reader(ins.src, ins.tokens, ins.cols, ins.cols, route=_R_TB)
                    m.d.sync += [s["wr_step"].eq(ins.rows), s["mac_mode"].eq(_M_MATMAT),
                                 s["cb_ob"].eq(0), s["mm_tokens"].eq(ins.tokens),
                                 s["mm_rows_m2"].eq(ins.rows - 2),
                                 s["mm_rows_one"].eq(ins.rows == 1)]
                    with m.If(s["tb_tag_valid"] & (s["tb_tag_src"] == ins.src) &
                              (s["tb_tag_cols"] == ins.cols) & (s["tb_tag_tok"] == ins.tokens)):
                        self._fsm.goto("MM_FEED")       # the tile is in the buffer already
                    with m.Else():
                        m.d.sync += [s["tb_loaded"].eq(0), s["tb_lane"].eq(1), s["tb_k"].eq(1),
                                     s["tb_word"].eq(0), s["tb_tag_valid"].eq(0),
                                     s["tb_wide"].eq(0)]
                        self._fsm.goto("MM_GO")
            with m.Case(Opcode.REQUANT):
                ins = v[Opcode.REQUANT]
                writer(ins.dst, ins.len, w8=ins.out_width == Width.W8)
                chain(ins.len)
                rqcfg(ins.paddr, ins.per_elem)
                reader(ins.src, 1, ins.len, route=_R_RQ)
                m.d.sync += s["rd_idx"].eq(0)
                self._fsm.goto("STREAM")
            with m.Case(Opcode.NORM):
                ins = v[Opcode.NORM]
                writer(ins.dst, ins.len, w8=1, src=_W_NORM)
                chain(ins.len)
                reader(ins.src, 1, ins.len, route=_R_NORM)
                m.d.sync += [prdc["base"].eq(s["x_p"]), prdc["row_len"].eq(ins.len),
                             prdc["aux_base"].eq(s["x_p"] + ins.len)]
                with m.If(s["nm_hit"]):              # the unit has loaded src (nm_feed)
                    self._fsm.goto("NORM_GO")
                with m.Else():
                    m.d.sync += [r.eq(1) for r in s["nm_rst"]]
                    self._fsm.goto("PSTREAM")
            with m.Case(Opcode.ROPE):
                ins = v[Opcode.ROPE]
                writer(ins.dst, s["prod_a"], w8=ins.width == Width.W8, src=_W_ROPE)
                reader(ins.src, 1, s["prod_a"], route=_R_ROPE)
                self._fsm.goto("STREAM")
            with m.Case(Opcode.KVAPPEND):
                ins = v[Opcode.KVAPPEND]
                reader(ins.src, 1, s["prod_a"], route=_R_KV)
                m.d.sync += [s["kv_app_done"].eq(0), s["kp_head"].eq(0), s["kp_beat"].eq(0),
                             s["kp_cnt"].eq(0), s["kp_kv"].eq(ins.kv),
                             s["kp_layer"].eq(s["r_layer"])]
                self._fsm.goto("KV_GO")
            with m.Case(Opcode.SCORES):
                ins = v[Opcode.SCORES]
                writer(ins.dst, s["prod_c"], s["npos"], ins.stride)
                rqcfg(s["x_p"], 0)
                m.d.sync += [s["at_h"].eq(0), s["at_kvh"].eq(0), s["at_sub"].eq(0),
                             s["at_ptr"].eq(ins.q), s["mac_mode"].eq(_M_SCORES),
                             s["at_nh"].eq(ins.n_heads), s["at_kvm1"].eq(ins.kv_mul - 1),
                             s["sc_pair"].eq(0)]
                self._fsm.goto("SC_START")
            with m.Case(Opcode.SCORES_SOFTMAX):
                # SCORES' datapath with the softmax between the requantizer and the writer
                ins = v[Opcode.SCORES_SOFTMAX]
                writer(ins.dst, s["prod_c"], s["npos"], ins.stride, src=_W_SMAX)
                rqcfg(s["x_p"], 0)
                m.d.sync += [s["at_h"].eq(0), s["at_kvh"].eq(0), s["at_sub"].eq(0),
                             s["at_ptr"].eq(ins.q), s["mac_mode"].eq(_M_SCORES),
                             s["at_nh"].eq(ins.n_heads), s["at_kvm1"].eq(ins.kv_mul - 1),
                             s["sm_fused"].eq(1)]
                if s["PAIR"]:
                    # (pairs: kv_mul even, the sums within rq2's width)
                    m.d.sync += s["sc_pair"].eq((ins.kv_mul != 0) & ~ins.kv_mul[0] &
                                                ((ins.q_width == Width.W8) | s["PAIR16"]))
                self._fsm.goto("SC_START")
            with m.Case(Opcode.ATTV):
                ins = v[Opcode.ATTV]
                with m.If(~s["av_pend"]):              # (else AV_CHAIN's apply sets them)
                    self._av_outputs(m, ins, s)
                m.d.sync += [s["at_h"].eq(0), s["at_kvh"].eq(0), s["at_sub"].eq(0),
                             s["at_g"].eq(0), s["cb_g"].eq(0), s["at_ptr"].eq(ins.p),
                             s["mac_mode"].eq(_M_ATTV), s["at_nh"].eq(ins.n_heads),
                             s["at_kvm1"].eq(ins.kv_mul - 1)]
                self._fsm.goto("AV_START")
            with m.Case(Opcode.SOFTMAX):
                ins = v[Opcode.SOFTMAX]
                n = Mux(ins.causal, s["npos"], ins.len)
                writer(ins.dst, s["prod_c"], n, ins.stride, src=_W_SMAX)
                reader(ins.src, ins.rows, n, ins.stride, route=_R_SMAX)
                self._fsm.goto("STREAM")
            with m.Case(Opcode.ACT):
                ins = v[Opcode.ACT]
                writer(ins.dst, ins.len, w8=ins.out_width == Width.W8, src=_W_ACT)
                chain(ins.len)
                reader(ins.src, 1, ins.len, route=_R_ACT)
                self._fsm.goto("STREAM")
            with m.Case(Opcode.ELTWISE):
                ins = v[Opcode.ELTWISE]
                writer(ins.dst, ins.len, w8=ins.width == Width.W8, src=_W_ELT)
                chain(ins.len)
                rqcfg(s["x_p"], 0)
                reader(ins.a, 1, ins.len, route=_R_VB)
                m.d.sync += [s["elt_swiglu"].eq(ins.eop == EltOp.SWIGLU), s["vb_count"].eq(0),
                             s["vb_tag_valid"].eq(0), s["elt_side"].eq(0), s["elt_swap"].eq(0),
                             rdc["aux_base"].eq(0)]
                if self._side_len:
                    # an operand in the side region (a, or else b) is not loaded
                    in_side = [s["sd_tag_valid"] & (s["sd_tag_src"] == x) &
                               (s["sd_tag_len"] == ins.len) for x in (ins.a, ins.b)]
                    with m.If(in_side[0] | in_side[1]):
                        m.d.sync += [s["elt_side"].eq(1), s["elt_swap"].eq(~in_side[0])]
                self._fsm.goto("ELT_PARAM")
            with m.Case(Opcode.ARGMAX):
                ins = v[Opcode.ARGMAX]
                reader(ins.src, 1, ins.len, route=_R_ARGMAX)
                m.d.sync += s["amax_got"].eq(0)
                # (an early-loaded packet still in the unit comes out first, into am_idx)
                with m.If(s["am_hit"]):              # the unit has loaded src (am_on)
                    self._fsm.goto("AM_TAKE")
                with m.Else():
                    self._fsm.goto("AM_GO")
            with m.Case(Opcode.OUTPUT):
                ins = v[Opcode.OUTPUT]
                m.d.sync += [s["out_addr"].eq(ins.src), s["out_len"].eq(ins.len)]
                self._fsm.goto("NEXT")
