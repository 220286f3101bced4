"""``aiscan``: the scan (:mod:`.scan`) and its subcommands (``report``, ``merge``,
``export-state``, ``models``), each in its own module; this one only dispatches. The CLI
modules are the only ones of the scanner that print."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aiscan.model.console import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan``: a missing optional dependency or an unhandled user error is one line."""
    return run_cli("aiscan", _main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # subcommands by the first word; a folder that has one of these names is scanned as ./NAME
    word, rest = (argv[0], argv[1:]) if argv else ("", [])
    if word == "report":
        from .report import report_main

        return report_main(rest)
    if word == "merge":
        from .nightly import merge_main

        return merge_main(rest)
    if word == "export-state":
        from .nightly import export_state_main

        return export_state_main(rest)
    if word == "models":
        from .models import models_main

        return models_main(rest)
    from .scan import scan_main

    return scan_main(argv)


if __name__ == "__main__":
    sys.exit(main())
