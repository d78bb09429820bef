# amaranth: UnusedElaboratable=no
"""The engine's EXEC pre-stage (hdlgen.engine.core._CombAsSync): EXEC's set-up is emitted as
combinational logic that a register stage loads, so a ``sync`` statement in it that does not
assign a staged register whole would silently become combinational; it must raise instead."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from hdlgen.engine.core import _CombAsSync, _StagedLocals


def _stage():
    m = Module()
    reg, other = Signal(8, name="reg"), Signal(8, name="other")
    staged = _StagedLocals({"reg": reg, "cfg": {"base": Signal(4, name="base")}})
    return m, _CombAsSync(m, staged), staged, reg, other


def test_staged_registers_are_assigned_in_comb():
    m, cm, s, reg, _ = _stage()
    cm.d.sync += s["reg"].eq(5)
    cm.d.sync += [s["cfg"]["base"].eq(3)]
    st, base = s.staged["reg"], s.staged["cfg_base"]
    assert st.written and base.written
    seen = {}

    async def bench(ctx):                        # combinational: the values with no clock edge
        seen.update(val=ctx.get(st.val), hit=ctx.get(st.hit), base=ctx.get(base.val),
                    reg=ctx.get(reg))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"val": 5, "hit": 1, "base": 3, "reg": 0}


@pytest.mark.parametrize("target", ["other", "slice"])
def test_a_register_outside_the_staged_locals_is_refused(target):
    m, cm, s, reg, other = _stage()
    s["reg"]                                       # staged, but assigned through a slice
    stmt = other.eq(1) if target == "other" else reg[:4].eq(1)
    with pytest.raises(TypeError, match="EXEC pre-stage cannot register"):
        cm.d.sync += stmt
