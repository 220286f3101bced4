"""Print the model card's generalisation tables from aiscan-protocol reports.

python train/recipes/protocol_table.py RUNS_DIR

Reads RUNS_DIR/probes/probe_*.json (frozen-feature probes) and RUNS_DIR/*/protocol.json
(fine-tuning recipes, one row per epoch; an ensemble report, one row), and prints markdown
tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("mean_fold_auc", "mean fold AUC"),
    ("mean_source_auc", "mean source AUC"),
    ("worst_source_auc", "worst source AUC"),
    ("worst_source", "worst source"),
    ("pooled_auc", "pooled AUC"),
    ("pooled_balanced_accuracy", "bal. acc. @0.5"),
    ("square_auc", "square-only AUC"),
)


def _cell(summary: dict[str, Any], key: str) -> str:
    v = summary.get(key)
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = "| | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [head, "| --- |" + " ---: |" * len(COLUMNS)]
    for name, summary in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(summary, k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def per_source(rows: dict[str, dict[str, Any]]) -> str:
    names = list(rows)
    sources = sorted({s for r in rows.values() for s in r["per_source"]})
    lines = [
        "| held-out source | images | " + " | ".join(f"{n}: acc / AUC" for n in names) + " |",
        "| --- | ---: |" + " ---: |" * len(names),
    ]
    for src in sources:
        n = next(r["per_source"][src]["n"] for r in rows.values() if src in r["per_source"])
        cells = []
        for r in rows.values():
            s = r["per_source"].get(src)
            cells.append(
                "-" if s is None else f"{s['accuracy']:.2f} / {s['auc_vs_other_class']:.3f}"
            )
        lines.append(f"| {src} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(runs: Path) -> None:
    probes = {}
    for path in sorted((runs / "probes").glob("probe_*.json")):
        report = json.loads(path.read_text())
        spec = json.loads(report["preprocessing"])
        probes[f"{report['arch']}, {spec['resize']}, by {report['groups']}"] = report["summary"]
    if probes:
        print("Frozen-feature probes\n\n" + table(probes) + "\n")
    recipes: dict[str, dict[str, Any]] = {}
    for path in sorted(runs.glob("*/protocol*.json")):
        report = json.loads(path.read_text())
        if "members" in report:  # aiscan-protocol ensemble
            members = " + ".join(
                f"{Path(m['recipe']).name} @{m['epoch']}" for m in report["members"]
            )
            recipes[f"{path.parent.name}: {members}"] = report["summary"]
            continue
        tag = "" if report.get("column", "p_ai") == "p_ai" else f" ({report['column']})"
        for epoch, summary in report["epochs"].items():
            recipes[f"{path.parent.name}{tag}, epoch {epoch}"] = summary
    if recipes:
        print("Fine-tuning recipes, source-grouped folds\n\n" + table(recipes) + "\n")
        print("Per held-out source\n\n" + per_source(recipes) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
