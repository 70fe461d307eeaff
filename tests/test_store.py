"""fastckpt.Store: a directory of checkpoints coded against their predecessors. Exact loads
of every step (weights, optimizer state, param_groups), keyframes and chains, delete and gc,
crash consistency, a concurrent reader, metadata."""

import copy
import inspect
import os
import subprocess
import sys
import textwrap
import threading
import time

import fastckpt
import numpy as np
import pytest
from fastckpt import _core

torch = pytest.importorskip("torch")

STEPS = 8


def _train() -> list:
    """Checkpoints (deep copies) of a tiny model trained with AdamW, one per step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.Tanh(), torch.nn.Linear(96, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    states = []
    for step in range(STEPS):
        x = torch.randn(16, 32)
        loss = (model(x) - x[:, :8]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        states.append(copy.deepcopy(_ckpt(model, opt, step)))
    return states


def _ckpt(model, opt, step: int) -> dict:
    return {"model": model.state_dict(), "optim": opt.state_dict(), "step": step}


@pytest.fixture(scope="module")
def states() -> list:
    return _train()


@pytest.fixture
def store(tmp_path, states):
    """A store with all steps, saved from live tensors that are mutated after each save."""
    s = fastckpt.Store(tmp_path / "run", keyframe_every=3)
    live = copy.deepcopy(states[0])
    for step, state in enumerate(states):
        _overwrite(live, state)  # the "training loop" mutates the saved tensors in place
        s.save(step, live, {"loss": 1.0 / (step + 1), "tag": f"s{step}"})
    _overwrite(live, states[0])
    return s


def _overwrite(dst, src) -> None:
    """Copies `src` into the tensors of `dst` in place (same structure)."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, dict):
        for k in dst:
            if isinstance(dst[k], (dict, list, torch.Tensor)):
                _overwrite(dst[k], src[k])
            else:
                dst[k] = src[k]
    elif isinstance(dst, list):
        for i, v in enumerate(dst):
            if isinstance(v, (dict, list, torch.Tensor)):
                _overwrite(v, src[i])
            else:
                dst[i] = src[i]


def _assert_same(a, b, where="") -> None:
    """Same structure and values; tensors and arrays compared bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert type(a) is type(b) and a == b, where


def _assert_all_load(store, states, steps) -> None:
    fresh = fastckpt.Store(store.path)  # no cache: decodes each chain from its keyframe
    for s in (store, fresh):
        for step in reversed(steps):
            _assert_same(states[step], s.load(step), f"step {step}")


def test_every_step_loads_bit_exactly(store, states):
    assert store.steps() == list(range(STEPS)) and len(store) == STEPS
    assert store.latest() == STEPS - 1 and 3 in store and STEPS not in store
    _assert_all_load(store, states, list(range(STEPS)))
    back = store.load(5)
    model = torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.Tanh(), torch.nn.Linear(96, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    model.load_state_dict(back["model"])
    opt.load_state_dict(back["optim"])
    assert opt.state_dict()["param_groups"] == states[5]["optim"]["param_groups"]


def test_info_shows_keyframes_and_chain(store):
    infos = [store.info(s) for s in store.steps()]
    assert [i["keyframe"] for i in infos] == [s % 3 == 0 for s in range(STEPS)]
    assert [i["depth"] for i in infos] == [s % 3 for s in range(STEPS)]
    assert [i["reference"] for i in infos] == [None if s % 3 == 0 else s - 1
                                               for s in range(STEPS)]
    assert infos[4]["file"] == "step_000000004.fckpt"
    assert infos[4]["metadata"] == {"loss": 0.2, "tag": "s4"}
    assert infos[4]["raw_bytes"] > infos[4]["compressed_bytes"] > 0


def test_predicted_steps_are_smaller_than_keyframes(store):
    for step in store.steps():
        info = store.info(step)
        weights = [t for t in info["tensors"] if t["name"].endswith(".weight")]
        if info["keyframe"]:
            assert all(t["codec"] == "planes" for t in info["tensors"])
            continue
        # Tensors below the core's size for prediction are coded standalone.
        small = [t for t in weights if t["raw_bytes"] // 4 < _core.MIN_PREDICTED_WORDS]
        weights = [t for t in weights if t not in small]
        assert all(t["codec"] == "planes" and t["reference"] is None for t in small)
        assert weights and all(t["codec"] == "predicted" for t in weights), step
        assert weights[0]["reference"]["checkpoint"] == store.info(step - 1)["file"]
        keyframe = store.info(step - info["depth"])
        assert info["compressed_bytes"] < keyframe["compressed_bytes"]
        assert info["file_bytes"] < keyframe["file_bytes"]


def test_delete_middle_step_reencodes_its_dependant(store, states):
    old_file = store.info(5)["file"]
    store.delete(4)
    assert 4 not in store and store.steps() == [0, 1, 2, 3, 5, 6, 7]
    info = store.info(5)
    assert (info["reference"], info["depth"], info["keyframe"]) == (3, 1, False)
    assert info["file"] != old_file and info["metadata"] == {"loss": 1 / 6, "tag": "s5"}
    names = set(os.listdir(store.path))
    assert old_file not in names and "step_000000004.fckpt" not in names
    _assert_all_load(store, states, store.steps())


def test_delete_keyframe_promotes_its_dependant(store, states):
    store.delete(3)
    i4, i5 = store.info(4), store.info(5)
    assert (i4["keyframe"], i4["reference"], i4["depth"]) == (True, None, 0)
    assert (i5["reference"], i5["depth"]) == (4, 1)
    store.delete(7)  # a leaf: nothing to re-encode
    store.delete(0)
    assert store.info(1)["keyframe"] and store.info(2)["depth"] == 1
    _assert_all_load(store, states, store.steps())
    with pytest.raises(KeyError):
        store.delete(3)


def test_gc_removes_orphans_and_temps(store, states):
    orphan = os.path.join(store.path, "step_000000099.fckpt")
    fastckpt.save(states[0], orphan)
    temp = os.path.join(store.path, ".fastckpt-abc.tmp")
    with open(temp, "wb") as f:
        f.write(b"x" * 100)
    keep = os.path.join(store.path, "notes.txt")
    open(keep, "w").close()
    assert 99 not in store
    expected = os.path.getsize(orphan) + 100
    assert store.gc() == expected
    assert not os.path.exists(orphan) and not os.path.exists(temp) and os.path.exists(keep)
    assert store.gc() == 0
    _assert_all_load(store, states, [0, 4, 7])


def test_crash_during_manifest_write_keeps_old_steps(store, states, monkeypatch):
    real_replace = os.replace

    def crashing_replace(src, dst):
        if os.fspath(dst).endswith("manifest.json"):
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated"):
        store.save(STEPS, states[-1])
    with pytest.raises(OSError, match="simulated"):
        store.delete(4)
    monkeypatch.setattr(os, "replace", real_replace)
    assert store.steps() == list(range(STEPS)) and store.info(5)["reference"] == 4
    _assert_all_load(store, states, list(range(STEPS)))
    assert any(n.startswith("step_00000000") and ".g" in n for n in os.listdir(store.path))
    assert store.gc() > 0  # the unreferenced new files of the failed save and delete
    assert sorted(os.listdir(store.path)) == sorted(
        [".lock", "manifest.json"] + [store.info(s)["file"] for s in store.steps()])
    store.save(STEPS, states[-1])
    _assert_same(states[-1], store.load(STEPS))


def test_replacing_steps(store, states):
    with pytest.raises(ValueError, match="reference"):
        store.save(4, states[0])
    old = store.info(STEPS - 1)["file"]
    store.save(STEPS - 1, states[2], {"replaced": True})  # nothing depends on the last step
    info = store.info(STEPS - 1)
    assert info["file"] != old and not os.path.exists(os.path.join(store.path, old))
    assert info["metadata"] == {"replaced": True}
    _assert_same(states[2], store.load(STEPS - 1))
    with pytest.raises(ValueError):
        store.save(-1, states[0])
    with pytest.raises(TypeError):
        store.save(100, states[0], metadata={"x": object()})
    assert 100 not in store


def _arrays(step: int) -> dict:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(4096).astype(np.float32)
    drift = np.float32(1e-4) * step * np.abs(w)
    return {"w": w + drift, "n": np.arange(step + 1, dtype=np.int64), "meta": {"step": step}}


def test_max_chain_and_out_of_order_steps(tmp_path):
    s = fastckpt.Store(tmp_path, keyframe_every=100, max_chain=2)
    for step in range(0, 60, 10):
        s.save(step, _arrays(step), {"i": step})
    assert [s.info(k)["keyframe"] for k in s.steps()] == [True, False, False, True, False, False]
    s.save(15, _arrays(15))  # between 10 and 20: references 10; 20 is untouched
    assert (s.info(15)["reference"], s.info(15)["depth"]) == (10, 2)
    assert s.info(20)["reference"] == 10
    s.save(25, _arrays(25))  # 20 already has depth 2: a keyframe
    assert s.info(25)["keyframe"] and s.info(25)["reference"] is None
    for step in s.steps():
        _assert_same(_arrays(step), s.load(step))
        assert step in (15, 25) or s.info(step)["metadata"] == {"i": step}


def test_reader_thread_sees_writer_steps(tmp_path):
    writer = fastckpt.Store(tmp_path, keyframe_every=3)
    reader = fastckpt.Store(tmp_path)
    n, seen = 12, set()

    def write() -> None:
        for step in range(n):
            writer.save(step, _arrays(step))
            if step == 6:
                writer.delete(4)  # re-encodes step 5 under the reader's feet

    t = threading.Thread(target=write)
    t.start()
    while True:
        done = not t.is_alive()
        for step in reader.steps()[-3:]:
            try:
                got = reader.load(step)
            except KeyError:
                assert step == 4  # listed, then deleted by the writer before we loaded it
                continue
            _assert_same(_arrays(step), got)
            seen.add(step)
        if done:
            break
        time.sleep(0.005)
    t.join()
    assert reader.steps() == [s for s in range(n) if s != 4] and n - 1 in seen


def test_reader_process_sees_writer_steps(tmp_path):
    script = "import numpy as np, fastckpt\n" + inspect.getsource(_arrays) + textwrap.dedent(f"""
        s = fastckpt.Store({str(tmp_path)!r}, keyframe_every=4)
        for step in range(10):
            s.save(step, _arrays(step))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    reader, checked = fastckpt.Store(tmp_path), set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for step in reader.steps():
            if step not in checked:
                _assert_same(_arrays(step), reader.load(step))
                checked.add(step)
        if proc.poll() is not None and len(checked) == len(reader):
            break
        time.sleep(0.01)
    assert proc.wait(timeout=60) == 0
    assert checked == set(range(10)) and reader.info(9)["depth"] == 1


def test_saves_and_loads_reuse_cached_decodes(tmp_path, monkeypatch):
    calls = []
    real_decode = fastckpt._materialize  # every decode of a file goes through it

    def counting_decode(*args, **kwargs):
        calls.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(fastckpt, "_materialize", counting_decode)
    s = fastckpt.Store(tmp_path, keyframe_every=4)
    for step in range(6):
        s.save(step, _arrays(step))
    assert calls == []  # each save's reference is the cached copy of the previous one
    fresh = fastckpt.Store(tmp_path)
    fresh.load(3)
    assert len(calls) == 4  # keyframe 0, then 1, 2, 3
    calls.clear()
    mine = fresh.load(3)
    assert len(calls) == 1  # step 2 was cached
    mine["w"][:] = 0  # the caller's copy: the store's cache is unaffected
    _assert_same(_arrays(3), fresh.load(3))
    _assert_same(_arrays(5), fresh.load(5))


def test_saves_and_loads_free_what_the_cache_would_evict_before_coding(tmp_path, monkeypatch):
    """With two cached checkpoints, a chain of saves or loads holds the reference and the new
    checkpoint, not also the one before it: what the cache would evict after a save or load
    is evicted before its coding starts (its memory serves the new one), and the cache ends
    with the same two checkpoints."""
    s = fastckpt.Store(tmp_path, keyframe_every=10, cache_size=2)
    during = []

    def cached():
        return sorted(k[0] for k in s._cache._items)

    real_save, real_decode = fastckpt._save, fastckpt._materialize
    monkeypatch.setattr(fastckpt, "_save",
                        lambda *a, **k: (during.append(cached()), real_save(*a, **k))[1])
    monkeypatch.setattr(fastckpt, "_materialize",
                        lambda *a, **k: (during.append(cached()), real_decode(*a, **k))[1])
    for step in range(4):
        s.save(step, _arrays(step))
    assert during == [[], [0], [1], [2]] and cached() == [2, 3]
    during.clear()
    s = fastckpt.Store(tmp_path, cache_size=2)
    for step in range(4):
        _assert_same(_arrays(step), s.load(step))
    assert during == [[], [0], [1], [2]] and cached() == [2, 3]
    during.clear()
    _assert_same(_arrays(1), s.load(1))  # a step behind the cache: its chain is decoded
    assert during == [[3], [0]] and cached() == [0, 1]


def test_a_damaged_cached_reference_is_an_error_never_other_data(tmp_path):
    """Loads trust the store's own cached decodes as references (no hash pass first); if one
    were damaged in memory, each chunk's check of the decoded bytes still refuses it."""
    s = fastckpt.Store(tmp_path, keyframe_every=10)
    for step in range(3):
        s.save(step, _arrays(step))
    fresh = fastckpt.Store(tmp_path)
    _assert_same(_arrays(1), fresh.load(1))
    for cached in list(fresh._cache._items.values()):
        cached["w"][100] += np.float32(1.0)  # damage the private twin of step 1 (and 0)
    with pytest.raises(fastckpt.CorruptCheckpoint):
        fresh.load(2)
    _assert_same(_arrays(2), fastckpt.Store(tmp_path).load(2))


@pytest.mark.parametrize("mode", ["lossless", "near_lossless"])
def test_store_without_cache_saves_and_loads_every_step(tmp_path, mode):
    """cache_size=0 keeps no decoded checkpoint: each save decodes its reference from the
    files and each load decodes its chain, with the same results."""
    coding = {} if mode == "lossless" else {"mode": mode, "error_bound": 1e-3}
    s = fastckpt.Store(tmp_path, keyframe_every=3, cache_size=0)
    for step in range(5):
        s.save(step, _arrays(step), **coding)
    assert s._cache._items == {}
    fresh = fastckpt.Store(tmp_path, cache_size=0)
    for step in range(5):
        got = fresh.load(step)
        if mode == "lossless":
            _assert_same(_arrays(step), got)
        else:
            assert np.abs(got["w"] - _arrays(step)["w"]).max() <= 1e-2
            assert got["meta"] == {"step": step}
