"""Several training runs as one ONNX model: the mean of their class probabilities.

Members may normalise their input differently (Lite0 takes ``(x - 0.5) / 0.5``, B0 the
ImageNet mean and std); everything else about the preprocessing (size, resize policy,
interpolation, background) must agree, so one decoded image feeds them all. The model
takes the first member's normalisation; the others get theirs back through a per-channel
affine map inside the graph. Its output is probabilities (``aiscan.output``), not logits.

The members must share one split (same ``split.csv``), so that the ensemble's test split
is unseen by every member. Weights may be stored in float16 and cast to float32 when the
session loads (:func:`store_weights_fp16`): half the file, fp32 arithmetic.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.factory import ARCH_SEPARATOR, mean_of_members
from aiscan.model.meta import LABELS, ModelInfo, write_info
from aiscan.model.preprocessing import Preprocessing

from .from_run import Stamp, data_summary, load_best, parity
from .onnx_export import export_onnx


def renormalize(src: Preprocessing, dst: Preprocessing) -> tuple[list[float], list[float]]:
    """(scale, shift) with ``x_dst = x_src * scale + shift`` per channel: undo ``src``'s
    mean and std, apply ``dst``'s."""
    scale = [s / d for s, d in zip(src.std, dst.std, strict=True)]
    shift = [(ms - md) / d for ms, md, d in zip(src.mean, dst.mean, dst.std, strict=True)]
    return scale, shift


def store_weights_fp16(src: str | Path, dst: str | Path) -> int:
    """Rewrite an fp32 ONNX model with its large float32 initializers stored as float16,
    each cast back to float32 by a ``Cast`` node that ONNX Runtime folds at load time.

    Tensors under 64 values (shapes, scalars, per-channel affines) and any tensor that
    float16 cannot hold (beyond +-65504) stay float32. Returns the bytes saved.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    before = sum(len(t.raw_data) or t.ByteSize() for t in graph.initializer)
    for tensor in graph.initializer:
        arr = numpy_helper.to_array(tensor)
        if (
            tensor.data_type != TensorProto.FLOAT
            or arr.size < 64
            or not np.isfinite(arr).all()
            or np.abs(arr).max() > np.finfo(np.float16).max
        ):
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), f"{tensor.name}__fp16")
        kept.append(half)
        casts.append(
            helper.make_node(
                "Cast", [half.name], [tensor.name], to=TensorProto.FLOAT, name=f"{half.name}_cast"
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return before - sum(len(t.raw_data) or t.ByteSize() for t in graph.initializer)


def fp32_companion(out: Path) -> Path:
    """Where an fp16-stored ensemble's fp32 file goes: ``<stem>.fp32.onnx`` beside it."""
    return out.with_name(f"{out.stem}.fp32.onnx")


def _same_split(runs: Sequence[Path]) -> dict[str, Any]:
    from aiscan.train.data import load_split

    first = load_split(runs[0] / "split.csv")
    for run in runs[1:]:
        other = load_split(run / "split.csv")
        for name in first.keys() | other.keys():
            if [s.path for s in first.get(name, [])] != [s.path for s in other.get(name, [])]:
                raise UsageError(
                    f"{run} and {runs[0]} split the data differently ({name!r}): an ensemble's "
                    "test images must be unseen by every member"
                )
    return first


def _load_members(
    runs: Sequence[Path],
) -> tuple[list[Any], list[Preprocessing], list[dict[str, Any]]]:
    """Each run's best.pth as an eval-mode model, its preprocessing and its summary;
    ValueError if the labels differ from aiscan's or the preprocessing does beyond mean and
    std (one decoded image must fit every member)."""
    models, specs, members = [], [], []
    for run in runs:
        model, spec, best = load_best(run)
        models.append(model)
        specs.append(spec)
        members.append(
            {
                "run": str(run),
                "arch": best["arch"],
                "config": best["config"],
                "best_epoch": best["epoch"] + 1,
                "preprocessing": best["preprocessing"],
            }
        )
    for run, other in zip(runs[1:], specs[1:], strict=True):
        if dataclasses.replace(other, mean=specs[0].mean, std=specs[0].std) != specs[0]:
            raise UsageError(
                f"{run} preprocesses images differently from {runs[0]} (beyond mean and "
                f"std): {other.to_json()} against {specs[0].to_json()}"
            )
    return models, specs, members


def export_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    model_id: str | None = None,
    target_fpr: float | None = None,
    protocol: dict[str, Any] | None = None,
    protocol_threshold: bool = False,
    fp16_weights: bool = True,
    parity_images: int = 64,
) -> ModelInfo:
    """best.pth of each run -> one ONNX model at ``out`` (mean of the members' p_ai).

    Writes beside ``out``: ``split.csv`` (the members' common split, so that ``aiscan-eval``
    takes the folder as a run), ``export.json``, and, with ``fp16_weights``, the fp32 file
    as ``<stem>.fp32.onnx`` (the source for reduced-precision variants).

    Args:
        protocol: the ensemble's out-of-source summary (``aiscan-protocol ensemble``),
            embedded as ``aiscan.generalisation``.
        protocol_threshold: threshold with the best balanced accuracy on the protocol's
            out-of-source scores instead of one chosen on validation.
    """
    from aiscan.train.data import save_split

    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise UsageError("an ensemble needs two or more runs")
    stamp = Stamp(target_fpr, protocol, protocol_threshold)
    out = Path(out)
    split = _same_split(runs)
    models, specs, members = _load_members(runs)
    spec = specs[0]
    ensemble = mean_of_members(models, [renormalize(spec, s) for s in specs])
    info = ModelInfo(
        model_id=model_id or "aiscan-ensemble-" + "-".join(r.name for r in runs),
        arch=ARCH_SEPARATOR.join(m["arch"] for m in members),
        preprocessing=spec,
        labels=LABELS,
        threshold=0.5,
        output="probabilities",
        extra={
            "training": {
                "ensemble": "mean of member probabilities",
                "members": members,
                "data": data_summary(split),
            }
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_companion(out) if fp16_weights else out
    export_onnx(ensemble, info, fp32)
    if fp16_weights:
        store_weights_fp16(fp32, out)
        info = dataclasses.replace(info, extra=dict(info.extra, weight_storage="float16"))
        write_info(out, info)
    shown = split["val"][:parity_images]
    diff = parity(ensemble, out, shown, spec, softmax=False)
    final = stamp.apply(info, out, split["val"], {"images": len(shown), "max_abs_diff_p_ai": diff})
    write_info(out, final)
    if fp32 != out:  # the same model, its weights unrounded
        unrounded = {k: v for k, v in final.extra.items() if k != "weight_storage"}
        write_info(fp32, dataclasses.replace(final, extra=unrounded))
    if not (out.parent / "split.csv").exists():
        save_split(split, out.parent / "split.csv")
    elif (out.parent / "split.csv").resolve() not in {(r / "split.csv").resolve() for r in runs}:
        _same_split([runs[0], out.parent])
    (out.parent / "export.json").write_text(json.dumps(final.to_metadata(), indent=2) + "\n")
    return final
