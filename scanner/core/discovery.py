"""Find the files to scan: streaming, deterministic, symlink-safe."""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Directories with up to this many entries are listed whole and sorted by name, so
#: scans are deterministic; a larger one streams in the file system's own order, so
#: that a folder of ten million files never sits in memory as a list.
SORT_LIMIT = 50_000


_Stack = list[tuple[str, Iterator[os.DirEntry[str]]]]


@dataclass(frozen=True)
class Found:
    """A file that gets a row.

    Attributes:
        path: the absolute path as reached from the root given: the root made absolute
            (``os.path.abspath``: normalised, symbolic links kept as named) joined with
            the names below it. A file has one such path per scan, whether its root
            was given as a relative or an absolute path.
        error: set when the path cannot be scanned at all (unlistable folder, broken link).
        skip_reason: set when the path is deliberately not scanned (not a regular file).
    """

    path: str
    error: str = ""
    skip_reason: str = ""


def _kind(entry: os.DirEntry[str]) -> str:
    """'dir', 'file', 'broken' or the name of a special file type."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        mode = entry.stat().st_mode
    except FileNotFoundError:
        return "broken"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    for test, name in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _entries(path: str) -> Iterator[os.DirEntry[str]]:
    """A directory's entries: sorted when small, streamed when huge."""
    with os.scandir(path) as it:
        head: list[os.DirEntry[str]] = []
        for entry in it:
            head.append(entry)
            if len(head) > SORT_LIMIT:
                yield from head
                yield from it
                return
        head.sort(key=lambda e: e.name)
        yield from head


def _enter(path: str, seen: set[tuple[int, int]], stack: _Stack) -> Iterator[Found]:
    """Push ``path``'s listing unless that directory was already walked (symlink loop)."""
    try:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        it = _entries(path)
        # Start the listing now, so that a permission error shows up here.
        first = next(it, None)
    except OSError as exc:
        yield Found(path, error=f"cannot list directory: {exc.strerror}")
        return
    if first is not None:
        stack.append((path, _chain(first, it)))


def _chain(first: os.DirEntry[str], rest: Iterator[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
    yield first
    yield from rest


def discover(roots: Iterable[str], exclude: Iterable[str] = ()) -> Iterator[Found]:
    """Yield every file below ``roots`` (files or folders), once, in a stable order.

    Symbolic links are followed; a directory reached twice (a link loop, two links to one
    place, a folder given twice or inside another given folder) is walked once. A file
    given as a root that a given folder also holds is left to that folder's walk. Files
    whose absolute path is in ``exclude`` (a scan's own output beside the images) are
    not yielded. Nothing is listed ahead of need beyond one directory level.
    """
    roots = [os.path.abspath(r) for r in roots]
    skip = {os.path.abspath(p) for p in exclude}
    folders = [os.path.realpath(r) for r in roots if os.path.isdir(r)]
    seen: set[tuple[int, int]] = set()
    for root in dict.fromkeys(roots):  # a root given twice counts once
        if os.path.isdir(root):
            stack: _Stack = []
            yield from _enter(root, seen, stack)
            yield from _walk(stack, seen, skip)
        elif os.path.isfile(root):
            if root not in skip and not _inside(os.path.realpath(root), folders):
                yield Found(root)
        elif os.path.lexists(root):
            broken = os.path.islink(root)
            yield Found(root, error="broken symbolic link" if broken else "not a regular file")
        else:
            yield Found(root, error="path does not exist")


def _inside(path: str, folders: list[str]) -> bool:
    return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def _walk(stack: _Stack, seen: set[tuple[int, int]], skip: set[str]) -> Iterator[Found]:
    # An explicit stack of (folder, entry iterator): no recursion limit on deep trees, and
    # one open directory listing per level.
    while stack:
        folder, entries = stack[-1]
        try:
            entry = next(entries)
        except StopIteration:
            stack.pop()
            continue
        except OSError as exc:
            stack.pop()
            yield Found(folder, error=f"directory listing failed half-way: {exc.strerror}")
            continue
        kind = _kind(entry)
        if kind == "dir":
            yield from _enter(entry.path, seen, stack)
        elif kind == "file":
            if entry.path not in skip:
                yield Found(entry.path)
        elif kind == "broken":
            yield Found(entry.path, error="broken symbolic link")
        elif kind.startswith("unreadable"):
            yield Found(entry.path, error=kind)
        else:
            yield Found(entry.path, skip_reason=f"not a regular file ({kind})")


def in_shard(path: str, index: int, count: int) -> bool:
    """True when ``path`` belongs to shard ``index`` of ``count`` (stable across runs/hosts)."""
    return count == 1 or zlib.crc32(path.encode("utf-8", "surrogateescape")) % count == index
