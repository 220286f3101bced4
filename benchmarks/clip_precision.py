"""The CLIP encoder at int8 (as shipped), float32 and float16 (dequantised): how far apart
their features and a head's p_ai are, and how fast each runs, on the same real images.

    python -m aiscan.benchmarks.clip_precision DATA_DIR... [--images 256] [--head H.onnx]
        [--precisions int8,fp32] [--out benchmarks/results/clip_precision_cpu.json]

Images are drawn evenly over the data folders' sources (seeded), decoded once with the
model's preprocessing; each precision's graph (:func:`aiscan.model.clip_graph.feature_encoder`)
runs them in batches of 16 after one warm-up batch. Agreement is against the first
precision listed: cosine similarity of ``image_embeds`` and of every block's class token
(min and mean), and, with a head, the largest and mean |p_ai| difference and how many
verdicts change at the head's threshold.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.console import Parser

from .runners import machine


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


class HeadScorer:
    """A head model (``aiscan-export --clip-head``) on cached encoder outputs: p_ai by the
    model's own output rule (:meth:`aiscan.model.meta.ModelInfo.p_ai`) and the verdicts
    at its edges."""

    def __init__(self, head_path: str | Path) -> None:
        import onnxruntime as ort

        from aiscan.model.meta import read_info

        self.info = read_info(head_path)
        self.session = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def p_ai(self, features: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input: features.astype(np.float32)})[0]
        return self.info.p_ai(out)

    def verdicts(self, p: np.ndarray) -> list[str]:
        from aiscan.model.meta import verdict

        return [verdict(float(x), self.info.threshold, self.info.real_below) for x in p]


def _pick(data_dirs: Sequence[str], n: int, seed: int) -> list[str]:
    """Image paths evenly over the folders below each ``DIR/{ai,real}``."""
    from aiscan.scanner.core.discovery import discover
    from aiscan.scanner.core.sniffing import claims_image

    by_source: dict[str, list[str]] = {}
    for d in data_dirs:
        for label in ("ai", "real"):
            root = Path(d) / label
            for found in discover([str(root)]):
                if found.error or found.skip_reason or not claims_image(found.path):
                    continue
                source = Path(found.path).relative_to(root).parts[0]
                by_source.setdefault(f"{label}/{source}", []).append(found.path)
    rng = random.Random(seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_source.items())]
    picked: list[str] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def run(data_dirs: Sequence[str], images: int, precisions: Sequence[str], head: str | None,
        threads: int | None, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    from aiscan.model.clip import CLIP_B16, PREPROCESSING
    from aiscan.model.clip_graph import Encoder, cached_feature_encoder
    from aiscan.model.pixels import load_pixels, normalize_batch

    pixels: list[np.ndarray] = []
    paths: list[str] = []
    for path in _pick(data_dirs, images * 2, seed):
        if len(paths) == images:
            break
        try:
            pixels.append(load_pixels(path, PREPROCESSING).pixels)
            paths.append(path)
        except Exception:
            continue
    batch = normalize_batch(pixels, PREPROCESSING)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    speed: dict[str, float] = {}
    for precision in precisions:
        enc = Encoder(cached_feature_encoder(precision), threads)
        enc(batch[:16])  # warm-up
        start, parts = time.perf_counter(), []
        for first in range(0, len(batch), 16):
            parts.append(enc(batch[first : first + 16]))
        speed[precision] = round(len(batch) / (time.perf_counter() - start), 2)
        outputs[precision] = {k: np.concatenate([p[k] for p in parts]) for k in enc.names}
    ref = precisions[0]
    agreement: dict[str, Any] = {}
    for precision in precisions[1:]:
        row: dict[str, Any] = {}
        for name in outputs[ref]:
            cos = _cosine(outputs[ref][name], outputs[precision][name])
            row[f"{name}_cosine_min"] = round(float(cos.min()), 5)
            row[f"{name}_cosine_mean"] = round(float(cos.mean()), 5)
        agreement[f"{precision}_vs_{ref}"] = row
    result: dict[str, Any] = {
        "machine": machine(),
        "images": len(paths),
        "sources": len({Path(p).parent for p in paths}),
        "encoder": CLIP_B16.upstream,
        "images_per_s": speed,
        "agreement": agreement,
    }
    if head:
        result["head"] = _head_agreement(head, outputs, precisions)
    return result


def _head_agreement(head_path: str, outputs: dict[str, dict[str, np.ndarray]],
                    precisions: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    head = HeadScorer(head_path)
    info = head.info
    scores = {p: head.p_ai(outputs[p][head.input]) for p in precisions}
    ref = precisions[0]
    out: dict[str, Any] = {"model_id": info.model_id, "threshold": info.threshold}
    for p in precisions[1:]:
        diff = np.abs(scores[p] - scores[ref])
        flips = int(((scores[p] >= info.threshold) != (scores[ref] >= info.threshold)).sum())
        out[f"{p}_vs_{ref}"] = {
            "p_ai_abs_diff_max": round(float(diff.max()), 5),
            "p_ai_abs_diff_mean": round(float(diff.mean()), 5),
            "verdict_changes_at_threshold": flips,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.clip_precision")
    p.add_argument("data_dirs", nargs="+")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--precisions", default="int8,fp32")
    p.add_argument("--head", help="a CLIP head model (aiscan-export --clip-head)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = run(args.data_dirs, args.images, args.precisions.split(","), args.head, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("images_per_s", "agreement")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
