"""The base of every error aiscan explains to its user in one line.

A user's mistake (a bad option, a model without aiscan metadata, an output that exists)
or a fault of the environment that the user must fix (a locked output, an unreadable
state database, a missing GPU) raises a subclass of :class:`AiscanError`; each console
script catches the base and prints ``TOOL: error: MESSAGE`` as one line, never a
traceback (:func:`aiscan.model.console.error_line`). A fault of one input file is not
an exception at all: it is a row with a status and an error.
"""

from __future__ import annotations


class AiscanError(Exception):
    """An error whose message is a complete, one-line explanation for the user.

    Attributes:
        exit_status: what a console script exits with: 2, a usage error (rsync's
            convention, which ``aiscan``'s exit statuses follow).
    """

    exit_status = 2


class MachineError(AiscanError):
    """A fault of the machine that the user must fix (a full disk, a missing permission,
    an I/O error), not a mistake in what was asked: exit status 3, so that a scheduler
    tells a broken night from a night with bad files (1) or a bad command line (2)."""

    exit_status = 3


class UsageError(AiscanError, ValueError):
    """An input a user gave a tool (a path, an option, a file, a report) that it cannot
    use; the message names it and what to give instead."""
