"""Generalisation to unseen sources: every score comes from a model that never saw the
image's source.

Three producers of such out-of-source scores share one summary (:func:`summarize`):

- grouped cross-validation of a training recipe (``aiscan-train --fold I/K``): each fold's
  run scores its held-out sources after every epoch (``RUN/holdout/epoch_N.csv``);
  :func:`load_folds` pools the K runs epoch by epoch;
- an ensemble of such recipes (:func:`mean_of`): the mean of their held-out scores;
- a frozen-feature probe (:func:`probe`): pooled features of a pretrained backbone, a
  logistic regression trained without one source (or one fold) at a time. Cheap: it
  screens backbones and preprocessing before full fine-tuning runs.

The summary treats every source as one unseen generator (or one unseen kind of real
photo): per source, its accuracy at the threshold and its ROC AUC against the images of
the other class that the same model scored (its fold's), then the mean and the worst over
sources, beside the pooled figures. The mean AUC per fold compares scores of one model
only, and is the headline figure; the pooled AUC mixes models whose scores are on
different scales (it also reflects how well one threshold serves unseen sources). Source
grouping by K folds is the protocol's; leave-one-source-out (``groups="source"``) gives
a fold one class only, so its per-source AUC falls back to the other class of every fold.
Pooled AUC over sources weighs big sources more; the per-source mean does not. The
"square" figures use only images whose aspect is 1:1 in both classes, where a squash
resize leaves no stretch for the model to read the class from.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import LABELS

from .data import Sample, source_folds, source_groups
from .metrics import binary_metrics


@dataclass(frozen=True)
class Scored:
    """Out-of-source p_ai for a list of samples (same order)."""

    samples: list[Sample]
    p_ai: np.ndarray
    fold: np.ndarray  # which model scored each sample (fold index, or source index)

    @property
    def is_ai(self) -> np.ndarray:
        return np.array([s.is_ai for s in self.samples])


#: Columns of a saved :class:`Scored` (:func:`save_scored`, :func:`load_scored`).
SCORED_COLUMNS = ("path", "label", "source", "group", "fold", "p_ai")


def save_scored(scored: Scored, path: str | Path) -> Path:
    """Write held-out scores as CSV, one row per sample (label as its index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(SCORED_COLUMNS)
        for s, f, p in zip(scored.samples, scored.fold, scored.p_ai, strict=True):
            out.writerow([s.path, s.label, s.source, s.group, int(f), f"{p:.6f}"])
    return path


def load_scored(path: str | Path) -> Scored:
    """Read what :func:`save_scored` wrote."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return Scored(
        [Sample(r["path"], int(r["label"]), r["source"], r.get("group") or "") for r in rows],
        np.array([float(r["p_ai"]) for r in rows]),
        np.array([int(r["fold"]) for r in rows]),
    )


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if not len(pos) or not len(neg):
        return math.nan
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def balanced_accuracy(is_ai: np.ndarray, p_ai: np.ndarray, threshold: float) -> float:
    pred = p_ai >= threshold
    return float((pred[is_ai].mean() + (~pred[~is_ai]).mean()) / 2)


def best_balanced_threshold(is_ai: np.ndarray, p_ai: np.ndarray) -> float:
    """The threshold with the highest balanced accuracy (ties: the one nearest 0.5)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(is_ai, p_ai)
    score = (tpr + 1 - fpr) / 2
    best = np.flatnonzero(score >= score.max() - 1e-12)
    pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(min(1.0, thresholds[pick]))


def summarize(
    scored: Scored, threshold: float = 0.5, square: np.ndarray | None = None
) -> dict[str, Any]:
    """Pooled and per-source generalisation figures (AI positive throughout).

    Args:
        scored: out-of-source scores.
        threshold: p_ai at or above which the verdict is "ai".
        square: optional mask of samples whose aspect is 1:1 (for the "square" figures).
    """
    is_ai, p = scored.is_ai, scored.p_ai
    sources = {}
    for name, sel in source_groups(scored.samples).items():
        ai = bool(is_ai[sel[0]])
        # Against the other class as scored by the same model (same fold) where the
        # fold has it: scores of different models are not on one scale.
        other_class = ~is_ai if ai else is_ai
        same = other_class & np.isin(scored.fold, scored.fold[sel])
        other = p[same if same.any() else other_class]
        auc = _auc(p[sel], other) if ai else _auc(other, p[sel])
        right = (p[sel] >= threshold) == ai
        sources[name] = {
            "n": len(sel),
            "accuracy": float(right.mean()),
            "mean_p_ai": float(p[sel].mean()),
            "auc_vs_other_class": auc,
        }
    aucs = np.array([v["auc_vs_other_class"] for v in sources.values()])
    accs = np.array([v["accuracy"] for v in sources.values()])
    worst = min(sources, key=lambda k: sources[k]["auc_vs_other_class"])
    folds = sorted(set(scored.fold.tolist()))
    fold_aucs = [_auc(p[(scored.fold == f) & is_ai], p[(scored.fold == f) & ~is_ai]) for f in folds]
    per_fold = {}
    for f in folds:
        sel = scored.fold == f
        if is_ai[sel].any() and (~is_ai[sel]).any():
            fold_metrics = binary_metrics(is_ai[sel], p[sel], threshold)
            per_fold[str(f)] = {
                "n": int(sel.sum()),
                "auc": fold_metrics["roc_auc"],
                "tpr_at_fpr_1pct": fold_metrics["tpr_at_fpr_1pct"],
                "tpr_at_fpr_5pct": fold_metrics["tpr_at_fpr_5pct"],
            }
    pooled = binary_metrics(is_ai, p, threshold)
    best_t = best_balanced_threshold(is_ai, p)
    out: dict[str, Any] = {
        "images": len(p),
        "sources": len(sources),
        "threshold": threshold,
        "pooled_auc": pooled["roc_auc"],
        "pooled_balanced_accuracy": balanced_accuracy(is_ai, p, threshold),
        "best_balanced_threshold": best_t,
        "best_balanced_accuracy": balanced_accuracy(is_ai, p, best_t),
        "mean_source_auc": float(np.nanmean(aucs)),
        "worst_source_auc": float(np.nanmin(aucs)),
        "worst_source": worst,
        "mean_source_accuracy": float(accs.mean()),
        "worst_source_accuracy": float(accs.min()),
        "mean_fold_auc": float(np.nanmean(fold_aucs)) if np.isfinite(fold_aucs).any() else math.nan,
        "tpr_at_fpr_1pct": pooled["tpr_at_fpr_1pct"],
        "tpr_at_fpr_5pct": pooled["tpr_at_fpr_5pct"],
        "ece": pooled["ece"],
        "per_source": sources,
        "per_fold": per_fold,
    }
    if square is not None and (square & is_ai).any() and (square & ~is_ai).any():
        out["square_auc"] = _auc(p[square & is_ai], p[square & ~is_ai])
        out["square_images"] = int(square.sum())
    return out


def threshold_at_fpr(is_ai: np.ndarray, p_ai: np.ndarray, fpr: float) -> float:
    """The lowest threshold at which at most ``fpr`` of the real images score at or above
    it (p_ai >= threshold means "ai")."""
    real = np.sort(p_ai[~is_ai])[::-1]
    allowed = math.floor(fpr * len(real))
    if allowed >= len(real):
        return 0.0
    # Strictly above the (allowed+1)-th highest real score: ties stay below.
    return float(np.nextafter(real[allowed], np.inf))


def _kinds(samples: Sequence[Sample]) -> list[str]:
    from .categories import category

    return [category(LABELS[s.label], s.source, s.group) for s in samples]


def operating_point(scored: Scored, threshold: float) -> dict[str, Any]:
    """What a moderator sees at ``threshold``: the share of AI images caught, the share
    of real images flagged, pooled, per kind of image (:mod:`aiscan.train.categories`)
    and per source."""
    ok = np.isfinite(scored.p_ai)
    is_ai, p = scored.is_ai[ok], scored.p_ai[ok]
    kept = [s for s, k in zip(scored.samples, ok, strict=True) if k]
    flagged = p >= threshold
    labels = np.array([LABELS[s.label] for s in kept])

    def rates(keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for label in LABELS:
            names = sorted({k for k, lab in zip(keys, labels, strict=True) if lab == label})
            for name in names:
                sel = (labels == label) & (np.array(keys) == name)
                key = "caught" if label == "ai" else "flagged"
                out[f"{label}/{name}"] = {"n": int(sel.sum()), key: float(flagged[sel].mean())}
        return out

    return {
        "threshold": float(threshold),
        "tpr": float(flagged[is_ai].mean()) if is_ai.any() else math.nan,
        "fpr": float(flagged[~is_ai].mean()) if (~is_ai).any() else math.nan,
        "by_category": rates(_kinds(kept)),
        "by_source": rates([s.source for s in kept]),
    }


#: A real kind needs this many held-out images before the edge answers to it alone.
MIN_KIND_IMAGES = 20


@dataclass(frozen=True)
class Edge:
    """The ``ai`` band's edge and why it sits there.

    Attributes:
        threshold: p_ai at or above which the verdict is "ai".
        pooled: the edge the pooled promise alone gives.
        binding: the real kind that raised it above ``pooled`` ("" when none did).
        rule: the rule in words, for model cards and reports.
    """

    threshold: float
    pooled: float
    binding: str
    rule: str


def band_edge(scored: Scored, promise: float, worst_factor: float = 2.0) -> Edge:
    """The ``ai`` edge from held-out scores: at most ``promise`` of the real images
    flagged pooled, and at most ``worst_factor`` x ``promise`` of each real kind
    (:data:`aiscan.train.categories.REAL_KINDS`, each with at least
    :data:`MIN_KIND_IMAGES` images): the pooled edge raised until the worst kind keeps
    the bound (a worst-group edge, not only a pooled one)."""
    from .categories import REAL_KINDS

    if not 0 < promise < 1 or worst_factor < 1:
        raise UsageError(
            f"promise must be within (0, 1), worst_factor >= 1: {promise}, {worst_factor}"
        )
    ok = np.isfinite(scored.p_ai)
    is_ai, p = scored.is_ai[ok], scored.p_ai[ok]
    kinds = np.array(_kinds([s for s, k in zip(scored.samples, ok, strict=True) if k]))
    pooled = threshold_at_fpr(is_ai, p, promise)
    edge, binding = pooled, ""
    for kind in REAL_KINDS:
        sel = ~is_ai & (kinds == kind)
        if sel.sum() < MIN_KIND_IMAGES:
            continue
        t = threshold_at_fpr(np.zeros(int(sel.sum()), bool), p[sel], worst_factor * promise)
        if t > edge:
            edge, binding = t, kind
    rule = (
        f"ai: held-out FPR at most {promise:g} pooled and at most {worst_factor * promise:g} "
        f"in every real kind of {MIN_KIND_IMAGES}+ images"
    )
    return Edge(float(edge), float(pooled), binding, rule)


def edge_by_fold(scored: Scored, promise: float, worst_factor: float = 2.0) -> dict[str, Any]:
    """Does the band promise hold on sources its edge never saw? For each fold, the edge
    (:func:`band_edge`) is set on the held-out scores of the other folds and applied to
    this fold's images; what it flags and catches is pooled over the folds, per kind
    and per source. (The edge set on all held-out scores flags the promise on them by
    construction; this is the figure a new set of sources, a hidden set, would see.)"""
    from .categories import REAL_KINDS

    ok = np.isfinite(scored.p_ai)
    samples = [s for s, k in zip(scored.samples, ok, strict=True) if k]
    p, fold, is_ai = scored.p_ai[ok], scored.fold[ok], scored.is_ai[ok]
    flagged = np.zeros(len(p), bool)
    edges = {}
    for f in sorted(set(fold.tolist())):
        rest = fold != f
        picked = [s for s, r in zip(samples, rest, strict=True) if r]
        others = Scored(picked, p[rest], fold[rest])
        if others.is_ai.all() or not others.is_ai.any():
            continue
        edge = band_edge(others, promise, worst_factor).threshold
        edges[str(f)] = edge
        flagged[~rest] = p[~rest] >= edge
    kinds = np.array(_kinds(samples))
    by_kind = {}
    for kind in REAL_KINDS:
        sel = ~is_ai & (kinds == kind)
        if sel.any():
            by_kind[kind] = {"n": int(sel.sum()), "flagged": float(flagged[sel].mean())}
    return {
        "promise": promise,
        "edges": edges,
        "fpr": float(flagged[~is_ai].mean()),
        "tpr": float(flagged[is_ai].mean()),
        "by_kind": by_kind,
        "worst_kind": max(by_kind, key=lambda k: by_kind[k]["flagged"]) if by_kind else "",
    }


def aspect_is_square(samples: Sequence[Sample], tolerance: float = 0.01) -> np.ndarray:
    """True where the image (after EXIF orientation) is square within ``tolerance``."""
    from aiscan.model.pixels import open_image, oriented_size

    out = []
    for s in samples:
        with open_image(s.path) as img:
            w, h = oriented_size(img)
        out.append(abs(w / h - 1.0) <= tolerance)
    return np.array(out)


# -- grouped cross-validation of a training recipe -------------------------------------


def load_folds(run_dirs: Sequence[str | Path], column: str = "p_ai") -> dict[int, Scored]:
    """Pool the held-out scores of K fold runs, per epoch (1-based), for the epochs that
    every run has finished; raises ValueError if the runs' held-out sources overlap."""
    per_epoch: dict[int, list[tuple[int, Path]]] = defaultdict(list)
    for f, run in enumerate(run_dirs):
        files = sorted(Path(run).glob("holdout/epoch_*.csv"))
        if not files:
            raise UsageError(f"{run} has no holdout/epoch_*.csv: was it trained with --fold?")
        for path in files:
            per_epoch[int(path.stem.split("_")[1])].append((f, path))
    out = {}
    for epoch, parts in sorted(per_epoch.items()):
        if len(parts) != len(run_dirs):
            continue
        samples, scores, folds = [], [], []
        for f, path in parts:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if rows and column not in rows[0]:
                raise UsageError(f"{path} has no column {column!r}")
            samples += [Sample(r["path"], LABELS.index(r["label"]), r["source"]) for r in rows]
            scores += [float(r[column]) for r in rows]
            folds += [f] * len(rows)
        paths = [s.path for s in samples]
        if len(set(paths)) != len(paths):
            raise UsageError("the runs' held-out images overlap: not folds of one split")
        out[epoch] = Scored(samples, np.array(scores), np.array(folds))
    if not out:
        raise UsageError("no epoch is finished by every run")
    return out


def mean_of(members: Sequence[Scored]) -> Scored:
    """Out-of-source scores of an ensemble: per image, the mean p_ai of its members.

    Each member's scores must cover the same images, each scored by the same fold (so that
    no member's fold model saw the image's source); the first member's order is kept.
    """
    first = members[0]
    paths = [s.path for s in first.samples]
    total = first.p_ai.astype(np.float64).copy()
    for other in members[1:]:
        where = {s.path: i for i, s in enumerate(other.samples)}
        if len(where) != len(paths) or not all(p in where for p in paths):
            raise UsageError("the members were scored on different images: not one protocol")
        order = np.array([where[p] for p in paths])
        if not np.array_equal(other.fold[order], first.fold):
            raise UsageError("the members' folds differ: an image was held out by different folds")
        total += other.p_ai[order]
    return Scored(first.samples, total / len(members), first.fold)


# -- frozen-feature probe --------------------------------------------------------------


def extract_features(
    samples: Sequence[Sample],
    arch: str,
    init: str | None,
    spec: Any,
    batch_size: int = 64,
    workers: int = 1,
) -> np.ndarray:
    """Pooled penultimate features of a pretrained timm backbone for every sample (the
    scanner's decode and resize, centred region)."""
    import torch

    from .data import ImageDataset, make_collate
    from .model import create

    model = create(arch, init).eval().to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        ImageDataset(samples, spec),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=make_collate(spec),
    )
    from .loop import _autocast_dtype

    dtype = _autocast_dtype(torch.device("cpu"), "auto")
    feats = []
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for x, _ in loader:
            x = x.to(memory_format=torch.channels_last)
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
            feats.append(pooled.float().numpy())
    return np.concatenate(feats)


def fold_of(samples: Sequence[Sample], groups: str) -> np.ndarray:
    """Each sample's held-out fold: "source" (one per source, in name order) or "K" as
    digits (the K source-grouped folds of :func:`aiscan.train.data.source_folds`)."""
    if groups == "source":
        names = sorted({s.source for s in samples})
        assign = {n: i for i, n in enumerate(names)}
    else:
        assign = source_folds(samples, int(groups))
    return np.array([assign[s.source] for s in samples])


def probe(
    samples: Sequence[Sample], features: np.ndarray, groups: str = "source", c: float = 0.1
) -> Scored:
    """Out-of-source scores from logistic regressions on frozen features.

    Args:
        samples: the images, in the order of ``features``.
        features: one row per sample.
        groups: "source" (leave one source out: one regression per source) or "K" as
            digits (the K source-grouped folds that fine-tuning uses, e.g. "4").
        c: inverse L2 strength of the regression, on standardised features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    samples = list(samples)
    fold = fold_of(samples, groups)
    y = np.array([s.is_ai for s in samples])
    p = np.full(len(samples), np.nan)
    for f in sorted(set(fold.tolist())):
        test = fold == f
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        clf.fit(features[~test], y[~test])
        p[test] = clf.predict_proba(features[test])[:, list(clf.classes_).index(True)]
    return Scored(samples, p, fold)
