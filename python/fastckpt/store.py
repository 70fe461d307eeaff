"""A directory of checkpoints of a training run, each coded against the previous one.

    store = fastckpt.Store("ckpts", keyframe_every=10)
    store.save(step, {"model": model.state_dict(), "optim": opt.state_dict()}, {"loss": 0.3})
    state = store.load(store.latest())

Every `keyframe_every`-th save is a keyframe, coded standalone; every other save is coded
with `fastckpt.save(..., reference=...)` against the decoded previous step (closed loop: the
reference is exactly what a reader decodes). Loading a step decodes its keyframe and walks
the chain of references forward.

On-disk layout (POSIX):

    manifest.json                 the only source of truth: {"format", "version", "generation",
                                  "since_keyframe", "steps": {"<step>": entry}}
    step_000000123.fckpt          a step's checkpoint file (first write of that step)
    step_000000123.g17.fckpt      a rewritten step (replaced, or re-encoded by `delete`): the
                                  suffix is the manifest generation that committed it
    .lock                         flock(2)ed by writers (save, delete, gc)
    .fastckpt-*.tmp, .manifest-*.tmp   temporaries of an interrupted write (removed by `gc`)

Consistency: checkpoint files are written atomically and fsynced before the manifest that
names them is replaced atomically (temp file, fsync, os.replace, directory fsync); files are
never modified in place, and files that the manifest stops naming are unlinked only after it
is committed. A crash therefore leaves the previous or the new manifest, both naming only
complete files; leftovers are ignored and removed by `gc`. Readers re-read the manifest on
every call, check each file against the fingerprint its entry records (and fastckpt checks
each reference by hash), and retry with a newer manifest when a writer moved a file away.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _tensors, lossy
from .errors import CorruptCheckpoint, FormatError, ReferenceMismatch

MANIFEST = "manifest.json"
LOCK = ".lock"
_FORMAT = "fastckpt-store"
_VERSION = 1
_TEMP_PREFIXES = (".fastckpt-", ".manifest-")
_RETRIES = 8


class _StaleFile(CorruptCheckpoint):
    """A step's file does not match the manifest entry that named it."""


class Store:
    """A directory of fastckpt checkpoints keyed by training step (see the module doc).

    `keyframe_every`: a standalone keyframe every this many saves (1: every save).
    `max_chain`: the longest chain of references back to a keyframe (default:
    `keyframe_every`); a save that would exceed it is a keyframe. `threads` caps the coder's
    threads (default: all cores). `cache_size` decoded checkpoints are kept in memory (CPU
    copies private to the store) so that consecutive saves and loads do not re-decode chains.
    Several `Store` objects or processes may share a directory: writers serialize on a lock
    file, readers never block and see a step once its manifest entry is committed.
    """

    def __init__(self, path: str | os.PathLike[str], *, keyframe_every: int = 10,
                 max_chain: int | None = None, threads: int | None = None,
                 cache_size: int = 2, lossless_keyframe_every: int | None = None) -> None:
        if not isinstance(keyframe_every, int) or keyframe_every < 1:
            raise ValueError("keyframe_every must be an int >= 1")
        if lossless_keyframe_every is not None and (
                not isinstance(lossless_keyframe_every, int) or lossless_keyframe_every < 1):
            raise ValueError("lossless_keyframe_every must be None or an int >= 1")
        self.lossless_keyframe_every = lossless_keyframe_every
        if max_chain is not None and (not isinstance(max_chain, int) or max_chain < 0):
            raise ValueError("max_chain must be None or an int >= 0")
        self.path = os.fspath(path)
        self.keyframe_every = keyframe_every
        self.max_chain = keyframe_every if max_chain is None else max_chain
        self.threads = threads
        self._cache = _LRU(cache_size)
        os.makedirs(self.path, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({self.path!r}, steps={len(self)})"

    # ----- reading -------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """The committed steps, sorted."""
        return sorted(self._manifest()["steps"])

    def __len__(self) -> int:
        return len(self._manifest()["steps"])

    def __contains__(self, step: object) -> bool:
        return step in self._manifest()["steps"]

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps())

    def latest(self) -> int | None:
        """The largest committed step, or None for an empty store."""
        steps = self._manifest()["steps"]
        return max(steps) if steps else None

    def load(self, step: int, device: str = "cpu") -> Any:
        """Decodes `step` bit-exactly (tensors on `device`), walking its chain of references
        from the keyframe; the returned object is the caller's own (never cached)."""
        return self._retrying(lambda m: self._load(m, step, device))

    def info(self, step: int) -> dict:
        """The manifest entry of `step` (file, reference step, keyframe, chain depth, sizes,
        metadata, ...) plus, from `fastckpt.inspect`, per-tensor codecs and a codec count."""
        return self._retrying(lambda m: self._info(m, step))

    def _load(self, m: dict, step: int, device: str) -> Any:
        entry = _entry(m, step)
        ref = entry["reference"]
        reference = None if ref is None else self._decoded(m, ref)
        obj = self._read(entry, reference, device)
        if device == "cpu":
            self._cache.put(_key(step, entry), _snapshot(obj))
        return obj

    def _info(self, m: dict, step: int) -> dict:
        from . import inspect

        entry = _entry(m, step)
        summary = inspect(self._file(entry))
        tensors = [{k: t.get(k) for k in ("name", "codec", "reference", "raw_bytes",
                                          "compressed_bytes", "lossy", "params")}
                   for t in summary["tensors"]]
        codecs: dict[str, int] = {}
        for t in tensors:
            codecs[t["codec"]] = codecs.get(t["codec"], 0) + 1
        return {"step": step, **copy.deepcopy(entry), "tensors": tensors, "codecs": codecs}

    def _decoded(self, m: dict, step: int) -> Any:
        """The decoded checkpoint of `step` on the CPU, private to the store (cached)."""
        chain, obj = [], None
        s: int | None = step
        while s is not None:
            obj = self._cache.get(_key(s, _entry(m, s)))
            if obj is not None:
                break
            chain.append(s)
            s = m["steps"][s]["reference"]
        for s in reversed(chain):
            entry = m["steps"][s]
            obj = self._read(entry, obj, "cpu")
            self._cache.put(_key(s, entry), obj)
        return obj

    def _read(self, entry: dict, reference: Any, device: str) -> Any:
        """Decodes one step's file with its decoded reference, checking its fingerprint."""
        from . import decode, inspect

        with open(self._file(entry), "rb") as f:
            data = f.read()
        if _fingerprint(inspect(data), len(data)) != entry["fingerprint"]:
            raise _StaleFile(f"{entry['file']} does not match its manifest entry")
        return decode(data, reference=reference, device=device, threads=self.threads,
                      lossy_ok=True)

    def _retrying(self, fn) -> Any:
        """Runs `fn(manifest)`; if a writer moved a file away meanwhile, retries with the
        newer manifest. With an unchanged manifest the error is real and raised."""
        m = self._manifest()
        for attempt in range(_RETRIES):
            try:
                return fn(m)
            except (FileNotFoundError, _StaleFile, ReferenceMismatch):
                newer = self._manifest()
                if newer["generation"] == m["generation"] or attempt == _RETRIES - 1:
                    raise
                m = newer
        raise AssertionError("unreachable")  # pragma: no cover

    # ----- writing -------------------------------------------------------------------------

    def save(self, step: int, state_dict: Any, metadata: Any = None, *,
             mode: str = "lossless", error_bound: float | None = None,
             policy: Any = None) -> dict:
        """Saves `state_dict` (any fastckpt-storable object) as `step` with JSON `metadata`.

        The reference is the largest saved step below `step`, unless a keyframe is due.
        An existing `step` is replaced, unless another step uses it as its reference
        (ValueError). Returns the new manifest entry.

        `mode="near_lossless"` with `error_bound` or `policy` (see `fastckpt.encode`) codes
        the step against the *decoded* previous step (closed loop: errors never add up
        along a chain); a keyframe is then near-lossless too, except every
        `lossless_keyframe_every`-th save of the store, which is a lossless keyframe."""
        step = _check_step(step)
        metadata = _json_roundtrip(metadata)
        lossy.resolve(mode, error_bound, policy)  # fail before taking the lock
        with self._locked():
            m = self._manifest()
            self._check_replaceable(m, step)
            prev = max((s for s in m["steps"] if s < step), default=None)
            lossless_due = self._lossless_due(m)
            keyframe = self._keyframe_due(m, prev) or (mode != "lossless" and lossless_due)
            if lossless_due:
                mode, error_bound, policy = "lossless", None, None
            ref = None if keyframe else prev
            reference = None if ref is None else self._decoded(m, ref)
            entry = self._write(m, step, state_dict, ref, reference,
                                dict(mode=mode, error_bound=error_bound, policy=policy))
            entry["metadata"] = metadata
            m["since_keyframe"] = 0 if keyframe else m["since_keyframe"] + 1
            m["since_lossless"] = 0 if lossless_due else m.get("since_lossless", 0) + 1
            old = m["steps"].get(step)
            m["steps"][step] = entry
            self._commit(m, [old["file"]] if old else [])
        decoded = (self._read(entry, reference, "cpu") if entry["lossy"]
                   else _snapshot(state_dict))
        self._cache.put(_key(step, entry), decoded)
        return copy.deepcopy(entry)

    def _lossless_due(self, m: dict) -> bool:
        """Whether this save must be a lossless keyframe (`lossless_keyframe_every`)."""
        n = self.lossless_keyframe_every
        return n is not None and (not m["steps"] or m.get("since_lossless", 0) + 1 >= n)

    def _check_replaceable(self, m: dict, step: int) -> None:
        users = _dependants(m, step)
        if users:
            raise ValueError(f"step {step} is the reference of step(s) {users}: "
                             "delete those first, or save under another step")

    def _keyframe_due(self, m: dict, prev: int | None) -> bool:
        if prev is None:
            return True
        periodic = m["since_keyframe"] + 1 >= self.keyframe_every
        return periodic or m["steps"][prev]["depth"] + 1 > self.max_chain

    def _write(self, m: dict, step: int, obj: Any, ref: int | None, reference: Any,
               coding: dict | None = None) -> dict:
        """Writes `obj` as a new, durable file for `step` (not yet in the manifest);
        `coding` holds `save`'s mode/error_bound/policy (default: lossless)."""
        from . import inspect, save

        name = _new_name(m, step)
        path = os.path.join(self.path, name)
        ref_id = m["steps"][ref]["file"] if ref is not None else "reference"
        save(obj, path, reference=reference, reference_id=ref_id, threads=self.threads,
             **(coding or {}))
        summary, size = inspect(path), os.path.getsize(path)
        depth = 0 if ref is None else m["steps"][ref]["depth"] + 1
        return {"file": name, "reference": ref, "keyframe": ref is None, "depth": depth,
                "lossy": summary["lossy"], "metadata": None, "raw_bytes": summary["raw_bytes"],
                "compressed_bytes": summary["compressed_bytes"], "file_bytes": size,
                "fingerprint": _fingerprint(summary, size), "saved_at": time.time()}

    def delete(self, step: int) -> None:
        """Removes `step`, keeping every other step loadable: each step that used it as its
        reference is first re-encoded against `step`'s own reference (or as a keyframe)."""
        with self._locked():
            m = self._manifest()
            entry = _entry(m, step)
            retired = [entry["file"]]
            for dep in _dependants(m, step):
                retired.append(m["steps"][dep]["file"])
                m["steps"][dep] = self._reencode(m, dep, entry["reference"])
            del m["steps"][step]
            _set_depths(m["steps"])
            self._commit(m, retired)

    def _reencode(self, m: dict, step: int, ref: int | None) -> dict:
        """A new file and entry for `step` coded against `ref` (None: a keyframe)."""
        obj = self._decoded(m, step)
        reference = None if ref is None else self._decoded(m, ref)
        entry = self._write(m, step, obj, ref, reference)
        old = m["steps"][step]
        # Re-encoding is lossless, of values that may already be near-lossless ones.
        entry.update(metadata=old["metadata"], saved_at=old["saved_at"],
                     lossy=entry["lossy"] or old.get("lossy", False))
        return entry

    def gc(self) -> int:
        """Removes the files of this store that the manifest does not name (leftovers of an
        interrupted save or delete, temporaries); returns the bytes freed."""
        with self._locked():
            live = {e["file"] for e in self._manifest()["steps"].values()}
            freed = 0
            for name in os.listdir(self.path):
                if name not in live and _is_store_file(name):
                    freed += _remove(os.path.join(self.path, name))
            return freed

    # ----- manifest and lock ---------------------------------------------------------------

    def _manifest(self) -> dict:
        """The committed manifest (steps keyed by int); an empty one if none exists yet."""
        path = os.path.join(self.path, MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {"format": _FORMAT, "version": _VERSION, "generation": 0,
                    "since_keyframe": 0, "steps": {}}
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}: not a valid store manifest ({e})") from None
        if raw.get("format") != _FORMAT or raw.get("version") != _VERSION:
            raise FormatError(f"{path}: not a fastckpt store manifest of version {_VERSION}")
        raw["steps"] = {int(k): v for k, v in raw["steps"].items()}
        return raw

    def _commit(self, m: dict, retired: list[str]) -> None:
        """Atomically replaces the manifest with `m`, then unlinks the `retired` files."""
        m["generation"] += 1
        data = dict(m, steps={str(k): v for k, v in sorted(m["steps"].items())})
        _atomic_write(os.path.join(self.path, MANIFEST), json.dumps(data, indent=1))
        live = {e["file"] for e in m["steps"].values()}
        for name in retired:
            if name not in live:
                _remove(os.path.join(self.path, name))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds the directory's writer lock (flock on `.lock`)."""
        fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _file(self, entry: dict) -> str:
        return os.path.join(self.path, entry["file"])


class _LRU:
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._mutex = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._mutex:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._mutex:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _entry(m: dict, step: int) -> dict:
    try:
        return m["steps"][step]
    except (KeyError, TypeError):
        raise KeyError(f"no step {step!r} in this store") from None


def _key(step: int, entry: dict) -> tuple:
    return (step, entry["file"], entry["fingerprint"])


def _dependants(m: dict, step: int) -> list[int]:
    return sorted(s for s, e in m["steps"].items() if e["reference"] == step and s != step)


def _set_depths(steps: dict) -> None:
    """Recomputes every entry's chain depth (references always point to smaller steps)."""
    for entry in steps.values():
        depth, ref = 0, entry["reference"]
        while ref is not None:
            depth, ref = depth + 1, steps[ref]["reference"]
        entry["depth"] = depth


def _new_name(m: dict, step: int) -> str:
    """A file name no committed manifest ever named for other content: the plain name if the
    manifest does not use it, else one suffixed with the generation about to be committed."""
    base = f"step_{step:09d}"
    used = {e["file"] for e in m["steps"].values()}
    plain = base + ".fckpt"
    return plain if plain not in used else f"{base}.g{m['generation'] + 1}.fckpt"


def _fingerprint(summary: dict, size: int) -> str:
    """A short digest of a file's size and its tensors' names, dtypes, shapes and content
    hashes: what a reference is matched on."""
    h = hashlib.blake2b(str(size).encode(), digest_size=8)
    for t in summary["tensors"]:
        h.update(f"\0{t['name']}\0{t['dtype']}{tuple(t['shape'])}{t.get('raw_hash')}".encode())
    return h.hexdigest()


def _snapshot(obj: Any) -> Any:
    """A deep copy with every tensor copied to the CPU: a reference that the caller's training
    loop cannot mutate. Containers become plain dicts/lists/tuples (tensor names unchanged)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if _tensors.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return int(step)


def _json_roundtrip(metadata: Any) -> Any:
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serializable: {e}") from None


def _is_store_file(name: str) -> bool:
    if name.startswith("step_") and name.endswith(".fckpt"):
        return True
    return name.startswith(_TEMP_PREFIXES) and name.endswith(".tmp")


def _remove(path: str) -> int:
    """Unlinks `path` if it exists; returns its size."""
    try:
        size = os.path.getsize(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


def _atomic_write(path: str, text: str) -> None:
    """Writes `text` to `path` via a fsynced temp file, os.replace and a directory fsync."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
