"""Probe: how much a context from the previous pair's change would save on weight residuals.

Run from the repository root on a trajectory of ``trajectories.py``::

    python benches/probe_contexts.py DIR [--min-size 4096]

For every three consecutive checkpoints (w_-1, w_0, w_1) of ``DIR`` and every float32 model
tensor of at least ``--min-size`` elements, it takes the residual fastckpt's predicted coder
codes for w_1 against w_0 (the zigzagged difference of the order-preserving integer images)
and reports, per word, the empirical conditional entropy of its symbol (bit length and sign;
the bits below the leading 1 are raw either way) given

* ``exponent``: the coder's context, the reference's exponent below the tensor's largest
  (capped at 15);
* ``exponent+previous``: that and the bit length of the previous pair's residual (w_0
  against w_-1), a second reference the coder does not have;

and the saving of the second over the first in bits per word. Order-0 entropies of the
whole tensor: a lower bound for an adaptive coder with those contexts, so the saving is an
upper bound of what such a context would gain.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import torch


def ordered(a: np.ndarray) -> np.ndarray:
    """Order-preserving integer images of float32 words (as int64)."""
    u = a.view(np.uint32).astype(np.int64)
    return np.where(u >> 31 == 1, (1 << 32) - 1 - u, u + (1 << 31))


def bit_length(z: np.ndarray) -> np.ndarray:
    """Bit length of each non-negative integer (0 for 0)."""
    n = np.zeros(z.shape, dtype=np.int64)
    z = z.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = z >= (1 << shift)
        n[big] += shift
        z[big] >>= shift
    return n + (z > 0)


def residual(cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Zigzagged difference of the integer images, as the predicted coder forms it."""
    d = ordered(cur) - ordered(ref)
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def conditional_entropy(symbol: np.ndarray, *context: np.ndarray) -> float:
    """Total bits of ``symbol`` coded order-0 per distinct ``context`` value."""

    def joint(cols: list[np.ndarray]) -> float:
        key = np.zeros(cols[0].shape, dtype=np.int64)
        for c in cols:
            key = key * 4096 + c
        _, counts = np.unique(key, return_counts=True)
        return float(-(counts * np.log2(counts / counts.sum())).sum())

    return joint([symbol, *context]) - (joint(list(context)) if context else 0.0)


def probe(prev: dict, ref: dict, cur: dict, min_size: int) -> tuple[float, float, int]:
    """Bits of the symbols under both context sets, and the words counted."""
    base = extra = 0.0
    words = 0
    for name, t in cur.items():
        if t.dtype != torch.float32 or t.numel() < min_size or name not in ref or name not in prev:
            continue
        w1, w0, wm = (x[name].numpy().ravel() for x in (cur, ref, prev))
        z = residual(w1, w0)
        symbol = bit_length(z) * 2 + (z & 1)
        e = ((w0.view(np.uint32) >> 23) & 0xFF).astype(np.int64)
        exponent = np.clip(e.max() - e, 0, 15)
        previous = bit_length(residual(w0, wm))
        base += conditional_entropy(symbol, exponent)
        extra += conditional_entropy(symbol, exponent, previous)
        words += z.size
    return base, extra, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--min-size", type=int, default=4096)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.dir, "step_*.pt")))
    load = [torch.load(f, weights_only=False)["model"] for f in files]
    print("| pair | exponent bits/word | exponent+previous | saving |")
    print("|---|---|---|---|")
    for i in range(2, len(files)):
        base, extra, words = probe(load[i - 2], load[i - 1], load[i], args.min_size)
        pair = f"{os.path.basename(files[i - 1])} -> {os.path.basename(files[i])}"
        cells = (base / words, extra / words, (base - extra) / words)
        print(f"| {pair} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
