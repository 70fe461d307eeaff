"""A directory of checkpoints: the steps of training runs, each coded against the previous
one, and named checkpoints (base models, fine-tunes, forks) coded against whatever stored
tensors they are closest to.

    store = fastckpt.Store("ckpts", keyframe_every=10)
    store.save(step, {"model": model.state_dict(), "optim": opt.state_dict()}, {"loss": 0.3})
    state = store.load(store.latest())
    store.save("bert-base", base_state_dict)
    store.save("bert-ft-legal", finetuned, reference="auto")   # LSH finds bert-base

With `reference="auto"`, every tensor that exactly equals a stored tensor is stored as a
reference to it (codec "same": no data), and every other tensor is coded against its best
near duplicate: candidates from the LSH index (`fastckpt._core.LshIndex`: SimHash
signatures, 12 bands x 10 rows, a Bloom filter and a sorted map per band) verified by the
coded size the real coder gives on a sample. `reference="exact"` does the exact part only.
The index is `index.gN.lsh`, named by the manifest and replaced with it; loading never
reads it (every reference is explicit in the files).

Every `keyframe_every`-th save is a keyframe, coded standalone; every other save is coded
with `fastckpt.save(..., reference=...)` against the decoded previous step (closed loop: the
reference is exactly what a reader decodes). Loading a step decodes its keyframe and walks
the chain of references forward.

On-disk layout (POSIX):

    manifest.json                 the only source of truth: {"format", "version", "generation",
                                  "since_keyframe", "steps": {"<step>": entry},
                                  "names": {"<name>": entry}, "index": "index.g5.lsh" | null}
    step_000000123.fckpt          a step's checkpoint file (first write of that step)
    ckpt_<name>_<hash>.fckpt      a named checkpoint's file
    index.g5.lsh                  the LSH index (only once a dedup save happened)
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

import collections
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

from . import _core, _tensors, lossy
from .errors import CorruptCheckpoint, FastckptError, FormatError, ReferenceMismatch

MANIFEST = "manifest.json"
LOCK = ".lock"
_FORMAT = "fastckpt-store"
_VERSION = 2
_TEMP_PREFIXES = (".fastckpt-", ".manifest-")
_RETRIES = 8
_MODES = (None, "auto", "exact")
#: Tensors smaller than this are neither indexed nor deduplicated: a reference to another
#: checkpoint would save a few bytes and cost decoding that checkpoint.
MIN_DEDUP_BYTES = 4096
_CANDIDATES = 4  # LSH candidates verified per tensor, nearest signatures first
_HINTS = 2  # checkpoints whose same-named tensor is verified too (most voted by the LSH)
_MIN_GAIN = 0.02  # a reference must beat standalone coding by 2% (estimated) to be used


class _StaleFile(CorruptCheckpoint):
    """A step's file does not match the manifest entry that named it."""


class Store:
    """A directory of fastckpt checkpoints keyed by training step (int) or name (str); see
    the module doc.

    `keyframe_every`: a standalone keyframe every this many step saves (1: every save).
    `max_chain`: the longest chain of references back to a keyframe (default:
    `keyframe_every`); a step save that would exceed it is a keyframe, and `"auto"` saves
    only reference checkpoints below that depth. `threads` caps the coder's threads
    (default: all cores). `cache_size` decoded checkpoints are kept in memory (CPU copies
    private to the store) so that consecutive saves and loads do not re-decode chains.
    Several `Store` objects or processes may share a directory: writers serialize on a lock
    file, readers never block and see a checkpoint once its manifest entry is committed.
    Loads memory-map the store's files (written once, replaced only by rename, never
    rewritten in place): do not truncate a store's files from outside while loading.
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
        return f"Store({self.path!r}, checkpoints={len(self)})"

    # ----- reading -------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """The committed steps, sorted."""
        return sorted(k for k in self._manifest()["steps"] if isinstance(k, int))

    def names(self) -> list[str]:
        """The committed named checkpoints, sorted."""
        return sorted(k for k in self._manifest()["steps"] if isinstance(k, str))

    def keys(self) -> list[int | str]:
        """Every committed checkpoint: the steps, then the names."""
        keys = self._manifest()["steps"]
        return sorted(k for k in keys if isinstance(k, int)) + sorted(
            k for k in keys if isinstance(k, str))

    def __len__(self) -> int:
        return len(self._manifest()["steps"])

    def __contains__(self, key: object) -> bool:
        return key in self._manifest()["steps"]

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps())

    def latest(self) -> int | None:
        """The largest committed step, or None for a store without steps."""
        steps = self.steps()
        return steps[-1] if steps else None

    def load(self, key: int | str, device: str = "cpu") -> Any:
        """Decodes checkpoint `key` bit-exactly (tensors on `device`), decoding the
        checkpoints it references first; the returned object is the caller's own."""
        return self._retrying(lambda m: self._load(m, key, device))

    def info(self, key: int | str) -> dict:
        """The manifest entry of `key` (file, mode, references, keyframe, chain depth,
        sizes, metadata, ...), `referenced_by` ({key: tensors of that checkpoint that
        reference this one}) and, from `fastckpt.inspect`, per tensor its codec and the
        reference it used (checkpoint `key` and tensor name), and a codec count."""
        return self._retrying(lambda m: self._info(m, key))

    def _load(self, m: dict, key: int | str, device: str) -> Any:
        entry = _entry(m, key)
        refs = {r: self._decoded(m, r) for r in _refs(entry)}
        # On the CPU the decoder also writes a private twin of the checkpoint for the cache
        # (the next load's reference), which the caller cannot reach or mutate.
        twin: list | None = [] if device == "cpu" and self._cache.size else None
        if twin is not None:
            self._make_room(m, refs)
        obj = self._read(entry, refs, device, twin)
        if twin:
            self._cache.put(_key(key, entry), twin[0])
        return obj

    def _info(self, m: dict, key: int | str) -> dict:
        from . import inspect

        entry = _entry(m, key)
        summary = inspect(self._file(entry))
        by_file = {e["file"]: k for k, e in m["steps"].items()}
        tensors = [{k: t.get(k) for k in ("name", "codec", "reference", "raw_bytes",
                                          "compressed_bytes", "lossy", "params")}
                   for t in summary["tensors"]]
        codecs: dict[str, int] = {}
        for t in tensors:
            codecs[t["codec"]] = codecs.get(t["codec"], 0) + 1
            if t["reference"] is not None:
                t["reference"]["key"] = (entry["reference"] if entry["mode"] == "chain" else
                                         _key_of_id(t["reference"]["checkpoint"], by_file))
        users = {k: r["tensors"] for k, e in m["steps"].items() for r in e["references"]
                 if r["key"] == key}
        return {"key": key, "step": key, **copy.deepcopy(entry), "tensors": tensors,
                "codecs": codecs, "referenced_by": users}

    def _decoded(self, m: dict, key: int | str) -> Any:
        """The decoded checkpoint of `key` on the CPU, private to the store (cached); the
        checkpoints it references are decoded first (iteratively, in dependency order)."""
        got, order, seen, stack = {}, [], set(), [(key, False)]
        while stack:
            k, expanded = stack.pop()
            if expanded:
                order.append(k)
                continue
            if k in seen:
                continue
            seen.add(k)
            obj = self._cache.get(_key(k, _entry(m, k)))
            if obj is not None:
                got[k] = obj
                continue
            stack.append((k, True))
            stack.extend((r, False) for r in _refs(m["steps"][k]))
        for k in order:
            entry = m["steps"][k]
            refs = {r: got[r] for r in _refs(entry)}
            self._make_room(m, refs)
            got[k] = self._read(entry, refs, "cpu")
            self._cache.put(_key(k, entry), got[k])
        return got[key]

    def _make_room(self, m: dict, refs: dict) -> None:
        """Evicts, before a decode or save whose result the cache will keep, the cached
        checkpoints that `put` would evict after it, except its references `refs`: their
        memory then serves the new one (a chain of loads holds two checkpoints besides the
        caller's, not three)."""
        self._cache.make_room({_key(r, m["steps"][r]) for r in refs})

    def _read(self, entry: dict, refs: dict, device: str, twin: list | None = None) -> Any:
        """Decodes one checkpoint file given its decoded references ({key: object}),
        checking its fingerprint; with a list `twin`, also appends a second, independent
        copy of the checkpoint to it (CPU)."""
        from . import _core, _map_file, _materialize, inspect

        data = _map_file(self._file(entry))
        if _fingerprint(inspect(data), len(data)) != entry["fingerprint"]:
            raise _StaleFile(f"{entry['file']} does not match its manifest entry")
        if entry["mode"] == "chain":
            one, many = refs.get(entry["reference"]), None
        else:
            one, many = None, {_ckpt_id(k): obj for k, obj in refs.items()}
        # The references are the store's own decodes or twins, verified when made.
        return _materialize(_core.Reader(data), device, self.threads, one, many,
                            lossy_ok=True, twin=twin, trusted=True)

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

    def save(self, key: int | str, state_dict: Any, metadata: Any = None, *,
             reference: str | None = None, mode: str = "lossless",
             error_bound: float | None = None, policy: Any = None) -> dict:
        """Saves `state_dict` (any fastckpt-storable object) as `key` with JSON `metadata`.

        `reference=None`: a step (int) is coded against the largest saved step below it,
        unless a keyframe is due; a name (str) is coded standalone. `reference="auto"`:
        exact duplicates of stored tensors are stored once, other tensors are coded against
        their best near duplicate among all stored checkpoints (LSH index + a sampled size
        estimate), or standalone. `reference="exact"`: exact duplicates only. An existing
        `key` is replaced, unless another checkpoint references it (ValueError). Returns
        the new manifest entry.

        `mode="near_lossless"` with `error_bound` or `policy` (see `fastckpt.encode`) codes
        the checkpoint against *decoded* references (closed loop: errors never add up along
        a chain); a keyframe is then near-lossless too, except every
        `lossless_keyframe_every`-th save of the store, which is a lossless keyframe."""
        key = _check_key(key)
        if reference not in _MODES:
            raise ValueError(f"reference must be one of {_MODES}, got {reference!r}")
        metadata = _json_roundtrip(metadata)
        lossy.resolve(mode, error_bound, policy)  # fail before taking the lock
        with self._locked():
            m = self._manifest()
            self._check_replaceable(m, key)
            index = self._index(m, build=reference is not None)
            lossless_due = self._lossless_due(m)
            coding = ({} if lossless_due else
                      dict(mode=mode, error_bound=error_bound, policy=policy))
            # What was saved is kept (as the next reference, or to index it) only when a
            # cache or an index wants it; a lossless save leaves the encoder's private copy
            # of `state_dict` in `twin`.
            keep = self._cache.size > 0 or index is not None
            twin: list | None = [] if keep else None
            if reference is None and isinstance(key, int):
                entry, keyframe = self._save_chained(m, key, state_dict, coding,
                                                     force_keyframe=lossless_due
                                                     and mode != "lossless", twin=twin)
                m["since_keyframe"] = 0 if keyframe else m["since_keyframe"] + 1
            else:
                entry = self._write_dedup(m, index, key, state_dict, reference or "none", {key},
                                          coding, twin)
            entry["metadata"] = metadata
            m["since_lossless"] = 0 if lossless_due else m.get("since_lossless", 0) + 1
            old = m["steps"].get(key)
            m["steps"][key] = entry
            if not keep:
                stored = None
            elif entry["lossy"]:
                stored = self._decoded(m, key)
            else:
                stored = twin[0] if twin else _snapshot(state_dict)
            if index is not None:
                _index_checkpoint(index, key, stored)
            self._commit(m, [old["file"]] if old else [], index)
        if keep:
            self._cache.put(_key(key, entry), stored)
        return copy.deepcopy(entry)

    def _lossless_due(self, m: dict) -> bool:
        """Whether this save must be lossless (`lossless_keyframe_every`)."""
        n = self.lossless_keyframe_every
        return n is not None and (not m["steps"] or m.get("since_lossless", 0) + 1 >= n)

    def _save_chained(self, m: dict, step: int, state_dict: Any, coding: dict,
                      force_keyframe: bool, twin: list | None = None) -> tuple[dict, bool]:
        prev = max((s for s in m["steps"] if isinstance(s, int) and s < step), default=None)
        keyframe = force_keyframe or self._keyframe_due(m, prev)
        ref = None if keyframe else prev
        reference = None if ref is None else self._decoded(m, ref)
        if twin is not None:
            self._make_room(m, {} if ref is None else {ref: reference})
        return self._write(m, step, state_dict, ref, reference, coding, twin), keyframe

    def _check_replaceable(self, m: dict, key: int | str) -> None:
        users = _dependants(m, key)
        if users:
            raise ValueError(f"{key!r} is the reference of {users}: "
                             "delete those first, or save under another key")

    def _keyframe_due(self, m: dict, prev: int | None) -> bool:
        if prev is None:
            return True
        periodic = m["since_keyframe"] + 1 >= self.keyframe_every
        return periodic or m["steps"][prev]["depth"] + 1 > self.max_chain

    def _write(self, m: dict, step: int, obj: Any, ref: int | None, reference: Any,
               coding: dict | None = None, twin: list | None = None) -> dict:
        """Writes `obj` as a new, durable file for `step` coded against the previous step
        `ref` (not yet in the manifest); `coding`: `save`'s mode/error_bound/policy; a
        lossless save appends the encoder's private copy of `obj` to `twin`."""
        from . import _save

        name, path = self._new_file(m, step)
        ref_id = m["steps"][ref]["file"] if ref is not None else "reference"
        _save(obj, path, _lossless_twin(coding, twin), reference=reference,
              reference_id=ref_id, threads=self.threads, **(coding or {}))
        entry = self._entry_for(name, "chain")
        entry["reference"] = ref
        used = sum(t["reference"] is not None for t in _inspect_file(path)["tensors"])
        entry["references"] = [] if ref is None else [{"key": ref, "tensors": used}]
        entry["keyframe"] = ref is None
        entry["depth"] = 0 if ref is None else m["steps"][ref]["depth"] + 1
        return entry

    def _write_dedup(self, m: dict, index, key: int | str, obj: Any, mode: str,
                     forbidden: set, coding: dict | None = None,
                     twin: list | None = None) -> dict:
        """Writes `obj` as a new file for `key`, each tensor coded against the reference
        `_choose` picks for it (mode "auto" / "exact"; "none": standalone); a lossless
        save appends the encoder's private copy of `obj` to `twin`."""
        from . import _save

        choices = {} if mode == "none" else self._choose(m, index, obj, mode, forbidden)
        decoded = {k: _flat(self._decoded(m, k)) for k in {k for k, _ in choices.values()}}
        if twin is not None:
            self._make_room(m, decoded)
        tensor_refs = {name: (_ckpt_id(k), t, decoded[k][t]) for name, (k, t) in choices.items()}
        name, path = self._new_file(m, key)
        _save(obj, path, _lossless_twin(coding, twin), tensor_references=tensor_refs,
              threads=self.threads, **(coding or {}))
        entry = self._entry_for(name, mode)
        counts: dict = {}
        for t in _inspect_file(path)["tensors"]:
            if t["reference"] is not None:
                k = _key_of_id(t["reference"]["checkpoint"], {})
                counts[k] = counts.get(k, 0) + 1
        entry["references"] = [{"key": k, "tensors": n} for k, n in counts.items()]
        entry["keyframe"] = not counts
        entry["depth"] = 1 + max((m["steps"][k]["depth"] for k in counts), default=-1)
        return entry

    def _choose(self, m: dict, index, obj: Any, mode: str, forbidden: set) -> dict:
        """{tensor name: (key, tensor name)} of the reference chosen for each tensor: an
        exact duplicate if one is stored, else ("auto") the candidate whose sampled
        predicted size is smallest, if it beats standalone coding by `_MIN_GAIN`. The
        candidates are the LSH's nearest signatures plus the same-named tensor of the
        checkpoints the LSH points at most often (a checkpoint near for most tensors is
        worth a try for the others, whose moments may have drifted below the S-curve)."""
        allowed = {k for k, e in m["steps"].items()
                   if k not in forbidden and e["depth"] < self.max_chain}
        choices, pending = {}, []
        for name, dtype, shape, raw in _specs(obj):
            numel = int(np.prod(shape, dtype=np.int64))
            if raw.nbytes < MIN_DEDUP_BYTES:
                continue
            exact = [(_key_of_id(c, {}), t) for c, t in
                     index.exact(dtype, numel, _core.content_hash(dtype, raw))]
            exact = [c for c in exact if c[0] in allowed]
            if exact:
                choices[name] = exact[0]
            elif mode == "auto":
                found = index.query(dtype, numel, _core.signature(dtype, raw), _CANDIDATES * 4)
                cands = [(_key_of_id(c, {}), t) for c, t, _d in found]
                pending.append((name, dtype, raw, [c for c in cands if c[0] in allowed]))
        votes = collections.Counter(c[0][0] for *_, c in pending if c)
        hints = [k for k, _n in votes.most_common(_HINTS)]
        flat: dict = {}
        for name, dtype, raw, cands in pending:
            cands = cands[:_CANDIDATES]
            cands += [(k, name) for k in hints if (k, name) not in cands]
            best = self._verify(m, flat, dtype, raw, cands)
            if best is not None:
                choices[name] = best
        return choices

    def _verify(self, m: dict, flat: dict, dtype: str, raw, cands: list):
        """The candidate with the smallest estimated predicted size, if it pays."""
        if not cands:
            return None
        limit = _core.estimate_standalone(dtype, raw) * (1 - _MIN_GAIN)
        best, best_size = None, limit
        for k, t in cands:
            if k not in flat:
                flat[k] = {n: (d, r) for n, d, _s, r in _specs(self._decoded(m, k))}
            d, r = flat[k].get(t, (None, None))
            if d != dtype or r.nbytes != raw.nbytes:
                continue
            size = _core.estimate_predicted(dtype, raw, r)
            if size < best_size:
                best, best_size = (k, t), size
        return best

    def _new_file(self, m: dict, key: int | str) -> tuple[str, str]:
        name = _new_name(m, key)
        return name, os.path.join(self.path, name)

    def _entry_for(self, name: str, mode: str) -> dict:
        """The manifest entry of a freshly written file (sizes, fingerprint)."""
        path = os.path.join(self.path, name)
        summary, size = _inspect_file(path), os.path.getsize(path)
        return {"file": name, "mode": mode, "reference": None, "references": [],
                "keyframe": True, "depth": 0, "metadata": None, "lossy": summary["lossy"],
                "raw_bytes": summary["raw_bytes"],
                "compressed_bytes": summary["compressed_bytes"], "file_bytes": size,
                "fingerprint": _fingerprint(summary, size), "saved_at": time.time()}

    def delete(self, key: int | str) -> None:
        """Removes `key`, keeping every other checkpoint loadable: each step that used it as
        its reference is first re-encoded against `key`'s own reference (or as a keyframe);
        each deduplicated checkpoint that referenced it is re-encoded in its mode ("auto" /
        "exact") against the remaining checkpoints (or standalone)."""
        with self._locked():
            m = self._manifest()
            entry = _entry(m, key)
            index = self._index(m, build=False)
            retired = [entry["file"]]
            for dep in _dependants(m, key):
                retired.append(m["steps"][dep]["file"])
                m["steps"][dep] = self._reencode(m, index, dep, key)
            del m["steps"][key]
            if index is not None:
                index.remove_checkpoint(_ckpt_id(key))
            _set_depths(m["steps"])
            self._commit(m, retired, index)

    def _reencode(self, m: dict, index, key: int | str, gone: int | str) -> dict:
        """A new file and entry for `key` that does not reference `gone`."""
        old = m["steps"][key]
        obj = self._decoded(m, key)
        if old["mode"] == "chain":
            ref = m["steps"][gone]["reference"]
            reference = None if ref is None else self._decoded(m, ref)
            entry = self._write(m, key, obj, ref, reference)
        else:
            forbidden = {gone, key} | _all_dependants(m, key)
            mode = old["mode"] if index is not None else "none"
            entry = self._write_dedup(m, index, key, obj, mode, forbidden)
        # Re-encoding is lossless, of values that may already be near-lossless ones.
        entry.update(metadata=old["metadata"], saved_at=old["saved_at"],
                     lossy=entry["lossy"] or old.get("lossy", False))
        return entry

    def rebuild_index(self) -> int:
        """Recomputes the LSH index from every stored checkpoint (e.g. after the index file
        was lost or damaged) and commits it; returns the number of indexed tensors."""
        with self._locked():
            m = self._manifest()
            index = self._build_index(m)
            self._commit(m, [], index)
            return len(index)

    def gc(self) -> int:
        """Removes the files of this store that the manifest does not name (leftovers of an
        interrupted save or delete, temporaries, old index files); returns the bytes freed."""
        with self._locked():
            m = self._manifest()
            live = {e["file"] for e in m["steps"].values()} | {m["index"]}
            freed = 0
            for name in os.listdir(self.path):
                if name not in live and _is_store_file(name):
                    freed += _remove(os.path.join(self.path, name))
            return freed

    # ----- index -----------------------------------------------------------------------------

    def _index(self, m: dict, build: bool):
        """The committed LSH index; if none exists yet, a new one over every stored
        checkpoint when `build`, else None. A damaged index file raises (see
        `rebuild_index`)."""
        if m["index"] is None:
            return self._build_index(m) if build else None
        path = os.path.join(self.path, m["index"])
        try:
            with open(path, "rb") as f:
                return _core.LshIndex.from_bytes(f.read())
        except FileNotFoundError:
            raise FormatError(f"{path}: the store's LSH index is missing; "
                              "Store.rebuild_index() recomputes it") from None
        except FastckptError as e:
            raise type(e)(f"{path}: {e}; Store.rebuild_index() recomputes it") from None

    def _build_index(self, m: dict):
        index = _core.LshIndex()
        for key in m["steps"]:
            _index_checkpoint(index, key, self._decoded(m, key))
        return index

    # ----- manifest and lock ---------------------------------------------------------------

    def _manifest(self) -> dict:
        """The committed manifest (checkpoints keyed by int step or str name, all in
        `steps`); an empty one if none exists yet."""
        path = os.path.join(self.path, MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {"format": _FORMAT, "version": _VERSION, "generation": 0,
                    "since_keyframe": 0, "steps": {}, "index": None}
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}: not a valid store manifest ({e})") from None
        if raw.get("format") != _FORMAT or raw.get("version") not in (1, _VERSION):
            raise FormatError(f"{path}: not a fastckpt store manifest of version "
                              f"1 or {_VERSION}")
        steps = {int(k): v for k, v in raw["steps"].items()}
        steps.update(raw.pop("names", {}))
        for entry in steps.values():
            _upgrade_entry(entry)
        raw.update(steps=steps, version=_VERSION, index=raw.get("index"))
        return raw

    def _commit(self, m: dict, retired: list[str], index=None) -> None:
        """Atomically replaces the manifest with `m` (and the index file it names, when
        `index` is given: written first under a new name), then unlinks the `retired` files
        and the previous index."""
        m["generation"] += 1
        old_index = m["index"]
        if index is not None:
            m["index"] = f"index.g{m['generation']}.lsh"
            _atomic_write(os.path.join(self.path, m["index"]), index.to_bytes())
        steps = {str(k): v for k, v in sorted(
            ((k, v) for k, v in m["steps"].items() if isinstance(k, int)))}
        names = {k: v for k, v in sorted(
            ((k, v) for k, v in m["steps"].items() if isinstance(k, str)))}
        data = dict(m, steps=steps, names=names)
        _atomic_write(os.path.join(self.path, MANIFEST), json.dumps(data, indent=1))
        live = {e["file"] for e in m["steps"].values()}
        for name in retired + ([old_index] if old_index not in (None, m["index"]) else []):
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

    def make_room(self, keep: set) -> None:
        """Evicts least recently used items not in `keep` until one more item fits."""
        with self._mutex:
            for key in [k for k in self._items if k not in keep]:
                if len(self._items) < self.size:
                    break
                del self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._mutex:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _entry(m: dict, key: int | str) -> dict:
    try:
        return m["steps"][key]
    except (KeyError, TypeError):
        raise KeyError(f"no checkpoint {key!r} in this store") from None


def _key(key: int | str, entry: dict) -> tuple:
    return (key, entry["file"], entry["fingerprint"])


def _dependants(m: dict, key: int | str) -> list:
    """The checkpoints whose files reference `key` directly."""
    return sorted((k for k, e in m["steps"].items() if key in _refs(e) and k != key),
                  key=_order)


def _set_depths(steps: dict) -> None:
    """Recomputes every entry's depth: 0 without references, else 1 + the deepest
    reference's (references form a DAG; computed iteratively in dependency order)."""
    depth: dict = {}
    for start in steps:
        stack = [(start, False)]
        while stack:
            k, expanded = stack.pop()
            if k in depth:
                continue
            refs = _refs(steps[k])
            if expanded or not refs:
                depth[k] = 1 + max((depth[r] for r in refs), default=-1)
                continue
            stack.append((k, True))
            stack.extend((r, False) for r in refs if r not in depth)
    for k, entry in steps.items():
        entry["depth"] = depth[k]


def _new_name(m: dict, key: int | str) -> str:
    """A file name no committed manifest ever named for other content: the plain name if the
    manifest does not use it, else one suffixed with the generation about to be committed."""
    if isinstance(key, str):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:40]
        digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
        base = f"ckpt_{safe}_{digest}"
    else:
        base = f"step_{key:09d}"
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


def _lossless_twin(coding: dict | None, twin: list | None) -> list | None:
    """`twin` when the save is lossless (its input is what a reader gets back), else None."""
    return twin if (coding or {}).get("mode", "lossless") == "lossless" else None


def _snapshot(obj: Any) -> Any:
    """A deep copy with every tensor copied to the CPU: a reference that the caller's training
    loop cannot mutate. Containers become plain dicts/lists/tuples (tensor names unchanged)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if _tensors.is_tensor(obj):
        return _tensors.cpu_copy(obj)
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


def _check_key(key: Any) -> int | str:
    if isinstance(key, str):
        if not key or key in _MODES:
            raise ValueError(f"a checkpoint name must be a non-empty str, not {key!r}")
        return key
    return _check_step(key)


def _order(key: int | str) -> tuple:
    return (isinstance(key, str), key)


def _refs(entry: dict) -> list:
    """The keys of the checkpoints `entry`'s file references."""
    return [r["key"] for r in entry["references"]]


def _upgrade_entry(entry: dict) -> None:
    """Fills the fields of a version-1 manifest entry (a step of a chain)."""
    entry.setdefault("mode", "chain")
    if "references" not in entry:
        ref = entry["reference"]
        entry["references"] = [] if ref is None else [{"key": ref, "tensors": None}]


def _ckpt_id(key: int | str) -> str:
    """The checkpoint id a deduplicated file records for a reference to `key`."""
    return json.dumps(key)


def _key_of_id(cid: str, by_file: dict) -> Any:
    """The key behind a checkpoint id: a JSON key, or (chained steps) a file name."""
    try:
        return json.loads(cid)
    except ValueError:
        return by_file.get(cid)


def _all_dependants(m: dict, key: int | str) -> set:
    """Every checkpoint that needs `key` to decode, directly or through others."""
    out, todo = set(), [key]
    while todo:
        for dep in _dependants(m, todo.pop()):
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def _inspect_file(path: str) -> dict:
    from . import inspect

    return inspect(path)


def _specs(obj: Any) -> list:
    """(name, dtype, shape, raw uint8 view) of every tensor of `obj`."""
    from . import _prepare

    specs, _structure, _owners = _prepare(obj)
    return [(name, dtype, shape, raw) for name, dtype, shape, _tag, raw in specs]


def _flat(obj: Any) -> dict:
    """{tensor name: raw uint8 view} of a decoded checkpoint."""
    return {name: raw for name, _dtype, _shape, raw in _specs(obj)}


def _index_checkpoint(index, key: int | str, obj: Any) -> None:
    """(Re)places the LSH entries of checkpoint `key` (tensors of `MIN_DEDUP_BYTES` or more)."""
    cid = _ckpt_id(key)
    index.remove_checkpoint(cid)
    entries = [(cid, name, dtype, int(np.prod(shape, dtype=np.int64)),
                _core.content_hash(dtype, raw), _core.signature(dtype, raw))
               for name, dtype, shape, raw in _specs(obj) if raw.nbytes >= MIN_DEDUP_BYTES]
    index.extend(entries)


def _json_roundtrip(metadata: Any) -> Any:
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serializable: {e}") from None


def _is_store_file(name: str) -> bool:
    if name.startswith(("step_", "ckpt_")) and name.endswith(".fckpt"):
        return True
    if name.startswith("index.") and name.endswith(".lsh"):
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


def _atomic_write(path: str, content: str | bytes) -> None:
    """Writes `content` to `path` via a fsynced temp file, os.replace and a directory fsync."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=folder)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
