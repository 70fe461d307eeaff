"""Decoded outputs cut from one huge-page mapping per top-level key (`_tensors.empty_all`)."""

from __future__ import annotations

import gc

import fastckpt
import numpy as np
import pytest
import torch
from fastckpt import _memory
from safetensors.torch import load_file, save_file

MIB = 1 << 20


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "big": torch.randn(1536, 1024, generator=g),  # 6 MiB
        "half": torch.randn(700, 300, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "flags": torch.rand(33, generator=g) > 0.5,
        "ids": torch.arange(17, dtype=torch.int64),
        "z": torch.randn(5, generator=g).to(torch.complex64),
    }


def _extent(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.data_ptr() + s.nbytes()


def test_outputs_are_exact_and_own_disjoint_storages():
    sd = _state()
    out = fastckpt.decode(fastckpt.encode(sd))
    assert list(out) == list(sd)
    spans = []
    for k, t in sd.items():
        assert out[k].dtype == t.dtype and out[k].shape == t.shape
        assert torch.equal(out[k], t), k
        assert out[k].untyped_storage().nbytes() == t.numel() * t.element_size(), k
        if t.numel():
            spans.append(_extent(out[k]))
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(start % 64 == 0 for start, _ in spans)


def test_outputs_outlive_the_decode_and_are_independent():
    sd = _state(1)
    out = fastckpt.decode(fastckpt.encode(sd))
    gc.collect()
    out["ids"] += 1
    out["big"].zero_()
    assert torch.equal(out["ids"], sd["ids"] + 1)
    assert torch.equal(out["half"], sd["half"])
    assert float(out["big"].abs().sum()) == 0.0


def test_outputs_work_with_safetensors_and_torch_serialization(tmp_path):
    sd = {k: v for k, v in _state(2).items() if k != "z"}  # safetensors has no complex
    out = fastckpt.decode(fastckpt.encode(sd))
    save_file(out, str(tmp_path / "x.safetensors"))  # would refuse shared storages
    back = load_file(str(tmp_path / "x.safetensors"))
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    torch.save(out, tmp_path / "x.pt")
    again = torch.load(tmp_path / "x.pt")
    assert all(torch.equal(again[k], sd[k]) for k in sd)


def test_one_mapping_per_top_level_key_and_small_groups_stay_separate():
    g = np.random.default_rng(3)
    obj = {
        "model": {"w": g.standard_normal((1024, 1024), dtype=np.float32),
                  "b": g.standard_normal(1024, dtype=np.float32)},
        "optim": {"m": g.standard_normal((1024, 1024), dtype=np.float32),
                  "v": g.standard_normal((1024, 1024), dtype=np.float32)},
        "small": {"x": np.arange(10, dtype=np.int32)},
    }
    out = fastckpt.decode(fastckpt.encode(obj))
    for top, inner in obj.items():
        for k, a in inner.items():
            assert np.array_equal(out[top][k], a) and out[top][k].flags.writeable
    model, optim = _memory.mapping_of(out["model"]["w"]), _memory.mapping_of(out["optim"]["m"])
    assert model is not None and optim is not None and optim is not model
    assert _memory.mapping_of(out["model"]["b"]) is model
    assert _memory.mapping_of(out["optim"]["v"]) is optim
    assert not _memory.is_mapped(out["small"]["x"])


def test_arena_outputs_cannot_be_resized_in_place_but_clones_can():
    sd = {"w": torch.randn(2 * MIB), "v": torch.randn(2 * MIB)}
    out = fastckpt.decode(fastckpt.encode(sd))
    grown = out["v"].clone().resize_(4 * MIB)
    assert torch.equal(grown[: 2 * MIB], sd["v"])
    with pytest.raises(RuntimeError, match="not resizable"):
        out["w"].resize_(4 * MIB)
    # torch leaves the failed tensor's sizes changed: `w` must not be read after this.
    assert torch.equal(out["v"], sd["v"])


def test_files_are_read_into_huge_page_buffers(tmp_path):
    sd = {"w": torch.randn(2 * MIB)}
    fastckpt.save(sd, tmp_path / "w.fckpt")
    buf = fastckpt._read_file(tmp_path / "w.fckpt")
    assert _memory.is_mapped(buf) and buf.flags.writeable
    assert bytes(buf) == (tmp_path / "w.fckpt").read_bytes()
    assert torch.equal(fastckpt.load(tmp_path / "w.fckpt")["w"], sd["w"])


def test_fresh_buffers_start_on_huge_page_boundaries():
    for n in (0, 1, _memory.HUGE_MIN_BYTES - 1):
        assert len(_memory.fresh(n)) == n and not _memory.is_mapped(_memory.fresh(n))
    for n in (_memory.HUGE_MIN_BYTES, 9 * MIB + 3):
        a = _memory.fresh(n)
        assert len(a) == n and a.ctypes.data % (2 * MIB) == 0 and _memory.is_mapped(a)
        a[:] = 7
        assert int(a.sum()) == 7 * n
