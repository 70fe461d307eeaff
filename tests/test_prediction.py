"""Prediction from a reference checkpoint: exact round trips, smaller files on real
trajectories, and a clear error for a missing or wrong reference."""

import fastckpt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "bool"]


def _perturb(a: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    if a.dtype.kind == "f":
        noise = rng.standard_normal(a.shape).astype(a.dtype) * scale
        return (a + noise * np.abs(a)).astype(a.dtype)
    if a.dtype == np.bool_:
        return a ^ (rng.random(a.shape) < 0.01)
    return (a + rng.integers(-2, 3, a.shape)).astype(a.dtype)


@settings(max_examples=30, deadline=None)
@given(dtype=st.sampled_from(DTYPES), n=st.integers(0, 5000), seed=st.integers(0, 2**31),
       scale=st.sampled_from([0.0, 1e-6, 1e-3, 1.0]))
def test_roundtrip_against_random_reference(dtype, n, seed, scale):
    rng = np.random.default_rng(seed)
    prev = (rng.standard_normal(n) * 3).astype(dtype)
    cur = _perturb(prev, rng, scale)
    data = fastckpt.encode({"x": cur}, reference={"x": prev})
    back = fastckpt.decode(data, reference={"x": prev})["x"]
    assert back.dtype == cur.dtype and back.shape == cur.shape
    assert back.tobytes() == cur.tobytes()


@settings(max_examples=15, deadline=None)
@given(dtype=st.sampled_from(["float32", "float64", "float16"]), n=st.integers(16_384, 70_000),
       at=st.integers(0, 2**31), seed=st.integers(0, 2**31),
       big=st.sampled_from([300.0, 3e4, -6e4]))
def test_reference_outlier_anywhere_roundtrips(dtype, n, at, seed, big):
    """Chunks large enough to be sampled, with the reference's largest exponent at any
    word: inside the encoder's sample or between its runs (where the chunk records a
    sampled base exponent below the largest, kind 5)."""
    rng = np.random.default_rng(seed)
    prev = (rng.standard_normal(n) * 0.05).astype(dtype)
    prev[at % n] = big
    cur = _perturb(prev, rng, 1e-3)
    data = fastckpt.encode({"x": cur}, reference={"x": prev})
    assert fastckpt.inspect(data)["tensors"][0]["codec"] == "predicted"
    back = fastckpt.decode(data, reference={"x": prev})["x"]
    assert back.tobytes() == cur.tobytes()
    other = prev.copy()
    other[at % n] = big / 4
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, reference={"x": other})


def test_special_values_roundtrip_against_reference():
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38],
                        dtype=np.float32)
    nan_payload = np.array([0x7FC00001, 0xFFBFFFFF], dtype=np.uint32).view(np.float32)
    cur = np.concatenate([specials, nan_payload, specials[::-1]])
    prev = np.roll(cur, 3)
    data = fastckpt.encode(cur, reference=prev)
    assert fastckpt.decode(data, reference=prev).tobytes() == cur.tobytes()


def test_close_checkpoint_is_smaller_and_marked_predicted():
    rng = np.random.default_rng(0)
    prev = (rng.standard_normal(200_000) * 0.02).astype(np.float32)
    cur = prev + (rng.standard_normal(prev.shape) * 1e-5).astype(np.float32)
    alone = fastckpt.encode({"w": cur})
    pred = fastckpt.encode({"w": cur}, reference={"w": prev}, reference_id="step 9")
    assert len(pred) < 0.8 * len(alone)
    (entry,) = fastckpt.inspect(pred)["tensors"]
    assert entry["codec"] == "predicted"
    assert entry["reference"] == {"checkpoint": "step 9", "tensor": "w"}


def test_unrelated_reference_falls_back_to_standalone():
    rng = np.random.default_rng(1)
    cur = rng.standard_normal(50_000).astype(np.float32)
    other = rng.standard_normal(50_000).astype(np.float32)
    data = fastckpt.encode({"w": cur}, reference={"w": other})
    (entry,) = fastckpt.inspect(data)["tensors"]
    assert entry["codec"] == "planes" and entry["reference"] is None
    assert fastckpt.decode(data)["w"].tobytes() == cur.tobytes()  # no reference needed


def test_missing_or_wrong_reference_raises():
    rng = np.random.default_rng(2)
    prev = rng.standard_normal(10_000).astype(np.float32)
    cur = prev + np.float32(1e-6) * prev
    data = fastckpt.encode({"w": cur}, reference={"w": prev})
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data)
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, reference={"w": cur})
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, reference={"w": prev[:-1]})


def test_mismatched_shapes_and_dtypes_are_coded_standalone():
    prev = {"a": np.ones(10, np.float32), "b": np.ones(10, np.float64)}
    cur = {"a": np.ones(11, np.float32), "b": np.ones(10, np.float32), "c": np.zeros(3)}
    data = fastckpt.encode(cur, reference=prev)
    assert all(t["reference"] is None for t in fastckpt.inspect(data)["tensors"])
    back = fastckpt.decode(data)
    assert all(back[k].tobytes() == cur[k].tobytes() for k in cur)


def test_torch_optimizer_state_against_previous_step(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    states = []
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 64)).pow(2).mean().backward()
        opt.step()
        states.append({"model": {k: v.clone() for k, v in model.state_dict().items()},
                       "optim": __import__("copy").deepcopy(opt.state_dict())})
    path = tmp_path / "step2.fckpt"
    fastckpt.save(states[2], path, reference=states[1], reference_id="step1")
    back = fastckpt.load(path, reference=states[1])
    for k, v in states[2]["model"].items():
        assert torch.equal(back["model"][k], v)
    for i, s in states[2]["optim"]["state"].items():
        for k, v in s.items():
            assert torch.equal(back["optim"]["state"][i][k], v)
    assert back["optim"]["param_groups"] == states[2]["optim"]["param_groups"]


def _adam_pair(n: int, rng: np.random.Generator, dtype=np.float32):
    """Two Adam-like states: where no gradient landed (every 4th word) exp_avg_sq only
    decays; elsewhere it grows by fresh squared gradients that exp_avg reflects."""
    v0 = (rng.standard_normal(n) ** 2 * 1e-6).astype(dtype)
    touched = np.arange(n) % 4 != 0
    g = rng.standard_normal(n) * 1e-3 * touched
    m1 = (g * 0.5 + rng.standard_normal(n) * 1e-9).astype(dtype)
    v1 = (v0 * 0.98 + 0.1 * m1.astype(np.float64) ** 2).astype(dtype)
    return ({"state": {0: {"exp_avg": (m1 * 1.1).astype(dtype), "exp_avg_sq": v0}}},
            {"state": {0: {"exp_avg": m1, "exp_avg_sq": v1}}})


def _embedding_run(steps: int = 10, vocab: int = 4096, dim: int = 16):
    """Optimizer states `steps` AdamW steps apart of a small embedding model trained on
    Zipf-distributed tokens: rare rows get no gradient for a while, as in a language
    model's word embeddings."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, 8)
    opt = torch.optim.AdamW([*emb.parameters(), *head.parameters()], lr=1e-3)
    probs = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    snaps = []
    for t in range(2 * steps):
        tokens = torch.multinomial(probs, 256, replacement=True)
        loss = torch.nn.functional.cross_entropy(head(emb(tokens)), tokens % 8)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t + 1 in (steps, 2 * steps):
            snaps.append(__import__("copy").deepcopy(opt.state_dict()))
    return snaps


def test_second_moment_takes_contexts_from_first_moment():
    torch = pytest.importorskip("torch")
    prev, cur = _embedding_run()
    data = fastckpt.encode(cur, reference=prev)
    infos = {t["name"]: t for t in fastckpt.inspect(data)["tensors"]}
    sq = infos["state/0/exp_avg_sq"]
    assert sq["codec"] == "predicted" and sq["side"] == "state/0/exp_avg"
    assert infos["state/0/exp_avg"]["side"] is None
    back = fastckpt.decode(data, reference=prev)
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(back["state"][0][k], cur["state"][0][k])
    # One tensor alone: its side tensor is decoded with it, not returned.
    alone = fastckpt.read_tensor(data, "state/0/exp_avg_sq", reference=prev)
    assert torch.equal(alone, cur["state"][0]["exp_avg_sq"])
    # The side contexts pay: smaller than with the reference's exponents alone.
    plain = fastckpt.inspect(fastckpt.encode(
        {"state": {0: {"exp_avg_sq": cur["state"][0]["exp_avg_sq"]}}},
        reference={"state": {0: {"exp_avg_sq": prev["state"][0]["exp_avg_sq"]}}}))
    assert sq["compressed_bytes"] < 0.98 * plain["compressed_bytes"]


def test_reader_specs_agree_with_tensors():
    """The lean per-tensor tuples decoding reads say what `tensors()` says: names, dtypes,
    shapes, tags, references, side tensors, near-lossless flags and Adam directions."""
    from fastckpt import _core

    prev, cur = _embedding_run()
    cur = {**cur, "extra": np.arange(7, dtype=np.int16).reshape(7, 1)}
    predicted = fastckpt.encode(cur, reference=prev, reference_id="step-1")
    lossy = fastckpt.encode(cur, mode="near_lossless", error_bound=0.01)
    for data in (predicted, lossy):
        reader = _core.Reader(np.frombuffer(data, dtype=np.uint8))
        assert [
            (t["name"], t["dtype"], tuple(t["shape"]), t["tag"],
             None if t["reference"] is None else (t["reference"]["checkpoint"],
                                                  t["reference"]["tensor"]),
             t["side"], t["lossy"], t["direction"])
            for t in reader.tensors()
        ] == reader.specs()
    specs = {s[0]: s for s in _core.Reader(np.frombuffer(predicted, dtype=np.uint8)).specs()}
    assert specs["state/0/exp_avg_sq"][4:6] == (("step-1", "state/0/exp_avg_sq"),
                                               "state/0/exp_avg")
    assert specs["extra"][1:4] == ("int16", (7, 1), "numpy")
    assert any(s[6] for s in _core.Reader(np.frombuffer(lossy, dtype=np.uint8)).specs())


def test_side_tensor_needs_its_own_reference():
    prev, cur = _embedding_run()
    data = fastckpt.encode(cur, reference=prev)
    assert fastckpt.inspect(data)["tensors"][2]["side"] == "state/0/exp_avg"
    wrong = {"state": {0: {"exp_avg": prev["state"][0]["exp_avg"] * 2,
                           "exp_avg_sq": prev["state"][0]["exp_avg_sq"]}}}
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.read_tensor(data, "state/0/exp_avg_sq", reference=wrong)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(16_384, 70_000),
       dtype=st.sampled_from(["float32", "float64", "float16"]),
       specials=st.integers(0, 50))
def test_side_contexts_roundtrip_hypothesis(seed, n, dtype, specials):
    rng = np.random.default_rng(seed)
    prev, cur = _adam_pair(n, rng, np.dtype(dtype))
    pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 6e-8], dtype=dtype)
    for tree in (prev, cur):
        for k in ("exp_avg", "exp_avg_sq"):
            a = tree["state"][0][k]
            a[rng.integers(0, n, specials)] = rng.choice(pool, specials)
    data = fastckpt.encode(cur, reference=prev)
    back = fastckpt.decode(data, reference=prev)
    for k in ("exp_avg", "exp_avg_sq"):
        assert back["state"][0][k].tobytes() == cur["state"][0][k].tobytes()
