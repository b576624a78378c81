"""Glob patterns and folder listings that symbolic-link loops cannot hang or crash.

``glob.glob(pattern, recursive=True)`` follows every folder link under ``**``:
a link back up the tree makes it search forever, and ``Path.resolve`` raises
``RuntimeError: Symlink loop`` on a link that leads to itself. Here ``**`` never
enters a folder it has already searched (known by device and inode, whatever
path leads there), and a link that loops is skipped with a warning.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger("bmp")

RECURSIVE = "**"


def real_path(path: Path) -> Path | None:
    """``path`` made absolute with its links followed; None (and a warning) for
    a link that loops. A broken link resolves to where it points, which the
    reader then reports as missing."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError, later ones OSError(ELOOP)
        logger.warning("skipped %s: a symbolic link loop (%s)", path, exc)
        return None


def link_safe_glob(pattern: str) -> list[Path]:
    """The paths ``glob.glob(pattern, recursive=True)`` finds, without following
    a folder link into a folder already searched. Hidden names match only a
    pattern part that starts with a dot, as in :mod:`glob`."""
    parts = Path(pattern).parts
    if RECURSIVE not in parts:  # one level per part: finite whatever the links
        return [Path(p) for p in glob.glob(pattern)]
    split = parts.index(RECURSIVE)
    head, tail = parts[:split], parts[split:]
    if not head:
        bases = [Path(".")]
    elif glob.has_magic(os.path.join(*head)):
        bases = [Path(p) for p in sorted(glob.glob(os.path.join(*head))) if os.path.isdir(p)]
    else:
        bases = [Path(*head)] if os.path.isdir(os.path.join(*head)) else []
    visited: set[tuple[int, int]] = set()
    found: list[Path] = []
    for base in bases:
        for relative in _walk(base, visited):
            if _matches(tail, relative):
                found.append(base.joinpath(*relative) if head else Path(*relative))
    return found


def _walk(base: Path, visited: set[tuple[int, int]]) -> Iterator[tuple[str, ...]]:
    """The components, relative to ``base``, of every entry below it; each
    folder is entered once, by whichever path reaches it first."""
    for folder, subfolders, files in os.walk(base, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError:
            subfolders[:] = []
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited:
            subfolders[:] = []  # a link back up the tree would repeat it forever
            logger.warning("skipped %s: a link to a folder already searched", folder)
            continue
        visited.add(key)
        relative = Path(folder).relative_to(base).parts
        for name in (*subfolders, *files):
            yield (*relative, name)


def _matches(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern``
    (``**``: any number of non-hidden folders, or the entry itself)."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == RECURSIVE:
        if _matches(pattern[1:], parts):
            return True
        return bool(parts) and not parts[0].startswith(".") and _matches(pattern, parts[1:])
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatch(parts[0], head) and _matches(pattern[1:], parts[1:])
