"""Are an encoder graph's features the same on every x86 CPU kind? Run the same images
through the graph on each kind, then compare features and a head's verdicts.

    # on each CPU kind (a real machine, or an emulated one: qemu-x86_64 -cpu EPYC-Rome ...)
    python -m aiscan.benchmarks.cpu_kinds features DATA_DIR... --kind NAME --out K.npz \\
        [--images 32] [--precision int8rr] [--pixels canonical]
    # then, anywhere
    python -m aiscan.benchmarks.cpu_kinds compare A.npz B.npz [C.npz...] --head H.onnx \\
        [--out benchmarks/results/cpu_kinds_<precision>.json]

Each ``features`` run records, beside the class tokens of every block, which int8 kernel
ONNX Runtime chose in that process: a MatMulInteger whose exact result needs more than
16-bit pair sums comes out exact on VNNI (and AVX-512 VNNI) kernels and saturated on the
AVX2 u8s8 kernel, the CPU-dependence of the int8 graph shipped in the wheel. ``compare``
holds every kind to the first: cosine of each block's class token (mean and min), the
largest |p_ai| difference through the head, and verdict agreement at the head's edges.
QEMU's user-mode emulator runs the same Python with the CPUID of another CPU, so one
machine can stand in for several kinds (slowly: its AVX2 is emulated).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.console import Parser

from .runners import emit_report


def saturation_probe() -> str:
    """ "saturating" when this process's ONNX Runtime adds u8 x s8 pairs in 16 bits (its
    AVX2 kernel), "exact" otherwise (VNNI, or a kernel that widens first)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = 64, 4
    a = np.full((1, k), 255, np.uint8)
    b = np.full((k, n), 127, np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = int(session.run(None, {"a": a})[0][0, 0])
    return "exact" if got == 255 * 127 * k else "saturating"


def extract(
    data_dirs: Sequence[str], n: int, precision: str, pixels: str, kind: str, out: Path
) -> dict[str, Any]:
    """The class tokens of ``n`` images (picked evenly over sources, seeded) on this CPU."""
    import onnxruntime as ort

    from aiscan.model.clip import PIXEL_REGIMES
    from aiscan.model.clip_graph import Encoder, cached_feature_encoder
    from aiscan.model.pixels import load_pixels, normalize_batch

    from .clip_precision import _pick

    paths = _pick(data_dirs, n, seed=0)
    spec = PIXEL_REGIMES[pixels]
    batch = normalize_batch([load_pixels(p, spec).pixels for p in paths], spec)
    # the runner feature extraction uses (one image per run for int8rr, as the scanner)
    tokens = Encoder(cached_feature_encoder(precision), threads=2)(batch)["cls_tokens"]
    info = {
        "kind": kind,
        "precision": precision,
        "pixels": pixels,
        "kernel": saturation_probe(),
        "onnxruntime": ort.__version__,
        "machine": platform.machine(),
        "images": len(paths),
    }
    np.savez(out, cls_tokens=tokens, paths=np.array(paths), info=json.dumps(info))
    return info


def compare(files: Sequence[Path], head: Path) -> dict[str, Any]:
    """Every run against the first: features, p_ai and verdicts through ``head``."""
    from .clip_precision import HeadScorer, _cosine

    runs = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            runs.append((json.loads(str(z["info"])), z["cls_tokens"], list(z["paths"])))
    scorer = HeadScorer(head)
    base_info, base, base_paths = runs[0]
    base_p = scorer.p_ai(base)
    base_v = scorer.verdicts(base_p)
    report: dict[str, Any] = {"reference": base_info, "head": scorer.info.model_id, "kinds": []}
    for run_info, tokens, paths in runs[1:]:
        if paths != base_paths:
            raise ValueError(f"{run_info['kind']} ran other images than {base_info['kind']}")
        cos = _cosine(base, tokens)
        p = scorer.p_ai(tokens)
        v = scorer.verdicts(p)
        report["kinds"].append(
            {
                **run_info,
                "identical": bool(np.array_equal(base, tokens)),
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "p_ai_max_diff": float(np.abs(p - base_p).max()),
                "verdict_agreement": float(
                    np.mean([x == y for x, y in zip(v, base_v, strict=True)])
                ),
            }
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.cpu_kinds", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="class tokens of N images on this CPU")
    f.add_argument("data_dirs", nargs="+")
    f.add_argument("--kind", required=True, help="a name for this CPU kind")
    f.add_argument("--out", required=True, type=Path)
    f.add_argument("--images", type=int, default=32)
    f.add_argument("--precision", default="int8rr")
    f.add_argument("--pixels", default="canonical", choices=("canonical", "native"))
    c = sub.add_parser("compare", help="every run against the first")
    c.add_argument("runs", nargs="+", type=Path)
    c.add_argument("--head", required=True, type=Path)
    c.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.command == "features":
        info = extract(
            args.data_dirs, args.images, args.precision, args.pixels, args.kind, args.out
        )
        print(json.dumps(info))
        return 0
    emit_report(compare(args.runs, args.head), args.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
