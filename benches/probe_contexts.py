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

A second table asks the same of better *predictions* (a reference other than w_0 itself):
the whole residual's bits per word (symbol under the exponent context of the prediction,
plus the raw bits below the leading 1) against

* ``previous``: w_0, what the coder predicts from;
* ``extrapolated``: ``w_0 + a (w_0 - w_-1)``, a second-order prediction from two references;
* ``adam m0``: ``w_0 + c u_0``, ``u = m / (sqrt(v) + 1e-8)`` the Adam direction in w_0's
  checkpoint (the reference's: a decoder has it before decoding anything);
* ``adam m1``: ``w_0 + c u_1``, the Adam direction in w_1's own checkpoint;
* ``adam m1, m0``: ``w_0 + c_1 u_1 + c_0 u_0``, with w_0's checkpoint's direction as well;

each computed in float32 with the coefficients fitted per tensor by least squares on the
true change (an oracle's choice, which a coder would store per tensor: optimistic by a few
bytes per tensor).
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


def exponent_context(reference: np.ndarray) -> np.ndarray:
    """The coder's context of each float32 reference word: its exponent below the
    tensor's largest, capped at 15."""
    e = ((reference.view(np.uint32) >> 23) & 0xFF).astype(np.int64)
    return np.clip(e.max() - e, 0, 15)


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
        exponent = exponent_context(w0)
        alone = conditional_entropy(symbol, exponent)
        base += alone
        previous += conditional_entropy(symbol, exponent, bit_length(residual(w0, wm)))
        state = states.get(name)
        adam += conditional_entropy(symbol, exponent, adam_context(state)) if state else alone
        words += z.size
    return base, previous, adam, words


def residual_bits(cur: np.ndarray, prediction: np.ndarray) -> float:
    """Bits of the residual of ``cur`` against ``prediction`` (float32 words): its symbol
    order-0 under the prediction's exponent context, plus the raw bits below the leading 1."""
    z = residual(cur, prediction)
    n = bit_length(z)
    symbol_bits = conditional_entropy(n * 2 + (z & 1), exponent_context(prediction))
    return symbol_bits + float(np.maximum(n - 1, 0).sum())


def adam_direction(state: dict) -> np.ndarray:
    """``m / (sqrt(v) + 1e-8)`` per word, in float64."""
    m, v = (state[k].numpy().ravel().astype(np.float64) for k in ("exp_avg", "exp_avg_sq"))
    return m / (np.sqrt(v) + 1e-8)


def fitted(w0: np.ndarray, change: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    """``w0 + sum(c_i x_i)`` in float32, the ``c_i`` the least-squares fit of ``change``."""
    x = np.stack(inputs, 1)
    coef = np.linalg.lstsq(x, change, rcond=None)[0]
    step = sum(np.float32(c) * i.astype(np.float32) for c, i in zip(coef, inputs))
    return (w0 + step).astype(np.float32)


def predictors(prev: dict, ref: dict, cur: dict, min_size: int) -> tuple[np.ndarray, int]:
    """Residual bits against the five predictions of the module doc (summed over the
    tensors that have Adam state in both checkpoints), and the words counted."""
    bits = np.zeros(5)
    words = 0
    s1, s0 = adam_state(cur), adam_state(ref)
    for name, t in cur["model"].items():
        models = (cur["model"], ref["model"], prev["model"])
        if (t.dtype != torch.float32 or t.numel() < min_size or name not in s1
                or name not in s0 or any(name not in x for x in models)):
            continue
        w1, w0, wm = (x[name].numpy().ravel() for x in models)
        change = w1.astype(np.float64) - w0
        u1, u0 = adam_direction(s1[name]), adam_direction(s0[name])
        refs = (w0, fitted(w0, change, w0.astype(np.float64) - wm), fitted(w0, change, u0),
                fitted(w0, change, u1), fitted(w0, change, u1, u0))
        bits += [residual_bits(w1, r) for r in refs]
        words += w1.size
    return bits, words


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
    print()
    print("| pair | previous bits/word | extrapolated | adam m0 | adam m1 | adam m1, m0 "
          "| best saving |")
    print("|---|---|---|---|---|---|---|")
    for i in range(2, len(files)):
        bits, words = predictors(load[i - 2], load[i - 1], load[i], args.min_size)
        pair = f"{os.path.basename(files[i - 1])} -> {os.path.basename(files[i])}"
        cells = " | ".join(f"{b / words:.3f}" for b in bits)
        print(f"| {pair} | {cells} | {(1 - bits[1:].min() / bits[0]) * 100:.1f}% |")


if __name__ == "__main__":
    main()
