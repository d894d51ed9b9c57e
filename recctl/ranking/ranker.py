"""The LightGBM LambdaRank model: groups per user, early stopping on validation users, plain-text model.

Deterministic for a given seed (``deterministic``, ``force_row_wise``, one seed for every random part of
LightGBM). Saved as LightGBM's own text format plus JSON (the feature list and the importances), so a run
folder holds no pickle.
"""

from __future__ import annotations

import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from recctl import resources

LABEL = "label"


class LGBMParams(BaseModel):
    """LightGBM settings of the ranker (the rest are LightGBM's defaults)."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(400, ge=1)  # at most; early stopping usually ends sooner
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(50, ge=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)  # bagging fraction (every iteration)
    reg_lambda: float = Field(1.0, ge=0)
    eval_at: int = Field(10, ge=1)  # early stopping watches ndcg@eval_at on the validation users
    early_stopping: int = Field(30, ge=1)  # rounds without improvement
    truncation_level: int = Field(30, ge=1)  # lambdarank_truncation_level
    # LightGBM threads, 0 = every core. One by default, as for torch: on a shared 2-core machine two
    # threads trained the sample shop's ranker in 7.8 s (21 s under heavier load) against 4.6 s with one.
    threads: int = Field(1, ge=0)


@dataclass
class TrainedRanker:
    booster: Any  # lightgbm.Booster
    features: list[str]
    best_iteration: int
    valid_ndcg: float | None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of a ``matrix`` of this ranker's features (the caller may free the frame first)."""
        out: np.ndarray = self.booster.predict(x, num_iteration=self.best_iteration or None)
        return out

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / "ranker.txt"), num_iteration=self.best_iteration or None)
        (path / "ranker.json").write_text(
            json.dumps(
                {
                    "features": self.features,
                    "best_iteration": self.best_iteration,
                    "valid_ndcg": self.valid_ndcg,
                    "importances": self.importances,
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, path: Path) -> TrainedRanker:
        """The ranker ``save`` wrote; ``BadFile`` naming ranker.json or ranker.txt when either is damaged
        (the text model is checked before LightGBM parses it: a truncated one crashed the process)."""
        lgb = lightgbm()

        from recctl.ranking.model_text import check_model_text
        from recctl.run_files import BadFile, load_json

        info = path / "ranker.json"
        meta = load_json(info)
        features, importances = meta.get("features"), meta.get("importances", {})
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise BadFile(info, "has no feature list")
        if not isinstance(importances, dict):
            raise BadFile(info, "has no valid importances")
        valid = meta.get("valid_ndcg")
        text = path / "ranker.txt"
        check_model_text(text)  # LightGBM crashes on a truncated or damaged one
        try:
            booster = lgb.Booster(model_file=str(text))
        except lgb.basic.LightGBMError as exc:
            raise BadFile(text, f"is not a LightGBM model ({str(exc).strip()[:120]})") from exc
        if booster.num_feature() != len(features):
            raise BadFile(
                info, f"lists {len(features)} features, the model in ranker.txt {booster.num_feature()}"
            )
        return cls(booster, features, 0, valid if isinstance(valid, float) else None, importances)


class _StderrLog:
    """LightGBM's messages: its warnings to stderr (by default it prints them on stdout, which carries
    the ``--json`` document), its progress lines nowhere. Native messages all arrive as ``info``."""

    def info(self, msg: str) -> None:
        if "[Info]" not in msg and "[Debug]" not in msg:
            self.warning(msg.replace("[LightGBM] ", ""))

    def warning(self, msg: str) -> None:
        sys.stderr.write(f"lightgbm: {msg.strip()}\n")


def lightgbm() -> Any:
    """The lightgbm module (imported lazily), its log routed to stderr."""
    import lightgbm as lgb

    lgb.register_logger(_StderrLog())
    return lgb


def matrix(frame: pl.DataFrame, features: list[str], mask: pl.Series | None = None) -> np.ndarray:
    """``frame``'s ``features`` (only the rows of ``mask`` when given) as a column-major float32 matrix
    (LightGBM ≥ 4 reads it without a copy), filled one column at a time: no cast or filtered copy of the
    whole frame beside it."""
    height = frame.height if mask is None else int(mask.sum())
    x = np.empty((height, len(features)), dtype=np.float32, order="F")
    for j, name in enumerate(features):
        col = frame[name] if mask is None else frame[name].filter(mask)
        x[:, j] = col.cast(pl.Float32).to_numpy()
    return x


@dataclass
class RankerInputs:
    """What LightGBM learns from: the feature matrix, the labels and the group sizes (users in order)."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray

    @classmethod
    def of(cls, frame: pl.DataFrame, features: list[str], users: pl.Series | None = None) -> RankerInputs:
        """From training rows sorted by user with a ``label`` column; only the rows of ``users`` when given
        (in the frame's order)."""
        mask = None if users is None else frame["user_id"].is_in(users.implode())
        keys = frame.select("user_id", LABEL)
        keys = keys if mask is None else keys.filter(mask)
        return cls(matrix(frame, features, mask), keys[LABEL].to_numpy(), _groups(keys))


def _groups(frame: pl.DataFrame) -> np.ndarray:
    """Group sizes of a frame sorted by user (LightGBM wants contiguous groups)."""
    sizes = frame.group_by("user_id", maintain_order=True).len()["len"].to_numpy()
    return sizes


def train_ranker(
    train: RankerInputs, valid: RankerInputs | None, features: list[str], params: LGBMParams, seed: int
) -> TrainedRanker:
    """Fit LambdaRank on ``train``, early-stopped on ``valid`` (the caller frees the frames they came
    from: only the float32 matrices and LightGBM's binned copy are alive during the fit)."""
    lgb = lightgbm()

    model = lgb.LGBMRanker(
        objective="lambdarank",
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        colsample_bytree=params.colsample_bytree,
        subsample=params.subsample,
        subsample_freq=1,
        reg_lambda=params.reg_lambda,
        lambdarank_truncation_level=params.truncation_level,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=params.threads or resources.cores(),
        verbose=-1,
    )
    fit_kw: dict[str, Any] = {"group": train.group, "feature_name": features}
    if valid is not None and len(valid.y):
        # LightGBM 4.7 renamed eval_set to eval_X / eval_y; older versions only know eval_set
        new_api = "eval_X" in inspect.signature(model.fit).parameters
        fit_kw |= {
            **(
                {"eval_X": (valid.x,), "eval_y": (valid.y,)}
                if new_api
                else {"eval_set": [(valid.x, valid.y)]}
            ),
            "eval_group": [valid.group],
            "eval_at": [params.eval_at],
            "callbacks": [lgb.early_stopping(params.early_stopping, verbose=False)],
        }
    model.fit(train.x, train.y, **fit_kw)
    booster = model.booster_
    best = int(model.best_iteration_ or 0)
    valid_ndcg = None
    if valid is not None and len(valid.y) and model.best_score_:
        valid_ndcg = float(next(iter(model.best_score_["valid_0"].values())))
    gain = booster.feature_importance(importance_type="gain", iteration=best or None)
    split = booster.feature_importance(importance_type="split", iteration=best or None)
    total = float(gain.sum()) or 1.0
    importances = {
        f: {"gain_share": round(float(g) / total, 6), "splits": int(s)}
        for f, g, s in sorted(zip(features, gain, split, strict=True), key=lambda t: -t[1])
    }
    return TrainedRanker(booster, features, best, valid_ndcg, importances)
