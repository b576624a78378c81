"""Input names turned into output file and folder names that stay inside --out.

Output paths built from input names (a video's stem as its folder, an image's
stem in its overlay's name) must not be steered by those names: ``..`` would
climb out of the output folder, ``/`` would reach into another, a newline or a
terminal escape would garble every listing, and a 300-byte name would fail to
open mid-run. :func:`safe_name` is the one rule every such path goes through.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

#: Bytes (UTF-8) of a sanitised name: room under the usual 255-byte limit of one
#: path component for a suffix such as ``_<image id>.jpg``.
MAX_NAME_BYTES = 200

#: What replaces each character that may not appear in an output name.
REPLACEMENT = "_"


def _allowed(char: str) -> bool:
    # Path separators, NUL, control and format characters (newlines, escapes,
    # bidi overrides), and lone surrogates (undecodable bytes of a file name).
    return char not in "/\\" and unicodedata.category(char) not in ("Cc", "Cf", "Cs")


def safe_name(name: str | os.PathLike, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` as one harmless path component: never empty, ``.`` or ``..``,
    without separators or control characters, at most ``max_bytes`` UTF-8 bytes.

    Deterministic, and a name that is already safe is returned unchanged. Two
    different names can map to the same result (``a/b`` and ``a_b``): callers
    that derive several outputs from several inputs compare the results (see
    :func:`name_clashes`) and refuse or disambiguate, as for equal names. A name
    cut for length keeps a short hash of the whole, so long names that differ
    only at the end stay apart.
    """
    if max_bytes < 16:
        raise ValueError(f"max_bytes must be >= 16, got {max_bytes}")
    text = os.fspath(name)
    cleaned = "".join(c if _allowed(c) else REPLACEMENT for c in text)
    if cleaned.strip(".") == "":  # "", ".", "..", "...": nothing or a path step
        cleaned = REPLACEMENT * max(1, len(cleaned))
    encoded = cleaned.encode("utf-8")
    if len(encoded) <= max_bytes:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    kept = encoded[: max_bytes - len(digest) - 1].decode("utf-8", "ignore")  # no half character
    return f"{kept}~{digest}"


def name_clashes(named: Sequence[tuple[T, str]]) -> list[tuple[T, T]]:
    """The inputs of ``named`` ((input, its sanitised output name) pairs) whose
    outputs would be one file, on this file system or a case-insensitive one:
    each later input paired with the first that took its name."""
    first: dict[str, T] = {}
    clashes = []
    for item, name in named:
        folded = name.casefold()
        if folded in first:
            clashes.append((first[folded], item))
        else:
            first[folded] = item
    return clashes
