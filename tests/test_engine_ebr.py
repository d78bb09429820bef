"""The fit check's DP16KD count (:mod:`hdlgen.engine.ebr`, ``MemoryImage.memory_ebr``) against
the engine as elaborated (its ``BlockRAM`` tiles and block-RAM FIFOs, memory by memory, for
small models with and without pairs of heads, LayerNorm, prefill), against the routed
stories260K SoC on the 85F (200 DP16KD), and a model the old count (contents only) let
through that the new one refuses."""

import re

import pytest
from amaranth.hdl import Fragment
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered

from hdlgen.blocks.bram import BlockRAM
from hdlgen.compiler import CompileOptions, compile_model
from hdlgen.compiler.compile import plan_image, plan_units
from hdlgen.config import AcceleratorConfig
from hdlgen.engine.core import Engine
from hdlgen.engine.ebr import EngineUnits, fifo_tiles
from hdlgen.errors import UserError
from hdlgen.model import load_model
from hdlgen.soc.soc import soc_ebr

# the engine's submodule (first path component after the engine) -> the fit check's item
_ITEM = {"act": "scratch", "wts": "weights", "par": "params", "kv": "kv_cache", "tb": "tile_buffer",
         "rope": "tables", "swiglu": "tables", "smax": "softmax", "smq": "score_queues",
         "smq2": "score_queues"}


def _elaborated_ebr(engine) -> dict:
    """DP16KD of the elaborated engine by item: each BlockRAM's tiling, each FIFO's storage as
    :func:`fifo_tiles` maps it (Yosys: LUT RAM up to 63 words, block RAM beyond)."""
    out = {}

    def walk(frag, path):
        for o in getattr(frag, "origins", None) or ():
            if isinstance(o, BlockRAM):
                n = o.tiling().primitives
            elif isinstance(o, SyncFIFOBuffered):
                n = fifo_tiles(o.width, o.depth)
            elif isinstance(o, SyncFIFO):
                n = fifo_tiles(o.width, o.depth + 1)
            else:
                continue
            top = path[0]
            item = (_ITEM.get(top) or ("norms" if re.fullmatch(r"norm\d+", top) else None) or
                    ("tables" if re.fullmatch(r"act\d+", top) else f"other:{'.'.join(path)}"))
            out[item] = out.get(item, 0) + n
            return                          # (a BlockRAM's own memory is inside it)
        for sub, name, *_ in frag.subfragments:
            walk(sub, path + (name,))

    walk(Fragment.get(engine, None), ())
    return {k: v for k, v in out.items() if v}


def _estimated(comp) -> dict:
    fit = comp.manifest["fit"]
    est = {k: v for k, v in fit["ebr"].items() if k != "units"}
    est.update(fit["units"])
    return {k: v for k, v in est.items() if v}


CASES = {
    # GQA with kv_mul 2 on 8 lanes: pairs of heads, two 1,024-entry score queues (DP16KD)
    "pairs": ("random:llama", dict(dim=64, n_heads=4, n_kv_heads=2, hidden_dim=96,
                                   vocab_size=64, n_layers=2), 16, {}),
    # MQA with an odd kv_mul: no pairs, one 64-entry queue (LUT RAM); a longer context
    "mqa": ("random:llama", dict(dim=40, n_heads=5, n_kv_heads=1, hidden_dim=60, vocab_size=45,
                                 n_layers=2, seq_len=600), 600, {}),
    # GPT-2: LayerNorm units, a GELU activation table, no fused softmax
    "gpt2": ("random:gpt2", dict(dim=36, n_heads=3, hidden_dim=90, vocab_size=50, n_layers=1),
             8, {"fuse_softmax": False}),
}


@pytest.mark.parametrize("name", CASES)
def test_estimate_equals_the_elaborated_engine(name):
    spec, over, ctx, opts = CASES[name]
    cfg = AcceleratorConfig(lanes=8, macs_per_lane=4)
    comp = compile_model(load_model(spec, seed=3, **over), cfg,
                         CompileOptions(context=ctx, gptq=False, **opts))
    engine = Engine(cfg, comp, preload=True)
    assert _estimated(comp) == _elaborated_ebr(engine)
    assert ("score_queues" in _estimated(comp)) == (name == "pairs")


def test_estimate_of_a_prefill_engine():
    """A prefill engine's tile buffer (``MATMAT`` rows of 128 inputs: 32 words, block RAM)."""
    from hdlgen.compiler.prefill import with_prefill
    cfg = AcceleratorConfig(lanes=8, macs_per_lane=4)
    m = load_model("random:llama", seed=1, dim=128, n_heads=4, n_kv_heads=4, hidden_dim=64,
                   vocab_size=32, n_layers=1)
    comp = with_prefill(compile_model(m, cfg, CompileOptions(context=8, gptq=False)), 4)
    pre = comp.manifest["prefill"]
    units = EngineUnits.of_program(comp.program, comp.image, cfg.lanes,
                                   matmat_cols=pre["matmat_cols"])
    est = comp.image.memory_ebr(units)
    est = {**{k: v for k, v in est.items() if k != "units"}, **units.ebr(8)}
    got = _elaborated_ebr(Engine(cfg, comp, preload=True))
    assert got.get("tile_buffer", 0) > 0
    assert {k: v for k, v in est.items() if v} == got


def test_stories_85f_estimate_is_the_routed_count():
    """The routed stories260K SoC on the 85F (context 256, 16 x 8 MACs, 4 KiB host scratch)
    used 200 DP16KD: 197 the engine's (weights 128, params 16, tables 3, kv_cache 40, scratch
    3, softmax 3, score queues 2, norms 2), 3 the SoC's (scratch 2, bridge buffer 1). The count
    before quantizing has a norm unit for each of the three norm sites: one more."""
    m = load_model("stories260K")
    cfg = AcceleratorConfig(scratch_bytes=4096)
    comp = compile_model(m, cfg, CompileOptions(context=256, device="85F"))
    fit = comp.manifest["fit"]
    assert fit["ebr"] == {"weights": 128, "params": 16, "tables": 3, "kv_cache": 40,
                          "scratch": 3, "program": 0, "units": 7}
    assert fit["units"] == {"softmax": 3, "score_queues": 2, "norms": 2, "tile_buffer": 0}
    assert soc_ebr(cfg) == {"scratch": 2, "bridge": 1}
    assert fit["ebr_total"] + sum(soc_ebr(cfg).values()) == 200
    plan = plan_image(m.config, cfg, 256).memory_ebr(plan_units(m.config, cfg))
    assert sum(plan.values()) == 198 and plan["units"] == 8


def test_refused_although_the_contents_fit():
    """The contents alone (the old count: 29-column weight bank, tables outside the
    parameter memory, no units) took 84 EBR of the 45F's 108 here; the engine needs 109 (the
    bank's byte lanes in x18 tiles: 64 DP16KD; the units' 8)."""
    m = load_model("random:llama", seed=0, dim=64, n_layers=2, vocab_size=128, hidden_dim=128,
                   n_heads=4, n_kv_heads=2, seq_len=256)
    with pytest.raises(UserError) as e:
        compile_model(m, AcceleratorConfig(), CompileOptions(context=256, device="45F"))
    msg = str(e.value)
    assert "with a context of 256 needs 109 EBR" in msg
    assert "weights 81,920 bytes (64 EBR)" in msg
    assert "the units' own block RAMs 8 EBR (softmax 3, score queues 2, norms 3)" in msg
    assert msg.endswith("but the 45F has 108 EBR (221,184 bytes); a context of 128 would fit; "
                        "or it fits the 85F at this context")
