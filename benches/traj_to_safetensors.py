"""Exports checkpoints made by ``trajectories.py`` to safetensors files (fp32 tensors only)
for the Rust speed probe ``cargo run --release --example predict_speed -- PREV CUR``.

Run from the repository root::

    python benches/traj_to_safetensors.py DIR/step_000010.pt DIR/step_000020.pt --out OUTDIR

Tensor names: ``model/<key>`` for weights, ``optim/<param index>/<exp_avg|exp_avg_sq>``
for the AdamW state (0-d step counters are skipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file


def flatten(ckpt: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's float32 tensors with at least one dimension, by name."""
    out = {f"model/{k}": v for k, v in ckpt["model"].items()}
    for i, st in ckpt["optim"]["state"].items():
        for k, v in st.items():
            out[f"optim/{i}/{k}"] = v
    return {k: v.contiguous() for k, v in out.items() if v.dtype == torch.float32 and v.dim() > 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in args.checkpoints:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        dst = args.out / (p.stem + ".safetensors")
        save_file(flatten(ckpt), str(dst))
        print(dst)


if __name__ == "__main__":
    main()
