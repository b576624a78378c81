"""Fetching one checkpoint file into the cache: resumable, verified, one process at a time.

:func:`fetch` is the only entry point. Files hosted on the Hugging Face Hub
(``https://huggingface.co/<owner>/<repo>/resolve/<revision>/<file>``) go through
``huggingface_hub``, which honours ``HF_ENDPOINT`` (a mirror), ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` and resumes a dropped connection. Every other URL is read
with HTTP ``Range`` requests into ``<file>.part``, so a download cut at 90 %
(a dropped connection, or a killed process and a re-run) goes on from there.

Either way the file reaches its final name only whole and verified (size and
sha256 where the registry knows them), by an atomic rename; a file that fails
the check is deleted. Processes (torchrun ranks, parallel jobs) that need the
same missing file queue on ``<file>.lock``: one downloads, the others wait and
then use its file. A file the registry has no full sha256 for gets the digest
of its first download written beside it (``<file>.sha256``, ``sha256sum``
format); a later download under that name with other contents is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import importlib.metadata
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

HF_HOST = "huggingface.co"
_CHUNK = 1 << 20
#: Attempts without a single new byte before giving up; attempts that made
#: progress do not count, but never more than _MAX_ATTEMPTS in all.
_ATTEMPTS = 4
_MAX_ATTEMPTS = 50
_TRUE = {"1", "on", "yes", "true"}


class DownloadError(RuntimeError):
    """A download failed or its file was refused (one line naming the URL)."""


class _Retry(Exception):
    """This attempt ended early in a way that another attempt can fix."""


@dataclass(frozen=True)
class HubFile:
    """Where a file lives on the Hugging Face Hub."""

    repo_id: str
    revision: str
    filename: str


_HUB_PATH = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")


def hub_file(url: str) -> HubFile | None:
    """The Hub model file a ``huggingface.co/.../resolve/...`` URL names, else None."""
    parts = urllib.parse.urlsplit(url)
    match = _HUB_PATH.fullmatch(parts.path)
    if parts.scheme != "https" or parts.hostname != HF_HOST or match is None:
        return None
    unquote = urllib.parse.unquote
    return HubFile(match["repo"], unquote(match["revision"]), unquote(match["file"]))


def offline_reason(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The variable that forbids downloading ``url``, if one does.

    ``BMP_OFFLINE`` forbids every download; ``HF_HUB_OFFLINE`` the Hub ones
    (so a Hub file is then reported missing with its URL, the same way).
    """
    if env.get("BMP_OFFLINE"):
        return "BMP_OFFLINE"
    if hub_file(url) is not None and env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE"
    return None


def sha256sum(path: Path, chunk: int = _CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_path(target: Path) -> Path:
    """Where the sha256 of ``target``'s first download is kept."""
    return target.with_name(target.name + ".sha256")


def fetch(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    timeout: float = 30.0,
    attempts: int | None = None,
    retry_wait: float = 1.0,
) -> Path:
    """Download ``url`` to ``target`` unless another process just did.

    Args:
        sha256, sha256_prefix, size: what the registry knows of the file.
        timeout: seconds without data before an attempt is given up.
        attempts: attempts in a row without progress before giving up
            (default :data:`_ATTEMPTS`).
        retry_wait: seconds before the first retry (then longer).
    Raises:
        DownloadError: one line naming the URL; a partial ``.part`` file is
            kept for the next run to resume, a wrong file is deleted.
    """
    target = Path(target)
    with _exclusive(target, url):
        if target.is_file():
            # Another process held the lock and finished it; the caller verifies it.
            return target
        hub = hub_file(url)
        staged = _from_hub(hub, url, target) if hub is not None else _from_http(
            url, target, timeout=timeout, attempts=attempts or _ATTEMPTS, retry_wait=retry_wait
        )
        try:
            digest = _check(staged, url, target, sha256, sha256_prefix, size)
        except DownloadError:
            _discard(staged)
            raise
        os.replace(staged, target)
        _validator_path(staged).unlink(missing_ok=True)
        if not sha256 and not record_path(target).is_file():
            _write_record(target, digest)
        return target


@contextlib.contextmanager
def _exclusive(target: Path, url: str) -> Iterator[None]:
    """Hold ``<target>.lock``. flock is released by the kernel when its holder
    dies, so a killed download never blocks the next one. The lock file stays:
    deleting it would let a waiter and a newcomer lock different files."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(target.with_name(target.name + ".lock"), "a+b")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise DownloadError(f"cannot download {url} into {target.parent}: {_one_line(exc)}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("waiting for another process that is downloading %s", target.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check(
    path: Path, url: str, target: Path, sha256: str | None, sha256_prefix: str | None, size: int | None
) -> str:
    """The sha256 of a finished download, after checking it against the
    registry and against the digest recorded at the first download."""
    got = path.stat().st_size
    if size is not None and got != size:
        raise DownloadError(f"{url} gave {got} bytes, expected {size}: discarded, run again to retry")
    digest = sha256sum(path)
    if (sha256 and digest != sha256) or (sha256_prefix and not digest.startswith(sha256_prefix)):
        raise DownloadError(
            f"{url} does not match the registered sha256 of {target.name} (sha256 {digest}): discarded"
        )
    record = record_path(target)
    recorded = _read_record(record) if not sha256 else None
    if recorded and recorded != digest:
        raise DownloadError(
            f"refusing {url}: its sha256 {digest} differs from {recorded}, recorded in {record} at the "
            f"first download of {target.name}; if the new file is expected, delete {record} and run again"
        )
    return digest


def _read_record(record: Path) -> str | None:
    try:
        words = record.read_text().split()
    except FileNotFoundError:
        return None
    return words[0].lower() if words else None


def _write_record(target: Path, digest: str) -> None:
    record = record_path(target)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(f"{digest}  {target.name}\n")
    os.replace(tmp, record)
    logger.info("recorded sha256 %s of %s in %s", digest, target.name, record)


# Hugging Face Hub -----------------------------------------------------------


def _from_hub(hub: HubFile, url: str, target: Path) -> Path:
    """The file downloaded by huggingface_hub into a staging folder beside
    ``target`` (same file system, so the final move is a rename)."""
    try:
        from huggingface_hub import hf_hub_download, hf_hub_url
    except ImportError as exc:
        raise DownloadError(
            f"downloading {url} needs huggingface_hub: pip install 'huggingface_hub>=0.23'"
        ) from exc
    # The URL actually asked for: HF_ENDPOINT may point at a mirror.
    where = hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision)
    try:
        path = hf_hub_download(
            hub.repo_id, hub.filename, revision=hub.revision,
            local_dir=target.parent / ".huggingface", library_name="bmp", library_version=_version(),
        )
    except Exception as exc:
        raise DownloadError(f"downloading {where} failed: {_one_line(exc)}") from exc
    return Path(path)


def _version() -> str | None:
    """bmp's version for the Hub's user agent (importlib: this module also runs alone in tests)."""
    try:
        return importlib.metadata.version("bmp")
    except importlib.metadata.PackageNotFoundError:
        return None


# Plain HTTP(S) ----------------------------------------------------------------


def _part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _validator_path(part: Path) -> Path:
    """The ETag / Last-Modified of the response a ``.part`` file started
    from: resuming asks for the rest of that same version (If-Range)."""
    return part.with_name(part.name + ".etag")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _from_http(url: str, target: Path, *, timeout: float, attempts: int, retry_wait: float) -> Path:
    part = _part_path(target)
    if _size(part):
        logger.info("resuming %s from byte %d of %s", url, _size(part), part)
    stalled = 0
    last: BaseException | None = None
    for _ in range(_MAX_ATTEMPTS):
        before = _size(part)
        try:
            _attempt(url, part, timeout)
            return part
        except Exception as exc:
            if not _transient(exc):
                raise DownloadError(f"downloading {url} failed: {_one_line(exc)}") from exc
            last = exc
        stalled = 0 if _size(part) > before else stalled + 1
        if stalled >= attempts:
            break
        logger.warning("download of %s interrupted (%s); going on from byte %d",
                       url, _one_line(last), _size(part))
        time.sleep(retry_wait * stalled)
    kept = f"; run again to resume from the {_size(part)} bytes in {part}" if _size(part) else ""
    raise DownloadError(f"downloading {url} failed: {_one_line(last)}{kept}")


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One request, appending to ``part`` from where it ends.

    Raises:
        _Retry: the connection ended before the announced size, or the server
            answered a range other than the one asked for.
    """
    offset = _size(part)
    headers = {"User-Agent": "bmp", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        with contextlib.suppress(FileNotFoundError):
            headers["If-Range"] = _validator_path(part).read_text().strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # The part is already whole, or longer than the file now is.
        total = _content_range(exc.headers.get("Content-Range", ""))[2]
        exc.close()
        if total == offset:
            return
        _discard(part)
        raise _Retry(f"the server refused bytes={offset}-: starting again") from None
    with response:
        status = getattr(response, "status", None) or 200  # file: URLs have none
        start, total = 0, _int(response.headers.get("Content-Length"))
        if status == 206:
            first, _, total = _content_range(response.headers.get("Content-Range", ""))
            if first != offset:
                _discard(part)
                raise _Retry(f"asked for bytes={offset}-, got {response.headers.get('Content-Range')}")
            start = offset
        elif offset:
            logger.info("%s ignored the range request (or the file changed): starting again", url)
        if start == 0:
            _write_validator(part, response.headers)
        desc = f"download {part.name.removesuffix('.part')}"
        with open(part, "ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=desc
        ) as bar:
            # http.client returns short reads at an early EOF instead of raising,
            # so completeness is checked against the announced size below.
            while block := response.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
    got = _size(part)
    if total is not None and got != total:
        raise _Retry(f"connection closed at byte {got} of {total}")


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """``bytes FIRST-LAST/TOTAL`` (or ``bytes */TOTAL``) as numbers, None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if match is None:
        return None, None, None
    return _int(match[1]), _int(match[2]), _int(match[3])


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _write_validator(part: Path, headers: http.client.HTTPMessage | Mapping[str, str]) -> None:
    etag = headers.get("ETag") or ""
    # A weak ETag cannot validate a byte range (RFC 9110 13.1.5).
    value = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    path = _validator_path(part)
    if value:
        path.write_text(value)
    else:
        path.unlink(missing_ok=True)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _transient(exc: BaseException) -> bool:
    """Whether another attempt could succeed: dropped or timed-out
    connections and server-side errors, not a missing file or a full disk."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (408, 429) or exc.code >= 500
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, TimeoutError | ConnectionError)
    return isinstance(exc, _Retry | TimeoutError | ConnectionError | http.client.HTTPException)


def _one_line(exc: BaseException | None, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) if exc is not None else ""
    name = type(exc).__name__ if exc is not None else "unknown error"
    if isinstance(exc, DownloadError | _Retry):
        return text[:limit]
    return f"{name}: {text[:limit]}" if text else name
