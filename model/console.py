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
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

_TORCH = "pip install torch==2.14.1 torchvision==0.29.1, then pip install 'aiscan-batch[train]'"
#: top-level module -> how to get it
HINTS = {
    "torch": _TORCH,
    "torchvision": _TORCH,
    "timm": "pip install 'aiscan-batch[train]' (after torch: " + _TORCH.split(", then")[0] + ")",
    "onnxscript": "pip install 'aiscan-batch[train]'",
    "sklearn": "pip install 'aiscan-batch[eval]' (scikit-learn, matplotlib; [train] too)",
    "matplotlib": "pip install 'aiscan-batch[eval]' (scikit-learn, matplotlib; [train] too)",
    "nvidia": "pip install 'aiscan-batch[dali]'",
    "pyarrow": "pip install 'aiscan-batch[parquet]'",
    "c2pa": "pip install 'aiscan-batch[evidence]'",
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


#: Characters a terminal acts on rather than shows: C0 controls (newline and tab among
#: them: one item must stay one line), DEL, C1 controls (U+009B is a CSI on its own), the
#: line and paragraph separators, and the bidirectional overrides and isolates (they
#: reorder what follows them on screen).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]|[\udc80-\udcff]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` safe to show on a terminal: every character a terminal would act on
    (:data:`_UNSAFE`) written as ``\\xNN`` or ``\\uNNNN``, and the undecodable bytes of
    file names as ``\\xNN``. Everything aiscan prints that comes from its input (file
    names, file contents, model metadata, the paths a user typed) goes through this."""
    return _UNSAFE.sub(_escaped, str(text))


def json_line(record: dict[str, Any]) -> str:
    """One JSON object on one line, ASCII only (so no control character reaches a
    terminal raw: JSON escapes C0, ``ensure_ascii`` the rest but DEL, escaped here)."""
    return json.dumps(record, ensure_ascii=True).replace("\x7f", "\\u007f")


def error_line(tool: str, message: object, status: int = 2, *, as_json: bool = False) -> int:
    """Print ``TOOL: error: MESSAGE`` as one line on stderr (never wrapped, never read as
    markup, control characters escaped: :func:`printable`) and return ``status``: 2 for a
    user's mistake (an :class:`~aiscan.model.errors.AiscanError`), or the tool's own code
    for a fault of the environment (``aiscan``: 3). ``as_json``: the line is a JSON object
    (``--log-json``: every line of stderr is one)."""
    from rich.console import Console
    from rich.markup import escape

    text = str(message).strip() or type(message).__name__
    if as_json:
        record = {"event": "error", "tool": tool, "message": text, "exit_status": status}
        print(json_line(record), file=sys.stderr, flush=True)
        return status
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[red]{tool}: error:[/] {escape(printable(text))}"
    )
    return status


class _SafeHandler(logging.Handler):
    """Third-party warnings and log records on stderr: one line each, control characters
    escaped (:func:`printable`), or one JSON object each (``--log-json``)."""

    def __init__(self, tool: str, as_json: bool) -> None:
        super().__init__(logging.WARNING)
        self.tool, self.as_json = tool, as_json

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().strip()
            if record.name == "py.warnings":  # "file:line: Category: message\n  source"
                text = text.splitlines()[0] if text else text
            level = record.levelname.lower()
            if self.as_json:
                line = json_line(
                    {"event": "log", "level": level, "logger": record.name, "message": text}
                )
            else:
                line = f"{self.tool}: {level}: {printable(text)}"
            print(line, file=sys.stderr, flush=True)
        except Exception:  # a broken stderr must not end the scan
            self.handleError(record)


def configure_logging(tool: str, as_json: bool = False) -> None:
    """Route Python warnings (Pillow's on odd files among them) and the log records of
    aiscan and the libraries it drives through one handler on stderr (:class:`_SafeHandler`),
    WARNING and above: nothing raw reaches the operator's terminal, and with ``as_json``
    every line of stderr stays a JSON object. Called again, it replaces its handler."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _SafeHandler)]:
        root.removeHandler(handler)
    root.addHandler(_SafeHandler(tool, as_json))
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)


def run_cli(
    tool: str, body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None
) -> int:
    """Run a console script's ``body``: an :class:`~aiscan.model.errors.AiscanError` it
    does not handle itself, or a missing optional module, is one line and exit 2 (3 for a
    fault of the environment: :class:`~aiscan.model.errors.MachineError`)."""
    from .errors import AiscanError

    configure_logging(tool)
    previous = _interrupt_on_sigterm()
    try:
        return body(argv)
    except AiscanError as exc:
        return error_line(tool, exc, exc.exit_status)
    except ModuleNotFoundError as exc:
        return error_line(tool, install_hint(tool, exc))
    except KeyboardInterrupt:  # a tool that keeps a partial result says so itself
        return error_line(tool, "interrupted; nothing partial was kept", EXIT_INTERRUPTED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: The exit status of a run ended by SIGINT or SIGTERM (128 + SIGINT, the shell's).
EXIT_INTERRUPTED = 130


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _interrupt_on_sigterm() -> Any:
    """SIGTERM as SIGINT (KeyboardInterrupt) for the run of a console script, so that
    every ``with`` block unwinds: temporaries go, locks are released. The previous
    handler, or None off the main thread (where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose error (which may echo a path or a value the user typed)
    is shown with control characters escaped (:func:`printable`): every console script
    of aiscan builds its parser from this class."""

    def error(self, message: str) -> NoReturn:
        if "--log-json" in sys.argv[1:]:  # every line of stderr a JSON object, this one too
            record = {"event": "error", "tool": self.prog, "message": message, "exit_status": 2}
            self.exit(2, json_line(record) + "\n")
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {printable(message)}\n")


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
        if isinstance(action, argparse._StoreFalseAction):
            continue  # "--no-evidence (default: True)" would say the opposite of the truth
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = action.help or ""
        if "default" not in text.lower():
            action.help = f"{text} (default: %(default)s)".strip()
    return parser
