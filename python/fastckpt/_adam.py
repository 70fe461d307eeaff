"""Adam-direction references for encode/decode with a `reference` checkpoint.

In a fine-tune, Adam moves each weight along nearly the same direction step after step,
`m / (sqrt(v) + eps)` from the moments saved beside the weights. Where a tensor's change
since the reference follows that direction closely, the encoder predicts the tensor as
`w0 + step * m / (sqrt(v) + eps)` instead of `w0` (the core's `predict::direction`
computes it bit-identically on every machine, chunk by chunk where it codes each chunk)
and the file records `(m, v, step)`, so the decoder makes the same prediction from the
reference and its moments. On all-MiniLM-L6-v2's word
embeddings this codes ~17% fewer bytes.

Weights are paired with their moments from the reference's structure alone: optimizer
state entries `.../state/<i>/exp_avg` (with `exp_avg_sq`) in index order, matched with the
float32 tensors outside the optimizer of the same shape, in order, where both lists have
the same length (param groups such as "no weight decay" reorder the state, but keep each
shape's tensors in model order); a tied weight's second entry (same memory) is skipped, as
the optimizer holds one state for it. A wrong pairing only costs ratio: the fit rejects it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from . import _core

#: Least share of a tensor's change the direction must explain (R^2, sampled) to be used.
#: Making the prediction costs a decoder ~1 ns per word on one AVX2 core (a third of
#: decoding the word); at R^2 0.5 the residual keeps half the energy, ~0.5 bit fewer per
#: word. Lower thresholds did not pay on MiniLM (R^2 >= 0.3: 0.25% smaller checkpoint, ~20%
#: slower decode; benches/README.md "Session 23").
MIN_R2 = 0.5
#: Words sampled (two blocks) for the fit that decides: small, so that models whose
#: weights do not follow the direction (a from-scratch GPT) pay a few us per tensor.
SAMPLE_WORDS = 1 << 13
#: Words sampled for the step of a tensor that passes (its error then costs < 0.01 bit).
STEP_WORDS = 1 << 18

_STEPS = _core.DIRECTION_STEPS
_STATE = re.compile(r"^(?P<opt>(?:.*/)?)state/(?P<i>\d+)/exp_avg$")


def _is_f32(leaf: Any) -> bool:
    return str(getattr(leaf, "dtype", "")).endswith("float32")


def _memory_key(leaf: Any) -> tuple:
    """What identifies a tensor's memory: tied weights (a language model's embedding and
    output layer) are two state-dict entries over one parameter and one optimizer state."""
    if isinstance(leaf, np.ndarray):
        return (leaf.__array_interface__["data"][0], leaf.shape, leaf.strides)
    try:
        return (leaf.untyped_storage().data_ptr(), leaf.storage_offset(), tuple(leaf.shape),
                leaf.stride())
    except (AttributeError, RuntimeError, NotImplementedError):  # sparse, meta, not torch
        return (id(leaf),)


def moments(leaves: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{weight name: (exp_avg name, exp_avg_sq name)} for the float32 tensors of one
    checkpoint (its leaves by name, in order) that pair with Adam moments (module doc)."""
    states, prefixes = [], set()
    for name, leaf in leaves.items():
        hit = _STATE.match(name) if name.endswith("/exp_avg") else None
        v = name + "_sq"
        if hit and v in leaves and _is_f32(leaf) and _is_f32(leaves[v]):
            states.append((hit["opt"], int(hit["i"]), name, v, tuple(leaf.shape)))
            prefixes.add(hit["opt"])
    if not states or "" in prefixes:
        return {}
    by_shape: dict[tuple, list] = defaultdict(list)
    for _opt, _i, m, v, shape in sorted(states, key=lambda s: (s[0], s[1])):
        by_shape[shape].append((m, v))
    weights: dict[tuple, list] = defaultdict(list)
    optimizers = tuple(prefixes)
    for name, leaf in leaves.items():
        if not name.startswith(optimizers) and _is_f32(leaf):
            weights[tuple(leaf.shape)].append(name)
    paired = {}
    for shape, mv in by_shape.items():
        names = weights[shape]
        if len(names) > len(mv):
            names = _untied(names, leaves)
        if len(names) == len(mv):
            paired.update(zip(names, mv))
    return paired


def _untied(names: list[str], leaves: dict[str, Any]) -> list[str]:
    """`names` without the later entries of tied weights (same memory)."""
    seen, out = set(), []
    for name in names:
        key = _memory_key(leaves[name])
        if key not in seen:
            out.append(name)
        seen.add(key)
    return out


def directed(specs, refs, leaves: dict[str, Any], raws: dict[str, tuple], lossy_specs,
             threads=None):
    """The core's `directions` for `refs` (`_references`' (checkpoint id, name, raw) per
    spec): `(m name, v name, step, m raw, v raw)` for each lossless float32 tensor whose
    change the Adam direction explains (sampled fit R^2 >= MIN_R2), None for the others,
    or None if no tensor has one. `leaves` are the reference's tensors by name and `raws`
    the same converted ((dtype, shape, raw) by name, as `_references` read them)."""
    pairs = moments(leaves) if refs else {}
    if not pairs:
        return None
    directions = [None] * len(refs)
    for k, (_name, dtype, _shape, _tag, raw) in enumerate(specs):
        ref = refs[k]
        mv = pairs.get(ref[1]) if ref is not None else None
        lossless = lossy_specs is None or lossy_specs[k] is None
        if mv is None or dtype != "float32" or not lossless:
            continue
        m, v = raws[mv[0]][2], raws[mv[1]][2]
        step = _fitted_step(ref[2], raw, m, v, threads)
        if step is not None:
            directions[k] = (mv[0], mv[1], step, m, v)
    return directions if any(directions) else None


def _fitted_step(w0: np.ndarray, w1: np.ndarray, m: np.ndarray, v: np.ndarray,
                 threads=None) -> float | None:
    """The step along the direction for coding `w1` against `w0` (raw float32 bytes), or
    None where it does not pay: too few words, a sampled R^2 below MIN_R2, a step a file
    cannot store."""
    if w1.nbytes // 4 < _core.MIN_PREDICTED_WORDS or not m.nbytes == v.nbytes == w1.nbytes:
        return None
    # One thread: the sample is small, and waking the pool costs more than it.
    _step, r2 = _core.direction_fit(w0, w1, m, v, SAMPLE_WORDS, 1)
    if r2 < MIN_R2:
        return None
    step, _r2 = _core.direction_fit(w0, w1, m, v, STEP_WORDS, threads)
    return step if _STEPS[0] <= abs(step) <= _STEPS[1] else None
