"""tools/install.sh's offline options: ``--wheelhouse DIR`` downloads, ``--from DIR``
installs with no index, ``--keep-torch`` keeps a torch the environment has.

The round trips use a tiny package list (``BMP_INSTALL_ONLY``) instead of the
stack (GBs). Tests marked ``network`` download from PyPI once (a few hundred kB)
and are skipped when it cannot be reached; everything after the download is
offline: the index given to pip is an address where nothing listens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

INSTALL = ROOT / "tools" / "install.sh"
#: pip must not reach any index in --from mode; nothing listens here.
DEAD_INDEX = "http://127.0.0.1:9/simple"


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


network = pytest.mark.network


@pytest.fixture(scope="module")
def need_pypi() -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is not reachable: the wheelhouse download needs it")


def install_sh(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    # The host interpreter makes the venvs: the same one that runs these tests.
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(INSTALL), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_options_are_checked_before_anything_runs(tmp_path):
    usage = _ok(install_sh("--help"))
    for option in ("--wheelhouse", "--from", "--keep-torch", "--python", "--platform"):
        assert option in usage
    for args in (["--bogus"], ["--python", "3.12"], ["--platform", "manylinux_2_28_x86_64"],
                 ["--from", str(tmp_path / "missing")]):
        result = install_sh(*args, BMP_VENV=str(tmp_path / "venv"))
        assert result.returncode == 2, (args, result.stderr)
    assert not (tmp_path / "venv").exists()  # refused before creating anything


@network
def test_wheelhouse_round_trip_installs_offline(tmp_path, need_pypi):
    house, venv = tmp_path / "wheels", tmp_path / "venv"
    _ok(install_sh("--wheelhouse", str(house), BMP_INSTALL_ONLY="addict tqdm"))
    assert {p.name.split("-")[0] for p in house.glob("*.whl")} >= {"addict", "tqdm"}
    out = _ok(install_sh("--from", str(house), BMP_VENV=str(venv), BMP_INSTALL_ONLY="addict tqdm",
                         PIP_INDEX_URL=DEAD_INDEX, PIP_EXTRA_INDEX_URL=""))
    assert "127.0.0.1:9" not in out  # pip never tried an index
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import addict, tqdm"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@network
def test_wheelhouse_for_another_python_takes_its_binary_wheels(tmp_path, need_pypi):
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    tag = "cp" + other.replace(".", "")
    house = tmp_path / "wheels"
    _ok(install_sh("--wheelhouse", str(house), "--python", other, BMP_INSTALL_ONLY="pyyaml==6.0.2"))
    wheels = [p.name for p in house.glob("*.whl")]
    assert len(wheels) == 1 and f"-{tag}-{tag}-manylinux" in wheels[0], wheels


def _fake_torch_venv(path: Path, version: str) -> None:
    """A venv whose torch and torchvision are stubs reporting ``version``: all
    ``--keep-torch`` looks at."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python*/site-packages"))
    for name in ("torch", "torchvision"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n")


def test_keep_torch_keeps_a_supported_torch_and_refuses_others(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    venv = tmp_path / "ok"
    _fake_torch_venv(venv, "2.11.0+cu130")
    # With an empty package list nothing is installed: only the torch check runs.
    out = _ok(install_sh("--from", str(empty), "--keep-torch", BMP_VENV=str(venv), BMP_INSTALL_ONLY=" ",
                         PIP_INDEX_URL=DEAD_INDEX))
    assert "keeping torch 2.11.0+cu130, torchvision 2.11.0+cu130" in out
    new = tmp_path / "too_new"
    _fake_torch_venv(new, "2.15.0")
    result = install_sh("--from", str(empty), "--keep-torch", BMP_VENV=str(new), BMP_INSTALL_ONLY=" ")
    assert result.returncode == 1 and "outside the supported" in result.stderr
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    result = install_sh("--from", str(empty), "--keep-torch", BMP_VENV=str(bare), BMP_INSTALL_ONLY=" ")
    assert result.returncode == 1 and "cannot import torch" in result.stderr
