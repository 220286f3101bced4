"""Print the README's model-card tables from the eval_*.json files of training runs.

python train/recipes/model_card.py runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aiscan.train.metrics import REPORTED as METRICS


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def metrics_table(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    lines = [
        "| metric (test split, AI positive) | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for key in METRICS:
        cells = []
        for n in names:
            v = reports[n]["metrics"][key]
            cells.append(
                _pct(v) if key in ("accuracy", "precision", "recall", "specificity") else f"{v:.4f}"
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for key in ("tp", "fn", "fp", "tn", "threshold"):
        cells = [
            str(reports[n]["metrics"][key])
            if key != "threshold"
            else f"{reports[n]['metrics'][key]:.4f}"
            for n in names
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("| images | " + " | ".join(str(reports[n]["images"]) for n in names) + " |")
    return "\n".join(lines)


def per_source_table(report: dict[str, Any]) -> str:
    lines = [
        "| source (label/source) | test images | accuracy | mean p_ai |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in report["per_source"].items():
        lines.append(f"| {name} | {row['n']} | {_pct(row['accuracy'])} | {row['mean_p_ai']:.3f} |")
    return "\n".join(lines)


def reencode_line(report: dict[str, Any]) -> str:
    r = report.get("reencode_jpeg_q90")
    if not r:
        return "(not measured)"
    m, d = r["metrics"], r["delta"]
    return (
        f"accuracy {_pct(m['accuracy'])} ({100 * d['accuracy']:+.2f} points), ROC AUC "
        f"{m['roc_auc']:.4f} ({d['roc_auc']:+.4f}), mean |Δp_ai| "
        f"{r['mean_abs_change_p_ai']:.4f}"
    )


def main(runs: Path) -> int:
    reports = {}
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        for path in sorted(run.glob("eval_test*.json")):
            tag = run.name + path.stem.removeprefix("eval_test").replace("_model", " ")
            report = _load(path)
            if report:
                reports[tag.strip()] = report
    if not reports:
        print(f"no eval_test*.json under {runs}", file=sys.stderr)
        return 1
    print(metrics_table(reports), end="\n\n")
    for name, report in reports.items():
        print(f"### {name}: per source\n\n{per_source_table(report)}\n")
        print(f"re-encoded as JPEG q90: {reencode_line(report)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs")))
