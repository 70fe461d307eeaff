"""Command line: `python -m fastckpt {demo,inspect,verify,compress,decompress}`."""

from __future__ import annotations

import argparse
import json
import sys
import time

import fastckpt


def _demo(args: argparse.Namespace) -> int:
    """Compresses the real all-MiniLM-L6-v2 weights, prints ratio and speed, verifies."""
    from .demo import run_demo

    return run_demo(threads=args.threads, runs=args.runs)


def _inspect(args: argparse.Namespace) -> int:
    info = fastckpt.inspect(args.file)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"fastckpt format v{info['version']}: {len(info['tensors'])} tensors, "
          f"{info['raw_bytes']} raw bytes -> {info['compressed_bytes']} "
          f"({info['compressed_bytes'] / max(info['raw_bytes'], 1):.4f})"
          + ("  NEAR-LOSSLESS (lossy tensors decode within their stated bounds)"
             if info["lossy"] else ""))
    for t in info["tensors"]:
        ratio = t["compressed_bytes"] / max(t["raw_bytes"], 1)
        print(f"  {t['name']:<60} {t['dtype']:<10} {str(list(t['shape'])):<16} {ratio:.4f} "
              f"{t['codec']}{_direction_note(t)}{_lossy_note(t)}")
    return 0


def _direction_note(t: dict) -> str:
    """A predicted tensor coded against its Adam-direction prediction: the step."""
    d = t.get("direction")
    return f" [adam direction, step {d[2]:.4g}]" if d else ""


def _lossy_note(t: dict) -> str:
    """What a near-lossless tensor's params say: class, bound, pruning, measured error."""
    if not t["lossy"]:
        return ""
    p = t["params"]
    pruned = f", PRUNED {p['prune']:.0%} (<= {p['prune_threshold']:.3g})" if p["prune"] else ""
    return (f" [{p['class']}: e={p['error_bound']:g} (|err| <= {p['bound']:.3g}){pruned}, "
            f"max err {p['max_abs_error']:.3g}]")


def _verify(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    fastckpt.load(args.file, threads=args.threads, lossy_ok=True)
    lossy = " (near-lossless: values within their stated bounds)" if fastckpt.inspect(
        args.file)["lossy"] else ""
    print(f"{args.file}: OK (every chunk checksum verified){lossy} in "
          f"{time.perf_counter() - t0:.3f}s")
    return 0


def _compress(args: argparse.Namespace) -> int:
    fastckpt.safetensors.compress_file(args.src, args.dst, threads=args.threads)
    return _inspect(argparse.Namespace(file=args.dst, json=False))


def _decompress(args: argparse.Namespace) -> int:
    fastckpt.safetensors.decompress_file(args.src, args.dst, threads=args.threads)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fastckpt` command."""
    p = argparse.ArgumentParser(prog="fastckpt", description=fastckpt.__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all)")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="compress the bundled MiniLM checkpoint, print ratio/speed")
    d.add_argument("--runs", type=int, default=3)
    d.set_defaults(fn=_demo)
    i = sub.add_parser("inspect", help="list a checkpoint's tensors and sizes")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=_inspect)
    v = sub.add_parser("verify", help="decode everything and check every checksum")
    v.add_argument("file")
    v.set_defaults(fn=_verify)
    c = sub.add_parser("compress", help=".safetensors -> fastckpt file")
    c.add_argument("src")
    c.add_argument("dst")
    c.set_defaults(fn=_compress)
    x = sub.add_parser("decompress", help="fastckpt file (from compress) -> .safetensors")
    x.add_argument("src")
    x.add_argument("dst")
    x.set_defaults(fn=_decompress)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (fastckpt.FastckptError, OSError) as e:
        print(f"fastckpt: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
