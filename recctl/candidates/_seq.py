"""The SASRec network and its training loop (torch), kept apart from the generator's data handling.

This module imports torch at call time only, like every heavy module of ``recctl``: the network is a
``torch.nn.ModuleDict`` of standard layers run by ``encode`` (no subclass, so no class needs torch at
import). Items are numbered 1..V (0 = padding); sequences are int64 matrices, left-padded, newest item in
the last column; positional embeddings count from the end, so the last column is always position L-1.

Randomness comes only from the ``seed`` given to ``train``: a ``numpy.random.Generator`` orders the
batches and a ``torch.Generator`` draws the initial weights and every dropout mask.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recctl import resources

IntMatrix = npt.NDArray[np.int64]
log = logging.getLogger(__name__)
_EVAL_BATCH = 512
_CE_CHUNK = 128


@dataclass
class NetSpec:
    n_items: int
    max_len: int
    hidden: int
    layers: int
    heads: int
    dropout: float
    positions: str = "start"


@dataclass
class TrainSpec:
    epochs: int
    lr: float
    batch_size: int
    patience: int
    eval_every: int
    final_epochs: int
    weight_decay: float
    threads: int
    bf16: bool = True
    val_users: int = 0
    users_per_epoch: int = 0  # users drawn for each epoch (0 or at least every user: no draw)
    log: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` (0 = every core this process may use), restored after."""
    import torch

    cores = resources.cores()
    before = torch.get_num_threads()
    torch.set_num_threads(n if n > 0 else cores)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_net(spec: NetSpec, gen: Any | None = None) -> Any:
    """The network with weights drawn from ``gen`` (a torch.Generator), or left empty to load into."""
    import torch
    from torch import nn

    d, meta = spec.hidden, torch.device("meta")
    blocks = [
        nn.ModuleDict({
            "ln1": nn.LayerNorm(d, device=meta), "qkv": nn.Linear(d, 3 * d, device=meta),
            "out": nn.Linear(d, d, device=meta), "ln2": nn.LayerNorm(d, device=meta),
            "ff1": nn.Linear(d, 4 * d, device=meta), "ff2": nn.Linear(4 * d, d, device=meta),
        })
        for _ in range(spec.layers)
    ]  # fmt: skip
    net = nn.ModuleDict({
        "item": nn.Embedding(spec.n_items + 1, d, padding_idx=0, device=meta),
        "pos": nn.Embedding(spec.max_len, d, device=meta),
        "blocks": nn.ModuleList(blocks), "ln": nn.LayerNorm(d, device=meta),
    })  # fmt: skip
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln" in name or name.startswith("ln"):
                p.fill_(1.0)
            elif gen is not None:
                fan_in = p.shape[1] if name.startswith("blocks") else d
                p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
            else:
                p.zero_()
        item: Any = net["item"]
        item.weight[0].zero_()
    return net


def _dropout(x: Any, p: float, gen: Any | None) -> Any:
    import torch

    if gen is None or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=gen) >= p  # faster than bernoulli_ with a generator
    return x * keep / (1.0 - p)


def encode(net: Any, seq: Any, spec: NetSpec, gen: Any | None = None) -> Any:
    """Hidden states (B, L, d) of left-padded sequences (B, L); dropout only when ``gen`` is given."""
    import torch
    import torch.nn.functional as F

    b, n = seq.shape
    d, h = spec.hidden, spec.heads
    valid = (seq != 0).unsqueeze(-1)
    if spec.positions == "end":  # the newest item is always at position max_len - 1
        x = net["item"](seq) * math.sqrt(d) + net["pos"].weight[spec.max_len - n :]
    else:  # the oldest item of the window is at position 0
        x = net["item"](seq) * math.sqrt(d) + net["pos"](((seq != 0).cumsum(1) - 1).clamp(min=0))
    x = _dropout(x, spec.dropout, gen) * valid
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    # a key is visible if it is earlier and real; every position sees itself (no all-masked rows)
    mask = (causal & (seq != 0).unsqueeze(1)) | torch.eye(n, dtype=torch.bool)
    mask = mask.unsqueeze(1)
    for blk in net["blocks"]:
        qkv = blk["qkv"](blk["ln1"](x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        x = x + _dropout(blk["out"](att.transpose(1, 2).reshape(b, n, d)), spec.dropout, gen)
        ff = _dropout(F.gelu(blk["ff1"](blk["ln2"](x))), spec.dropout, gen)
        x = (x + _dropout(blk["ff2"](ff), spec.dropout, gen)) * valid
    return net["ln"](x)


def _trim(seq: Any) -> Any:
    """Drop the leading columns that are padding in every row."""
    filled = (seq != 0).any(0).nonzero()
    return seq[:, int(filled[0]) :] if len(filled) else seq[:, -1:]


def score_last(net: Any, seq: IntMatrix, spec: NetSpec) -> Any:
    """Scores (B, V) of the next item after each sequence; column j is item j + 1. No grad."""
    import torch

    with torch.no_grad():
        s = _trim(torch.from_numpy(np.ascontiguousarray(seq)))
        last = encode(net, s, spec)[:, -1]
        return last @ net["item"].weight[1:].T


def _ndcg10(net: Any, seq: IntMatrix, target: npt.NDArray[np.int64], spec: NetSpec) -> float:
    """Full-ranking NDCG@10 of ``target`` after ``seq``, items of ``seq`` filtered (as seen items)."""
    import torch

    total = 0.0
    net.eval()
    for lo in range(0, len(seq), _EVAL_BATCH):
        s, t = seq[lo : lo + _EVAL_BATCH], torch.from_numpy(target[lo : lo + _EVAL_BATCH] - 1)
        scores = score_last(net, s, spec)
        rows, cols = np.nonzero(s)
        scores[torch.from_numpy(rows), torch.from_numpy(s[rows, cols] - 1)] = float("-inf")
        ts = scores.gather(1, t.unsqueeze(1))
        rank = (scores > ts).sum(1)
        hit = (rank < 10) & torch.isfinite(ts.squeeze(1))
        total += float((hit / torch.log2(rank.double() + 2)).sum())
    return total / max(len(seq), 1)


@functools.cache
def _full_softmax_ce() -> Any:
    """Cross-entropy over every item, in row chunks, its matrix products in bfloat16 (a torch Function).

    Chunks of ``_CE_CHUNK`` rows keep each logit block in cache; the logits are recomputed in the
    backward pass instead of stored, and the log-sum-exp and gradients are accumulated in float32.
    """
    import torch

    class FullSoftmaxCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, h: Any, w: Any, target: Any) -> Any:
            hb, wb = h.bfloat16(), w.bfloat16()
            lse, total = torch.empty(len(h)), torch.zeros(())
            for lo in range(0, len(h), _CE_CHUNK):
                z = (hb[lo : lo + _CE_CHUNK] @ wb.T).float()
                lse[lo : lo + _CE_CHUNK] = torch.logsumexp(z, 1)
                total += lse[lo : lo + _CE_CHUNK].sum() - z.gather(1, target[lo : lo + _CE_CHUNK, None]).sum()
            ctx.save_for_backward(hb, wb, target, lse)
            return total / len(h)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            hb, wb, target, lse = ctx.saved_tensors
            gh, gw = torch.empty(hb.shape), torch.zeros(wb.shape)
            for lo in range(0, len(hb), _CE_CHUNK):
                p = (hb[lo : lo + _CE_CHUNK] @ wb.T).float().sub_(lse[lo : lo + _CE_CHUNK, None]).exp_()
                p.scatter_add_(1, target[lo : lo + _CE_CHUNK, None], torch.full((len(p), 1), -1.0))
                pb = p.mul_(grad / len(hb)).bfloat16()
                gh[lo : lo + _CE_CHUNK] = (pb @ wb).float()
                gw += (pb.T @ hb[lo : lo + _CE_CHUNK]).float()
            return gh, gw, None

    return FullSoftmaxCE


def _batches(rng: np.random.Generator, lengths: npt.NDArray[np.int64], size: int) -> list[IntMatrix]:
    """Shuffled batches of similar lengths: random order, sorted by length within chunks of 32 batches."""
    order = rng.permutation(len(lengths))
    chunk = size * 32
    parts = [order[i : i + chunk] for i in range(0, len(order), chunk)]
    sorted_order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in parts])
    batches = [sorted_order[i : i + size] for i in range(0, len(sorted_order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _epoch(
    net: Any, opt: Any, seqs: IntMatrix, spec: NetSpec, tr: TrainSpec, rng: np.random.Generator, gen: Any
) -> float:
    import torch
    import torch.nn.functional as F

    net.train()
    bf16 = tr.bf16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    inp, tgt = seqs[:, :-1], seqs[:, 1:].copy()
    tgt[inp == 0] = 0  # nothing to predict from an empty prefix
    keep = (tgt != 0).any(1)
    inp, tgt = inp[keep], tgt[keep]
    total, count = 0.0, 0
    for idx in _batches(rng, (inp != 0).sum(1), tr.batch_size):
        s = _trim(torch.from_numpy(inp[idx]))
        t = torch.from_numpy(tgt[idx][:, -s.shape[1] :])
        sel = t != 0
        hid = encode(net, s, spec, gen)[sel]
        if bf16:
            loss = _full_softmax_ce().apply(hid, net["item"].weight[1:], t[sel] - 1)
        else:
            loss = F.cross_entropy(hid @ net["item"].weight[1:].T, t[sel] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, count = total + loss.item() * int(sel.sum()), count + int(sel.sum())
    return total / max(count, 1)


def _sample(
    rows: IntMatrix, owner: npt.NDArray[np.int64], n_users: int, tr: TrainSpec, rng: np.random.Generator
) -> IntMatrix:
    """The rows of ``tr.users_per_epoch`` users drawn without replacement (all rows when that is not
    fewer than ``n_users``: then nothing is drawn and ``rng`` is untouched)."""
    if not 0 < tr.users_per_epoch < n_users:
        return rows
    chosen = np.zeros(n_users, dtype=bool)
    chosen[rng.choice(n_users, size=tr.users_per_epoch, replace=False)] = True
    picked: IntMatrix = rows[chosen[owner]]
    return picked


def train(
    full: IntMatrix, older: IntMatrix, owner: npt.NDArray[np.int64], spec: NetSpec, tr: TrainSpec, seed: int
) -> Any:
    """Fit on ``full`` (U, max_len + 2): each row a user's last items, left-padded, and ``older``
    (rows, max_len + 1): windows of the users' earlier items (``owner``: each window's row of ``full``),
    trained on in every epoch; with ``tr.users_per_epoch`` below U, each epoch (final ones too) trains on
    the rows of that many users drawn afresh.

    Early stopping: the last item of ``val_users`` sampled rows (of those with an item before it; 0 = all)
    is the validation target; those rows train without it, the others whole, and the model is scored by
    full-ranking NDCG@10 every ``eval_every`` epochs; the best weights are kept, then trained
    ``final_epochs`` more epochs on every whole row.
    """
    with threads(tr.threads):
        return _train(full, older, owner, spec, tr, seed)


def _train(
    full: IntMatrix, older: IntMatrix, owner: npt.NDArray[np.int64], spec: NetSpec, tr: TrainSpec, seed: int
) -> Any:
    import torch

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_net(spec, gen)
    opt = torch.optim.Adam(net.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    has_val = full[:, -2] != 0
    if 0 < tr.val_users < has_val.sum():  # a sample of users held out; the others train on all their items
        has_val[rng.permutation(np.flatnonzero(has_val))[tr.val_users :]] = False
    val_seq, val_tgt = full[has_val, 1:-1], full[has_val, -1]
    fit_rows = np.vstack([full[has_val, :-1], full[~has_val, 1:], older])
    users = np.arange(len(full))
    fit_owner = np.concatenate([users[has_val], users[~has_val], owner])
    best, best_state, best_epoch, waited = -1.0, copy.deepcopy(net.state_dict()), 0, 0
    t0 = time.perf_counter()
    for epoch in range(1, tr.epochs + 1):
        loss = _epoch(net, opt, _sample(fit_rows, fit_owner, len(full), tr, rng), spec, tr, rng, gen)
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 5)}
        if has_val.any() and (epoch % tr.eval_every == 0 or epoch == tr.epochs):
            score = _ndcg10(net, val_seq, val_tgt, spec)
            entry["val_ndcg10"] = round(score, 5)
            if score > best:
                best, best_state, best_epoch, waited = score, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                waited += 1
        entry["s"] = round(time.perf_counter() - t0, 1)
        tr.log.append(entry)
        log.info("sasrec %s", entry)
        if waited >= tr.patience:
            break
    if best >= 0:
        net.load_state_dict(best_state)
    else:
        best_epoch = len(tr.log)
    del fit_rows, fit_owner
    if tr.final_epochs:
        final_rows, final_owner = np.vstack([full[:, 1:], older]), np.concatenate([users, owner])
    for epoch in range(tr.final_epochs):
        rows = _sample(final_rows, final_owner, len(full), tr, rng)
        loss = _epoch(net, opt, rows, spec, tr, rng, gen)
        tr.log.append({"final_epoch": epoch + 1, "loss": round(loss, 5), "best_epoch": best_epoch,
                       "s": round(time.perf_counter() - t0, 1)})  # fmt: skip
    net.eval()
    return net
