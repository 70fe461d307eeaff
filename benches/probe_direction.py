"""Probe: what the Adam-direction reference gains per tensor, with the real coder.

Run from the repository root on two checkpoints of a ``trajectories.py`` trajectory::

    python benches/probe_direction.py DIR/step_000180.pt DIR/step_000200.pt

For every float32 weight that ``fastckpt._adam.moments`` pairs with its optimizer moments
(and that is large enough to be predicted), it prints the sampled fit's R^2 (what the encoder
decides on), and the coded bits per word of the tensor predicted from the previous checkpoint
itself (``w0``) and from the Adam-direction prediction ``w0 + step * m / (sqrt(v) + eps)``
(every paired tensor forced through it), so the encoder's threshold ``_adam.MIN_R2`` can be
checked against what each tensor really gains. Both files are encoded with ``fastckpt.encode``;
nothing is estimated.
"""

from __future__ import annotations

import argparse

import fastckpt
import torch
from fastckpt import _adam, _core, _tensors


def coded_bits(cur, prev, min_r2: float) -> dict[str, int]:
    """Coded bytes per tensor of `cur` against `prev`, with `_adam.MIN_R2 = min_r2`."""
    saved = _adam.MIN_R2
    _adam.MIN_R2 = min_r2
    try:
        info = fastckpt.inspect(fastckpt.encode(cur, reference=prev))["tensors"]
    finally:
        _adam.MIN_R2 = saved
    return {t["name"]: 8 * t["compressed_bytes"] for t in info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prev", help="reference checkpoint (.pt with model and optimizer state)")
    ap.add_argument("cur", help="checkpoint coded against it")
    args = ap.parse_args()
    prev = torch.load(args.prev, weights_only=False)
    cur = torch.load(args.cur, weights_only=False)
    before, after = fastckpt._leaves_by_name(prev), fastckpt._leaves_by_name(cur)
    plain, forced = coded_bits(cur, prev, 2.0), coded_bits(cur, prev, -1.0)
    raw = lambda t: _tensors.to_raw(t)[3]  # noqa: E731
    rows = []
    for name, (m, v) in _adam.moments(before).items():
        n = before[name].numel()
        if n < _core.MIN_PREDICTED_WORDS or name not in after:
            continue
        _step, r2 = _core.direction_fit(raw(before[name]), raw(after[name]), raw(before[m]),
                                        raw(before[v]), _adam.SAMPLE_WORDS, 1)
        rows.append((r2, name, n, plain[name] / n, forced[name] / n))
    print("| sampled R^2 | words | bits/word from w0 | from the direction | tensor |")
    print("|---|---|---|---|---|")
    for r2, name, n, b0, b1 in sorted(rows, reverse=True):
        print(f"| {r2:.3f} | {n} | {b0:.2f} | {b1:.2f} | {name} |")
    print(f"\nencoder threshold: R^2 >= {_adam.MIN_R2}")


if __name__ == "__main__":
    main()
