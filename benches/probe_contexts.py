"""Probe: how much two contexts the coder lacks would save on weight residuals.

Run from the repository root on a trajectory of ``trajectories.py``::

    python benches/probe_contexts.py DIR [--min-size 4096]

For every three consecutive checkpoints (w_-1, w_0, w_1) of ``DIR`` and every float32 model
tensor of at least ``--min-size`` elements, it takes the residual fastckpt's predicted coder
codes for w_1 against w_0 (the zigzagged difference of the order-preserving integer images)
and reports, per word, the empirical conditional entropy of its symbol (bit length and sign;
the bits below the leading 1 are raw either way) given

* ``exponent``: the coder's context, the reference's exponent below the tensor's largest
  (capped at 15);
* ``+previous``: that and the bit length of the previous pair's residual (w_0 against
  w_-1), a second reference the coder does not have;
* ``+adam``: the exponent context and ``floor(log2(|m_1| / sqrt(v_1)))`` (capped to 0..8
  from 2^-8), ``m_1`` and ``v_1`` the parameter's ``exp_avg`` and ``exp_avg_sq`` in w_1's own
  checkpoint (a side context from two tensors, which the codec's side contexts do not
  have). Parameters are matched to their optimizer state by ``param_groups`` order and
  shape, as ``trajectories.py`` builds the groups (matrices, then vectors); tensors left
  unmatched count with the exponent context alone in this column.

and the savings over ``exponent`` in bits per word. Order-0 entropies of the whole tensor:
a lower bound for an adaptive coder with those contexts, so a saving is an upper bound of
what such a context would gain.
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


def adam_state(ck: dict) -> dict:
    """Parameter name -> its optimizer state, matched by ``param_groups`` order and shape
    (matrices first, then vectors, each in the model's order; tied tensors once)."""
    model, optim = ck["model"], ck["optim"]
    names, seen = [], set()
    for matrices in (True, False):
        for k, t in model.items():
            if (t.dim() >= 2) == matrices and t.data_ptr() not in seen:
                names.append(k)
                seen.add(t.data_ptr())
    out, j = {}, 0
    for i in (i for g in optim["param_groups"] for i in g["params"]):
        state = optim["state"].get(i)
        if state is None:
            continue
        while j < len(names) and model[names[j]].shape != state["exp_avg"].shape:
            j += 1
        if j == len(names):
            break
        out[names[j]] = state
        j += 1
    return out


def adam_context(state: dict) -> np.ndarray:
    """``floor(log2(|m| / sqrt(v)))`` per word, shifted and capped to 0..8."""
    m, v = (state[k].numpy().ravel().astype(np.float64) for k in ("exp_avg", "exp_avg_sq"))
    ratio = np.abs(m) / (np.sqrt(v) + 1e-12)
    return np.clip(np.floor(np.log2(ratio + 1e-9)) + 8, 0, 8).astype(np.int64)


def probe(prev: dict, ref: dict, cur: dict, min_size: int) -> tuple[float, float, float, int]:
    """Bits of the symbols under the three context sets, and the words counted."""
    base = previous = adam = 0.0
    words = 0
    states = adam_state(cur)
    for name, t in cur["model"].items():
        models = (cur["model"], ref["model"], prev["model"])
        if t.dtype != torch.float32 or t.numel() < min_size or any(name not in x for x in models):
            continue
        w1, w0, wm = (x[name].numpy().ravel() for x in models)
        z = residual(w1, w0)
        symbol = bit_length(z) * 2 + (z & 1)
        e = ((w0.view(np.uint32) >> 23) & 0xFF).astype(np.int64)
        exponent = np.clip(e.max() - e, 0, 15)
        alone = conditional_entropy(symbol, exponent)
        base += alone
        previous += conditional_entropy(symbol, exponent, bit_length(residual(w0, wm)))
        state = states.get(name)
        adam += conditional_entropy(symbol, exponent, adam_context(state)) if state else alone
        words += z.size
    return base, previous, adam, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--min-size", type=int, default=4096)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.dir, "step_*.pt")))
    load = [torch.load(f, weights_only=False) for f in files]
    print("| pair | exponent bits/word | +previous | saving | +adam | saving |")
    print("|---|---|---|---|---|---|")
    for i in range(2, len(files)):
        base, previous, adam, words = probe(load[i - 2], load[i - 1], load[i], args.min_size)
        pair = f"{os.path.basename(files[i - 1])} -> {os.path.basename(files[i])}"
        cells = [base, previous, base - previous, adam, base - adam]
        print(f"| {pair} | " + " | ".join(f"{c / words:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
