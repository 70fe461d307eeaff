"""Near-lossless policies: which tensors may be quantized, under which bound.

A policy maps each tensor *class* to a setting:

    weights      float tensors of the model (anything not in an optimizer's state)
    exp_avg      first moments (Adam ``exp_avg``, SGD ``momentum_buffer``)
    exp_avg_sq   second moments (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``);
                 decoded values are clamped at 0, so they stay non-negative
    other        any other float tensor of an optimizer's state

and a setting is ``None`` (lossless), a float ``e`` (every element within ``e * rms`` of
the original tensor) or ``{"error_bound": e, "prune": p}``: the fraction ``p`` of smallest
residuals is pruned to the prediction (ExCP-style), which trades the bound for size on
those elements (each stays within the pruning threshold the file records). For
non-negative tensors, ``{"relative_bound": r}`` bounds every element by ``r`` times its own
value instead (``0 < r < 1``; zeros stay zero): what Adam's second moment needs, since its
values span orders of magnitude and its square root divides the update. Integer and
bool tensors, ``step`` counters and tensors of fewer than ``min_elements`` elements are
always lossless.
"""

from __future__ import annotations

from typing import Any, Union

CLASSES = ("weights", "exp_avg", "exp_avg_sq", "other")
MIN_ELEMENTS = 1024
_QUANTIZABLE = {"float16", "bfloat16", "float32", "float64"}
_SECOND = {"exp_avg_sq", "max_exp_avg_sq", "square_avg"}
_FIRST = {"exp_avg", "momentum_buffer"}

Setting = Union[None, float, dict]

#: Named policies, chosen from the fidelity benchmark (benches/fidelity.py, MiniLM masked-LM
#: fine-tune, resumes of 12 steps from restored checkpoints; README has the table):
#: "safe": 12.9x overall, resumed losses within 0.04% (weights and first moments at 1e-2 x rms;
#: second moments within 20% of each value: an absolute bound, even 1e-3 x rms, moves most
#: of their small values by more than 10% and with them Adam's step sizes, 0.2-0.5% loss);
#: "aggressive" (ExCP-style pruning of both moments): 59.8x overall, within 0.18%.
PRESETS: dict[str, dict[str, Setting]] = {
    "safe": {"weights": 1e-2, "exp_avg": 1e-2, "exp_avg_sq": {"relative_bound": 0.2},
             "other": None},
    "aggressive": {
        "weights": 1e-2,
        "exp_avg": {"error_bound": 0.3, "prune": 0.95},
        "exp_avg_sq": {"error_bound": 0.1, "prune": 0.9},
        "other": None,
    },
}


def classify(name: str, dtype: str, numel: int, min_elements: int = MIN_ELEMENTS) -> str | None:
    """The class of tensor `name` (a '/'-joined path as `encode` names tensors), or None
    when it must stay lossless."""
    if dtype not in _QUANTIZABLE or numel < min_elements:
        return None
    parts = name.split("/")
    last = parts[-1]
    if last in _SECOND:
        return "exp_avg_sq"
    if last in _FIRST:
        return "exp_avg"
    if last == "step":
        return None
    if "state" in parts[:-1] and any(p.isdigit() for p in parts):
        return "other"
    return "weights"


def resolve(mode: str, error_bound: float | None, policy: Any) -> dict[str, dict | None] | None:
    """Checks the user's arguments and returns {class: {"error_bound", "prune"} or None},
    or None for lossless coding."""
    if mode == "lossless":
        if error_bound is not None or policy is not None:
            raise ValueError("error_bound and policy need mode='near_lossless'")
        return None
    if mode != "near_lossless":
        raise ValueError(f"mode must be 'lossless' or 'near_lossless', not {mode!r}")
    if (error_bound is None) == (policy is None):
        raise ValueError("mode='near_lossless' needs exactly one of error_bound and policy")
    if error_bound is not None:
        policy = dict.fromkeys(("weights", "exp_avg", "exp_avg_sq", "other"), error_bound)
    if isinstance(policy, str):
        if policy not in PRESETS:
            raise ValueError(f"unknown preset {policy!r}; presets: {sorted(PRESETS)}")
        policy = PRESETS[policy]
    if not isinstance(policy, dict):
        raise TypeError("policy must be a preset name or a dict of class -> setting")
    unknown = set(policy) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown tensor classes {sorted(unknown)}; classes: {CLASSES}")
    return {c: _setting(c, policy.get(c)) for c in CLASSES}


def _setting(cls: str, s: Setting) -> dict | None:
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        s = {"error_bound": s}
    if isinstance(s, dict) and set(s) == {"relative_bound"}:
        r = float(s["relative_bound"])
        if not 0.0 < r < 1.0:
            raise ValueError(f"{cls}: relative_bound must be in (0, 1)")
        return {"error_bound": r, "prune": 0.0, "relative": True}
    if not isinstance(s, dict) or set(s) - {"error_bound", "prune"} or "error_bound" not in s:
        raise ValueError(f"{cls}: a setting is None, a bound, {{'error_bound', 'prune'}} or "
                         "{'relative_bound'}")
    e, p = float(s["error_bound"]), float(s.get("prune", 0.0))
    if not (e >= 0.0 and e != float("inf")):
        raise ValueError(f"{cls}: error_bound must be finite and >= 0")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{cls}: prune must be in [0, 1)")
    return {"error_bound": e, "prune": p, "relative": False}


def specs(tensors, policy: dict[str, dict | None] | None, min_elements: int = MIN_ELEMENTS):
    """The core's per-tensor `lossy` argument for `(name, dtype, shape, ...)` tensors, or
    None when nothing is lossy."""
    if policy is None:
        return None
    out = []
    for name, dtype, shape, *_ in tensors:
        numel = 1
        for d in shape:
            numel *= d
        cls = classify(name, dtype, numel, min_elements)
        s = policy.get(cls) if cls else None
        out.append(None if s is None else
                   (cls, s["error_bound"], s["prune"], cls == "exp_avg_sq", s["relative"]))
    return out if any(out) else None
