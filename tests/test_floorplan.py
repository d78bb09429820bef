"""The ECP5 floorplan of the MAC array and its weight tiles (``hdlgen.blocks.ecp5``), and the
BEL attributes it puts on the MULT18X18D and DP16KD instances."""

import re

import pytest
from amaranth.back import rtlil

from hdlgen.blocks.bram import BlockRAM
from hdlgen.blocks.ecp5 import mac_floorplan, spare_dsp_sites
from hdlgen.blocks.mac_array import MACArray
from hdlgen.flow import OOCPlatform


def _xy(bel):
    x, y, kind = re.fullmatch(r"X(\d+)/Y(\d+)/(\w+)", bel).groups()
    return int(x), int(y), kind


def test_85f_plan_keeps_each_lane_by_its_weights():
    dsp, ebr = mac_floorplan(OOCPlatform("85F"), 16, 8, 8)
    assert len(dsp) == len(ebr) == 16
    flat_dsp = [b for lane in dsp for b in lane]
    flat_ebr = [b for lane in ebr for b in lane]
    assert len(set(flat_dsp)) == 128 and len(set(flat_ebr)) == 128
    assert all(_xy(b)[2].startswith("MULT18_") for b in flat_dsp)
    assert all(_xy(b)[2].startswith("EBR") for b in flat_ebr)
    for lane_dsp, lane_ebr in zip(dsp, ebr):
        dx = [_xy(b)[0] for b in lane_dsp]
        ex = [_xy(b)[0] for b in lane_ebr]
        dy = {_xy(b)[1] for b in lane_dsp}
        ey = {_xy(b)[1] for b in lane_ebr}
        assert len(dy) == len(ey) == 1                 # one DSP row, one EBR row
        assert abs(dy.pop() - ey.pop()) == 12          # the EBR row next to the DSP row
        assert max(dx) - min(dx) <= 16 and min(dx) <= min(ex) and max(ex) <= max(dx) + 2
    # the DSP sites left for the other units are in the middle of the die (columns 4..120):
    # in each row, the column groups (x, x+1, x+4, x+5) no lane uses
    starts = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
    used = {(_xy(b)[1], _xy(b)[0]) for b in flat_dsp}
    free = [x for y in (10, 34, 58) for x in starts if (y, x) not in used]
    assert len(free) == 1 + 1 + 5 and all(40 <= x <= 78 for x in free)
    # four consecutive lanes share a corner: within half the die's width and one side
    for g in range(0, 16, 4):
        xs = [_xy(b)[0] for lane in dsp[g:g + 4] for b in lane]
        assert max(xs) - min(xs) <= 60 and (max(xs) < 64 or min(xs) > 64)


@pytest.mark.parametrize("args", [(17 * 2, 8, 8), (16, 8, 9), (4, 64, 0)])
def test_plan_refused_when_it_does_not_fit(args):
    assert mac_floorplan(OOCPlatform("85F"), *args) is None


def test_no_plan_without_a_site_map():
    assert mac_floorplan(OOCPlatform("25F"), 4, 4, 4) is None
    assert mac_floorplan(None, 16, 8, 8) is None


def _bels(component, device="85F"):
    text = rtlil.convert(component, platform=OOCPlatform(device))
    return re.findall(r'attribute \\BEL "([^"]+)"', text)


def test_mac_array_and_block_ram_carry_the_sites():
    dsp, ebr = mac_floorplan(OOCPlatform("85F"), 4, 8, 8)
    assert sorted(_bels(MACArray(4, 8, 32, 4096, dsp_sites=dsp))) == sorted(
        b for lane in dsp for b in lane)
    ram = BlockRAM(width=4 * 64, depth=2048, granularity=8, latency=3,
                   sites={(0, c): ebr[c // 8][c % 8] for c in range(32)})
    assert ram.tiling().columns == 32 and ram.tiling().rows == 1
    assert sorted(_bels(ram)) == sorted(b for lane in ebr for b in lane)


def test_bad_sites_are_refused():
    with pytest.raises(ValueError, match="dsp_sites"):
        MACArray(2, 8, dsp_sites=[["X4/Y10/MULT18_0"] * 8])
    with pytest.raises(ValueError, match="sites"):
        BlockRAM(width=64, depth=512, sites={(3, 0): "X4/Y22/EBR0"})


def test_compact_plan_for_an_array_alone():
    """centre_free=False: each row's lanes side by side in its middle, row after row."""
    dsp, _ = mac_floorplan(OOCPlatform("85F"), 16, 8, centre_free=False)
    ends, _ = mac_floorplan(OOCPlatform("85F"), 16, 8)
    assert set(map(frozenset, dsp)) != set(map(frozenset, ends))
    for r, y in enumerate((34, 10, 58)):
        lanes = dsp[6 * r:6 * r + 6]
        xs = sorted(_xy(b)[0] for lane in lanes for b in lane)
        assert {_xy(b)[1] for lane in lanes for b in lane} == {y}
        assert xs[0] <= 22 and xs[-1] >= 105 if len(lanes) == 6 else 22 <= xs[0] < xs[-1] <= 92


def test_mac_array_floorplans_itself_when_asked():
    dsp, _ = mac_floorplan(OOCPlatform("85F"), 16, 8, centre_free=False)
    planned = _bels(MACArray(16, 8, 32, 4096, floorplan=True))
    assert sorted(planned) == sorted(b for lane in dsp for b in lane)
    assert _bels(MACArray(16, 8, 32, 4096)) == []                  # off by default
    assert _bels(MACArray(4, 4, 32, 4096, floorplan=True), "25F") == []   # no site map: no plan
    # explicit sites win over the plan
    mine = [["X4/Y58/MULT18_0", "X5/Y58/MULT18_1"]]
    assert sorted(_bels(MACArray(1, 2, 32, 4096, dsp_sites=mine, floorplan=True))) == mine[0]


def test_mac_array_bench_entry_is_floorplanned():
    from hdlgen.blocks.mac_array import bench_configs
    (entry,) = bench_configs()
    built = entry.build()
    assert built.floorplan
    assert len(_bels(built)) == entry.params["lanes"] * entry.params["macs_per_lane"]


def test_spare_dsp_sites_are_free_and_mid_die_in_the_emptiest_row():
    platform = OOCPlatform("85F")
    dsp, _ = mac_floorplan(platform, 16, 8, 8)
    spare = spare_dsp_sites(platform, dsp, 3)
    used = {b for lane in dsp for b in lane}
    assert len(set(spare)) == 3 and not used & set(spare)
    lanes_per_row = {y: sum(_xy(lane[0])[1] == y for lane in dsp) for y in (10, 34, 58)}
    emptiest = min(lanes_per_row, key=lanes_per_row.get)
    assert all(_xy(b)[1] == emptiest and 54 <= _xy(b)[0] <= 66 for b in spare)
    # every free site can be asked for, one more cannot; no plan, no sites
    assert spare_dsp_sites(platform, dsp, 156 - 128) is not None
    assert spare_dsp_sites(platform, dsp, 156 - 128 + 1) is None
    assert spare_dsp_sites(platform, None, 1) is None
    assert spare_dsp_sites(OOCPlatform("25F"), dsp, 1) is None


def test_weight_floorplan_of_the_matvec_unit():
    """The matrix-vector unit's 16 x 8 weight bank (x36, 32 tiles): lane l's two tiles at its
    own EBR sites, in the EBR row beside its DSPs, every tile placed once."""
    from hdlgen.blocks.ecp5 import weight_floorplan
    dsp, sites = weight_floorplan(OOCPlatform("85F"), 16, 8, 512, ports=("w", "r"),
                                  centre_free=False)
    ref, ebr = mac_floorplan(OOCPlatform("85F"), 16, 8, 2, centre_free=False)
    assert dsp == ref
    assert sorted(sites) == [(0, c) for c in range(32)]
    assert len(set(sites.values())) == 32
    for c in range(32):
        assert sites[(0, c)] == ebr[c // 2][c % 2]
    # deeper than one tile: DSPs only; no site map: nothing
    assert weight_floorplan(OOCPlatform("85F"), 16, 8, 4096, ports=("w", "r"))[1] is None
    assert weight_floorplan(None, 16, 8, 512) == (None, None)
