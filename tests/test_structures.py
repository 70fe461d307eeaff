"""Nested checkpoint structures: a real model + AdamW state + plain Python values."""

from __future__ import annotations

import io
import math
import pathlib
import pickle
import re
import warnings
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")

import fastckpt  # noqa: E402
from _helpers import assert_same_tensor, assert_same_tree, examples  # noqa: E402
from fastckpt import _tree  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# --------------------------------------------------------------------------------------
# a small real model trained for two AdamW steps
# --------------------------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(8, 16)
        self.block = torch.nn.TransformerEncoderLayer(
            d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 4)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.steps_seen += 1
        return self.head(self.norm(self.block(self.embed(x))))


def make_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(4, 5, 8, generator=g), torch.randn(4, 5, 4, generator=g)) for _ in range(n)
    ]


def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)


def train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()


@pytest.fixture()
def trained():
    torch.manual_seed(0)
    model = TinyNet()
    opt = make_optimizer(model)
    train(model, opt, make_batches(2, seed=1))
    return model, opt


def full_checkpoint(model, opt):
    return {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "epoch": 3,
        "lr": 1e-3,
        "name": "run",
        "tags": ["a", "b"],
        "step_tuple": (1, (2, "three"), []),
        "big": 2**70 + 12345,
        "neg_big": -(2**130) - 1,
        "int64_edges": [2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**64) - 1],
        "none": None,
        "flags": [True, False],
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308],
        "text": "h\u00e9llo \u2603 \U0001f600 \x00 end",
        "empty_str": "",
        "blob": bytes(range(256)),
        "empty_bytes": b"",
        "dtype": torch.bfloat16,
        "dtypes": [torch.float32, torch.float8_e4m3fn, torch.int64, torch.bool, torch.complex64],
        "size": torch.Size([2, 3]),
        "empty_size": torch.Size([]),
        "device": torch.device("cpu"),
        "set": {1, 2, 3},
        "frozenset": frozenset({"x", "y"}),
        "empty_set": set(),
        "empty_dict": {},
        7: "int key",
        -1: "negative int key",
        2.5: "float key",
        None: "None key",
        (1, "a"): "tuple key",
        "bool_keys": {True: "t", False: "f"},
        "rng_state": torch.get_rng_state(),
    }


def test_trained_checkpoint_roundtrip(trained):
    model, opt = trained
    ckpt = full_checkpoint(model, opt)
    out = fastckpt.decode(fastckpt.encode(ckpt))
    assert_same_tree(ckpt, out)
    # spot checks of things that are easy to get subtly wrong
    assert list(out["optim"]["state"].keys()) == list(opt.state_dict()["state"].keys())
    assert all(type(k) is int for k in out["optim"]["state"])
    assert type(out["optim"]["param_groups"][0]["betas"]) is tuple
    assert (
        out["optim"]["param_groups"][0]["params"] == opt.state_dict()["param_groups"][0]["params"]
    )
    assert out["big"] == 2**70 + 12345 and out["neg_big"] == -(2**130) - 1
    assert math.isnan(out["floats"][0]) and math.copysign(1.0, out["floats"][3]) == -1.0
    assert type(out["size"]) is torch.Size and out["size"] == torch.Size([2, 3])
    assert out["dtype"] is torch.bfloat16
    assert out[7] == "int key" and out[None] == "None key" and out[(1, "a")] == "tuple key"
    assert out["bool_keys"] == {True: "t", False: "f"}
    assert all(type(k) is bool for k in out["bool_keys"])


def test_optimizer_resume_is_exact(trained):
    """load_state_dict of the decoded checkpoint, then continued training, is bit-identical."""
    model, opt = trained
    data = fastckpt.encode({"model": model.state_dict(), "optim": opt.state_dict()})

    torch.manual_seed(123)  # different init: everything must come from the checkpoint
    model2 = TinyNet()
    opt2 = make_optimizer(model2)
    decoded = fastckpt.decode(data)
    model2.load_state_dict(decoded["model"])
    opt2.load_state_dict(decoded["optim"])
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert n1 == n2
        assert_same_tensor(p1, p2, n1)

    more = make_batches(3, seed=2)
    train(model, opt, more)
    train(model2, opt2, more)
    for (n1, p1), (_, p2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert_same_tensor(p1, p2, f"after resume: {n1}")
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert_same_tree(s1["state"], s2["state"])
    assert_same_tree(s1["param_groups"], s2["param_groups"])


def test_tensor_names_follow_key_paths(trained):
    model, opt = trained
    ckpt = {"model": model.state_dict(), "optim": opt.state_dict()}
    info = fastckpt.inspect(fastckpt.encode(ckpt))
    names = {t["name"] for t in info["tensors"]}
    expected = {f"model/{k}" for k in model.state_dict()}
    expected |= {f"optim/state/{i}/{k}" for i, s in opt.state_dict()["state"].items() for k in s}
    assert names == expected
    assert "optim/state/0/exp_avg" in names


def test_flat_state_dict_names(trained):
    model, _ = trained
    sd = model.state_dict()
    data = fastckpt.encode(sd)
    names = [t["name"] for t in fastckpt.inspect(data)["tensors"]]
    assert sorted(names) == sorted(sd.keys())
    for k in ("head.weight", "block.self_attn.in_proj_weight"):
        assert_same_tensor(sd[k], fastckpt.read_tensor(data, k), k)


def test_parameters_and_requires_grad_tensors(trained):
    model, _ = trained
    params = dict(model.named_parameters())
    out = fastckpt.decode(fastckpt.encode(params))
    assert list(out) == list(params)
    for k, p in params.items():
        assert isinstance(out[k], torch.Tensor)
        assert_same_tensor(p.detach(), out[k].detach(), k)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        0,
        -(2**200),
        1.5,
        "s",
        b"b",
        [],
        (),
        {},
        [[[]]],
        ((),),
        {"a": {"b": {"c": {"d": [1, (2, {3: None})]}}}},
        torch.float16,
        torch.Size([0, 1, 2]),
        frozenset(),
    ],
    ids=repr,
)
def test_plain_top_level_values(obj):
    assert_same_tree(obj, fastckpt.decode(fastckpt.encode(obj)))


def test_deep_nesting():
    obj = leaf = {}
    for i in range(60):
        leaf[f"k{i}"] = {}
        leaf = leaf[f"k{i}"]
    leaf["t"] = torch.ones(3)
    assert_same_tree(obj, fastckpt.decode(fastckpt.encode(obj)))


def test_lone_surrogate_string():
    """A str that UTF-8 cannot encode: round-trip exactly or raise UnsupportedError (a
    FastckptError), never a bare UnicodeEncodeError."""
    obj = {"s": "ok \ud800 end", "t": torch.ones(2)}
    try:
        data = fastckpt.encode(obj)
    except fastckpt.UnsupportedError:
        return
    assert_same_tree(obj, fastckpt.decode(data))


def test_keys_containing_separator():
    """'/' inside keys makes names ambiguous, but decode must still be structural."""
    obj = {"a/b": torch.zeros(2), "a": {"b": torch.ones(2)}, "": torch.full((1,), 7.0)}
    assert_same_tree(obj, fastckpt.decode(fastckpt.encode(obj)))


# --------------------------------------------------------------------------------------
# hypothesis: arbitrary nested plain values
# --------------------------------------------------------------------------------------

scalar_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.sampled_from([torch.float32, torch.bfloat16, torch.uint64, torch.complex128]),
    st.builds(torch.Size, st.lists(st.integers(0, 2**40), max_size=4)),
    st.just(torch.device("cpu")),
)
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(allow_nan=False),
    st.text(max_size=10),
)
dict_keys = st.one_of(
    hashable_leaves,
    st.tuples(hashable_leaves, hashable_leaves),
)
small_tensors = st.builds(
    lambda n, dt: torch.arange(n).to(dt),
    st.integers(0, 20),
    st.sampled_from([torch.float32, torch.bfloat16, torch.int8, torch.bool]),
)


def containers(children, keys, size: int) -> list:
    """Lists, tuples and dicts (keys from `keys`) of up to `size` `children`."""
    return [
        st.lists(children, max_size=size),
        st.lists(children, max_size=size).map(tuple),
        st.dictionaries(keys, children, max_size=size),
    ]


trees = st.recursive(
    st.one_of(scalar_leaves, small_tensors),
    lambda children: st.one_of(
        *containers(children, dict_keys, 5),
        st.frozensets(hashable_leaves, max_size=5),
        st.sets(hashable_leaves, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=examples(120))
@given(trees)
def test_nested_plain_values_hypothesis(obj):
    assert_same_tree(obj, fastckpt.decode(fastckpt.encode(obj)))


@settings(max_examples=examples(30))
@given(trees)
def test_encode_deterministic_hypothesis(obj):
    assert fastckpt.encode(obj) == fastckpt.encode(obj, threads=1)



# --------------------------------------------------------------------------------------
# unsupported values
# --------------------------------------------------------------------------------------


class Custom:
    pass


def _gen():
    yield 1


UNSUPPORTED = {
    "lambda": lambda: lambda x: x,
    "object": object,
    "custom_instance": Custom,
    "class": lambda: Custom,
    "generator": _gen,
    "module": lambda: torch.nn.Linear(2, 2),
    "bytesio": io.BytesIO,
    "path": lambda: pathlib.Path("/tmp"),
    "function": lambda: len,
}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
@pytest.mark.parametrize("where", ["top", "dict_value", "list_item", "deep", "with_tensors"])
def test_unsupported_leaf_raises(kind, where):
    leaf = UNSUPPORTED[kind]()
    obj = {
        "top": leaf,
        "dict_value": {"a": leaf},
        "list_item": [1, 2, leaf],
        "deep": {"a": [{"b": (None, {"c": leaf})}]},
        "with_tensors": {"w": torch.ones(100), "x": leaf, "z": torch.zeros(3)},
    }[where]
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.encode(obj)


@pytest.mark.parametrize("key", [object(), Custom(), len], ids=["object", "custom", "builtin"])
def test_unsupported_dict_key_raises(key):
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.encode({key: torch.ones(2)})


def test_unsupported_in_set_raises():
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.encode({"s": {1, Custom()}})


def test_unsupported_torch_dtype_raises():
    with warnings.catch_warnings():  # "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        c32 = torch.zeros(3, dtype=torch.complex32)
    with pytest.raises(fastckpt.UnsupportedError):
        fastckpt.encode({"c32": c32})


def test_unsupported_error_hierarchy():
    assert issubclass(fastckpt.UnsupportedError, TypeError)
    assert issubclass(fastckpt.UnsupportedError, fastckpt.FastckptError)
    assert issubclass(fastckpt.FastckptError, ValueError)
    with pytest.raises(TypeError):
        fastckpt.encode([object()])
    with pytest.raises(ValueError):  # FastckptError is a ValueError too
        fastckpt.encode([object()])


# --------------------------------------------------------------------------------------
# no pickle anywhere
# --------------------------------------------------------------------------------------


def _forbidden(*args, **kwargs):
    raise AssertionError("fastckpt must not use pickle / torch.save / torch.load")


@pytest.fixture()
def no_pickle(monkeypatch):
    for name in ("dumps", "loads", "dump", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, _forbidden)
    monkeypatch.setattr(torch, "save", _forbidden)
    monkeypatch.setattr(torch, "load", _forbidden)
    monkeypatch.setattr(torch.Tensor, "__reduce_ex__", _forbidden)
    monkeypatch.setattr(torch.Tensor, "__getstate__", _forbidden, raising=False)
    monkeypatch.setattr(torch.Tensor, "__setstate__", _forbidden, raising=False)
    yield


def test_no_pickle_during_encode_decode(trained, no_pickle, tmp_path):
    model, opt = trained
    ckpt = full_checkpoint(model, opt)
    data = fastckpt.encode(ckpt)
    assert_same_tree(ckpt, fastckpt.decode(data))
    fastckpt.save(ckpt, tmp_path / "c.fckpt")
    assert_same_tree(ckpt, fastckpt.load(tmp_path / "c.fckpt"))
    fastckpt.inspect(data)
    assert_same_tensor(
        ckpt["optim"]["state"][0]["exp_avg"], fastckpt.read_tensor(data, "optim/state/0/exp_avg")
    )


_PICKLE_USE = re.compile(
    r"^\s*(import|from)\s+(pickle|_pickle|cPickle|dill|cloudpickle|copyreg)\b"
    r"|torch\.(save|load)\s*\("
    r"|allow_pickle\s*=\s*True",
    re.MULTILINE,
)


def test_package_source_has_no_pickle():
    pkg = pathlib.Path(fastckpt.__file__).parent
    sources = list(pkg.rglob("*.py"))
    assert sources, f"no python sources found under {pkg}"
    offenders = [str(p) for p in sources if _PICKLE_USE.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"pickle / torch.save / torch.load used in {offenders}"


# --------------------------------------------------------------------------------------
# the names a decode looks its reference's tensors up by
# --------------------------------------------------------------------------------------

def _packed_tensors(obj):
    packer = _tree.Packer()
    packer.pack(obj)
    return packer.tensors


def _same_leaves(obj):
    """`_tree.leaves` finds the tensors `Packer` stores, in order, under the same names."""
    expected = [(name, id(t)) for name, t in _packed_tensors(obj)]
    assert [(name, id(t)) for name, t in _tree.leaves(obj)] == expected


def _with_metadata(pair):
    d, meta = pair
    out = OrderedDict(d)
    out._metadata = meta  # what torch's state_dict() sets
    return out


# Trees whose tensors sit in every kind of container, under names that collide: keys with
# the separator, int and str keys that print alike, sets of (hashable) tensors, an
# OrderedDict's `_metadata`, a tensor at the root.
colliding_keys = st.sampled_from(["a", "a/b", "b", "1", 1, "", "tensor", "a~2"])
tensor_trees = st.recursive(
    st.one_of(small_tensors, scalar_leaves),
    lambda children: st.one_of(
        *containers(children, colliding_keys, 4),
        st.dictionaries(st.just("a"), children, max_size=1).map(
            lambda d: {"a": {"b": d.get("a")}, "a/b": d.get("a")}),
        st.tuples(st.dictionaries(colliding_keys, children, max_size=3), children).map(
            _with_metadata),
        st.frozensets(small_tensors, max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=examples(150))
@given(st.one_of(trees, tensor_trees))
def test_leaves_name_tensors_as_packer_does(obj):
    _same_leaves(obj)


def test_leaves_of_a_training_checkpoint(trained):
    model, opt = trained
    _same_leaves({"model": model.state_dict(), "optim": opt.state_dict(), "step": 3})


@pytest.mark.parametrize("bad", [{"x": [Custom()]}, {torch.zeros(1): 1}, {(1, Custom()): 2}])
def test_leaves_refuse_what_packer_refuses(bad):
    with pytest.raises(fastckpt.UnsupportedError) as packed:
        _packed_tensors(bad)
    with pytest.raises(fastckpt.UnsupportedError) as walked:
        _tree.leaves(bad)
    assert str(walked.value) == str(packed.value)
