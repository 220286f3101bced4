"""The console scripts' error contract: a user's mistake, or a missing optional
dependency, is one line on stderr (``TOOL: error: ...``) and exit 2, never a traceback.

The scanner needs only numpy, Pillow, rich, onnx and ONNX Runtime; training, evaluation,
export, GPU decode and Parquet come with extras. Each console script runs
through :func:`run_cli`, which turns a :class:`ModuleNotFoundError` for one of those into
:func:`install_hint`'s line and any :class:`~aiscan.model.errors.AiscanError` into
:func:`error_line`'s, exit 2; a script handles its own other errors with
:func:`error_line` too.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

_TORCH = "pip install torch==2.14.1 torchvision==0.29.1, then pip install 'aiscan[train]'"
#: top-level module -> how to get it
HINTS = {
    "torch": _TORCH,
    "torchvision": _TORCH,
    "timm": "pip install 'aiscan[train]' (after torch: " + _TORCH.split(", then")[0] + ")",
    "onnxscript": "pip install 'aiscan[train]'",
    "sklearn": "pip install 'aiscan[eval]' (scikit-learn, matplotlib; [train] has them too)",
    "matplotlib": "pip install 'aiscan[eval]' (scikit-learn, matplotlib; [train] has them too)",
    "nvidia": "pip install 'aiscan[dali]'",
    "pyarrow": "pip install 'aiscan[parquet]'",
    "c2pa": "pip install 'aiscan[evidence]'",
}


def field_defaults(config: type) -> dict[str, Any]:
    """The default of each field of the dataclass ``config`` that has one (factories are
    not called): a console script's option defaults, declared once, in its config."""
    return {
        f.name: f.default
        for f in dataclasses.fields(config)
        if f.default is not dataclasses.MISSING
    }


def install_hint(tool: str, exc: ModuleNotFoundError) -> str:
    """The line to show for a missing optional module; re-raises for any other module
    (a missing core dependency is a broken install, and its traceback says more)."""
    name = exc.name or ""
    hint = HINTS.get(name.split(".")[0])
    if hint is None:
        raise exc
    return f"{tool} needs the Python module {name!r}, which is not installed: {hint}"


def error_line(tool: str, message: object, status: int = 2) -> int:
    """Print ``TOOL: error: MESSAGE`` as one line on stderr (never wrapped, never read as
    markup; a multi-line message keeps its first line) and return ``status``: 2 for a
    user's mistake (an :class:`~aiscan.model.errors.AiscanError`), or the tool's own code
    for a fault of the environment (``aiscan``: 3)."""
    from rich.console import Console
    from rich.markup import escape

    text = str(message).strip().splitlines()
    line = text[0] if text else type(message).__name__
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[red]{tool}: error:[/] {escape(line)}"
    )
    return status


def run_cli(
    tool: str, body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None
) -> int:
    """Run a console script's ``body``: an :class:`~aiscan.model.errors.AiscanError` it
    does not handle itself, or a missing optional module, is one line and exit 2 (3 for a
    fault of the environment: :class:`~aiscan.model.errors.MachineError`)."""
    from .errors import AiscanError

    try:
        return body(argv)
    except AiscanError as exc:
        return error_line(tool, exc, exc.exit_status)
    except ModuleNotFoundError as exc:
        return error_line(tool, install_hint(tool, exc))


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option of ``parser`` (and of its subcommands) that has a default says it in
    its help, unless its help already speaks of one: a newcomer reads ``--epochs`` and
    sees what happens without it. Returns ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
            continue
        default = action.default
        if not action.option_strings or any(default is v for v in (None, False, argparse.SUPPRESS)):
            continue  # identity: a default of 0 is a default to show, False (a flag) is not
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = action.help or ""
        if "default" not in text.lower():
            action.help = f"{text} (default: %(default)s)".strip()
    return parser
