"""The lever table of a model card, from ``aiscan-protocol heads`` reports.

python train/recipes/levers.py OUT.json NAME=REPORT.json=DECISION ...

Each candidate's pooled held-out figures, and the promise checked on sources the edge
never saw (``edge_by_fold``: real images flagged, pooled and in the worst real kind).
Compare candidates that scored the same images (the same data folders, trained on or
scored only): then their figures are on one footing. Prints the table as Markdown and
writes it as JSON for ``aiscan-export --clip-head ... --levers OUT.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def lever(name: str, report_path: str, decision: str) -> dict[str, Any]:
    report = json.loads(Path(report_path).read_text())
    s, cv = report["summary"], report["edge_by_fold"]
    worst = cv["worst_kind"]
    return {
        "name": name,
        "report": Path(report_path).name,
        "images": s["images"],
        # the encoder graph's version: 2 or older (None) quantised 32 images together
        "graph": report.get("features_graph") or 2,
        "auc": s["pooled_auc"],
        "tpr1": s["tpr_at_fpr_1pct"],
        "tpr5": s["tpr_at_fpr_5pct"],
        "edge_fpr": cv["fpr"],
        "edge_tpr": cv["tpr"],
        "worst_kind": worst,
        "worst_fpr": cv["by_kind"][worst]["flagged"] if worst else 0.0,
        "decision": decision,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = []
    for spec in argv[1:]:
        name, report, decision = spec.split("=", 2)
        rows.append(lever(name, report, decision))
    Path(argv[0]).write_text(json.dumps(rows, indent=1) + "\n")
    print(
        "| candidate | graph | images | AUC | TPR@1% | TPR@5% | FPR, edge unseen | worst kind "
        "| decision |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        print(
            f"| {r['name']} | g{r['graph']} | {r['images']} | {r['auc']:.4f} "
            f"| {r['tpr1']:.3f} | {r['tpr5']:.3f} "
            f"| {100 * r['edge_fpr']:.1f}% | {r['worst_kind']} {100 * r['worst_fpr']:.1f}% | "
            f"{r['decision']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
