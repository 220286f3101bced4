"""Do an image's features depend on the images beside it in a batch? The measurement
behind graph version 3 (:func:`aiscan.model.clip_graph.one_image`).

    python -m aiscan.benchmarks.batch_mates DATA_DIR... [--images 64] [--batch 32] \\
        [--precision int8rr] [--out benchmarks/results/batch_mates_int8rr.json]

Builds the encoder graph at ``--precision`` *with a free batch axis* (as graph version 2
did), runs the same canonical copies one image per run and ``--batch`` images per run,
and compares: cosine of every block's class token, and p_ai and verdicts through the
shipped default head. A dynamically quantised graph scales each activation once per
tensor, batch axis included, so its batched features differ; a float graph's do not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.console import Parser

from .runners import emit_report, machine


def _free_batch_graph(precision: str, out: Path) -> Path:
    import onnx

    from aiscan.model.clip import encoder_path
    from aiscan.model.clip_graph import dequantise, expose_cls_tokens, requantise

    model = expose_cls_tokens(dequantise(onnx.load(str(encoder_path()))))
    if precision == "int8rr":
        model = requantise(model)
    elif precision != "fp32":
        raise ValueError(f"--precision must be int8rr or fp32, got {precision!r}")
    onnx.save(model, str(out))
    return out


def measure(data_dirs: Sequence[str], n: int, batch: int, precision: str) -> dict[str, Any]:
    import onnxruntime as ort

    from aiscan.model.clip import CANONICAL_PREPROCESSING
    from aiscan.model.pixels import load_pixels, normalize_batch
    from aiscan.scanner.core.models import shipped_model

    from .clip_precision import HeadScorer, _cosine, _pick

    spec = CANONICAL_PREPROCESSING
    pixels: list[np.ndarray] = []
    paths: list[str] = []
    skipped: list[str] = []
    for path in _pick(data_dirs, 2 * n, seed=3):  # files Pillow alone cannot open (HEIC)
        if len(pixels) == n:  # are skipped and named
            break
        try:
            pixels.append(load_pixels(path, spec).pixels)
            paths.append(path)
        except Exception as exc:  # a measurement of what loads: skip and name it
            skipped.append(f"{path}: {type(exc).__name__}")
    x = normalize_batch(pixels, spec)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    with tempfile.TemporaryDirectory(prefix="aiscan-batch-mates-") as tmp:
        graph = _free_batch_graph(precision, Path(tmp) / "free.onnx")
        session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        out = [o.name for o in session.get_outputs()].index("cls_tokens")

        def tokens(step: int) -> np.ndarray:
            runs = [session.run(None, {"pixel_values": x[i : i + step]})[out]
                    for i in range(0, len(x), step)]  # fmt: skip
            return np.concatenate(runs).astype(np.float64)

        alone, batched = tokens(1), tokens(batch)
    cos = _cosine(alone, batched)
    head_path = shipped_model("default")
    if head_path is None:
        raise SystemExit("this build ships no default head")
    head = HeadScorer(head_path)
    p1, pb = head.p_ai(alone), head.p_ai(batched)
    v1, vb = head.verdicts(p1), head.verdicts(pb)
    return {
        "machine": machine(),
        "precision": precision,
        "graph": "free batch axis (graph version 2)",
        "images": len(paths),
        "skipped": skipped,
        "batch": batch,
        "head": head.info.model_id,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "p_ai_diff_mean": float(np.abs(p1 - pb).mean()),
        "p_ai_diff_max": float(np.abs(p1 - pb).max()),
        "verdict_agreement": float(np.mean([s == t for s, t in zip(v1, vb, strict=True)])),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.batch_mates", description=__doc__)
    p.add_argument("data_dirs", nargs="+")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="int8rr", choices=("int8rr", "fp32"))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    emit_report(measure(args.data_dirs, args.images, args.batch, args.precision), args.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
