"""Helpers for blocks that instantiate ECP5 primitives (MULT18X18D, DP16KD).

A block instantiates the primitive only when elaborated for an ECP5 platform; otherwise
(simulation, cocotb on the generated Verilog, ``hdlgen verilog``) it elaborates a behavioural
equivalent with exactly the same latency, so the tested Verilog and the built netlist agree
cycle for cycle.
"""

__all__ = ["is_ecp5", "mac_floorplan", "weight_floorplan", "spare_dsp_sites"]


def is_ecp5(platform) -> bool:
    """True when ``platform`` targets the Lattice ECP5 (an amaranth ``LatticePlatform`` with
    ``family == "ecp5"``, such as the ULX3S platforms or :class:`hdlgen.flow.OOCPlatform`)."""
    return platform is not None and getattr(platform, "family", None) == "ecp5"


# --- floorplan ---------------------------------------------------------------------------------
# Where the LFE5U-85F's hard blocks are, as nextpnr names its BELs (read from a placed netlist
# of the whole SoC, which used 151 of the 156 MULT18X18D and 201 of the 208 DP16KD sites):
# three rows of DSPs and four of EBRs, each row thirteen column groups of four sites. In a
# group at column x the multipliers are at x, x+1, x+4, x+5 (MULT18_0, _1, _4, _5) and the
# block RAMs at x, x+2, x+4, x+6 (EBR0 .. EBR3).
_SITES = {
    "LFE5U-85F": {"groups": (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114),
                  "dsp_rows": (34, 10, 58), "ebr_rows": (46, 22, 70, 82)},
}
_DSP_SLOTS = ((0, "MULT18_0"), (1, "MULT18_1"), (4, "MULT18_4"), (5, "MULT18_5"))
_EBR_SLOTS = ((0, "EBR0"), (2, "EBR1"), (4, "EBR2"), (6, "EBR3"))


def mac_floorplan(platform, lanes: int, macs_per_lane: int, ebr_per_lane: int = 0, *,
                  centre_free: bool = True):
    """DSP and block-RAM sites for a MAC array whose lanes each read their own weights, or
    ``None`` when ``platform`` is not a device with a known site map or the array does not fit
    it (the placer then chooses, as without a floorplan).

    Each lane gets ``ceil(macs_per_lane / 4)`` neighbouring column groups of one DSP row for
    its multipliers, and the same column groups of the EBR row next to that DSP row for its
    ``ebr_per_lane`` weight tiles, so a lane's weights go from its block RAMs to its DSPs over
    a dozen rows and never cross the die. Rows fill from the middle of the die out; the lanes
    of a row sit at its two ends, half on each side, so that the sites left over, which hold
    the other units' DSPs and RAMs (the norms, RoPE, the requantizer, the KV cache), are in
    the middle of the die, near the engine's control, rather than at its edges. Lanes are
    numbered so that each four consecutive ones share a corner of the die.

    ``centre_free=False`` instead puts each row's lanes side by side in its middle, numbered
    row by row: the more compact array, for a MAC array built alone (out of context, 16 x 8:
    170.4 / 174.4 / 169.0 / 170.5 / 163.1 MHz on nextpnr seeds 1-5, against 159.3 / 152.6 /
    137.6 on seeds 1-3 with the lanes at the row ends).

    Returns ``(dsp, ebr)``: ``dsp[lane][k]`` the BEL of multiplier ``k`` of ``lane``,
    ``ebr[lane][j]`` the BEL of the lane's ``j``-th weight tile.
    """
    sites = _site_map(platform)
    if sites is None:
        return None
    span = -(-macs_per_lane // len(_DSP_SLOTS))
    if ebr_per_lane > span * len(_EBR_SLOTS):
        return None
    groups = sites["groups"]
    per_row = len(groups) // span
    rows = list(zip(sites["dsp_rows"], sites["ebr_rows"]))
    if lanes > per_row * len(rows):
        return None
    counts = [max(0, min(per_row, lanes - r * per_row)) for r in range(len(rows))]
    if not centre_free:                     # each row's lanes side by side in its middle
        dsp, ebr = [], []
        for (dy, ey), n in zip(rows, counts):
            first = (len(groups) - n * span) // 2
            for i in range(n):
                xs = groups[first + i * span:first + (i + 1) * span]
                dsp.append(_sites(xs, dy, _DSP_SLOTS, macs_per_lane))
                ebr.append(_sites(xs, ey, _EBR_SLOTS, ebr_per_lane))
        return tuple(dsp), tuple(ebr)
    # each row's lanes, half at each end; then the lanes in order: the left ends first, by
    # distance from the edge and then by row, so that four consecutive lanes (a group of the
    # array's operand fanout and control copies) sit in one corner of the die; then the right
    slots = {"left": [], "right": []}
    for r, ((dy, ey), n) in enumerate(zip(rows, counts)):
        left = -(-n // 2)
        for i in range(n):
            side, p = ("left", i) if i < left else ("right", n - 1 - i)
            first = p * span if side == "left" else len(groups) - (p + 1) * span
            slots[side].append((p, r, groups[first:first + span], dy, ey))
    dsp, ebr = [], []
    for p, r, xs, dy, ey in sorted(slots["left"]) + sorted(slots["right"]):
        dsp.append(_sites(xs, dy, _DSP_SLOTS, macs_per_lane))
        ebr.append(_sites(xs, ey, _EBR_SLOTS, ebr_per_lane))
    return tuple(dsp), tuple(ebr)


def weight_floorplan(platform, lanes: int, macs_per_lane: int, rows: int, *, init: bool = False,
                     ports=("rw", "r"), centre_free: bool = True):
    """The MAC array's DSP sites and its weight bank's DP16KD sites (:func:`mac_floorplan`):
    lane ``l``'s weight tiles (its ``8 * macs_per_lane`` bits of a ``rows``-deep bank, tiled as
    :class:`hdlgen.blocks.bram.BlockRAM` tiles it with ``ports`` and ``init``) in the EBR row next to its DSPs, in the same
    columns, so that no weight crosses the die and the tiles of neighbouring lanes, which share
    request copies, sit together. Returns ``(dsp, sites)``: ``sites`` maps ``(row, column)``
    tiles to BELs (``BlockRAM(sites=)``), ``None`` when the bank is more than one tile deep or
    a tile spans two lanes; ``(None, None)`` without a site map."""
    from hdlgen.blocks.bram import ecp5_tiling
    K = macs_per_lane
    t = ecp5_tiling(lanes * K * 8, rows, granularity=8, ports=ports, init=init)
    tpl = 8 * K // t.unit_bits if t.rows == 1 and (8 * K) % t.unit_bits == 0 else 0
    plan = mac_floorplan(platform, lanes, K, tpl, centre_free=centre_free)
    if plan is None:
        return None, None
    dsp, ebr = plan
    sites = {(0, c): ebr[c // tpl][c % tpl] for c in range(t.columns)} if tpl else None
    return dsp, sites


def spare_dsp_sites(platform, dsp_plan, n: int):
    """``n`` DSP sites that ``dsp_plan`` (the first part of :func:`mac_floorplan`'s result)
    leaves free, for multipliers that sit by the engine's control rather than by a lane: in
    the DSP row with the fewest lanes, nearest the middle of the die, where the lanes' wiring
    is thinnest. ``None`` without a plan, or when fewer than ``n`` sites are free."""
    sites = _site_map(platform)
    if sites is None or dsp_plan is None:
        return None
    used = {b for lane in dsp_plan for b in lane}
    groups = sites["groups"]
    middle = (groups[0] + groups[-1]) / 2
    lanes_in = {y: sum(lane[0] in _sites(groups, y, _DSP_SLOTS, None) for lane in dsp_plan)
                for y in sites["dsp_rows"]}
    free = [(lanes_in[y], abs(x - middle), x, site)
            for y in sites["dsp_rows"] for x in groups
            for site in _sites((x,), y, _DSP_SLOTS, None) if site not in used]
    if len(free) < n:
        return None
    return tuple(site for *_, site in sorted(free)[:n])


def _site_map(platform):
    """The hard-block site table of ``platform``'s device, or ``None``."""
    return _SITES.get(getattr(platform, "device", None)) if is_ecp5(platform) else None


def _sites(xs, y, slots, n):
    """The first ``n`` (all, when ``None``) BEL names of the column groups starting at ``xs``
    in row ``y``."""
    return tuple(f"X{x + dx}/Y{y}/{b}" for x in xs for dx, b in slots)[:n]
