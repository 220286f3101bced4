"""A model's card, made from the model's own metadata and nothing else.

``aiscan-export --card MODEL.onnx --out MODEL.md`` writes it; each shipped model has its
card beside it (``scanner/models/*.md``) and ``tests/test_cards.py`` fails when a card and
its model's metadata disagree, so the figures a user reads are the ones the model carries:
what it is, what it reads (the preprocessing, the encoder and its graph), what it was
trained on, how it did on sources it never saw, its verdict bands and what they promise,
kind by kind, and the levers that were measured and did not earn their place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiscan.model.meta import ModelInfo, read_info

HEADLINE = (
    ("pooled_auc", "ROC AUC, pooled"),
    ("mean_source_auc", "ROC AUC, mean over held-out sources"),
    ("worst_source_auc", "ROC AUC, worst held-out source"),
    ("mean_fold_auc", "ROC AUC, mean over folds"),
    ("tpr_at_fpr_1pct", "AI caught at 1% false alarms (TPR)"),
    ("tpr_at_fpr_5pct", "AI caught at 5% false alarms (TPR)"),
    ("ece", "calibration error (ECE)"),
)


def _pct(v: Any) -> str:
    return f"{100 * float(v):.1f}%"


def _num(v: Any, digits: int = 4) -> str:
    return f"{float(v):.{digits}f}"


def model_card(info: ModelInfo, file_name: str = "") -> str:
    """The card of a model, as Markdown (see the module docstring)."""
    lines = [f"# {info.model_id}", ""]
    lines += _what(info, file_name)
    lines += _generalisation(info.extra.get("generalisation"))
    lines += _bands(info)
    lines += _levers(info.extra.get("levers"))
    lines += _sources(info.extra.get("per_source"))
    lines += [
        "Generated from the model's metadata by `aiscan-export --card`; every figure was "
        "written into the model by the export that made it, from the protocol report it "
        "names. Speed depends on the machine: see docs/performance.md.",
        "",
    ]
    return "\n".join(lines)


def _what(info: ModelInfo, file_name: str) -> list[str]:
    spec = info.preprocessing
    h, w = spec.input_size
    out = ["| | |", "| --- | --- |"]
    if file_name:
        out.append(f"| file | `{file_name}` |")
    out.append(f"| architecture | {info.arch} |")
    encoder = info.extra.get("encoder")
    if isinstance(encoder, dict):
        out.append(
            f"| encoder | {encoder.get('upstream', '?')}, from {encoder.get('package', '?')} "
            f"(sha256 {str(encoder.get('sha256', ''))[:12]}...), run as its "
            f"`{encoder.get('precision', 'int8')}` graph |"
        )
    canonical = (
        f"first the canonical copy: fit in {spec.canonical_size} px (Lanczos), JPEG quality "
        f"{spec.canonical_quality}; then "
        if spec.canonical
        else ""
    )
    out.append(
        f"| input | {canonical}{spec.resize} to {w}x{h}, {spec.interpolation}, JPEG decode "
        f"{spec.decode}; mean {list(spec.mean)}, std {list(spec.std)} |"
    )
    out.append(f"| labels | {', '.join(info.labels)} (AI is the positive class) |")
    below = "" if info.real_below is None else f"; `real` below {_num(info.real_below)}"
    out.append(f"| verdicts | `ai` at p_ai >= {_num(info.threshold)}{below} |")
    training = info.extra.get("training")
    if isinstance(training, dict) and "images" in training:
        data = ", ".join(map(str, training.get("data_dirs", []))) or "see its report"
        out.append(
            f"| trained on | {training['images']} images of {training.get('sources', '?')} "
            f"sources ({data}) |"
        )
    out.append(f"| trained | {'yes' if info.trained else 'no: untrained weights'} |")
    return [*out, ""]


def _generalisation(g: Any) -> list[str]:
    if not isinstance(g, dict):
        return []
    protocol = g.get("protocol", "source-grouped cross-validation")
    out = [
        "## On sources it never saw",
        "",
        f"Every score from a model fitted without the image's source ({protocol}; "
        f"{g.get('images', '?')} images, {g.get('sources', '?')} sources, a source's AI "
        "and real images counted apart).",
        "",
        "| held out | value |",
        "| --- | ---: |",
    ]
    for key, name in HEADLINE:
        if key in g:
            out.append(f"| {name} | {_num(g[key])} |")
    if "worst_source" in g:
        out.append(f"| worst source | {g['worst_source']} |")
    return [*out, ""]


def _kinds_table(title: str, point: dict[str, Any], key: str) -> list[str]:
    out = [title, "", "| kind | images | share |", "| --- | ---: | ---: |"]
    for name, v in point.items():
        out.append(f"| {name} | {v['n']} | {_pct(v[key])} |")
    return [*out, ""]


def _bands(info: ModelInfo) -> list[str]:
    bands = info.extra.get("bands")
    if not isinstance(bands, dict):
        rule = info.extra.get("threshold_rule")
        return [f"Threshold rule: {rule}.", ""] if rule else []
    out = ["## Verdict bands", "", f"Rule: {bands.get('rule', '?')}."]
    if bands.get("raised_by"):
        out.append(
            f"The pooled rule alone gave {_num(bands['pooled_edge'])}; the edge was raised to "
            f"{_num(info.threshold)} so that real {bands['raised_by']} stays within twice "
            "the promise."
        )
    out.append("")
    at = bands.get("at_threshold")
    if isinstance(at, dict):
        out += [
            f"At the `ai` edge, on the held-out scores: {_pct(at['tpr'])} of AI images caught, "
            f"{_pct(at['fpr'])} of real images flagged.",
            "",
        ]
        real = {k: v for k, v in at["by_category"].items() if k.startswith("real/")}
        out += _kinds_table("Real images flagged at the `ai` edge, by kind:", real, "flagged")
    cv = bands.get("edge_by_fold")
    if isinstance(cv, dict):
        out += [
            "The promise on sources the edge never saw (for each fold, the edge set on the "
            f"other folds' held-out scores): {_pct(cv['fpr'])} of real images flagged "
            f"(promise {_pct(cv['promise'])}), {_pct(cv['tpr'])} of AI caught.",
            "",
        ]
        out += _kinds_table("Real images flagged there, by kind:", cv["by_kind"], "flagged")
    below = bands.get("at_real_below")
    if isinstance(below, dict) and info.real_below is not None:
        out += [
            f"At the `real` edge ({_num(info.real_below)}): {_pct(1 - below['tpr'])} of AI "
            f"images fall below it, {_pct(1 - below['fpr'])} of real images do.",
            "",
        ]
    return out


def _levers(levers: Any) -> list[str]:
    if not isinstance(levers, list) or not levers:
        return []
    out = [
        "## Levers measured",
        "",
        "Each candidate on the same protocol (source-grouped folds; compare rows that "
        "scored the same number of images); the edge check is the promise on sources the "
        "edge never saw (pooled real flagged, and the worst real kind). Graph: the "
        "encoder graph's version its features came from (g2: the int8 graphs quantised "
        "32 images together, so an image's features depended on its batch-mates; g3: "
        "one image at a time, as the scanner runs it).",
        "",
        "| candidate | graph | images | AUC | TPR at 1% | TPR at 5% | real flagged (edge "
        "unseen) | worst kind | decision |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for lv in levers:
        out.append(
            f"| {lv['name']} | g{lv.get('graph', 2)} | {lv.get('images', '?')} | "
            f"{_num(lv['auc'])} | {_num(lv['tpr1'], 3)} | {_num(lv['tpr5'], 3)}"
            f" | {_pct(lv['edge_fpr'])} | {lv['worst_kind']} {_pct(lv['worst_fpr'])} | "
            f"{lv['decision']} |"
        )
    return [*out, ""]


def _sources(per: Any) -> list[str]:
    if not isinstance(per, dict) or not per:
        return []
    out = [
        "## Per held-out source",
        "",
        "| source | images | right at the `ai` edge | AUC against the other class |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in sorted(per, key=lambda k: per[k]["auc_vs_other_class"]):
        v = per[name]
        out.append(
            f"| {name} | {v['n']} | {_pct(v['accuracy'])} | {_num(v['auc_vs_other_class'], 3)} |"
        )
    return [*out, ""]


def card_of(path: str | Path) -> str:
    """The card of the model file ``path``."""
    return model_card(read_info(path), Path(path).name)
