"""Two models' verdict files on one labelled data folder, and their mean, side by side.

python train/recipes/compare_scans.py DATA_DIR A.csv B.csv [--names A,B]

For images neither model was fitted on (train-v3 for both shipped models), this is a
held-out comparison on the same images: ROC AUC, TPR at 1% and 5% FPR (each model's own
thresholds for those rates), and the mean of the two p_ai as a third model. Rows that
are not ``ok`` in both files are left out (and counted).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from aiscan.model.console import Parser
from aiscan.scanner.output.formats import iter_rows
from aiscan.train.data import find_samples
from aiscan.train.metrics import binary_metrics


def _p_ai(path: str) -> dict[str, float]:
    return {r.path: r.p_ai for r in iter_rows(path) if r.status == "ok" and r.p_ai is not None}


def _verdicts(path: str) -> dict[str, str]:
    return {r.path: r.verdict for r in iter_rows(path) if r.status == "ok"}


def main(argv: list[str]) -> int:
    p = Parser(prog="compare_scans.py")
    p.add_argument("data_dir")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--names", default="A,B")
    args = p.parse_args(argv)
    names = args.names.split(",")
    samples = find_samples(args.data_dir)
    a, b = _p_ai(args.a), _p_ai(args.b)
    both = [
        s for s in samples if str(Path(s.path).resolve()) in a and str(Path(s.path).resolve()) in b
    ]
    keys = [str(Path(s.path).resolve()) for s in both]
    is_ai = np.array([s.is_ai for s in both])
    scores = {
        names[0]: np.array([a[k] for k in keys]),
        names[1]: np.array([b[k] for k in keys]),
    }
    scores["mean"] = (scores[names[0]] + scores[names[1]]) / 2
    print(f"{len(both)} images scored ok by both ({len(samples) - len(both)} left out), "
          f"{int(is_ai.sum())} AI")  # fmt: skip
    print("| model | ROC AUC | TPR at 1% FPR | TPR at 5% FPR |")
    print("| --- | ---: | ---: | ---: |")
    for name, score in scores.items():
        m = binary_metrics(is_ai, score, 0.5)
        print(f"| {name} | {m['roc_auc']:.4f} | {m['tpr_at_fpr_1pct']:.3f} | "
              f"{m['tpr_at_fpr_5pct']:.3f} |")  # fmt: skip
    print()
    print("verdict 'ai' at each model's own threshold, per source (share of its images):")
    print(f"| source | n | {names[0]} | {names[1]} |")
    print("| --- | ---: | ---: | ---: |")
    va, vb = _verdicts(args.a), _verdicts(args.b)
    groups: dict[str, list[str]] = {}
    for s, k in zip(both, keys, strict=True):
        groups.setdefault(f"{'ai' if s.is_ai else 'real'}/{s.source}", []).append(k)
    for group, members in sorted(groups.items()):
        fa = np.mean([va[k] == "ai" for k in members])
        fb = np.mean([vb[k] == "ai" for k in members])
        print(f"| {group} | {len(members)} | {100 * fa:.1f}% | {100 * fb:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
