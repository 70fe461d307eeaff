"""Prediction benchmark: checkpoint coded against the previous one, on real training trajectories.

Run as ``python benches/bench_prediction.py [--runs 3] [--out benches/out] [--pairs N]
[--traj DIR ...]``.

For consecutive checkpoints (prev, cur) of each trajectory (made by ``benches/trajectories.py``,
regenerated when missing), the size of ``cur`` is measured per tensor class (weights, exp_avg,
exp_avg_sq, and all tensors) with five codecs side by side: fastckpt standalone, fastckpt
predicted from ``prev``, zipnn standalone, zipnn's delta mode (XOR against ``prev``) and zstd
level 3 on the byte planes of the XOR residual. Ratio is compressed / raw bytes (lower is
better). Encode/decode speeds of the whole checkpoint (fastckpt standalone and predicted, zipnn
delta; 1 thread and all threads) are the median of ``--runs`` interleaved runs after an untimed
warm-up that checks the round trip bit for bit; predicted against standalone, the median of
the per-round ratios is checked against the speed target. Finally every checkpoint of each
trajectory is saved and loaded back in order with ``fastckpt.Store`` (each one predicted
from the previous one) and with ``torch.save`` / ``torch.load``. Writes ``prediction.md``,
``prediction.json`` and ``prediction.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _env import environment, fastckpt_module, flatten, tensor_class, without_tensors

MB = 1e6
HERE = Path(__file__).resolve().parent
CLASSES = ("weights", "exp_avg", "exp_avg_sq", "other")  # a partition of the tensors
REPORT_CLASSES = ("weights", "exp_avg", "exp_avg_sq", "all")
CODECS = ("fastckpt", "fastckpt-pred", "zipnn", "zipnn-delta", "zstd3-xor")
DELTA_PEERS = ("zipnn-delta", "zstd3-xor")
TARGET_CLASSES = ("weights", "exp_avg_sq")
TARGET_MARGIN = 0.08  # fastckpt-pred must be this much smaller than the best delta peer
SPEED_TARGET = 0.75  # fastckpt-pred's throughput must be at least this share of standalone's
DEFAULT_TRAJECTORIES = {  # folder name under --out: arguments of benches/trajectories.py
    "traj_minilm": ["--model", "minilm", "--steps", "200", "--every", "20"],
    "traj_gpt": ["--model", "gpt", "--steps", "300", "--every", "30"],
}
ZIPNN_DTYPE = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# --------------------------------------------------------------------------- data




def checkpoint_paths(folder: Path) -> list[Path]:
    """The ``step_*.pt`` files of a trajectory folder, in step order."""
    return sorted(folder.glob("step_*.pt"))


def ensure_trajectory(folder: Path) -> list[Path]:
    """Checkpoint paths of ``folder``; a default trajectory is regenerated when missing."""
    paths = checkpoint_paths(folder)
    if len(paths) >= 2:
        return paths
    extra = DEFAULT_TRAJECTORIES.get(folder.name)
    if extra is None:
        sys.exit(f"{folder}: fewer than two step_*.pt checkpoints and no recipe to make them")
    cmd = [sys.executable, str(HERE / "trajectories.py"), *extra, "--out", str(folder)]
    print("regenerating:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return checkpoint_paths(folder)


def load_ckpt(path: Path) -> dict:
    """One trajectory checkpoint: ``{"model", "optim", "step", "loss"}``."""
    return torch.load(path, weights_only=True)








def u8(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as a flat uint8 tensor."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def same_checkpoint(a, b) -> bool:
    """True when both objects have the same structure, leaves and tensor bytes."""
    ta, tb = list(flatten(a)), list(flatten(b))
    if [n for n, _ in ta] != [n for n, _ in tb] or without_tensors(a) != without_tensors(b):
        return False
    for (_, x), (_, y) in zip(ta, tb):
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(u8(x), u8(y)):
            return False
    return True


def raw_tensor_bytes(ckpt) -> int:
    """Total raw bytes of all tensors of a checkpoint."""
    return sum(t.numel() * t.element_size() for _, t in flatten(ckpt))


# --------------------------------------------------------------------------- class buffers


@dataclass
class ClassData:
    """Concatenated raw bytes of one tensor class of ``cur``, and the aligned bytes of ``prev``."""

    cur: np.ndarray
    prev: np.ndarray
    word: int  # bytes per word for the byte planes (1 when the class mixes element sizes)
    zipnn_dtype: str


def zipnn_dtype(tensors: list[torch.Tensor], nbytes: int) -> str:
    """zipnn's ``bytearray_dtype`` for a class: its float dtype, else by alignment."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) == 1 and next(iter(dtypes)) in ZIPNN_DTYPE:
        return ZIPNN_DTYPE[next(iter(dtypes))]
    return "float32" if nbytes % 4 == 0 else "bfloat16"


def aligned_prev(name: str, t: torch.Tensor, prev: dict) -> np.ndarray:
    """Bytes of prev's same-named tensor (same dtype and shape), else zeros."""
    p = prev.get(name)
    if p is None or p.dtype != t.dtype or p.shape != t.shape:
        return np.zeros(t.numel() * t.element_size(), dtype=np.uint8)
    return u8(p).numpy()


def class_data(cur, prev) -> dict[str, ClassData]:
    """Per class: concatenated bytes of cur's tensors and of prev's matching tensors."""
    prev_by_name = dict(flatten(prev))
    groups: dict[str, list] = {c: [] for c in CLASSES}
    for name, t in flatten(cur):
        groups[tensor_class(name, t.is_floating_point())].append((name, t))
    out = {}
    for cls, items in groups.items():
        tensors = [t for _, t in items]
        cur_buf = np.concatenate([u8(t).numpy() for t in tensors] or [np.zeros(0, np.uint8)])
        prev_buf = np.concatenate(
            [aligned_prev(n, t, prev_by_name) for n, t in items] or [np.zeros(0, np.uint8)]
        )
        sizes = {t.element_size() for t in tensors}
        word = sizes.pop() if len(sizes) == 1 else 1
        out[cls] = ClassData(cur_buf, prev_buf, word, zipnn_dtype(tensors, cur_buf.size))
    return out


# --------------------------------------------------------------------------- sizes


def fastckpt_class_sizes(fc, blob: bytes) -> dict[str, int]:
    """Compressed bytes per class from ``fastckpt.inspect``; "all" is the whole file."""
    sizes = dict.fromkeys(CLASSES, 0)
    for t in fc.inspect(blob)["tensors"]:
        is_float = t["dtype"].startswith(("float", "bfloat"))
        sizes[tensor_class(t["name"], is_float)] += t["compressed_bytes"]
    sizes["all"] = len(blob)
    return sizes


def zipnn_size(cd: ClassData, delta: bool) -> int:
    """zipnn 0.5.4 compressed size of a class, standalone or in delta (XOR) mode."""
    from zipnn import ZipNN

    if cd.cur.size == 0:
        return 0
    if delta:
        z = ZipNN(input_format="byte", bytearray_dtype=cd.zipnn_dtype, delta_compressed_type="byte")
        return len(z.compress(bytearray(cd.cur), delta_second_data=bytearray(cd.prev)))
    z = ZipNN(input_format="byte", bytearray_dtype=cd.zipnn_dtype)
    return len(z.compress(bytearray(cd.cur)))


def byte_planes(buf: np.ndarray, word: int) -> np.ndarray:
    """Bytes regrouped by significance: all byte-0s of the words, then all byte-1s, ..."""
    if word == 1:
        return buf
    return np.ascontiguousarray(buf.reshape(-1, word).T).reshape(-1)


def xor_residual(cd: ClassData) -> np.ndarray:
    """cur XOR prev, as words of the class's element size, viewed as bytes."""
    utype = UINT_OF_SIZE[cd.word]
    return np.bitwise_xor(cd.cur.view(utype), cd.prev.view(utype)).view(np.uint8)


def zstd_xor_size(cd: ClassData) -> int:
    """zstd level 3 (one thread) on the byte planes of the XOR residual."""
    import zstandard

    if cd.cur.size == 0:
        return 0
    planes = byte_planes(xor_residual(cd), cd.word)
    return len(zstandard.ZstdCompressor(level=3).compress(planes.tobytes()))


def with_all(sizes: dict[str, int]) -> dict[str, int]:
    """Add "all" as the sum over the partition of classes."""
    return {**sizes, "all": sum(sizes[c] for c in CLASSES)}


def pair_sizes(fc, prev, cur, ref_id: str) -> dict[str, dict[str, int]]:
    """Raw and compressed bytes per class for every codec, for one (prev, cur) pair."""
    data = class_data(cur, prev)
    out = {"raw": with_all({c: int(d.cur.size) for c, d in data.items()})}
    out["fastckpt"] = fastckpt_class_sizes(fc, fc.encode(cur))
    pred = fc.encode(cur, reference=prev, reference_id=ref_id)
    out["fastckpt-pred"] = fastckpt_class_sizes(fc, pred)
    out["zipnn"] = with_all({c: zipnn_size(d, delta=False) for c, d in data.items()})
    out["zipnn-delta"] = with_all({c: zipnn_size(d, delta=True) for c, d in data.items()})
    out["zstd3-xor"] = with_all({c: zstd_xor_size(d) for c, d in data.items()})
    return out


def aggregate(pairs: list[dict]) -> dict[str, dict[str, float]]:
    """Ratio per codec and class over all pairs (sum of compressed / sum of raw bytes)."""
    raw = {c: sum(p["sizes"]["raw"][c] for p in pairs) for c in REPORT_CLASSES}
    return {
        codec: {c: sum(p["sizes"][codec][c] for p in pairs) / raw[c] for c in REPORT_CLASSES}
        for codec in CODECS
    }


# --------------------------------------------------------------------------- timing


def timed_call(fn, arg):
    """``(wall seconds, result)`` of one ``fn(arg)`` call, with the garbage collector paused.

    The result is freed after the timer stops, so freeing it is not timed.
    """
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn(arg)
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def timed(fn, arg) -> float:
    """Wall seconds of one ``fn(arg)`` call (see ``timed_call``)."""
    return timed_call(fn, arg)[0]


class Case:
    """One timed configuration: ``encode(prepare())`` and ``decode(blob)``, checked once."""

    def __init__(self, name: str, threads: int, raw_bytes: int, prepare, encode, decode, check):
        self.name, self.threads, self.raw_bytes = name, threads, raw_bytes
        self.prepare, self.encode, self.decode, self.check = prepare, encode, decode, check
        self.blob = None
        self.enc: list[float] = []
        self.dec: list[float] = []

    def warm_up(self) -> None:
        """Untimed encode + decode; checks the round trip is bit-exact."""
        self.blob = self.encode(self.prepare())
        if not self.check(self.decode(self.blob)):
            raise AssertionError(f"{self.name}: round trip is not bit-exact")

    def run_once(self) -> None:
        """One timed encode (input prepared outside the timer) and one timed decode, each
        after an untimed fresh buffer of the raw size is written and freed (as in
        bench_minilm: the previous call's freed memory is not charged to the next)."""
        inp = self.prepare()
        np.ones(self.raw_bytes, dtype=np.uint8)
        self.enc.append(timed(self.encode, inp))
        np.ones(self.raw_bytes, dtype=np.uint8)
        self.dec.append(timed(self.decode, self.blob))

    def row(self) -> dict:
        """Result row: ratio, median seconds, median MB/s."""
        enc, dec = statistics.median(self.enc), statistics.median(self.dec)
        return {
            "codec": self.name,
            "threads": self.threads,
            "raw_bytes": self.raw_bytes,
            "compressed_bytes": len(self.blob),
            "ratio": len(self.blob) / self.raw_bytes,
            "encode_s": enc,
            "decode_s": dec,
            "encode_mbps": self.raw_bytes / MB / enc,
            "decode_mbps": self.raw_bytes / MB / dec,
        }


def fastckpt_case(fc, prev, cur, threads: int) -> Case:
    """fastckpt encode/decode of the whole checkpoint, standalone (prev None) or predicted."""
    name = "fastckpt" if prev is None else "fastckpt-pred"
    return Case(
        name,
        threads,
        raw_tensor_bytes(cur),
        lambda: cur,
        lambda obj: fc.encode(obj, reference=prev, reference_id="prev", threads=threads),
        lambda blob: fc.decode(blob, reference=prev, threads=threads),
        lambda out: same_checkpoint(cur, out),
    )


def zipnn_delta_case(prev, cur, threads: int) -> Case:
    """zipnn delta mode on all tensors of the checkpoint, concatenated (XOR against prev)."""
    from zipnn import ZipNN

    cur_buf = np.concatenate([u8(t).numpy() for _, t in flatten(cur)]).tobytes()
    prev_buf = np.concatenate([u8(t).numpy() for _, t in flatten(prev)]).tobytes()
    kw = {"input_format": "byte", "bytearray_dtype": "float32", "threads": threads}
    comp = ZipNN(delta_compressed_type="byte", **kw)
    decomp = ZipNN(delta_compressed_type="byte", **kw)
    return Case(
        "zipnn-delta",
        threads,
        len(cur_buf),
        lambda: (bytearray(cur_buf), bytearray(prev_buf)),
        lambda bufs: comp.compress(bufs[0], delta_second_data=bufs[1]),
        lambda blob: decomp.decompress(blob, delta_second_data=prev_buf),
        lambda out: bytes(out) == cur_buf,
    )


def speed_shares(cases: list[Case]) -> list[dict]:
    """Predicted throughput as a share of standalone's, per thread count: the median over
    the rounds of (standalone seconds / predicted seconds), both timed in each round, so
    that the machine's drift between rounds cancels."""
    shares = []
    for t in sorted({c.threads for c in cases}):
        sa = next(c for c in cases if c.name == "fastckpt" and c.threads == t)
        pred = next(c for c in cases if c.name == "fastckpt-pred" and c.threads == t)
        enc = statistics.median(a / b for a, b in zip(sa.enc, pred.enc))
        dec = statistics.median(a / b for a, b in zip(sa.dec, pred.dec))
        met = min(enc, dec) >= SPEED_TARGET
        shares.append({"threads": t, "encode_share": enc, "decode_share": dec, "met": met})
    return shares


def bench_speed(fc, prev, cur, thread_counts, runs: int) -> tuple[list[dict], list[dict]]:
    """Encode/decode speed of the whole checkpoint, runs interleaved over all cases: the
    rows of every case and the predicted-to-standalone shares (``speed_shares``)."""
    cases = []
    for threads in thread_counts:
        cases += [fastckpt_case(fc, None, cur, threads), fastckpt_case(fc, prev, cur, threads)]
        cases.append(zipnn_delta_case(prev, cur, threads))
    for case in cases:
        case.warm_up()
    for _ in range(runs):
        for case in cases:
            case.run_once()
    rows = [case.row() for case in cases]
    for r in rows:
        print(
            f"    {r['codec']:13s} t={r['threads']}: ratio {r['ratio']:.4f}  "
            f"enc {r['encode_mbps']:7.1f} MB/s  dec {r['decode_mbps']:7.1f} MB/s",
            flush=True,
        )
    return rows, speed_shares(cases)


# --------------------------------------------------------------------------- store vs torch


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files directly in ``folder``."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class FastckptWriter:
    """Saves/loads a trajectory with ``fastckpt.Store`` or, without it, chained ``save``."""

    def __init__(self, fc, folder: Path, n: int):
        self.fc, self.folder, self.prev = fc, folder, None
        self.use_store = hasattr(fc, "Store")
        self.method = "fastckpt.Store" if self.use_store else "fastckpt.save(reference=prev)"
        self.store = fc.Store(folder, keyframe_every=n) if self.use_store else None

    def save(self, step: int, ckpt) -> None:
        """Save one checkpoint (predicted from the previous one)."""
        if self.use_store:
            self.store.save(step, ckpt)
        else:
            path = self.folder / f"step_{step:09d}.fckpt"
            self.fc.save(ckpt, path, reference=self.prev, reference_id=f"step_{step}")
            self.prev = ckpt

    def reopen(self) -> None:
        """Forget all in-memory state, as a new process reading the folder would."""
        self.prev = None
        if self.use_store:
            self.store = self.fc.Store(self.folder, keyframe_every=self.store.keyframe_every)

    def load(self, step: int):
        """Load one checkpoint (steps in order)."""
        if self.use_store:
            return self.store.load(step)
        out = self.fc.load(self.folder / f"step_{step:09d}.fckpt", reference=self.prev)
        self.prev = out
        return out


def torch_save_fsync(ckpt, path: Path) -> tuple[float, float]:
    """Seconds of ``torch.save`` into an open file, and of the flush + fsync after it."""
    with open(path, "wb") as f:
        t_save = timed(lambda obj: torch.save(obj, f), ckpt)
        t_sync = timed(lambda fh: (fh.flush(), os.fsync(fh.fileno())), f)
    return t_save, t_sync


def save_all(fc, paths: list[Path], fc_dir: Path, pt_dir: Path) -> tuple[FastckptWriter, dict]:
    """Save every checkpoint with fastckpt and torch (inputs loaded outside the timers)."""
    writer = FastckptWriter(fc, fc_dir, len(paths))
    t = {"fastckpt_save_s": 0.0, "torch_save_s": 0.0, "torch_fsync_s": 0.0}
    for path in paths:
        ckpt = load_ckpt(path)
        t["fastckpt_save_s"] += timed(lambda obj, s=ckpt["step"]: writer.save(s, obj), ckpt)
        t_save, t_sync = torch_save_fsync(ckpt, pt_dir / path.name)
        t["torch_save_s"] += t_save
        t["torch_fsync_s"] += t_sync
        del ckpt
    return writer, t


def load_all(writer: FastckptWriter, paths: list[Path], pt_dir: Path) -> dict:
    """Load every checkpoint back in order with both; checks they agree bit for bit."""
    writer.reopen()
    t = {"fastckpt_load_s": 0.0, "torch_load_s": 0.0}
    for path in paths:
        secs, pt = timed_call(load_ckpt, pt_dir / path.name)
        t["torch_load_s"] += secs
        secs, back = timed_call(writer.load, pt["step"])
        t["fastckpt_load_s"] += secs
        if not same_checkpoint(pt, back):
            raise AssertionError(f"{writer.method}: step {pt['step']} does not load back exactly")
        del pt, back
    return t


def store_vs_torch(fc, paths: list[Path]) -> dict:
    """Whole-trajectory save and load times and bytes on disk: fastckpt vs torch.save."""
    raw = raw_tensor_bytes(load_ckpt(paths[0])) * len(paths)
    with tempfile.TemporaryDirectory(prefix="bench_prediction-") as tmp:
        fc_dir, pt_dir = Path(tmp) / "fastckpt", Path(tmp) / "torch"
        fc_dir.mkdir()
        pt_dir.mkdir()
        writer, saves = save_all(fc, paths, fc_dir, pt_dir)
        loads = load_all(writer, paths, pt_dir)
        sizes = {"fastckpt_bytes": folder_bytes(fc_dir), "torch_bytes": folder_bytes(pt_dir)}
    out = {"method": writer.method, "checkpoints": len(paths), "raw_tensor_bytes": raw}
    out.update(saves)
    out.update(loads)
    out.update(sizes)
    print(
        f"    store: {writer.method} save {saves['fastckpt_save_s']:.2f}s load "
        f"{loads['fastckpt_load_s']:.2f}s {sizes['fastckpt_bytes'] / MB:.1f} MB | torch save "
        f"{saves['torch_save_s']:.2f}s (+fsync {saves['torch_fsync_s']:.2f}s) load "
        f"{loads['torch_load_s']:.2f}s {sizes['torch_bytes'] / MB:.1f} MB",
        flush=True,
    )
    return out


# --------------------------------------------------------------------------- targets


def pair_margin(sizes: dict, cls: str) -> float:
    """1 - fastckpt-pred / best delta peer, for one class of one pair (or aggregate ratios)."""
    best = min(sizes[p][cls] for p in DELTA_PEERS)
    return 1.0 - sizes["fastckpt-pred"][cls] / best


def targets(pairs: list[dict], ratios: dict) -> dict:
    """Per target class: aggregate and worst-pair margins, and prediction never worse."""
    out = {}
    for cls in TARGET_CLASSES:
        margins = [pair_margin(p["sizes"], cls) for p in pairs]
        never_worse = all(
            p["sizes"]["fastckpt-pred"][cls] <= p["sizes"]["fastckpt"][cls] for p in pairs
        )
        margin = pair_margin(ratios, cls)
        out[cls] = {
            "margin": margin,
            "worst_pair_margin": min(margins),
            "best_peer": min(DELTA_PEERS, key=lambda p, c=cls: ratios[p][c]),
            "never_worse_than_standalone": never_worse,
            "met": margin >= TARGET_MARGIN and min(margins) >= TARGET_MARGIN and never_worse,
        }
    return out


# --------------------------------------------------------------------------- reporting


def ratio_table(ratios: dict, raw: dict) -> str:
    """Class x codec ratios as a markdown table, with the margin over the best delta peer."""
    head = ["class", "raw MB", *CODECS, "pred vs best delta peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in REPORT_CLASSES:
        cells = [c, f"{raw[c] / MB:.1f}", *(f"{ratios[k][c]:.4f}" for k in CODECS)]
        cells.append(f"{100 * pair_margin(ratios, c):+.1f}% smaller")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(rows: list[dict]) -> str:
    """Encode/decode speeds as a markdown table."""
    head = ["codec", "threads", "ratio", "encode MB/s", "decode MB/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["codec"], str(r["threads"]), f"{r['ratio']:.4f}"]
        cells += [f"{r['encode_mbps']:.1f}", f"{r['decode_mbps']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def store_table(s: dict) -> str:
    """Whole-trajectory save/load of fastckpt vs torch.save as a markdown table."""
    head = ["writer", "save s", "load s", "save MB/s", "load MB/s", "bytes on disk", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    raw = s["raw_tensor_bytes"]
    torch_save = s["torch_save_s"] + s["torch_fsync_s"]
    rows = [
        (s["method"], s["fastckpt_save_s"], s["fastckpt_load_s"], s["fastckpt_bytes"]),
        ("torch.save + fsync / torch.load", torch_save, s["torch_load_s"], s["torch_bytes"]),
    ]
    for name, save, load, nbytes in rows:
        cells = [name, f"{save:.2f}", f"{load:.2f}", f"{raw / MB / save:.1f}"]
        cells += [f"{raw / MB / load:.1f}", f"{nbytes / MB:.1f} MB", f"{nbytes / raw:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(name: str, t: dict) -> str:
    """The ratio target check of one trajectory as markdown bullets."""
    lines = []
    for cls, r in t.items():
        verdict = "MET" if r["met"] else "NOT MET"
        lines.append(
            f"- {name} {cls}: fastckpt-pred is {100 * r['margin']:.1f}% smaller than the best "
            f"delta peer ({r['best_peer']}; worst pair {100 * r['worst_pair_margin']:.1f}%), "
            f"never worse than standalone: {r['never_worse_than_standalone']} -> {verdict} "
            f"(target >= {100 * TARGET_MARGIN:.0f}%)"
        )
    return "\n".join(lines)


def speed_lines(shares: list[dict]) -> str:
    """The speed target check of one trajectory as markdown bullets."""
    return "\n".join(
        f"- fastckpt-pred at {s['threads']} thread(s): encode {100 * s['encode_share']:.1f}%, "
        f"decode {100 * s['decode_share']:.1f}% of standalone's throughput (median of per-round "
        f"ratios) -> {'MET' if s['met'] else 'NOT MET'} (target >= {100 * SPEED_TARGET:.0f}%)"
        for s in shares
    )


def trajectory_section(res: dict) -> str:
    """Markdown section of one trajectory."""
    steps = [p["step"] for p in res["pairs"]]
    head = (
        f"### {res['name']} ({res['params'] / 1e6:.1f}M params, {res['checkpoints']} "
        f"checkpoints; {len(steps)} pairs, cur steps {steps[0]}..{steps[-1]})"
    )
    return "\n\n".join(
        [
            head,
            "Ratio (compressed / raw, summed over the pairs; lower is better):",
            ratio_table(res["ratios"], res["raw"]),
            target_lines(res["name"], res["targets"]),
            f"Speed (whole checkpoint, last pair, median of {res['runs']}):",
            speed_table(res["speed"]),
            speed_lines(res["speed_shares"]),
            "Whole trajectory, saved then loaded back in order:",
            store_table(res["store"]),
        ]
    )


def write_plot(results: list[dict], path: Path) -> None:
    """One panel per trajectory: ratio per class (groups) and codec (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(8 * len(results), 5), squeeze=False)
    width = 0.8 / len(CODECS)
    for ax, res in zip(axes[0], results):
        for i, codec in enumerate(CODECS):
            xs = [j + (i - (len(CODECS) - 1) / 2) * width for j in range(len(REPORT_CLASSES))]
            vals = [res["ratios"][codec][c] for c in REPORT_CLASSES]
            bars = ax.bar(xs, vals, width, label=codec)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(range(len(REPORT_CLASSES)), REPORT_CLASSES)
        ax.set_ylabel("compressed / raw (lower is better)")
        ax.set_title(f"{res['name']}: checkpoint given the previous one")
        ax.set_ylim(0, 1.2)
        ax.legend(fontsize=8, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def measure_pairs(fc, paths: list[Path], pairs: int | None):
    """Sizes of every measured (prev, cur) pair; also returns the last pair's checkpoints."""
    start = 1 if pairs is None else max(1, len(paths) - pairs)
    prev, out, last = load_ckpt(paths[start - 1]), [], None
    for path in paths[start:]:
        cur = load_ckpt(path)
        sizes = pair_sizes(fc, prev, cur, f"step_{prev['step']}")
        out.append({"prev_step": prev["step"], "step": cur["step"], "sizes": sizes})
        margins = ", ".join(f"{c} {100 * pair_margin(sizes, c):+.1f}%" for c in TARGET_CLASSES)
        print(f"    pair {prev['step']}->{cur['step']}: pred vs best delta peer {margins}")
        prev, last = cur, (prev, cur)
    return out, last


def bench_trajectory(fc, folder: Path, args, thread_counts) -> dict:
    """All measurements of one trajectory."""
    paths = ensure_trajectory(folder)
    print(f"{folder.name}: {len(paths)} checkpoints", flush=True)
    pairs, (prev, cur) = measure_pairs(fc, paths, args.pairs)
    ratios = aggregate(pairs)
    res = {
        "name": folder.name,
        "folder": str(folder),
        "checkpoints": len(paths),
        "params": sum(t.numel() for t in cur["model"].values() if t.is_floating_point()),
        "runs": args.runs,
        "pairs": pairs,
        "raw": {c: sum(p["sizes"]["raw"][c] for p in pairs) for c in REPORT_CLASSES},
        "ratios": ratios,
        "targets": targets(pairs, ratios),
    }
    res["speed"], res["speed_shares"] = bench_speed(fc, prev, cur, thread_counts, args.runs)
    del prev, cur
    res["store"] = store_vs_torch(fc, paths)
    return res


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--out", type=Path, default=Path("benches/out"), help="output folder")
    p.add_argument("--pairs", type=int, default=None, help="only the last N pairs (default all)")
    p.add_argument(
        "--traj",
        type=Path,
        action="append",
        help="trajectory folder (repeatable; default: OUT/traj_minilm and OUT/traj_gpt)",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.pairs is not None and args.pairs < 1:
        p.error("--pairs must be >= 1")
    return args


def main(argv=None) -> int:
    """Run the benchmark and write the reports."""
    args = parse_args(argv)
    fc = fastckpt_module()
    folders = args.traj or [args.out / name for name in DEFAULT_TRAJECTORIES]
    thread_counts = sorted({1, os.cpu_count() or 1})
    results = [bench_trajectory(fc, folder, args, thread_counts) for folder in folders]
    text = "\n\n".join(trajectory_section(r) for r in results)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prediction.md").write_text(text + "\n")
    report = {"meta": environment(args.runs), "trajectories": results}
    (args.out / "prediction.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(results, args.out / "prediction.png")
    print(f"\nwrote {args.out}/prediction.md, prediction.json, prediction.png")
    met = all(t["met"] for r in results for t in r["targets"].values())
    print("ratio targets:", "all met" if met else "NOT all met")
    fast = all(s["met"] for r in results for s in r["speed_shares"])
    print("speed targets:", "all met" if fast else "NOT all met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
