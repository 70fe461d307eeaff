"""Shared by the benchmark harnesses: the environment a result was measured in."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time

import numpy as np
import torch


def environment(runs: int, **extra) -> dict:
    """Versions, machine and load, plus `extra`, for a results JSON file."""
    import zstandard

    meta = {
        **extra,
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "zstandard": zstandard.__version__,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    for pkg in ("zipnn", "fastckpt"):
        try:
            meta[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            meta[pkg] = None
    return meta


def fastckpt_module(tries: int = 6, wait_s: float = 10.0):
    """Import fastckpt, retrying while its compiled part is being rebuilt; exit if it fails."""
    for attempt in range(tries):
        try:
            import fastckpt

            return fastckpt
        except Exception as exc:  # a rebuild in progress shows up as any import error
            print(f"[retry] import fastckpt failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            if attempt == tries - 1:
                sys.exit("fastckpt is not importable")
            time.sleep(wait_s)
    return None


def tensor_class(name: str, is_float: bool) -> str:
    """weights (float tensors under "model"), exp_avg, exp_avg_sq, or other."""
    if name.startswith("model/") and is_float:
        return "weights"
    if name.endswith("/exp_avg"):
        return "exp_avg"
    if name.endswith("/exp_avg_sq"):
        return "exp_avg_sq"
    return "other"


def flatten(obj, prefix: str = ""):
    """Yield ``(name, tensor)`` for every tensor, named by its '/'-joined key path (the names
    fastckpt gives them)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{prefix}/{i}" if prefix else str(i))


def without_tensors(obj):
    """The structure with every tensor replaced by None (to compare the non-tensor leaves)."""
    if isinstance(obj, torch.Tensor):
        return None
    if isinstance(obj, dict):
        return {k: without_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(without_tensors(v) for v in obj)
    return obj
