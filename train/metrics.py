"""The report's metrics, with AI-generated as the positive class, plus calibration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The metrics reports show, in order (all from :func:`binary_metrics`).
REPORTED = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "average_precision",
    "kappa",
    "ece",
    "tpr_at_fpr_1pct",
    "tpr_at_fpr_5pct",
)


def _safe(fn: Any, *args: Any) -> float:
    try:
        return float(fn(*args))
    except ValueError:  # one class only: the score is undefined
        return math.nan


def expected_calibration_error(is_ai: np.ndarray, p_ai: np.ndarray, bins: int = 10) -> float:
    """Mean |p_ai - observed AI rate| over equal-width bins of p_ai, weighted by count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_ai, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(p_ai[mask].mean()) - float(is_ai[mask].mean()))
    return total / max(1, len(p_ai))


def tpr_at_fpr(is_ai: np.ndarray, p_ai: np.ndarray, fpr_target: float) -> float:
    """Highest true-positive rate whose false-positive rate is at most ``fpr_target``."""
    from sklearn.metrics import roc_curve

    if is_ai.all() or not is_ai.any():
        return math.nan
    fpr, tpr, _ = roc_curve(is_ai, p_ai)
    ok = fpr <= fpr_target
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(is_ai: np.ndarray, p_ai: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts and the report's metrics at ``threshold`` (AI is positive).

    Args:
        is_ai: true where the image is AI-generated.
        p_ai: the model's probability that it is.
        threshold: p_ai at or above which the prediction is "ai".
    """
    from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score

    is_ai = np.asarray(is_ai, dtype=bool)
    p_ai = np.asarray(p_ai, dtype=np.float64)
    pred = p_ai >= threshold
    tp = int((pred & is_ai).sum())
    fp = int((pred & ~is_ai).sum())
    tn = int((~pred & ~is_ai).sum())
    fn = int((~pred & is_ai).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    return {
        "n": len(is_ai),
        "positives": int(is_ai.sum()),
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": ratio(tp + tn, len(is_ai)),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": f1,
        "roc_auc": _safe(roc_auc_score, is_ai, p_ai),
        "average_precision": _safe(average_precision_score, is_ai, p_ai),
        "kappa": _safe(cohen_kappa_score, is_ai, pred),
        "ece": expected_calibration_error(is_ai, p_ai),
        "tpr_at_fpr_1pct": tpr_at_fpr(is_ai, p_ai, 0.01),
        "tpr_at_fpr_5pct": tpr_at_fpr(is_ai, p_ai, 0.05),
    }


def choose_threshold(is_ai: np.ndarray, p_ai: np.ndarray, target_fpr: float | None = None) -> float:
    """Threshold on validation scores: max F1, or the lowest one with FPR <= target_fpr."""
    is_ai = np.asarray(is_ai, dtype=bool)
    candidates = np.unique(p_ai)  # every distinct score, ascending
    best, best_score = 0.5, -1.0
    negatives = max(1, int((~is_ai).sum()))
    for t in candidates:
        pred = p_ai >= t
        if target_fpr is not None:
            if (pred & ~is_ai).sum() / negatives <= target_fpr:
                return float(t)
            continue
        tp = (pred & is_ai).sum()
        denom = pred.sum() + is_ai.sum()
        f1 = 2 * tp / denom if denom else 0.0
        if f1 > best_score:
            best, best_score = float(t), float(f1)
    return best
