"""Print the README's model-card tables of a CLIP head from its own metadata.

python train/recipes/clip_card.py scanner/models/clip-b16-head.onnx

Everything printed was written into the model by ``aiscan-export --clip-head`` from its
protocol report: the held-out summary, the verdict bands with what they catch and flag
per category of image, and the per-source table (held-out accuracy at the ai threshold
and AUC against the other class).
"""

from __future__ import annotations

import sys

from aiscan.model.meta import read_info
from aiscan.train.categories import category


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def main(argv: list[str]) -> int:
    info = read_info(argv[0])
    g = info.extra["generalisation"]
    print(f"model {info.model_id}, {g['protocol']}, {g['images']} images, {g['sources']} sources")
    print()
    print("| held out | value |")
    print("| --- | ---: |")
    for key in ("pooled_auc", "mean_source_auc", "mean_fold_auc", "tpr_at_fpr_1pct",
                "tpr_at_fpr_5pct", "ece"):  # fmt: skip
        print(f"| {key.replace('_', ' ')} | {g[key]:.4f} |")
    print(f"| worst source | {g['worst_source']} (AUC {g['worst_source_auc']:.3f}) |")
    print()
    folds = info.extra.get("per_fold", {})
    if folds:
        print("| fold | images | AUC | TPR at 1% FPR | TPR at 5% FPR |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, v in folds.items():
            print(f"| {name} | {v['n']} | {v['auc']:.4f} | {v['tpr_at_fpr_1pct']:.3f} | "
                  f"{v['tpr_at_fpr_5pct']:.3f} |")  # fmt: skip
        print()
    bands = info.extra["bands"]
    print(f"bands: {bands['rule']}; ai at p_ai >= {info.threshold:.4f}, real below "
          f"{info.real_below:.4f}")  # fmt: skip
    print()
    print("| category | n | at the ai threshold | at the real edge (at or above) |")
    print("| --- | ---: | ---: | ---: |")
    at_t, at_r = bands["at_threshold"]["by_category"], bands["at_real_below"]["by_category"]
    for name, v in at_t.items():
        key = "caught" if name.startswith("ai/") else "flagged"
        print(f"| {name} | {v['n']} | {key} {_pct(v[key])} | {_pct(at_r[name][key])} |")
    print()
    print("| source | category | n | right at the ai threshold | AUC vs other class |")
    print("| --- | --- | ---: | ---: | ---: |")
    per = info.extra["per_source"]
    for name in sorted(per, key=lambda k: per[k]["auc_vs_other_class"]):
        label, _, source = name.partition("/")
        v = per[name]
        print(f"| {name} | {category(label, source)} | {v['n']} | {_pct(v['accuracy'])} | "
              f"{v['auc_vs_other_class']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
