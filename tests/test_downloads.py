"""Checkpoint downloads (bmp/download.py) against a local HTTP server on 127.0.0.1:
resume after a dropped connection, one download for racing processes, a changed
file refused, and the Hugging Face path through HF_ENDPOINT."""

from __future__ import annotations

import hashlib
import os
import re
import select
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bmp import download
from bmp.download import DownloadError, fetch, hub_file, record_path
from bmp.weights import CHECKPOINTS, Checkpoint, MissingCheckpointError, resolve_checkpoint
from tests.conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _payload(n: int = 300_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """Serves ``files`` with Range / If-Range support, answering Hub-style
    HEAD requests (X-Repo-Commit, ETag, Content-Length), and logs every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.drops: list[int] = []  # the next GETs are cut after these many bytes of body
        self.ranges = True  # False: ignore Range like a server without support
        self.gate: threading.Event | None = None  # holds GETs half way until set
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                server._serve(self, head=True)

            def do_GET(self) -> None:
                server._serve(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        # Stops by itself should a test hang: no server outlives a few minutes.
        self._deadline = threading.Timer(180, self.httpd.shutdown)
        self._deadline.daemon = True

    def __enter__(self) -> FileServer:
        self._thread.start()
        self._deadline.start()
        return self

    def __exit__(self, *exc) -> None:
        self._deadline.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def gets(self, path: str | None = None) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if m == "GET" and (path is None or p == path)]

    def _serve(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = urllib.parse.unquote(handler.path.split("?")[0])
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", path, headers))
            drop = self.drops.pop(0) if not head and self.drops else None
        data = self.files.get(path)
        if data is None:
            handler.send_error(404)
            return
        etag = f'"{_sha(data)}"'
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", headers.get("range", ""))
        if match and self.ranges and headers.get("if-range", etag) == etag:
            start = int(match[1])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        body = data[start:]
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.end_headers()
        if head:
            return
        half = drop if drop is not None else len(body) // 2
        try:
            handler.wfile.write(body[:half])
            handler.wfile.flush()
            if drop is not None:
                handler.close_connection = True
                return  # the connection closes short of Content-Length
            if self.gate is not None:
                self.gate.wait(20)
            handler.wfile.write(body[half:])
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def test_dropped_connection_resumes_with_range(server, tmp_path):
    data = _payload()
    server.files["/ckpt.pt"] = data
    server.drops = [100_000]
    target = tmp_path / "cache" / "ckpt.pt"
    assert fetch(f"{server.url}/ckpt.pt", target, sha256=_sha(data), retry_wait=0) == target
    first, second = server.gets()
    assert "range" not in first
    assert second["range"] == "bytes=100000-"
    assert second["if-range"] == f'"{_sha(data)}"'  # the rest of the same version
    assert _sha(target.read_bytes()) == _sha(data)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt.pt", "ckpt.pt.lock"]


def test_a_rerun_resumes_the_part_file_a_failed_run_kept(server, tmp_path, monkeypatch):
    data = _payload()
    server.files["/big.pt"] = data
    server.drops = [120_000, 0]  # the run resumes once, gets nothing more and gives up
    url = f"{server.url}/big.pt"
    monkeypatch.setitem(CHECKPOINTS, "big", Checkpoint("big", "big.pt", url, sha256=_sha(data)))
    monkeypatch.setenv("BMP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(download, "_ATTEMPTS", 1)
    with pytest.raises(MissingCheckpointError, match=r"run again to resume from the 120000 bytes") as err:
        resolve_checkpoint("big", download=True)
    assert url in str(err.value)
    part = tmp_path / "home" / "checkpoints" / "big.pt.part"
    assert part.stat().st_size == 120_000 and not part.with_name("big.pt").exists()
    path = resolve_checkpoint("big", download=True)
    assert server.gets()[-1]["range"] == "bytes=120000-"
    assert path.read_bytes() == data and not part.exists()


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    data = _payload()
    server.files["/x.pt"] = data
    server.ranges = False
    target = tmp_path / "x.pt"
    target.with_name("x.pt.part").write_bytes(b"stale bytes of some other file")
    fetch(f"{server.url}/x.pt", target, sha256=_sha(data), retry_wait=0)
    assert server.gets()[0]["range"] == "bytes=30-"
    assert target.read_bytes() == data


def test_wrong_sha256_is_discarded(server, tmp_path):
    server.files["/x.pt"] = _payload()
    target = tmp_path / "x.pt"
    with pytest.raises(DownloadError, match="does not match the registered sha256") as err:
        fetch(f"{server.url}/x.pt", target, sha256="0" * 64)
    assert server.url in str(err.value) and "\n" not in str(err.value)
    assert not target.exists() and not target.with_name("x.pt.part").exists()


def test_changed_file_under_the_same_name_is_refused(server, tmp_path):
    url = f"{server.url}/maskpose.pth"
    target = tmp_path / "maskpose.pth"
    server.files["/maskpose.pth"] = first = _payload(seed=1)
    fetch(url, target)  # no registered digest: the first download's is recorded
    assert record_path(target).read_text() == f"{_sha(first)}  maskpose.pth\n"
    target.unlink()
    server.files["/maskpose.pth"] = _payload(seed=2)
    with pytest.raises(DownloadError, match=r"^refusing .*differs from") as err:
        fetch(url, target)
    assert url in str(err.value) and "\n" not in str(err.value)
    assert not target.exists() and not target.with_name("maskpose.pth.part").exists()
    server.files["/maskpose.pth"] = first  # the recorded version is still welcome
    assert fetch(url, target).read_bytes() == first


_FETCH_SCRIPT = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("bmp_download", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["bmp_download"] = module
spec.loader.exec_module(module)
path = module.fetch(sys.argv[2], Path(sys.argv[3]), sha256=sys.argv[4] or None, retry_wait=0)
print("GOT", path, flush=True)
"""


def _fetch_process(url: str, target: Path, sha256: str = "", env: dict | None = None) -> subprocess.Popen:
    """bmp/download.py alone in a fresh interpreter (without importing torch)."""
    return subprocess.Popen(
        [sys.executable, "-c", _FETCH_SCRIPT, str(ROOT / "bmp" / "download.py"), url, str(target), sha256],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _stderr_line(proc: subprocess.Popen, text: str, timeout: float = 30.0) -> bool:
    """Whether ``proc`` writes a line with ``text`` to stderr within ``timeout``."""
    seen = ""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while time.monotonic() < deadline and text not in seen:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096).decode(errors="replace")
            if not chunk:
                break
            seen += chunk
    return text in seen


def test_racing_processes_download_once(server, tmp_path):
    data = _payload(2_000_000)
    server.files["/shared.pt"] = data
    server.gate = threading.Event()  # the first download stalls half way...
    url, target = f"{server.url}/shared.pt", tmp_path / "cache" / "shared.pt"
    first = _fetch_process(url, target, _sha(data))
    second = None
    try:
        assert _wait_for(lambda: len(server.gets()) == 1), "the first process never asked"
        second = _fetch_process(url, target, _sha(data))
        # ...until the second one queues on the lock.
        assert _stderr_line(second, "waiting for another process that is downloading shared.pt")
        server.gate.set()
        outputs = [p.communicate(timeout=60) for p in (first, second)]
    finally:
        server.gate.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert all(f"GOT {target}" in out for out, _ in outputs)
    assert len(server.gets()) == 1
    assert target.read_bytes() == data


# Hugging Face Hub --------------------------------------------------------------


def test_hub_urls_are_recognised():
    hub = hub_file("https://huggingface.co/vrg-prague/BBoxMaskPose/resolve/main/SAM-pose2seg_hiera_b%2B.pt")
    assert (hub.repo_id, hub.revision, hub.filename) == (
        "vrg-prague/BBoxMaskPose", "main", "SAM-pose2seg_hiera_b+.pt")
    assert hub_file(CHECKPOINTS["maskpose-b"].url).filename == "MaskPose/MaskPose-b-1.1.0.pth"
    assert hub_file(CHECKPOINTS["sam2.1-hiera-b+"].url) is None
    assert hub_file("https://huggingface.co/datasets/a/b/resolve/main/x.pt") is None
    hosted = {c.name for c in CHECKPOINTS.values() if hub_file(c.url)}
    assert {"rtmdet-ins-l-mask", "maskpose-b", "pmpose-b", "sam-pose2seg-hiera-b+"} <= hosted


def _hub_env(server: FileServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "BMP_OFFLINE"))}
    return {**env, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1"}


def test_hub_file_through_hf_endpoint_with_token_and_resume(server, tmp_path):
    pytest.importorskip("huggingface_hub")
    # Over 10 MiB: huggingface_hub writes (and so resumes from) whole 10 MiB chunks.
    data = _payload(12 << 20)
    server.files["/owner/repo/resolve/main/sub/model+1.pth"] = data
    server.drops = [11 << 20]
    target = tmp_path / "cache" / "model+1.pth"
    proc = _fetch_process("https://huggingface.co/owner/repo/resolve/main/sub/model%2B1.pth", target,
                          env=_hub_env(server, tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert target.read_bytes() == data
    assert record_path(target).read_text().split()[0] == _sha(data)
    assert not (target.parent / ".huggingface" / "sub" / "model+1.pth").exists()
    methods = [m for m, p, _ in server.requests if p == "/owner/repo/resolve/main/sub/model+1.pth"]
    assert methods == ["HEAD", "GET", "GET"]
    gets = server.gets("/owner/repo/resolve/main/sub/model+1.pth")
    assert all(h.get("authorization") == "Bearer hf_test_token" for h in gets)
    # huggingface_hub resumed the dropped connection where its file ended.
    assert "range" not in gets[0]
    resumed = re.fullmatch(r"bytes=(\d+)-", gets[1].get("range", ""))
    assert resumed and 0 < int(resumed[1]) <= 11 << 20


@pytest.mark.parametrize("variable", ["BMP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_touches_the_network(tmp_path, monkeypatch, variable):
    url = "https://huggingface.co/owner/repo/resolve/main/toy.pt"
    monkeypatch.setitem(CHECKPOINTS, "toy", Checkpoint("toy", "toy.pt", url))
    monkeypatch.delenv("BMP_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")

    def no_network(*args, **kwargs):
        raise AssertionError("offline, yet a download was attempted")

    monkeypatch.setattr("bmp.weights.fetch", no_network)
    with pytest.raises(MissingCheckpointError, match="not found; looked in") as err:
        resolve_checkpoint("toy", [tmp_path])
    assert url in str(err.value)


def test_hub_offline_mode_is_honoured_by_huggingface_hub(server, tmp_path):
    """HF_HUB_OFFLINE reaches huggingface_hub itself when a download is forced."""
    pytest.importorskip("huggingface_hub")
    server.files["/owner/repo/resolve/main/toy.pt"] = b"x"
    target = tmp_path / "toy.pt"
    env = {**_hub_env(server, tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = _fetch_process("https://huggingface.co/owner/repo/resolve/main/toy.pt", target, env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "DownloadError" in err
    assert f"{server.url}/owner/repo/resolve/main/toy.pt" in err
    assert server.requests == [] and not target.exists()
