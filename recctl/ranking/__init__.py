"""Stage two of the recommender: merge the generators' candidates, describe them, rank with LambdaRank.

``pipeline_spec`` turns the config's ``[ranker]`` and ``[[candidates]]`` into the spec of one model of
kind ``pipeline`` (``recctl.ranking.pipeline.Pipeline``), which evaluation and training treat like any
generator; ``build_model`` builds a generator or that pipeline from a spec.
"""

from __future__ import annotations

from typing import Any

from recctl.candidates.base import CandidateGenerator, build
from recctl.config import CandidateSpec, RecctlConfig
from recctl.errors import ConfigError

PIPELINE = "pipeline"


AUTO_LABEL = {"leave-one-out": "last-item", "next-basket": "last-basket"}  # else temporal


def pipeline_spec(
    cfg: RecctlConfig, protocol: str | None = None, candidates: list[CandidateSpec] | None = None,
    *, filter_seen: bool | None = None,
) -> CandidateSpec | None:  # fmt: skip
    """The pipeline over the configured generators (None when the ranker is off or there are none).

    Its candidates leave out what the user already touched when the evaluation filters seen items
    (``filter_seen``: the evaluation's setting, None when not evaluating) or when the [rules] never let a
    bought item come back; otherwise (repurchase allowed) bought items are candidates and the ranker
    learns when to repeat and when to explore."""
    r = cfg.ranker
    pool = candidates if candidates is not None else cfg.candidates
    if not r.enabled or not pool:
        return None
    known = {c.name: c for c in pool}
    missing = [g for g in r.generators if g not in known]
    if missing:
        from recctl.names import unknown

        raise unknown("generator", missing, list(known), "[ranker] generators (names from [[candidates]])")
    gens = [known[g] for g in r.generators] if r.generators else [c for c in pool if c.kind != "random"]
    if not gens:  # only the random baseline: nothing to rank
        return None
    label: str = r.label
    if label == "auto":
        label = AUTO_LABEL.get(protocol or cfg.evaluate.protocol, "temporal")
    if r.fallback not in ("best", "blend") and r.fallback not in {g.name for g in gens}:
        valid = ", ".join(["best", "blend", *(g.name for g in gens)])
        raise ConfigError(
            f"[ranker] fallback = {r.fallback!r} is not one of the ranker's generators: {valid}"
        )
    params: dict[str, Any] = {
        "label": label,
        "label_window": r.label_window,
        "min_label_users": r.min_label_users,
        "min_positives": r.min_positives,
        "fallback": r.fallback,
        "target_events": list(cfg.evaluate.target_events),
        "filter_seen": bool(filter_seen) or not cfg.rules.allows_repurchase(),
        "rules": cfg.rules.model_dump(mode="json"),
        **r.params,
        "generators": [g.model_dump() for g in gens],
    }
    return CandidateSpec(name=r.name, kind=PIPELINE, params=params)


def build_model(spec: CandidateSpec) -> CandidateGenerator:
    """A candidate generator, or the two-stage pipeline for kind ``pipeline`` (params validated)."""
    if spec.kind != PIPELINE:
        return build(spec.kind, spec.name, spec.params)
    from pydantic import ValidationError

    from recctl.ranking.pipeline import Pipeline, PipelineParams

    try:
        params = PipelineParams.model_validate(spec.params)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid [ranker] params: {msgs}") from exc
    for g in params.generators:  # each generator's own params are checked before any fitting
        build(g.kind, g.name, g.params)
    return Pipeline(spec.name, params)
