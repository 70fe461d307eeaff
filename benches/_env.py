"""Shared by the benchmark harnesses: the environment a result was measured in."""

from __future__ import annotations

import importlib.metadata
import os
import platform

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
