"""Export a training run's best checkpoint, with its threshold chosen on validation."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import LABELS, ModelInfo, p_ai, write_info
from aiscan.model.preprocessing import Preprocessing

from .onnx_export import export_onnx


def data_summary(split: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "images": len(samples),
            "by_label": dict(Counter("ai" if s.is_ai else "real" for s in samples)),
            "by_source": dict(Counter(s.source for s in samples)),
        }
        for name, samples in split.items()
    }


def parity(
    model: Any, onnx_path: Path, samples: list[Any], spec: Preprocessing, softmax: bool = True
) -> float:
    """Max |p_ai(PyTorch fp32) - p_ai(ONNX Runtime)| over real images (``softmax``: the
    torch model gives logits, else probabilities)."""
    import torch

    from aiscan.model.pixels import load_pixels, normalize_batch
    from aiscan.scanner.core.infer import Classifier

    batch = normalize_batch([load_pixels(s.path, spec).pixels for s in samples], spec)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(batch)).numpy()
    ref = p_ai(out, LABELS, "logits" if softmax else "probabilities")
    got = Classifier(onnx_path, "cpu").predict(batch)
    return float(np.abs(ref - got).max())


def choose(
    val: Any, protocol: dict[str, Any] | None, target_fpr: float | None
) -> tuple[float, str]:
    """(threshold, the rule that chose it): the protocol's best balanced threshold when its
    summary is given, else max F1 (or the lowest with FPR <= ``target_fpr``) on ``val``
    (validation scores from :func:`aiscan.train.predict.score`)."""
    from aiscan.train.metrics import choose_threshold

    if protocol is not None:
        rule = "best balanced accuracy on out-of-source scores (grouped cross-validation)"
        return float(protocol["best_balanced_threshold"]), rule
    threshold = choose_threshold(val.is_ai[val.ok], val.p_ai[val.ok], target_fpr)
    rule = (
        f"lowest with FPR <= {target_fpr} on validation" if target_fpr else "max F1 on validation"
    )
    return threshold, rule


def load_best(run: Path) -> tuple[Any, Preprocessing, dict[str, Any]]:
    """A run's ``best.pth``: the eval-mode model, its preprocessing, the checkpoint.

    Raises:
        UsageError: the checkpoint's labels are not aiscan's.
    """
    import torch

    from aiscan.train.model import create

    best = torch.load(run / "best.pth", map_location="cpu", weights_only=False)
    if tuple(best["labels"]) != LABELS:
        raise UsageError(f"{run}: checkpoint labels {best['labels']} differ from {list(LABELS)}")
    model = create(best["arch"])
    model.load_state_dict(best["model"])
    return model.eval(), Preprocessing.from_json(best["preprocessing"]), best


@dataclass(frozen=True)
class Stamp:
    """How an exported model's threshold is chosen and what its metadata records of it.

    Attributes:
        target_fpr: the lowest threshold with validation FPR at most this (None: max F1).
        protocol: an out-of-source summary, embedded as ``generalisation``.
        protocol_threshold: the protocol's best balanced threshold instead.
    """

    target_fpr: float | None = None
    protocol: dict[str, Any] | None = None
    protocol_threshold: bool = False

    def __post_init__(self) -> None:
        if self.protocol_threshold and self.protocol is None:
            raise UsageError("a threshold from the protocol needs its summary (--protocol)")

    def apply(
        self, info: ModelInfo, out: Path, val_samples: Any, parity: dict[str, Any]
    ) -> ModelInfo:
        """``info`` with its threshold chosen on the exported model's own validation
        scores, and its validation, rule, generalisation and parity recorded (every other
        field kept: output, trained, preprocessing)."""
        from aiscan.train.metrics import binary_metrics
        from aiscan.train.predict import score

        val = score(out, val_samples)
        chosen = self.protocol if self.protocol_threshold else None
        threshold, rule = choose(val, chosen, self.target_fpr)
        extra = dict(info.extra)
        extra["validation"] = binary_metrics(val.is_ai[val.ok], val.p_ai[val.ok], threshold)
        extra["threshold_rule"] = rule
        if self.protocol is not None:
            extra["generalisation"] = {k: v for k, v in self.protocol.items() if k != "per_source"}
        extra["parity"] = parity
        return dataclasses.replace(info, threshold=threshold, extra=extra)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    model_id: str | None = None,
    target_fpr: float | None = None,
    parity_images: int = 64,
    protocol: dict[str, Any] | None = None,
    protocol_threshold: bool = False,
) -> ModelInfo:
    """best.pth of ``run_dir`` -> ONNX at ``out``, threshold and summaries in its metadata.

    Args:
        protocol: an out-of-source summary of the run's recipe (one epoch of
            ``aiscan-protocol folds``), embedded as ``aiscan.generalisation`` without its
            per-source table.
        protocol_threshold: take the threshold with the best balanced accuracy on the
            protocol's out-of-source scores instead of choosing one on validation.
    """
    from aiscan.train.data import load_split

    run = Path(run_dir)
    stamp = Stamp(target_fpr, protocol, protocol_threshold)
    model, spec, best = load_best(run)
    split = load_split(run / "split.csv")
    info = ModelInfo(
        model_id=model_id or f"aiscan-{best['arch']}-{run.name}",
        arch=best["arch"],
        preprocessing=spec,
        labels=LABELS,
        threshold=0.5,
        extra={
            "training": {
                "config": best["config"],
                "best_epoch": best["epoch"] + 1,
                "data": data_summary(split),
            }
        },
    )
    out = export_onnx(model, info, out)
    shown = split["val"][:parity_images]
    checked = {"images": len(shown), "max_abs_diff_p_ai": parity(model, out, shown, spec)}
    final = stamp.apply(info, out, split["val"], checked)
    write_info(out, final)
    (run / "export.json").write_text(json.dumps(final.to_metadata(), indent=2) + "\n")
    return final


def export_variant(
    run_dir: str | Path, fp32: str | Path, variant: str, calibration_images: int = 256
) -> Path:
    """Write ``variant`` ("fp16" or "int8") of the fp32 model beside it.

    int8 is calibrated on an evenly spread sample of the run's training images.
    """
    from aiscan.train.data import load_split

    from .variants import VARIANTS, convert_fp16, quantize_int8

    if variant not in VARIANTS:
        raise UsageError(f"variant must be one of {VARIANTS}, got {variant!r}")
    fp32 = Path(fp32)
    dst = fp32.with_name(f"{fp32.stem}.{variant}.onnx")
    if variant == "fp16":
        return convert_fp16(fp32, dst)
    train = load_split(Path(run_dir) / "split.csv")["train"]
    step = max(1, len(train) // calibration_images)
    return quantize_int8(fp32, dst, [s.path for s in train[::step][:calibration_images]])
