"""aiscan's cache of fetched and built model files, shared by every process of a machine.

Services, cron jobs and Slurm arrays start many scans at once, often on a cache nobody
has filled yet. So every cached file is made by :func:`built`:

- **one build**: the builder holds an exclusive lock (``flock`` on ``.NAME.lock`` beside
  the file); the others wait for it, then find the file ready;
- **verified before use**: beside each file, ``NAME.sha256`` holds its digest, written
  before the file is published; a file whose digest does not match (truncated, edited,
  half-copied, from another build) is never used: it is built again;
- **whole or absent**: the build writes to a temporary of its own
  (:func:`aiscan.model.files.replacing` with ``unique``), removed whatever ends the build
  (an error, SIGINT, SIGTERM turned into KeyboardInterrupt), then renamed into place;
- **named by what made it**: callers put into the name every input that changes the
  bytes (the encoder's sha256, the head's, the graph rewrite's version), so a new
  aiscan or a new head never meets an old build.

Where the cache cannot be used (an unwritable or missing HOME, a read-only cache, a full
disk), :class:`CacheError` says so in one line naming ``AISCAN_CACHE``: a fault of the
machine, exit status 3.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import MachineError
from .files import replacing, write_atomic

#: The variable that names the cache folder.
CACHE_ENV = "AISCAN_CACHE"
#: The suffix of the digest file beside each cached file.
DIGEST_SUFFIX = ".sha256"


class CacheError(MachineError):
    """aiscan's cache cannot be read, created or written; the message says where and how
    to point ``AISCAN_CACHE`` elsewhere."""


def cache_dir() -> Path:
    """aiscan's cache: ``$AISCAN_CACHE``, else ``$XDG_CACHE_HOME/aiscan``, else
    ``~/.cache/aiscan``.

    Raises:
        CacheError: none of them names a folder (no HOME and no home in the user database).
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        if home == "~" or not os.path.isabs(home):
            raise CacheError(
                f"aiscan's cache has no place: no HOME for this user; set {CACHE_ENV} to a "
                "folder this user can write"
            )
        base = os.path.join(home, ".cache")
    return Path(base) / "aiscan"


def cache_folder(name: str) -> Path:
    """``cache_dir()/name``, created if needed and writable by this process.

    Raises:
        CacheError: it cannot be created or written (permissions, a read-only or full disk).
    """
    path = cache_dir() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(_cannot(path, exc.strerror or str(exc))) from exc
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise CacheError(_cannot(path, "no permission to write there"))
    return path


def _cannot(path: Path, why: str) -> str:
    return (
        f"cannot use aiscan's cache at {path}: {why}; set {CACHE_ENV} to a folder this user "
        "can write (the default is ~/.cache/aiscan)"
    )


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The file's sha256, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_file(target: Path) -> Path:
    """Where the digest of the cached file ``target`` is kept."""
    return target.with_name(target.name + DIGEST_SUFFIX)


def verified(target: Path, sha256: str | None = None) -> bool:
    """True when ``target`` exists and its bytes are what its digest file (or the pinned
    ``sha256``) says: a missing, truncated or altered file is False, never an error."""
    try:
        want = sha256 or digest_file(target).read_text().strip()
        return bool(want) and sha256_of(target) == want
    except OSError:
        return False


@contextlib.contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold the build lock of ``target`` (POSIX ``flock``, released when the process ends
    however it ends, so a killed builder never leaves a stale lock)."""
    import fcntl

    lock = target.with_name(f".{target.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CacheError(_cannot(target.parent, exc.strerror or str(exc))) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def built(target: Path, build: Callable[[Path], object], sha256: str | None = None) -> Path:
    """``target``, verified, built by ``build(tmp)`` once if it is missing or does not
    verify (see the module docstring); ``sha256`` pins what the file must be (a fetched
    file), otherwise its digest file is written from what ``build`` made.

    Raises:
        CacheError: the cache's disk or folder failed (full, read-only...).
        Whatever ``build`` raises; the temporary is removed and ``target`` is untouched.
    """
    if verified(target, sha256):
        return target
    with exclusive(target):
        if verified(target, sha256):  # another process built it while this one waited
            return target
        try:
            with replacing(target, unique=True) as tmp:
                build(tmp)
                digest = sha256_of(tmp)
                if sha256 is not None and digest != sha256:
                    raise CacheError(
                        f"{target.name}: the built file's sha256 {digest[:12]}... is not the "
                        f"pinned {sha256[:12]}...; nothing was kept"
                    )
                write_atomic(digest_file(target), digest + "\n", unique=True)
        except OSError as exc:
            raise CacheError(_cannot(target.parent, exc.strerror or str(exc))) from exc
    return target
