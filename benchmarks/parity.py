"""How far each decode path is from the reference preprocessing, and what it costs.

    python -m aiscan.benchmarks.parity [--out benchmarks/results/parity.json]

Measures, on generated photo-like JPEGs (see :mod:`aiscan.benchmarks.corpus`) and on pure
noise (the worst case for any downscaling shortcut): the per-pixel difference, in /255
units, between aiscan's fast CPU decode (DCT-domain scaling), DALI (CPU operators here) and
the reference full decode; and single-thread decode time of the fast and reference paths.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from aiscan.model.console import Parser
from aiscan.model.pixels import load_pixels, normalize_batch, reference_pixels
from aiscan.model.preprocessing import Preprocessing

from .corpus import SIZES, mosaic, photo_sources

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _stats(diff: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(diff.mean()), 3),
        "p99": round(float(np.percentile(diff, 99)), 2),
        "max": round(float(diff.max()), 2),
    }


def _dali(blobs: list[bytes], spec: Preprocessing) -> np.ndarray | None:
    try:
        from aiscan.scanner.core.dali import _pipeline
    except ImportError:
        return None
    pipe = _pipeline(
        spec,
        "cpu",
        batch_size=len(blobs),
        num_threads=1,
        device_id=None,
        exec_async=False,
        exec_pipelined=False,
        prefetch_queue_depth=1,
    )
    pipe.feed_input("encoded", [np.frombuffer(b, np.uint8) for b in blobs])
    (out,) = pipe.run()
    return np.asarray(out.as_array())


def measure(name: str, blobs: list[bytes], spec: Preprocessing) -> dict[str, object]:
    ref = [reference_pixels(b, spec).astype(np.float64) for b in blobs]
    t0 = time.perf_counter()
    fast = [load_pixels(b, spec).pixels.astype(np.float64) for b in blobs]
    t_fast = (time.perf_counter() - t0) / len(blobs)
    t0 = time.perf_counter()
    for b in blobs:
        reference_pixels(b, spec)
    t_ref = (time.perf_counter() - t0) / len(blobs)
    row: dict[str, object] = {
        "corpus": name,
        "images": len(blobs),
        "fast_vs_reference": _stats(np.abs(np.stack(fast) - np.stack(ref))),
        "ms_per_image_fast": round(1000 * t_fast, 1),
        "ms_per_image_reference": round(1000 * t_ref, 1),
    }
    dali = _dali(blobs, spec)
    if dali is not None:
        ref_norm = normalize_batch([r.astype(np.uint8) for r in ref], spec)
        row["dali_cpu_vs_reference"] = _stats(np.abs(dali - ref_norm) * 255.0 * spec.std[0])
    return row


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.parity", description=__doc__)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/parity.json"))
    args = p.parse_args(argv)
    spec = Preprocessing()
    sources = photo_sources(args.data_dir)
    rng = np.random.default_rng(0)
    rows = []
    for name, (w, h) in SIZES.items():
        blobs = [_jpeg(mosaic(w, h, sources, seed=i)) for i in range(args.images)]
        rows.append(measure(name, blobs, spec))
        print(json.dumps(rows[-1]))
    noise = [
        _jpeg(Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)))
        for _ in range(args.images)
    ]
    rows.append(measure("noise-1024px", noise, spec))
    print(json.dumps(rows[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "content": "photo mosaics" if sources else "procedural texture",
                "units": "/255 per pixel channel",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
