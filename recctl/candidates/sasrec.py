"""``sasrec``: SASRec, a causal self-attention next-item model, trained with full softmax cross-entropy.

The recipe is "SASRec+" (Klenitskiy & Vasilev, RecSys 2023): the transformer of Kang & McAuley (2018)
over each user's last ``max_len`` items, trained at every position with cross-entropy over the whole
catalog instead of one sampled negative. Early stopping inside ``fit``: for a seeded sample of
``val_users`` users (0 = all), the last training item is held out as the validation target and scored by
full-ranking NDCG@10 (the items of the sequence filtered) every ``eval_every`` epochs, while the other
users train on all their items; the best weights are kept and then trained ``final_epochs`` more epochs on
every complete sequence, so the held-out transitions are learned too. Longer histories are cut into
windows of ``max_len`` items (all of them train, the newest is what the model reads when it recommends).

``for_users`` ranks the next item after a user's training history; ``for_items`` after the one-item
sequence [item]; ``for_sequences`` after an anonymous session's items (serving). Saved as a torch state
dict, the vocabulary and histories as parquet, and the params and training log as JSON (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from recctl.candidates.base import Params, in_user_blocks, rank_top, register

_SCORE_BATCH = 1024


class SASRecParams(Params):
    max_len: int = Field(50, ge=1)  # items of history the model reads
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, ge=1)  # users (sequences) per step
    epochs: int = Field(60, ge=1)  # at most, before early stopping
    patience: int = Field(3, ge=1)  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = Field(1, ge=1)
    val_users: int = Field(3000, ge=0)  # a sample of users whose last item is held out; 0 = all users
    final_epochs: int = Field(1, ge=0)  # epochs on the full sequences after restoring the best weights
    positions: Literal["start", "end"] = "start"  # position 0 = the window's oldest item, or newest = last
    bf16: bool = True  # the catalog-wide softmax's products in bfloat16 (when the CPU has it; ~1.6x faster)
    drop_repeats: bool = True  # the same item twice in a row counts once
    windows: int = Field(0, ge=0)  # training windows of max_len items per user, newest first; 0 = all
    # users whose sequences (newest window and older ones) train in one epoch, drawn afresh each epoch
    # (seeded); 0 = every user. An epoch's cost grows with the users, so at scale an epoch is a sample;
    # at or below this many users (Amazon Beauty 22 k, Sports 36 k) nothing is drawn and the fit is the
    # same as without a cap.
    users_per_epoch: int = Field(100_000, ge=0)
    # the vocabulary: the N items with most users (0 = every item). The softmax costs time in proportion
    # to the vocabulary; the long tail of a 60k-item grocery catalog is rarely the next item anyway.
    top_items: int = Field(0, ge=0)
    # torch threads; 0 = every core this process may use. One by default: on a machine shared with other
    # jobs, torch's threads wait for each other (an epoch on the sample shop took 130 s with 2 threads
    # at load 7 against 21 s with one); on a dedicated machine raise it.
    threads: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> Self:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


def _positions(
    events: pl.DataFrame, key: str, vocab: pl.DataFrame, width: int | None, drop_repeats: bool
) -> pl.DataFrame:
    """(key, idx, back) of each key's last ``width`` known items (all when None); back = 1 for the newest."""
    df = events.select(key, "item_id").join(vocab, on="item_id", how="inner", maintain_order="left")
    if drop_repeats:
        prev = pl.col("idx").shift(1).over(key)
        df = df.filter(prev.is_null() | (pl.col("idx") != prev))
    df = df.with_columns(back=pl.int_range(pl.len(), 0, -1, dtype=pl.Int64).over(key))
    return df if width is None else df.filter(pl.col("back") <= width)


def _older_windows(
    pos: pl.DataFrame, max_len: int, windows: int, users: pl.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Windows (rows, max_len + 1) of the items before each user's last max_len + 1, left-padded, and
    each window's user (its position in ``users``, the sorted user ids).

    Window j holds the items r = j * max_len ... (j + 1) * max_len counted back from the item at
    back = max_len + 2 (r = 0); consecutive windows share one item, so every transition is in one row.
    """
    r = pos.filter(pl.col("back") >= max_len + 2).with_columns(r=pl.col("back") - (max_len + 2))
    twice = r.filter((pl.col("r") % max_len == 0) & (pl.col("r") > 0))
    parts = pl.concat([
        r.with_columns(j=pl.col("r") // max_len, col=max_len - pl.col("r") % max_len),
        twice.with_columns(j=pl.col("r") // max_len - 1, col=pl.lit(0, pl.Int64)),
    ])  # fmt: skip
    if windows:
        parts = parts.filter(pl.col("j") < windows - 1)
    parts = parts.join(
        parts.select("user_id", "j").unique().sort("user_id", "j").with_row_index("w"), on=["user_id", "j"]
    )
    rows = int(parts["w"].cast(pl.Int64).max() or 0) + 1 if parts.height else 0  # type: ignore[arg-type]
    mat = np.zeros((rows, max_len + 1), dtype=np.int64)
    mat[parts["w"].to_numpy(), parts["col"].to_numpy()] = parts["idx"].to_numpy()
    owner = np.zeros(rows, dtype=np.int64)
    if parts.height:
        first = parts.unique("w").sort("w")
        owner[first["w"].to_numpy()] = _positions_of(first["user_id"], users)
    ok = (mat != 0).sum(1) >= 2
    return mat[ok], owner[ok]


def _positions_of(keys: pl.Series, sorted_keys: pl.Series) -> np.ndarray:
    """Row of each of ``keys`` in ``sorted_keys`` (sorted, containing every key)."""
    return np.asarray(sorted_keys.search_sorted(keys), dtype=np.int64)


def _matrix(pos: pl.DataFrame, key: str, width: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Keys (key, row) in sorted order and their left-padded item matrix (rows, width)."""
    keys = pos.select(key).unique().sort(key).with_row_index("row")
    at = pos.join(keys, on=key)
    mat = np.zeros((keys.height, width), dtype=np.int64)
    mat[at["row"].to_numpy(), width - at["back"].to_numpy()] = at["idx"].to_numpy()
    return keys, mat


@register("sasrec")
class SASRec:
    kind = "sasrec"
    Params = SASRecParams

    def __init__(self, name: str, params: SASRecParams) -> None:
        self.name = name
        self.params = params
        self.vocab = pl.DataFrame(schema={"item_id": pl.String, "idx": pl.Int64})
        self.users = pl.DataFrame(schema={"row": pl.UInt32, "user_id": pl.String})
        self.hist = np.zeros((0, params.max_len), dtype=np.int64)
        self.net: Any = None
        self.log: list[dict[str, Any]] = []
        # what the fit trained on: users, sequences (newest windows + older ones), users per epoch
        self.sampling: dict[str, Any] = {}

    def _spec(self) -> Any:
        from recctl.candidates._seq import NetSpec

        p = self.params
        return NetSpec(self.vocab.height, p.max_len, p.hidden, p.layers, p.heads, p.dropout, p.positions)

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        from recctl.candidates._seq import TrainSpec
        from recctl.candidates._seq import train as train_net

        p = self.params
        events = train.sort("user_id", "ts", maintain_order=True)  # the rows' order breaks time ties
        ids = events.select("item_id").unique()
        if p.top_items and ids.height > p.top_items:
            users = events.group_by("item_id").agg(n=pl.col("user_id").n_unique())
            ids = users.sort(["n", "item_id"], descending=[True, False]).head(p.top_items).select("item_id")
        ids = ids.sort("item_id")
        self.vocab = ids.with_columns(idx=pl.int_range(1, ids.height + 1, dtype=pl.Int64))
        pos = _positions(events, "user_id", self.vocab, None, p.drop_repeats)
        self.users, full = _matrix(pos.filter(pl.col("back") <= p.max_len + 2), "user_id", p.max_len + 2)
        older, owner = _older_windows(pos, p.max_len, p.windows, self.users["user_id"])
        del pos, events
        self.hist = full[:, 2:]
        self.log, self.net = [], None
        n_users = len(full)
        per_epoch = p.users_per_epoch if 0 < p.users_per_epoch < n_users else n_users
        self.sampling = {"users": n_users, "sequences": n_users + len(older), "users_per_epoch": per_epoch,
                         "sampled": per_epoch < n_users, "max_len": p.max_len, "windows": p.windows}  # fmt: skip
        if self.vocab.height == 0:
            return
        tr = TrainSpec(p.epochs, p.lr, p.batch_size, p.patience, p.eval_every, p.final_epochs,
                       p.weight_decay, p.threads, p.bf16, p.val_users, per_epoch)  # fmt: skip
        self.net = train_net(full, older, owner, self._spec(), tr, seed)
        self.log = tr.log
        from recctl import progress

        progress.note(
            f"{n_users} users, {len(older)} older windows of {p.max_len} items"
            + (f", {per_epoch} users sampled per epoch" if per_epoch < n_users else "")
        )

    def _top(self, keys: pl.DataFrame, mat: np.ndarray, n: int, banned: pl.DataFrame) -> pl.DataFrame:
        """(key, item_id, score): the ``n`` best items after each row of ``mat``, keys (row, key).

        ``banned`` holds (row, idx) pairs never to recommend for that row of ``mat``.
        """
        import torch

        from recctl.candidates._seq import score_last, threads

        k = min(n, self.vocab.height)
        b_rows = banned["row"].cast(pl.Int64).to_numpy()
        b_cols = banned["idx"].cast(pl.Int64).to_numpy() - 1
        order = np.argsort(b_rows, kind="stable")
        b_rows, b_cols = b_rows[order], b_cols[order]
        vals, idxs = [], []
        with threads(self.params.threads):
            for lo in range(0, len(mat), _SCORE_BATCH):
                hi = min(lo + _SCORE_BATCH, len(mat))
                scores = score_last(self.net, mat[lo:hi], self._spec())
                a, b = np.searchsorted(b_rows, [lo, hi])
                scores[torch.from_numpy(b_rows[a:b] - lo), torch.from_numpy(b_cols[a:b])] = float("-inf")
                top = scores.topk(k, dim=1)
                vals.append(top.values.double().numpy())
                idxs.append(top.indices.numpy() + 1)
        key = next(c for c in keys.columns if c != "row")
        out = pl.DataFrame({
            key: keys[key].gather(np.repeat(np.arange(keys.height), k)),
            "idx": np.concatenate(idxs).ravel().astype(np.int64),
            "score": np.concatenate(vals).ravel(),
        })  # fmt: skip
        out = out.filter(pl.col("score").is_finite()).join(self.vocab, on="idx", maintain_order="left")
        return out.select(key, "item_id", "score")

    @staticmethod
    def _empty(key: str, item: str = "item_id") -> pl.DataFrame:
        return pl.DataFrame(schema={key: pl.String, item: pl.String, "score": pl.Float64, "rank": pl.Int32})

    @in_user_blocks
    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        req = pl.DataFrame({"user_id": users.unique().cast(pl.String)})
        req = req.join(self.users, on="user_id").sort("user_id")
        if self.net is None or req.height == 0 or n < 1:
            return self._empty("user_id")
        mat = self.hist[req["row"].to_numpy()]
        req = req.drop("row").with_row_index("row")
        banned = pl.DataFrame(schema={"row": pl.UInt32, "idx": pl.Int64})
        if exclude is not None and exclude.height:
            banned = (
                exclude.select("user_id", "item_id").join(req, on="user_id").join(self.vocab, on="item_id")
            )
        recs = self._top(req, mat, n, banned.select("row", "idx"))
        return rank_top(recs, n, None)

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """The next-item distribution after the one-item sequence [item], the item itself left out."""
        req = pl.DataFrame({"item_id": items.unique().cast(pl.String)}).join(self.vocab, on="item_id")
        req = req.sort("item_id").with_row_index("row")
        if self.net is None or req.height == 0 or n < 1:
            return self._empty("item_id", "related_id")
        mat = np.zeros((req.height, self.params.max_len), dtype=np.int64)
        mat[:, -1] = req["idx"].to_numpy()
        recs = self._top(req.select("row", user_id="item_id"), mat, n, req.select("row", "idx"))
        ranked = rank_top(recs, n, None).rename({"item_id": "related_id"})
        return ranked.rename({"user_id": "item_id"})

    def for_sequences(self, sequences: pl.DataFrame, n: int, *, exclude_seen: bool = True) -> pl.DataFrame:
        """(session_id, item_id, score, rank): the next items after each session's items, in position order.

        Items unknown to the model are skipped; a session with none known gets no rows. With
        ``exclude_seen`` the session's own items are not proposed.
        """
        p = self.params
        events = sequences.select(pl.col("session_id").cast(pl.String), "item_id", "position")
        events = events.sort("session_id", "position", maintain_order=True)
        pos = _positions(events, "session_id", self.vocab, p.max_len, p.drop_repeats)
        if self.net is None or pos.height == 0 or n < 1:
            return self._empty("session_id")
        keys, mat = _matrix(pos, "session_id", p.max_len)
        banned = pos.join(keys, on="session_id").select("row", "idx").unique()
        recs = self._top(keys, mat, n, banned if exclude_seen else banned.clear())
        ranked = rank_top(recs.rename({"session_id": "user_id"}), n, None)
        return ranked.rename({"user_id": "session_id"})

    def save(self, path: Path) -> None:
        import torch

        path.mkdir(parents=True, exist_ok=True)
        self.vocab.select("item_id").write_parquet(path / "vocab.parquet")
        rows, cols = np.nonzero(self.hist)
        histories = pl.DataFrame({
            "user_id": self.users["user_id"].gather(rows),
            "item_id": self.vocab["item_id"].gather(self.hist[rows, cols] - 1),
            "back": (self.params.max_len - cols).astype(np.int64),  # 1 = the newest
        })  # fmt: skip
        histories.write_parquet(path / "histories.parquet")
        (path / "params.json").write_text(json.dumps(self.params.model_dump(), indent=1))
        (path / "training.json").write_text(
            json.dumps({"log": self.log, "sampling": self.sampling}, indent=1)
        )
        if self.net is not None:
            torch.save(self.net.state_dict(), path / "model.pt")

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        """The saved params (which shape the network) win over ``params``, which are only validated."""
        import torch

        from recctl.candidates._seq import build_net

        SASRecParams.model_validate(params)
        gen = cls(name, SASRecParams.model_validate_json((path / "params.json").read_text()))
        ids = pl.read_parquet(path / "vocab.parquet")
        gen.vocab = ids.with_columns(idx=pl.int_range(1, ids.height + 1, dtype=pl.Int64))
        hist = pl.read_parquet(path / "histories.parquet").join(gen.vocab, on="item_id")
        gen.users, gen.hist = _matrix(hist, "user_id", gen.params.max_len)
        training = json.loads((path / "training.json").read_text())
        gen.log, gen.sampling = training["log"], training.get("sampling", {})
        if (path / "model.pt").exists():
            gen.net = build_net(gen._spec())
            gen.net.load_state_dict(torch.load(path / "model.pt", weights_only=True))
            gen.net.eval()
        return gen
