"""What every ``aiscan`` subcommand shares: its exit statuses (rsync-style: one meaning each)."""

from __future__ import annotations

EXIT_OK = 0


EXIT_FILE_ERRORS = 1


EXIT_USAGE = 2


EXIT_ENVIRONMENT = 3


EXIT_INTERRUPTED = 130
