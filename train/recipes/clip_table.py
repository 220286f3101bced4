"""Print the model card's table of CLIP heads from aiscan-protocol heads reports.

python train/recipes/clip_table.py runs/clip-heads [NAME ...]

One row per report (all in the folder, or the names given, in that order): pooled and
mean-per-source ROC AUC, the worst source, TPR at 1% and 5% held-out FPR, and at the 5%
FPR threshold the share of real images flagged per category.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CATS = ("photo", "face", "art", "document")


def row(name: str, report: dict) -> str:  # type: ignore[type-arg]
    s = report["summary"]
    at5 = report["operating_points"]["fpr_0.05"]["by_category"]
    flagged = [at5.get(f"real/{c}", {}).get("flagged") for c in CATS]
    cells = [
        name,
        f"{s['pooled_auc']:.4f}",
        f"{s['mean_source_auc']:.4f}",
        f"{s['worst_source_auc']:.3f} ({s['worst_source']})",
        f"{s['tpr_at_fpr_1pct']:.3f}",
        f"{s['tpr_at_fpr_5pct']:.3f}",
        *("-" if f is None else f"{100 * f:.1f}%" for f in flagged),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    names = argv[1:] or sorted(p.stem for p in folder.glob("*.json"))
    head = ["head", "pooled AUC", "mean source AUC", "worst source", "TPR@1%", "TPR@5%"]
    head += [f"real {c} flagged @5%" for c in CATS]
    print("| " + " | ".join(head) + " |")
    print("| --- | " + " | ".join("---:" for _ in head[1:]) + " |")
    for name in names:
        path = folder / f"{name}.json"
        if path.is_file():
            print(row(name, json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
