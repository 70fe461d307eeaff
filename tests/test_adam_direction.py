"""Adam-direction references: a weight predicted as w0 + step * m / (sqrt(v) + eps) from
the reference checkpoint's optimizer moments (fastckpt._adam, the core's
predict::direction). Exact round trips, the same prediction as a plain numpy formula,
pairing of weights with moments, and clear errors for a wrong reference."""

from __future__ import annotations

import copy

import fastckpt
import numpy as np
import pytest
from _helpers import examples
from fastckpt import _adam, _core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F32_SPECIALS = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-42, 1.17e-38,
                         3e38, -3e38, 1e-30, 1.0], dtype=np.float32)


def _numpy_prediction(w0: np.ndarray, m: np.ndarray, v: np.ndarray, step: float) -> np.ndarray:
    """The prediction as the core's module doc states it, in numpy float32 arithmetic."""
    def flush(x):
        bits = x.view(np.uint32)
        return np.where(bits & 0x7F800000 == 0, bits & 0x80000000, bits).view(np.float32)

    def tame(x):
        return np.where(np.abs(x) < np.float32(2.0**-100), np.float32(0), x).astype(np.float32)

    with np.errstate(all="ignore"):
        den = tame(np.sqrt(flush(v)) + np.float32(1e-8))
        d = tame(np.float32(step) * tame(flush(m) / den))
        p = tame(flush(w0) + d)
    return np.where(np.isnan(p), w0.view(np.uint32), p.view(np.uint32)).view(np.float32)


f32_arrays = hnp.arrays(
    np.float32, st.integers(0, 300),
    elements=st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True),
                       st.sampled_from(list(F32_SPECIALS))))


@given(f32_arrays, st.data(),
       st.sampled_from([1e-12, -3e-5, 1e-3, 7.0, -1e12]))
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_prediction_matches_numpy_formula(w0, data, step):
    n = len(w0)
    m = data.draw(hnp.arrays(np.float32, n, elements=st.floats(width=32)))
    v = data.draw(hnp.arrays(np.float32, n, elements=st.floats(width=32)))
    out = np.empty(4 * n, dtype=np.uint8)
    _core.direction_predict(w0.view(np.uint8), m.view(np.uint8), v.view(np.uint8), step, out)
    want = _numpy_prediction(w0, m, v, step)
    assert out.view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_prediction_refuses_bad_inputs():
    a = np.zeros(8, dtype=np.uint8)
    with pytest.raises(ValueError, match="equal length"):
        _core.direction_predict(a, a, a[:4], 1e-3, np.empty(8, dtype=np.uint8))
    with pytest.raises(ValueError, match="step"):
        _core.direction_predict(a, a, a, 0.0, np.empty(8, dtype=np.uint8))
    with pytest.raises(ValueError, match="equal length"):
        _core.direction_fit(a, a, a, a[:3])


def _checkpoint(w, m, v, extra=None):
    """A model + AdamW-state checkpoint of numpy arrays, as torch's state_dict lays it out."""
    model = {"emb.weight": w, **(extra or {})}
    optim = {"state": {0: {"step": np.float32(3.0), "exp_avg": m, "exp_avg_sq": v}},
             "param_groups": [{"lr": 1e-3, "params": [0]}]}
    return {"model": model, "optim": optim}


def _adam_pair(n=20_000, noise=1e-6, seed=0):
    """Two checkpoints whose weights moved along the reference's Adam direction."""
    rng = np.random.default_rng(seed)
    w0 = (rng.standard_normal(n) * 0.05).astype(np.float32)
    m0 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    v0 = (rng.random(n) * 1e-6 + 1e-9).astype(np.float32)
    u = m0 / (np.sqrt(v0) + 1e-8)
    w1 = (w0 - 3e-4 * u + rng.standard_normal(n) * noise).astype(np.float32)
    m1, v1 = (m0 * 0.9).astype(np.float32), (v0 * 0.99).astype(np.float32)
    return _checkpoint(w0, m0, v0), _checkpoint(w1, m1, v1)


def _bits_equal(a, b) -> bool:
    la, lb = fastckpt._tree.leaves(a), fastckpt._tree.leaves(b)
    raw = fastckpt._tensors.to_raw
    return [n for n, _ in la] == [n for n, _ in lb] and all(
        np.array_equal(raw(x)[3], raw(y)[3]) for (_, x), (_, y) in zip(la, lb))


def test_weight_along_the_adam_direction_is_coded_against_it(monkeypatch):
    prev, cur = _adam_pair()
    data = fastckpt.encode(cur, reference=prev, reference_id="step-1")
    info = {t["name"]: t for t in fastckpt.inspect(data)["tensors"]}
    w = info["model/emb.weight"]
    assert w["codec"] == "predicted"
    m_name, v_name, step = w["direction"]
    assert (m_name, v_name) == ("optim/state/0/exp_avg", "optim/state/0/exp_avg_sq")
    assert step == pytest.approx(-3e-4, rel=1e-3)
    assert w["reference"] == {"checkpoint": "step-1", "tensor": "model/emb.weight"}
    assert _bits_equal(fastckpt.decode(data, reference=prev), cur)
    monkeypatch.setattr(_adam, "MIN_R2", 2.0)  # never: plain prediction from w0
    plain = fastckpt.inspect(fastckpt.encode(cur, reference=prev))["tensors"]
    plain_w = next(t for t in plain if t["name"] == "model/emb.weight")
    assert plain_w["direction"] is None
    assert w["compressed_bytes"] < 0.8 * plain_w["compressed_bytes"]


def test_unrelated_change_keeps_the_plain_prediction():
    prev, cur = _adam_pair()
    rng = np.random.default_rng(5)
    cur["model"]["emb.weight"] = (prev["model"]["emb.weight"]
                                  + rng.standard_normal(20_000).astype(np.float32) * 1e-4)
    info = fastckpt.inspect(fastckpt.encode(cur, reference=prev))["tensors"]
    assert all(t["direction"] is None for t in info)


@given(st.data())
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_with_any_values(data):
    """Whatever the weights and moments hold (NaN, Inf, subnormals, -0.0, odd sizes), a
    tensor coded against its Adam-direction prediction decodes bit-exactly."""
    n = data.draw(st.integers(1024, 3000))
    elems = st.one_of(st.floats(width=32), st.sampled_from(list(F32_SPECIALS)))
    w0 = data.draw(hnp.arrays(np.float32, n, elements=elems))
    m = data.draw(hnp.arrays(np.float32, n, elements=elems))
    v = data.draw(hnp.arrays(np.float32, n, elements=elems))
    w1 = data.draw(hnp.arrays(np.float32, n, elements=elems))
    step = data.draw(st.sampled_from([1e-12, -2e-4, 0.5, 1e12]))
    prev, cur = _checkpoint(w0, m, v), _checkpoint(w1, m, v)
    specs, structure, _owners = fastckpt._prepare(cur)
    # Force the direction whatever the fit says, to cover every value; chunks of 256
    # words, each coded against its share of the prediction.
    raw_m, raw_v = m.view(np.uint8), v.view(np.uint8)
    refs = {"model/emb.weight": ("prev", "model/emb.weight", w0.view(np.uint8))}
    directions = [("optim/state/0/exp_avg", "optim/state/0/exp_avg_sq", step, raw_m, raw_v)
                  if s[0] == "model/emb.weight" else None for s in specs]
    core_refs = fastckpt._explicit_references(specs, refs)
    blob = _core.encode(specs, structure, None, 1024, None, core_refs, directions=directions)
    assert _bits_equal(fastckpt.decode(blob, references={"prev": prev}), cur)
    # The same chunks as coding against the whole prediction made beforehand.
    out = np.empty(4 * n, dtype=np.uint8)
    _core.direction_predict(w0.view(np.uint8), raw_m, raw_v, step, out)
    whole = fastckpt._explicit_references(specs, {"model/emb.weight": ("prev", "x", out)})
    # (Unless the tensor equals the prediction: then it is stored as "same" against it.)
    plain = _core.encode(specs, structure, None, 1024, None, whole)
    if fastckpt.inspect(plain)["tensors"][0]["codec"] == "predicted":
        coded = sum(t["compressed_bytes"] for t in fastckpt.inspect(blob)["tensors"])
        assert coded == sum(t["compressed_bytes"] for t in fastckpt.inspect(plain)["tensors"])
        assert blob[-coded:] == plain[-coded:]  # the data section ends the file


def test_wrong_or_missing_moments_raise(monkeypatch):
    prev, cur = _adam_pair()
    data = fastckpt.encode(cur, reference=prev)
    assert fastckpt.inspect(data)["tensors"][0]["direction"] is not None
    bad = copy.deepcopy(prev)
    bad["optim"]["state"][0]["exp_avg"][5] += 1.0
    with pytest.raises(fastckpt.ReferenceMismatch):
        fastckpt.decode(data, reference=bad)
    with pytest.raises(fastckpt.ReferenceMismatch, match="optim/state/0/exp_avg"):
        fastckpt.decode(data, reference={"model": prev["model"]})
    short = copy.deepcopy(prev)
    short["optim"]["state"][0]["exp_avg_sq"] = short["optim"]["state"][0]["exp_avg_sq"][:-1]
    with pytest.raises(fastckpt.ReferenceMismatch, match="differs in size"):
        fastckpt.decode(data, reference=short)


def test_read_tensor_makes_the_prediction_from_the_reference(tmp_path):
    """One tensor read alone, threads 1 or 2, over chunks smaller than the tensor: each
    chunk decodes against its share of the prediction, from the caller's buffers (never
    changed)."""
    prev, cur = _adam_pair()
    before = copy.deepcopy(prev)
    data = fastckpt.encode(cur, reference=prev, chunk_bytes=4096)
    assert fastckpt.inspect(data)["tensors"][0]["chunks"] > 10
    for threads in (1, 2):
        w = fastckpt.read_tensor(data, "model/emb.weight", reference=prev, threads=threads)
        assert np.array_equal(w.view(np.uint32), cur["model"]["emb.weight"].view(np.uint32))
    assert _bits_equal(prev, before)


def test_lossy_tensors_never_take_a_direction():
    prev, cur = _adam_pair()
    data = fastckpt.encode(cur, reference=prev, mode="near_lossless", error_bound=1e-3)
    assert all(t["direction"] is None for t in fastckpt.inspect(data)["tensors"])


def test_store_chain_uses_and_restores_directions(tmp_path):
    prev, cur = _adam_pair()
    store = fastckpt.Store(tmp_path / "s")
    store.save(1, prev)
    store.save(2, cur)
    codecs = {t["name"]: t for t in store.info(2)["tensors"]}
    assert codecs["model/emb.weight"]["codec"] == "predicted"
    assert _bits_equal(store.load(2), cur) and _bits_equal(store.load(1), prev)


def test_moments_pair_weights_by_shape_in_order_across_param_groups():
    f = np.float32
    z = lambda *s: np.zeros(s, dtype=f)  # noqa: E731
    leaves = {
        "model/bias": z(4), "model/a.weight": z(3, 4), "model/ids": np.zeros(3, np.int64),
        "model/b.weight": z(3, 4), "model/ln": z(4), "model/c.weight": z(5, 4),
        # decay group (2-D weights) first, then no-decay (bias, ln)
        **{f"optim/state/{i}/{k}": z(*s) for i, s in enumerate([(3, 4), (3, 4), (5, 4), (4,), (4,)])
           for k in ("exp_avg", "exp_avg_sq")},
    }
    got = _adam.moments(leaves)
    assert got == {
        "model/a.weight": ("optim/state/0/exp_avg", "optim/state/0/exp_avg_sq"),
        "model/b.weight": ("optim/state/1/exp_avg", "optim/state/1/exp_avg_sq"),
        "model/c.weight": ("optim/state/2/exp_avg", "optim/state/2/exp_avg_sq"),
        "model/bias": ("optim/state/3/exp_avg", "optim/state/3/exp_avg_sq"),
        "model/ln": ("optim/state/4/exp_avg", "optim/state/4/exp_avg_sq"),
    }
    # A shape whose counts differ (a state missing) is left unpaired, the rest kept.
    del leaves["optim/state/1/exp_avg"]
    got = _adam.moments(leaves)
    assert "model/a.weight" not in got and "model/b.weight" not in got
    assert got["model/c.weight"][0] == "optim/state/2/exp_avg"
    # Tied weights (one array under two names, one optimizer state) pair once.
    tied = z(6, 4)
    leaves = {"model/emb": tied, "model/head": tied, "model/other": z(6, 4)[:, :],
              "optim/state/0/exp_avg": z(6, 4), "optim/state/0/exp_avg_sq": z(6, 4),
              "optim/state/1/exp_avg": z(6, 4), "optim/state/1/exp_avg_sq": z(6, 4)}
    got = _adam.moments(leaves)
    assert got == {"model/emb": ("optim/state/0/exp_avg", "optim/state/0/exp_avg_sq"),
                   "model/other": ("optim/state/1/exp_avg", "optim/state/1/exp_avg_sq")}
    assert _adam.moments({"w": z(3)}) == {}
    assert _adam.moments({"state/0/exp_avg": z(3), "state/0/exp_avg_sq": z(3)}) == {}


def test_trained_model_round_trip():
    """A real torch model trained with AdamW: its embedding moves along Adam's direction."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    vocab, dim = 2048, 32
    emb, head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)
    head.weight = emb.weight  # tied, as in a language model's head
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    snaps = []
    for t in range(60):
        tokens = torch.randint(0, vocab, (128,))
        loss = torch.nn.functional.cross_entropy(head(emb(tokens)), (tokens + 1) % vocab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t + 1 in (40, 60):
            snaps.append(copy.deepcopy({"model": model.state_dict(), "optim": opt.state_dict()}))
    prev, cur = snaps
    data = fastckpt.encode(cur, reference=prev)
    back = fastckpt.decode(data, reference=prev)
    assert _bits_equal(back, cur)
    info = {t["name"]: t for t in fastckpt.inspect(data)["tensors"]}
    assert info["model/emb.weight"]["direction"] is not None


def test_cli_inspect_shows_the_direction(tmp_path, capsys):
    from fastckpt.__main__ import main

    prev, cur = _adam_pair()
    path = tmp_path / "x.fckpt"
    fastckpt.save(cur, path, reference=prev)
    assert main(["inspect", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "model/emb.weight" in x)
    assert "predicted [adam direction, step -0.0003" in line
