"""Model configs, llama2.c and .npz import/export, random models."""

import json
import struct

import numpy as np
import pytest

from hdlgen.errors import UserError
from hdlgen.model import builtin_model_path
from hdlgen.model import (Model, ModelConfig, load_model, random_model, read_llama2c, read_npz,
                          weight_shapes, write_llama2c, write_npz)
from sim.float_ref import rope_tables

STORIES = builtin_model_path("stories260K")   # hdlgen/model/builtin (vendored)
STORIES_SHA256 = "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6"


def _header(dim=16, hidden=24, layers=2, heads=4, kv_heads=2, vocab=32, seq_len=8):
    return struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq_len)


def _llama2c_bytes(dim=16, hidden=24, layers=2, heads=4, kv_heads=2, vocab=32, seq_len=8):
    """A well-formed llama2.c file for the given header (values 0.01 * index)."""
    kv = dim * kv_heads // heads
    hs = dim // heads
    n = (abs(vocab) * dim + layers * dim + layers * dim * dim + 2 * layers * kv * dim
         + layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim
         + seq_len * hs) + (abs(vocab) * dim if vocab < 0 else 0)
    return (_header(dim, hidden, layers, heads, kv_heads, vocab, seq_len)
            + (0.01 * np.arange(n, dtype=np.float32)).astype("<f4").tobytes())


# ModelConfig ---------------------------------------------------------------------------------

def test_config_derived_values():
    c = ModelConfig()
    assert (c.head_size, c.kv_dim, c.kv_mul) == (8, 32, 2)
    assert ModelConfig.from_dict(c.to_dict()) == c
    assert c.replace(n_kv_heads=1).kv_dim == 8


@pytest.mark.parametrize("changes, words", [
    (dict(arch="bert"), ["arch='bert'", "'llama'", "'gpt2'"]),
    (dict(dim=-64), ["dim=-64", "positive"]),
    (dict(n_layers=0), ["n_layers=0", "positive"]),
    (dict(n_heads=7), ["n_heads=7", "dim=64"]),
    (dict(n_kv_heads=3), ["n_kv_heads=3", "n_heads=8"]),
    (dict(dim=24, n_heads=8, n_kv_heads=8), ["odd", "rotary"]),
    (dict(norm_eps=0.0), ["norm_eps"]),
    (dict(dim=64.0), ["dim=64.0", "integer"]),
])
def test_config_errors_name_value(changes, words):
    with pytest.raises(UserError) as e:
        ModelConfig(**changes)
    for w in words:
        assert w in str(e.value)


def test_config_from_dict_unknown_key():
    with pytest.raises(UserError, match="unknown model config key.*n_experts"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "n_experts": 4})


# llama2.c ------------------------------------------------------------------------------------

def test_stories260k_import():
    m = read_llama2c(STORIES)
    assert m.config == ModelConfig(arch="llama", dim=64, hidden_dim=172, n_layers=5, n_heads=8,
                                   n_kv_heads=4, vocab_size=512, seq_len=512,
                                   shared_classifier=True)
    assert m.source["sha256"] == STORIES_SHA256
    assert m.name == "stories260K"
    assert m.n_params == 260032
    raw = np.fromfile(STORIES, dtype="<f4")
    # tensors at the offsets the README gives: token_embedding first, rms_att right after
    assert np.array_equal(m.weights["token_embedding"].ravel(), raw[7:7 + 512 * 64])
    assert np.array_equal(m.weights["rms_att"].ravel(), raw[7 + 512 * 64:7 + 512 * 64 + 5 * 64])
    assert m.weights["wk"].shape == (5, 32, 64)
    assert m.classifier is m.weights["token_embedding"]
    # rms_final sits just before the two (512, 4) freq_cis tables
    assert np.array_equal(m.weights["rms_final"], raw[-2 * 512 * 4 - 64:-2 * 512 * 4])
    # the checkpoint's own rotary tables agree with the recomputed ones (pairs (2i, 2i+1))
    cos, sin = rope_tables(8, np.arange(512))
    assert np.abs(raw[-2 * 2048:-2048].reshape(512, 4) - cos).max() < 1e-6
    assert np.abs(raw[-2048:].reshape(512, 4) - sin).max() < 1e-6
    assert not m.weights["wq"].flags.writeable


def test_builtin_stories260k_by_name_and_checksum(monkeypatch):
    """``stories260K`` names the vendored checkpoint; a modified file or an unknown name is
    refused with a message that says what to do."""
    m = load_model("stories260K")
    assert m.source["sha256"] == STORIES_SHA256 and m.config.dim == 64
    from hdlgen.model import checkpoint
    monkeypatch.setitem(checkpoint.BUILTIN_MODELS, "stories260K", ("stories260K.bin", "0" * 64))
    with pytest.raises(UserError, match="has sha256 9414d5a2.*expected 0000.*restore it"):
        load_model("stories260K")
    with pytest.raises(UserError, match="no built-in model 'stories15M'.*stories260K"):
        builtin_model_path("stories15M")
    with pytest.raises(UserError, match="not found.*built-in model \\(stories260K\\)"):
        load_model("stories15M")


def test_stories260k_write_back_reproduces_weights(tmp_path):
    m = read_llama2c(STORIES)
    out = tmp_path / "copy.bin"
    write_llama2c(m, out)
    a = np.fromfile(STORIES, dtype="<u4")
    b = np.fromfile(out, dtype="<u4")
    assert a.shape == b.shape
    n_tables = 2 * 512 * 4
    assert np.array_equal(a[:-n_tables], b[:-n_tables])      # header and every weight, bit for bit
    m2 = read_llama2c(out)
    assert m2.digest() == m.digest()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kv", [1, 2, 6])
def test_llama2c_roundtrip_random(tmp_path, shared, kv):
    m = random_model("llama", seed=3, n_kv_heads=kv, shared_classifier=shared)
    path = tmp_path / "m.bin"
    write_llama2c(m, path)
    hdr = np.fromfile(path, dtype="<i4", count=7)
    assert hdr[5] == (96 if shared else -96)
    back = read_llama2c(path)
    assert back.config == m.config
    for k in weight_shapes(m.config):
        assert np.array_equal(back.weights[k], m.weights[k]), k


def test_llama2c_synthetic_file_layout(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(_llama2c_bytes(vocab=-32))
    m = read_llama2c(path)
    assert not m.config.shared_classifier
    # last tensor is wcls, after the two (8, 2) freq tables
    total = (len(path.read_bytes()) - 28) // 4
    assert np.allclose(m.weights["wcls"].ravel(), 0.01 * np.arange(total - 32 * 16, total,
                                                                    dtype=np.float32))
    assert m.weights["token_embedding"][0, 1] == np.float32(0.01)


@pytest.mark.parametrize("kwargs, words", [
    (dict(dim=-16), ["dim=-16", "positive"]),
    (dict(layers=0), ["n_layers=0", "positive"]),
    (dict(seq_len=-1), ["seq_len=-1"]),
    (dict(heads=5), ["n_heads=5", "dim=16"]),
    (dict(kv_heads=3), ["n_kv_heads=3", "n_heads=4"]),
    (dict(kv_heads=0), ["n_kv_heads=0"]),
])
def test_llama2c_bad_header(tmp_path, kwargs, words):
    path = tmp_path / "bad.bin"
    path.write_bytes(_header(**kwargs) + bytes(4000))
    with pytest.raises(UserError) as e:
        read_llama2c(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("delta", [-4, 4, -1000])
def test_llama2c_size_mismatch(tmp_path, delta):
    good = _llama2c_bytes()
    path = tmp_path / "size.bin"
    path.write_bytes(good[:delta] if delta < 0 else good + bytes(delta))
    with pytest.raises(UserError) as e:
        read_llama2c(path)
    msg = str(e.value)
    assert f"{len(good) + delta} bytes" in msg and f"describes {len(good)} bytes" in msg
    assert "dim=16" in msg


def test_llama2c_other_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_llama2c(tmp_path / "missing.bin")
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="2 bytes is too short"):
        read_llama2c(short)
    v1 = tmp_path / "v1.bin"
    v1.write_bytes(struct.pack("<Ii", 0x616B3432, 1) + bytes(256))
    with pytest.raises(UserError, match="version 1/2"):
        read_llama2c(v1)
    nan = bytearray(_llama2c_bytes())
    nan[28:32] = struct.pack("<f", float("nan"))
    p = tmp_path / "nan.bin"
    p.write_bytes(bytes(nan))
    with pytest.raises(UserError, match="token_embedding holds non-finite"):
        read_llama2c(p)
    with pytest.raises(UserError, match="arch='gpt2'"):
        write_llama2c(random_model("gpt2"), tmp_path / "g.bin")


# .npz ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, shared", [("gpt2", True), ("gpt2", False), ("llama", False)])
def test_npz_roundtrip(tmp_path, arch, shared):
    m = random_model(arch, seed=5, shared_classifier=shared, dim=40, n_heads=5,
                     **({"n_kv_heads": 5} if arch == "llama" else {}))
    path = tmp_path / "m.npz"
    write_npz(m, path)
    with np.load(path, allow_pickle=False) as z:
        assert str(z["format"][()]) == "hdlgen-model/1"
        assert json.loads(str(z["config"][()]))["arch"] == arch
        assert ("wcls" in z.files) == (not shared)
    back = read_npz(path)
    assert back.config == m.config and back.digest() == m.digest()
    assert load_model(str(path)).digest() == m.digest()


def _write_raw_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_npz_errors(tmp_path):
    m = random_model("gpt2", seed=1)
    good = {"format": np.array("hdlgen-model/1"),
            "config": np.array(json.dumps(m.config.to_dict())),
            **{k: np.asarray(v) for k, v in m.weights.items()}}
    cases = [
        ({k: v for k, v in good.items() if k != "config"}, "no 'config' entry"),
        ({**good, "format": np.array("other/9")}, "format 'other/9' is not supported"),
        ({**good, "config": np.array("{not json")}, "not valid JSON"),
        ({**good, "config": np.array(json.dumps({**m.config.to_dict(), "moe": 1}))},
         "unknown model config key.*moe"),
        ({**good, "config": np.array(json.dumps({**m.config.to_dict(), "n_heads": 5}))},
         "n_heads=5 does not divide dim=48"),
        ({k: v for k, v in good.items() if k != "b_fc"}, r"missing \['b_fc'\]"),
        ({**good, "extra": np.zeros(3)}, r"unexpected \['extra'\]"),
        ({**good, "wq": np.zeros((2, 48, 47))}, r"wq has shape \(2, 48, 47\), expected \(2, 48, 48\)"),
    ]
    for i, (arrays, pattern) in enumerate(cases):
        path = tmp_path / f"bad{i}.npz"
        _write_raw_npz(path, arrays)
        with pytest.raises(UserError, match=pattern):
            read_npz(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match="junk.npz"):
        read_npz(junk)


# load_model / random models ------------------------------------------------------------------

def test_load_model_dispatch(tmp_path):
    assert load_model("random:llama", seed=2).config.arch == "llama"
    assert load_model("random:gpt2", seed=2, n_layers=3).config.n_layers == 3
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nope.bin")
    other = tmp_path / "m.safetensors"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="unknown file type"):
        load_model(other)
    with pytest.raises(UserError, match="only to random"):
        load_model(other, dim=8)
    with pytest.raises(UserError, match="random:bert"):
        load_model("random:bert")


def test_random_models_deterministic_and_overridable():
    a = random_model("llama", seed=7)
    assert a.digest() == random_model("llama", seed=7).digest()
    assert a.digest() != random_model("llama", seed=8).digest()
    assert a.config.n_kv_heads < a.config.n_heads                     # GQA by default
    assert random_model("gpt2").config.n_kv_heads == random_model("gpt2").config.n_heads
    mqa = random_model("llama", seed=1, dim=40, n_heads=5, n_kv_heads=1, hidden_dim=100,
                       vocab_size=77)
    assert (mqa.config.kv_dim, mqa.weights["wk"].shape) == (8, (2, 8, 40))
    g = random_model("gpt2", n_heads=6)
    assert g.config.n_kv_heads == 6
    assert "n_kv_heads=1" in mqa.name
    with pytest.raises(UserError, match="unknown random-model override.*depth"):
        random_model("llama", depth=3)
    with pytest.raises(UserError, match="seed=-1"):
        random_model("llama", seed=-1)
    with pytest.raises(UserError, match="n_kv_heads=4 does not divide n_heads=6"):
        random_model("llama", n_kv_heads=4)


def test_model_rejects_mismatched_weights():
    m = random_model("llama")
    with pytest.raises(UserError, match="missing"):
        Model(m.config, {k: v for k, v in m.weights.items() if k != "w3"})
    with pytest.raises(UserError, match="non-finite"):
        m.with_weights(wq=np.full(m.weights["wq"].shape, np.inf, np.float32))


# tokenizer -----------------------------------------------------------------------------------

def _toy_tokenizer():
    """A sentencepiece-shaped vocabulary: <unk> <s> </s>, 256 byte pieces, then pieces with
    merge scores (higher merges first)."""
    from hdlgen.model.tokenizer import Tokenizer
    pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % b for b in range(256)]
    scores = [0.0] * len(pieces)
    extra = [(b" ", -1.0), (b"a", -2.0), (b"b", -2.0), (b"c", -2.0), (b"ab", -5.0),
             (b" a", -4.0), (b" ab", -3.0), (b"bc", -6.0), (b"abc", -2.5),
             ("é".encode(), -3.0)]
    for p, s in extra:
        pieces.append(p)
        scores.append(s)
    return Tokenizer(pieces, scores)


def test_tokenizer_encode_decode_like_run_c(tmp_path):
    from hdlgen.model.tokenizer import Tokenizer
    tok = _toy_tokenizer()
    ids = {p: i for i, p in enumerate(tok.pieces)}
    # dummy prefix " ", then merges by score: " a" (-4) vs "ab" (-5) -> " a"; then " ab" (-3)
    assert tok.encode("ab") == [1, ids[b" ab"]]
    # "abc": " a"(-4) first, then " ab"(-3) vs "bc"? pairs: (" a","b")->" ab" -3, ("b","c")->"bc"
    # -6: " ab" wins; then (" ab","c") -> " abc" not a piece: done
    assert tok.encode("abc", bos=False, eos=True) == [ids[b" ab"], ids[b"c"], 2]
    # ties: leftmost merge wins; "cab" -> " " "c" "a" "b": "ab" is the only merge
    assert tok.encode("cab", bos=False) == [ids[b" "], ids[b"c"], ids[b"ab"]]
    # empty text: no dummy prefix
    assert tok.encode("") == [1]
    # a code point in the vocabulary, and byte fallback (+3) for one that is not
    assert tok.encode("é", bos=False) == [ids[b" "], ids["é".encode()]]
    assert tok.encode("ü", bos=False) == [ids[b" "], 0xC3 + 3, 0xBC + 3]
    # decode: the leading space is dropped after BOS, byte pieces become bytes
    assert tok.decode([ids[b" ab"], ids[b"c"]]) == "abc"
    assert tok.decode([ids[b" ab"]], prev_token=5) == " ab"
    assert tok.decode([0xC3 + 3, 0xBC + 3]) == "ü"
    assert tok.decode(tok.encode("abcab cé", bos=False)) == "abcab cé"
    # file round trip
    path = tmp_path / "tok.bin"
    tok.write(path)
    back = Tokenizer.read(path, vocab_size=tok.vocab_size)
    assert back.pieces == tok.pieces and np.array_equal(back.scores, tok.scores)
    assert Tokenizer.read(path).vocab_size == tok.vocab_size


def test_tokenizer_file_errors(tmp_path):
    from hdlgen.model.tokenizer import Tokenizer
    tok = _toy_tokenizer()
    path = tmp_path / "tok.bin"
    tok.write(path)
    with pytest.raises(UserError, match=f"holds {tok.vocab_size} tokens but the model's "
                                        f"vocab_size is 512"):
        Tokenizer.read(path, vocab_size=512)
    data = path.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:-2])
    with pytest.raises(UserError, match="length 2 at byte"):
        Tokenizer.read(cut)
    with pytest.raises(UserError, match="cannot read tokenizer"):
        Tokenizer.read(tmp_path / "none.bin")
    with pytest.raises(UserError, match="out of range"):
        tok.decode([10_000])
