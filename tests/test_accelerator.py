"""The accelerator end to end: the SoC with the transformer engine on its bus, generated for a
compiled model, under Verilator, driven over the host protocol's bytes
(:class:`hdlgen.host.sim.SimTransport`) exactly as a board over its UART.

One simulator session (module fixture) runs: decode steps equal to the integer golden model
(next token, largest logit, every logit); a golden model of another model is caught (the
comparison can fail); a position beyond the context ends the job with the engine's
``POS_RANGE`` and the device still works afterwards; the run-time load path restores wiped
weights, and a model the gateware was not generated for is refused. The CLI paths are in
``tests/test_accelerator_cli.py`` (a module of their own, so this session's simulator stops
before they start theirs)."""

from types import SimpleNamespace

import numpy as np
import pytest

from hdlgen.build import resolve_target
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.host.device import JobError
from hdlgen.model import load_model
from sim.golden.engine import Engine as Golden

# The ULX3S-85F default configuration with an engine, exactly as the CLI makes it (its scratch
# RAM and clock), so that the CLI tests (tests/test_accelerator_cli.py) reuse the fixture's
# Verilator build.
CONFIG = resolve_target(SimpleNamespace(board="ulx3s", device="85F"), model=True)[2]


def _compiled(seed, spec="random:llama"):
    return compile_model(load_model(spec, seed=seed), CONFIG, CompileOptions(device="85F"))


@pytest.fixture(scope="module")
def session():
    pytest.importorskip("cocotb_tools")
    from hdlgen.host.accelerator import open_accelerator
    comp = _compiled(7)
    with open_accelerator("sim", CONFIG, comp) as acc:
        yield acc, comp


def _golden(comp):
    g = Golden(comp.image, comp.words, acc_width=CONFIG.acc_width, mac="reference")
    g.reset()
    return g


def _check_steps(acc, comp, steps, golden=None):
    """Run ``steps`` ([token, pos]) on the device; return how many differ from the golden
    model (token, largest logit or any logit)."""
    g = golden or _golden(comp)
    acc.clear_scratch()
    bad = 0
    for token, pos in steps:
        st = acc.step(token, pos)
        r = g.step(token, pos)
        assert st.cycles > 0 and st.units["mac_array"] > 0
        bad += (st.token, st.value) != (r.token, r.value) or \
            not np.array_equal(acc.logits(), np.asarray(r.logits))
    return bad


def test_steps_equal_golden_and_errors(session):
    acc, comp = session
    steps = [[1, 0], [5, 1], [9, 2], [33, 3]]
    assert _check_steps(acc, comp, steps) == 0
    # the comparison can fail: the golden model of another model differs
    assert _check_steps(acc, comp, steps[:2], golden=_golden(_compiled(8))) > 0
    # a position beyond the KV cache is refused with the engine's code, nothing wraps
    ctx = comp.image.context
    with pytest.raises(JobError, match="ENGINE_POS_RANGE"):
        acc.step(1, ctx)
    assert _check_steps(acc, comp, steps[:2]) == 0        # and the device still works


def test_runtime_load(session):
    """The run-time load path (program, weights, parameters over the link, verified by reading
    back): weights wiped over the bus make the device differ from the golden model, loading
    the compiled model again restores it; a model whose constants the gateware does not have
    (another random model: other norm epsilons and SwiGLU scales) is refused before anything
    is written."""
    from hdlgen.errors import UserError
    acc, comp = session
    mp = acc.map
    rows = comp.image.weights.shape[0]
    acc.dev.write(acc.base + mp.base("weights"), [0] * (rows * mp.row_stride_words))
    assert _check_steps(acc, comp, [[1, 0], [7, 1]]) > 0
    n = acc.load(comp)
    assert n >= rows * mp.row_words + len(comp.program) * 4
    assert _check_steps(acc, comp, [[1, 0], [7, 1], [2, 2]]) == 0
    with pytest.raises(UserError, match="cannot be loaded onto this build"):
        acc.load(_compiled(11))
    assert _check_steps(acc, comp, [[1, 0]]) == 0
