"""Dedup across checkpoints: exact duplicates stored once (codec "same"), near duplicates
found by the LSH index (`Store.save(name, ..., reference="auto")`), reference counts
through delete, a damaged index, and loading without the index."""

import json
import os

import fastckpt
import numpy as np
import pytest
from fastckpt import _core
from hypothesis import given, settings
from hypothesis import strategies as st

N = 20_000


def _base(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"emb": rng.standard_normal((100, 200)).astype(np.float32) * 0.02,
            "w1": rng.standard_normal((200, 100)).astype(np.float32) * 0.05,
            "w2": rng.standard_normal(N).astype(np.float32) * 0.05,
            "bias": rng.standard_normal(64).astype(np.float32),
            "steps": np.arange(8, dtype=np.int64)}


def _finetune(base: dict, seed: int, frozen=("emb",)) -> dict:
    """A fine-tune: small drift on every tensor except the frozen ones, new names."""
    rng = np.random.default_rng(100 + seed)
    out = {}
    for k, v in base.items():
        if k in frozen or v.dtype != np.float32:
            out[f"model/{k}"] = v.copy()
        else:
            out[f"model/{k}"] = v + (rng.standard_normal(v.shape) * 1e-4).astype(np.float32)
    return {"state": out, "seed": seed}


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    else:
        assert a == b


def _tensors(info: dict) -> dict:
    return {t["name"]: t for t in info["tensors"]}


def test_exact_duplicate_is_stored_once(tmp_path):
    s = fastckpt.Store(tmp_path)
    base = _base()
    s.save("base", base)
    dup = {"copy": {k: v.copy() for k, v in base.items()}}
    entry = s.save("copy", dup, reference="exact")
    info = _tensors(s.info("copy"))
    big = [n for n in info if n != "copy/bias" and n != "copy/steps"]
    assert all(info[n]["codec"] == "same" and info[n]["compressed_bytes"] == 0 for n in big)
    assert info["copy/emb"]["reference"]["key"] == "base"
    assert info["copy/emb"]["reference"]["tensor"] == "emb"
    raw_big = sum(base[n.split("/")[1]].nbytes for n in big)
    assert entry["file_bytes"] < 4096 < raw_big  # index entries and structure only
    assert s.info("base")["referenced_by"] == {"copy": len(big)}
    _same(dup, s.load("copy"))


def test_auto_picks_the_true_base_among_decoys(tmp_path):
    s = fastckpt.Store(tmp_path)
    for seed in (1, 2, 3):
        s.save(f"decoy{seed}", _base(seed))
    s.save("base", _base(0))
    ft = _finetune(_base(0), 7)
    s.save("ft", ft, reference="auto")
    info = s.info("ft")
    refs = {t["name"]: t["reference"] for t in info["tensors"]}
    for name in ("state/model/emb", "state/model/w1", "state/model/w2"):
        assert refs[name]["key"] == "base" and refs[name]["tensor"] == name.split("/")[-1]
    assert _tensors(info)["state/model/emb"]["codec"] == "same"
    assert _tensors(info)["state/model/w2"]["codec"] == "predicted"
    assert info["mode"] == "auto" and info["depth"] == 1
    assert info["compressed_bytes"] < 0.8 * s.info("base")["compressed_bytes"]
    _same(ft, s.load("ft"))


def test_deleting_the_base_keeps_every_finetune_loadable(tmp_path):
    s = fastckpt.Store(tmp_path)
    s.save("base", _base())
    fts = {f"ft{i}": _finetune(_base(), i) for i in range(3)}
    for name, ft in fts.items():
        s.save(name, ft, reference="auto")
    assert set(s.info("base")["referenced_by"]) == set(fts)
    s.delete("base")
    assert "base" not in s and s.names() == sorted(fts)
    for name, ft in fts.items():
        _same(ft, s.load(name))
        assert all(r["key"] in fts for r in s.info(name)["references"])
    # the frozen tensor is still stored once: one fine-tune holds it, the others refer to it
    holders = [n for n in fts if _tensors(s.info(n))["state/model/emb"]["codec"] != "same"]
    assert len(holders) == 1
    s.delete(holders[0])
    for name in fts:
        if name != holders[0]:
            _same(fts[name], fastckpt.Store(tmp_path).load(name))
    assert s.gc() == 0


def test_loading_never_reads_the_index(tmp_path):
    s = fastckpt.Store(tmp_path)
    s.save("base", _base())
    ft = _finetune(_base(), 1)
    s.save("ft", ft, reference="auto")
    with open(tmp_path / "manifest.json") as f:
        index = json.load(f)["index"]
    os.unlink(tmp_path / index)
    _same(ft, fastckpt.Store(tmp_path).load("ft"))
    with pytest.raises(fastckpt.FormatError, match="rebuild_index"):
        s.save("ft2", _finetune(_base(), 2), reference="auto")
    assert s.rebuild_index() > 0
    s.save("ft2", _finetune(_base(), 2), reference="auto")
    assert s.info("ft2")["references"]


def test_corrupt_index_is_a_clean_error(tmp_path):
    s = fastckpt.Store(tmp_path)
    s.save("base", _base())
    s.save("ft", _finetune(_base(), 1), reference="auto")
    with open(tmp_path / "manifest.json") as f:
        path = tmp_path / json.load(f)["index"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(fastckpt.FastckptError, match="index"):
        s.save("ft2", _finetune(_base(), 2), reference="auto")
    with pytest.raises(fastckpt.FastckptError):
        _core.LshIndex.from_bytes(b"FCKLSH\x00\x01" + b"\x00" * 3)
    _same(_finetune(_base(), 1), s.load("ft"))


def test_steps_and_names_share_one_store(tmp_path):
    s = fastckpt.Store(tmp_path, keyframe_every=3)
    s.save("base", _base())
    for step in range(4):
        s.save(step, _finetune(_base(), step))
    assert s.steps() == [0, 1, 2, 3] and s.names() == ["base"] and s.keys()[-1] == "base"
    s.save(10, _finetune(_base(), 10), reference="auto")
    info = s.info(10)
    assert info["mode"] == "auto" and info["references"]
    assert not info["keyframe"]
    s.delete(0)  # a keyframe of the chain; the auto step may have referenced it
    for step in (1, 2, 3):
        _same(_finetune(_base(), step), s.load(step))
    _same(_finetune(_base(), 10), s.load(10))
    with pytest.raises(ValueError):
        s.save("auto", _base())
    with pytest.raises(ValueError):
        s.save("x", _base(), reference="nearest")


def test_decode_with_references_from_several_checkpoints():
    a, b = _base(0), _base(1)
    cur = {"x": a["w2"] + np.float32(1e-5), "y": b["w1"].copy()}
    data = fastckpt.encode(cur, tensor_references={"x": ("A", "w2", a["w2"]),
                                                   "y": ("B", "w1", b["w1"])})
    kinds = {t["name"]: t["codec"] for t in fastckpt.inspect(data)["tensors"]}
    assert kinds == {"x": "predicted", "y": "same"}
    _same(cur, fastckpt.decode(data, references={"A": a, "B": b}))
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, references={"A": a, "B": a})
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, references={"A": a})
    with pytest.raises(ValueError):
        fastckpt.encode(cur, tensor_references={"x": ("A", "w1", a["w1"])})


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5000),
       st.sampled_from(["float32", "float16", "bfloat16", "int64", "uint8"]))
def test_signature_is_deterministic_and_class_bound(seed, n, dtype):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * np.dtype({"bfloat16": "u2"}.get(dtype, dtype)).itemsize,
                       dtype=np.uint8)
    sig = _core.signature(dtype, raw)
    assert sig == _core.signature(dtype, raw.copy()) and 0 <= sig < 2**128
    ix = _core.LshIndex()
    ix.extend([("c", "t", dtype, n, _core.content_hash(dtype, raw), sig)])
    assert ix.query(dtype, n, sig, 5) == [("c", "t", 0)]
    assert ix.query(dtype, n + 1, sig, 5) == []
    back = _core.LshIndex.from_bytes(ix.to_bytes())
    assert back.exact(dtype, n, _core.content_hash(dtype, raw)) == [("c", "t")]
