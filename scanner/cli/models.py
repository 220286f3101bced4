"""``aiscan models [--fetch]``: the shipped models, their files, the encoder they need."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape


def models_main(argv: Sequence[str] | None = None) -> int:
    """``aiscan models [--fetch]``: the shipped models, where they are, what they need."""
    p = argparse.ArgumentParser(
        prog="aiscan models",
        description="The models that ship with aiscan (--model NAME), their files, and the "
        "encoder the default needs (fetched once into the user cache).",
    )
    p.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the encoder now and build the default model (what the first scan would do)",
    )
    args = p.parse_args(argv)
    from aiscan.model.clip import CLIP_B16, cache_dir
    from aiscan.model.clip_graph import head_encoder
    from aiscan.model.meta import read_info

    from ..core.models import SHIPPED_MODELS, resolve_model, shipped_model

    out = Console()
    for name in SHIPPED_MODELS:
        path = shipped_model(name)
        if path is None:
            out.print(escape(f"{name}: not in this build"), highlight=False)
            continue
        info = read_info(path)
        kind = "head on " + CLIP_B16.upstream if head_encoder(info.extra) else "whole model"
        out.print(escape(f"{name}: {info.model_id} ({kind})"), highlight=False)
        out.print(escape(f"  {path}"), highlight=False)
    encoder = cache_dir() / "encoders" / CLIP_B16.file_name
    state = "cached" if encoder.is_file() else f"not fetched yet ({CLIP_B16.requirement})"
    out.print(escape(f"encoder: {encoder}: {state}"), highlight=False)
    if args.fetch:
        built = resolve_model("default")
        out.print(escape(f"default, assembled: {built}"), highlight=False)
    return 0
