"""Evaluate an exported model on labelled images: the report's metrics, plots, JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import UsageError

from .data import Sample, find_samples, load_split, source_groups
from .metrics import binary_metrics
from .predict import Scores, score


def resolve(
    target: str | Path, data_dir: str | Path | None, split: str, model: str | Path | None = None
) -> tuple[Path, list[Sample]]:
    """(model, samples): a run folder gives its model.onnx (or ``model``) and its saved
    split; a model file needs a data folder, all of which is evaluated."""
    from aiscan.scanner.core.models import SHIPPED_MODELS, shipped_model

    if str(target) in SHIPPED_MODELS and not Path(target).exists():
        shipped = shipped_model(str(target))
        if shipped is None:
            raise UsageError(f"this aiscan build ships no {str(target)!r} model")
        target = shipped
    target = Path(target)
    if not target.exists():
        raise UsageError(
            f"{target}: no such run folder or model file (shipped models: "
            f"{', '.join(SHIPPED_MODELS)})"
        )
    if target.is_dir():
        model = Path(model) if model else target / "model.onnx"
        if not model.is_file():
            raise UsageError(
                f"{target} has no model.onnx: run aiscan-export --run {target} --out {model}"
            )
        samples = load_split(target / "split.csv").get(split)
        if not samples:
            raise UsageError(f"{target}/split.csv has no {split!r} split")
        return model, samples
    if data_dir is None:
        raise UsageError("a model file needs DATA_DIR (a folder with ai/ and real/)")
    return target, find_samples(data_dir)


def per_source(scores: Scores, threshold: float) -> dict[str, dict[str, float]]:
    """Accuracy and mean p_ai per source (one class each: accuracy is its recall or
    specificity)."""
    out = {}
    for name, idx in source_groups(scores.samples).items():
        sel = idx[scores.ok[idx]]
        right = (scores.p_ai[sel] >= threshold) == scores.is_ai[sel]
        out[name] = {
            "n": len(sel),
            "accuracy": float(right.mean()) if len(sel) else math.nan,
            "mean_p_ai": float(scores.p_ai[sel].mean()) if len(sel) else math.nan,
        }
    return out


def plots(scores: Scores, metrics: dict[str, float], out_dir: Path, tag: str) -> list[str]:
    """ROC, precision-recall and confusion-matrix PNGs (headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, p = scores.is_ai[scores.ok], scores.p_ai[scores.ok]
    written = []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(
        xlabel="false positive rate (real called AI)",
        ylabel="true positive rate",
        title=f"ROC, AI positive ({tag})",
    )
    ax.legend(loc="lower right")
    written.append(_save(fig, out_dir / f"roc_{tag}.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    prec, rec, _ = precision_recall_curve(y, p)
    ax.plot(rec, prec, label=f"AP {metrics['average_precision']:.4f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({tag})")
    ax.legend(loc="lower left")
    written.append(_save(fig, out_dir / f"pr_{tag}.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    cm = np.array([[metrics["tp"], metrics["fn"]], [metrics["fp"], metrics["tn"]]])
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black"
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["pred ai", "pred real"],
        yticklabels=["true ai", "true real"],
        title=f"Confusion at {metrics['threshold']:.3f} ({tag})",
    )
    written.append(_save(fig, out_dir / f"confusion_{tag}.png"))
    return written


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def _at(scores: Scores, threshold: float, promise: float | None) -> dict[str, Any]:
    """What the ``ai`` edge does on these images, pooled and per kind of image: the band
    promise of the model (its card's), measured on the data at hand."""
    from .protocol import Scored, operating_point

    ok = scores.ok
    kept = [s for s, k in zip(scores.samples, ok, strict=True) if k]
    point = operating_point(Scored(kept, scores.p_ai[ok], np.zeros(len(kept), int)), threshold)
    return dict(point, promise=promise)


def evaluate(
    target: str | Path,
    data_dir: str | Path | None = None,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    reencode: bool = False,
    threshold: float | None = None,
    model: str | Path | None = None,
) -> dict[str, Any]:
    """Score, compute metrics and plots, write ``eval_<tag>.json``; return the report.

    The tag is the split, plus the model file's stem when ``model`` overrides a run's.
    Files go to ``out_dir``; without it, into the run folder, and for a model file (or a
    shipped model by name) nowhere: the report is returned, and shown by the CLI.
    """
    from aiscan.scanner.core.infer import Classifier
    from aiscan.scanner.core.models import resolve_model

    tag = split if model is None else f"{split}_{Path(model).stem}"
    model, samples = resolve(target, data_dir, split, model)
    # Read what the report needs and drop the session before scoring starts its own.
    probe = Classifier(resolve_model(model), "cpu", threads=1)  # a head: joined to its encoder
    model_id, model_sha256, own_threshold = probe.info.model_id, probe.sha256, probe.info.threshold
    bands = probe.info.extra.get("bands")
    promise = bands.get("promise") if isinstance(bands, dict) else None
    del probe
    threshold = own_threshold if threshold is None else threshold
    out = Path(out_dir) if out_dir else (Path(target) if Path(target).is_dir() else None)
    scores = score(model, samples)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    metrics = binary_metrics(scores.is_ai[scores.ok], scores.p_ai[scores.ok], threshold)
    report: dict[str, Any] = {
        "model": str(model),
        "model_id": model_id,
        "model_sha256": model_sha256,
        "split": split,
        "images": len(samples),
        "unreadable": scores.errors,
        "threshold": threshold,
        "metrics": metrics,
        "per_source": per_source(scores, threshold),
        "at_threshold": _at(scores, threshold, promise),
        "plots": plots(scores, metrics, out, tag) if out is not None else [],
    }
    if reencode:
        again = score(model, samples, reencode_quality=90)
        m2 = binary_metrics(again.is_ai[again.ok], again.p_ai[again.ok], threshold)
        report["reencode_jpeg_q90"] = {
            "metrics": m2,
            "delta": {
                k: m2[k] - metrics[k]
                for k in ("accuracy", "roc_auc", "recall", "specificity", "f1")
            },
            "mean_abs_change_p_ai": float(np.nanmean(np.abs(again.p_ai - scores.p_ai))),
        }
    if out is not None:
        (out / f"eval_{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def embed(model: str | Path, report: dict[str, Any]) -> None:
    """Write a report's metrics into the model's own metadata (``aiscan.test_metrics``)."""
    from dataclasses import replace

    from aiscan.model.meta import read_info, write_info

    info = read_info(model)
    extra = dict(
        info.extra,
        test_metrics={
            "split": report["split"],
            "images": report["images"],
            **report["metrics"],
            "per_source": report["per_source"],
            "reencode_jpeg_q90_delta": report.get("reencode_jpeg_q90", {}).get("delta"),
        },
    )
    write_info(model, replace(info, extra=extra))
