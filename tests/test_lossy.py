"""Near-lossless mode: the per-element bound, pruning, classes, closed-loop chains, what the
file states, and damaged lossy files."""

from __future__ import annotations

import warnings

import fastckpt
import numpy as np
import pytest
from _helpers import examples, need_torch
from fastckpt import lossy
from hypothesis import given, settings
from hypothesis import strategies as st

FLOATS = ["float16", "float32", "float64", "bfloat16"]
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -3e-39, 5e-324, 65504.0, 1e30]


def _as_f64(t) -> np.ndarray:
    """Values of a numpy array or torch tensor as float64 (bf16 through torch)."""
    if isinstance(t, np.ndarray):
        return t.astype(np.float64)
    return t.double().numpy()


def _bits(t) -> bytes:
    if isinstance(t, np.ndarray):
        return t.tobytes()
    return t.contiguous().view(-1).view(need_torch().uint8).numpy().tobytes()


def _make(dtype: str, values: np.ndarray):
    """An array of `dtype` holding `values` (bfloat16 as a torch tensor)."""
    if dtype == "bfloat16":
        torch = need_torch()
        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _decode(data, **kw):
    return fastckpt.decode(data, lossy_ok=True, **kw)


def _check_bound(x, y, params: dict, exact_ok: bool = True) -> None:
    """Every element of y within the file's stated limit of x (escapes are bit-exact)."""
    xs, ys = _as_f64(x).ravel(), _as_f64(y).ravel()
    limit = max(params["bound"], params["prune_threshold"])
    finite = np.isfinite(xs)
    assert np.all(np.abs(ys[finite] - xs[finite]) <= limit)
    assert np.all(np.abs(ys[finite] - xs[finite]) <= params["max_abs_error"])
    # Non-finite elements are stored exactly.
    xb, yb = _bits(x), _bits(y)
    w = len(xb) // max(xs.size, 1)
    for i in np.flatnonzero(~finite):
        assert xb[i * w:(i + 1) * w] == yb[i * w:(i + 1) * w]


@st.composite
def float_arrays(draw, min_size: int = 1024):
    dtype = draw(st.sampled_from(FLOATS))
    n = draw(st.integers(min_size, 6000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3]))
    v = rng.standard_normal(n) * scale
    for _ in range(draw(st.integers(0, 8))):
        v[rng.integers(n)] = SPECIAL[draw(st.integers(0, len(SPECIAL) - 1))]
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1)]))
    return dtype, _make(dtype, v.reshape(shape)), rng


@settings(max_examples=examples(60))
@given(float_arrays(), st.sampled_from([1e-4, 1e-3, 1e-2, 0.1, 0.5]), st.booleans(),
       st.sampled_from([0.0, 0.3, 0.9]))
def test_every_element_within_bound(arr, e, with_reference, prune):
    dtype, x, rng = arr
    ref = None
    if with_reference:
        noise = rng.standard_normal(x.shape) * 1e-2 * float(np.nanstd(_as_f64(x)[np.isfinite(
            _as_f64(x))]) or 1.0)
        ref = {"t": _make(dtype, _as_f64(x) + noise)}
    policy = {"weights": {"error_bound": e, "prune": prune}}
    data = fastckpt.encode({"t": x}, reference=ref, mode="near_lossless", policy=policy)
    t = fastckpt.inspect(data)["tensors"][0]
    y = _decode(data, reference=ref)["t"]
    assert type(y) is type(x) and tuple(y.shape) == tuple(x.shape)
    if not t["lossy"]:  # nothing finite and non-zero to scale a bound by: stays exact
        assert _bits(y) == _bits(x)
        return
    p = t["params"]
    assert p["class"] == "weights" and p["error_bound"] == e and p["prune"] == prune
    xs = _as_f64(x).ravel()
    rms = np.sqrt(np.mean(xs[np.isfinite(xs)] ** 2))
    assert p["bound"] == pytest.approx(e * rms, rel=1e-9)
    if prune == 0.0:
        assert p["prune_threshold"] == 0.0
    _check_bound(x, y, p)


def test_bound_without_pruning_is_the_bound():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(50_000).astype(np.float32)
    data = fastckpt.encode({"w": x}, mode="near_lossless", error_bound=1e-2)
    p = fastckpt.inspect(data)["tensors"][0]["params"]
    y = _decode(data)["w"]
    err = np.abs(y.astype(np.float64) - x)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    assert err.max() <= 1e-2 * rms and p["max_abs_error"] == pytest.approx(err.max())
    assert 0.5 * 1e-2 * rms < err.max()  # the bound is used, not a much finer step
    assert len(data) < 0.3 * x.nbytes


def test_pruning_prunes_the_asked_fraction():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(100_000).astype(np.float32)
    x = ref + rng.standard_normal(ref.size).astype(np.float32) * 0.1
    policy = {"weights": {"error_bound": 1e-4, "prune": 0.6}}
    data = fastckpt.encode({"w": x}, reference={"w": ref}, mode="near_lossless", policy=policy)
    p = fastckpt.inspect(data)["tensors"][0]["params"]
    y = _decode(data, reference={"w": ref})["w"].astype(np.float64)
    pred = p["alpha"] * ref.astype(np.float64)
    pruned = np.abs(y - pred) <= p["step"] / 4  # decoded as the prediction itself
    assert 0.55 < pruned.mean() < 0.65
    assert np.all(np.abs(y - x) <= p["prune_threshold"])


def test_classes_of_an_adamw_state_dict():
    torch = need_torch()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(8, 64)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}
    data = fastckpt.encode(state, mode="near_lossless", error_bound=1e-2)
    classes = {t["name"]: t["params"].get("class") if t["lossy"] else None
               for t in fastckpt.inspect(data)["tensors"]}
    assert classes["model/0.weight"] == "weights"
    assert classes["optim/state/0/exp_avg"] == "exp_avg"
    assert classes["optim/state/0/exp_avg_sq"] == "exp_avg_sq"
    for name in ("model/0.bias", "model/1.weight", "optim/state/0/step"):
        assert classes[name] is None  # small or counters: lossless
    back = _decode(data)
    assert back["epoch"] == 3 and back["optim"]["param_groups"] == opt.state_dict()["param_groups"]
    for i in opt.state_dict()["state"]:
        got, want = back["optim"]["state"][i], opt.state_dict()["state"][i]
        assert torch.equal(got["step"], want["step"])
        assert bool((got["exp_avg_sq"] >= 0).all())
    assert torch.equal(back["model"]["0.bias"], model.state_dict()["0.bias"])
    assert lossy.classify("layers/3/attn/qkv", "float32", 4096) == "weights"
    assert lossy.classify("optim/state/7/foo", "float32", 4096) == "other"
    assert lossy.classify("model/w", "int64", 10**6) is None


def test_nonneg_class_never_decodes_negative():
    rng = np.random.default_rng(3)
    v = (rng.standard_normal(20_000) ** 2 * 1e-6).astype(np.float32)
    v[::7] = 0.0
    data = fastckpt.encode({"optim": {"state": {0: {"exp_avg_sq": v}}}},
                           mode="near_lossless", error_bound=0.3)
    y = _decode(data)["optim"]["state"][0]["exp_avg_sq"]
    assert (y >= 0).all() and fastckpt.inspect(data)["tensors"][0]["params"]["nonneg"]
    _check_bound(v, y, fastckpt.inspect(data)["tensors"][0]["params"])


def test_decode_says_it_is_lossy():
    x = np.linspace(-1, 1, 4096, dtype=np.float32)
    data = fastckpt.encode({"w": x}, mode="near_lossless", error_bound=1e-2)
    assert fastckpt.inspect(data)["lossy"]
    assert not fastckpt.inspect(fastckpt.encode({"w": x}))["lossy"]
    with pytest.warns(fastckpt.LossyCheckpointWarning, match="1 of 1 tensors"):
        fastckpt.decode(data)
    with pytest.warns(fastckpt.LossyCheckpointWarning, match="'w' is near-lossless"):
        fastckpt.read_tensor(data, "w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastckpt.decode(data, lossy_ok=True)
        fastckpt.read_tensor(data, "w", lossy_ok=True)
        fastckpt.decode(fastckpt.encode({"w": x}))


def test_arguments_are_checked():
    x = {"w": np.ones(4096, np.float32)}
    with pytest.raises(ValueError, match="near_lossless"):
        fastckpt.encode(x, error_bound=1e-2)
    with pytest.raises(ValueError, match="exactly one"):
        fastckpt.encode(x, mode="near_lossless")
    with pytest.raises(ValueError, match="unknown preset"):
        fastckpt.encode(x, mode="near_lossless", policy="reckless")
    with pytest.raises(ValueError, match="prune"):
        fastckpt.encode(x, mode="near_lossless", policy={"weights": {"error_bound": 1,
                                                                     "prune": 1.0}})
    with pytest.raises(ValueError, match="classes"):
        fastckpt.encode(x, mode="near_lossless", policy={"biases": 1e-2})
    with pytest.raises(ValueError, match="mode"):
        fastckpt.encode(x, mode="lossy", error_bound=1e-2)
    for name in fastckpt.PRESETS:
        _decode(fastckpt.encode(x, mode="near_lossless", policy=name))


def test_same_bytes_for_any_thread_count():
    rng = np.random.default_rng(4)
    x = {"w": rng.standard_normal(600_000).astype(np.float32)}
    ref = {"w": x["w"] + np.float32(1e-3)}
    files = {fastckpt.encode(x, reference=ref, mode="near_lossless", error_bound=1e-2,
                             threads=t, chunk_bytes=1 << 18) for t in (1, 2, 3)}
    assert len(files) == 1


def test_wrong_reference_is_detected():
    rng = np.random.default_rng(5)
    ref = {"w": rng.standard_normal(10_000).astype(np.float32)}
    x = {"w": ref["w"] + np.float32(1e-3)}
    data = fastckpt.encode(x, reference=ref, mode="near_lossless", error_bound=1e-2)
    assert fastckpt.inspect(data)["tensors"][0]["reference"] is not None
    other = {"w": ref["w"].copy()}
    other["w"][17] += 1
    with pytest.raises(fastckpt.ReferenceMismatch):
        _decode(data, reference=other)
    with pytest.raises(fastckpt.ReferenceMismatch):
        _decode(data)


def test_damaged_lossy_file_never_decodes_wrong():
    rng = np.random.default_rng(6)
    x = {"w": rng.standard_normal(3000).astype(np.float32)}
    data = fastckpt.encode(x, mode="near_lossless", error_bound=1e-2, chunk_bytes=4096)
    good = _bits(_decode(data)["w"])
    for cut in range(0, len(data), max(1, len(data) // 200)):
        with pytest.raises(fastckpt.FastckptError):
            _decode(data[:cut])
    flips = rng.integers(0, len(data) * 8, size=examples(300))
    for bit in flips:
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            y = _decode(bytes(bad))
        except fastckpt.FastckptError:
            continue
        assert _bits(y["w"]) == good  # a flip the format tolerates (e.g. unused padding)


def test_store_chain_never_accumulates_error(tmp_path):
    rng = np.random.default_rng(7)
    store = fastckpt.Store(tmp_path, keyframe_every=5, lossless_keyframe_every=7)
    w = rng.standard_normal(30_000).astype(np.float32)
    saved = {}
    for step in range(15):
        w = w + rng.standard_normal(w.size).astype(np.float32) * 3e-3
        saved[step] = w.copy()
        store.save(step, {"w": w, "n": np.arange(4)}, mode="near_lossless", error_bound=1e-2)
    kinds = [(store.info(s)["keyframe"], store.info(s)["lossy"]) for s in range(15)]
    assert kinds[0] == (True, False) and kinds[7] == (True, False) and kinds[14] == (True, False)
    assert kinds[5] == (True, True) and kinds[1] == (False, True)
    store.delete(3)
    for step in store.steps():
        got = store.load(step)
        x = saved[step].astype(np.float64)
        assert np.abs(got["w"] - x).max() <= 1e-2 * np.sqrt(np.mean(x**2))
        assert np.array_equal(got["n"], np.arange(4))
    assert store.info(4)["lossy"]  # re-encoded losslessly, but of near-lossless values
    info = store.info(6)
    assert info["lossy"] and info["tensors"][0]["params"]["class"] == "weights"


def test_cli_states_lossy_and_pruned(tmp_path, capsys):
    from fastckpt.__main__ import main

    rng = np.random.default_rng(8)
    path = tmp_path / "x.fckpt"
    fastckpt.save({"w": rng.standard_normal(5000).astype(np.float32)}, path,
                  mode="near_lossless", policy={"weights": {"error_bound": 1e-2, "prune": 0.5}})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NEAR-LOSSLESS" in out and "PRUNED 50%" in out and "weights: e=0.01" in out
    assert main(["verify", str(path)]) == 0
    assert "near-lossless" in capsys.readouterr().out


@settings(max_examples=examples(40))
@given(st.sampled_from(FLOATS), st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.2, 0.5]),
       st.booleans())
def test_relative_bound_every_element(dtype, seed, r, with_reference):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1024, 5000))
    v = (rng.standard_normal(n) ** 2) * np.exp(rng.standard_normal(n) * 4) * 1e-6
    v[rng.integers(n, size=n // 5)] = 0.0
    v[rng.integers(n, size=3)] = [np.nan, -1e-3, np.inf]
    v[rng.integers(n, size=16)] = rng.uniform(1e-320, 1e-307, 16)  # f64 subnormals (and near)
    x = _make(dtype, v)
    ref = {"optim": {"state": {0: {"exp_avg_sq": _make(dtype, v * 0.9)}}}} if with_reference \
        else None
    obj = {"optim": {"state": {0: {"exp_avg_sq": x}}}}
    data = fastckpt.encode(obj, reference=ref, mode="near_lossless",
                           policy={"exp_avg_sq": {"relative_bound": r}})
    t = fastckpt.inspect(data)["tensors"][0]
    assert t["lossy"] and t["params"]["relative"] and t["params"]["bound"] == r
    y = _decode(data, reference=ref)["optim"]["state"][0]["exp_avg_sq"]
    xs, ys = _as_f64(x), _as_f64(y)
    pos = np.isfinite(xs) & (xs > 0)
    # The ratio: `r * x` rounds for subnormal x (the codec checks the ratio as well).
    assert np.all(np.abs(ys[pos] - xs[pos]) / xs[pos] <= r)
    assert t["params"]["max_rel_error"] <= r
    xb, yb = _bits(x), _bits(y)
    w = len(xb) // n
    for i in np.flatnonzero(~pos):  # zeros, negatives, NaN, Inf: exact
        assert xb[i * w:(i + 1) * w] == yb[i * w:(i + 1) * w]
