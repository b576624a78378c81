"""tools/kit.py and ``tools/install.sh --kit/--from KIT``: what a known target
lacks, and an offline install of exactly that.

The walk's rules run offline on fake wheels; tests marked ``network`` download
from PyPI (a small subset for the install round trip, ~11 MiB for the shipped
target) and are skipped when it cannot be reached."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_install_wheelhouse import (  # noqa: F401 (need_pypi: a fixture)
    DEAD_INDEX,
    _fake_torch_venv,
    _ok,
    _pypi_reachable,
    install_sh,
    need_pypi,
)

sys.path.insert(0, str(ROOT / "tools"))
import kit  # noqa: E402

SHIPPED_TARGET = ROOT / "tools" / "targets" / "h200-cuda13-py312.txt"


def _target(tmp_path: Path, text: str) -> kit.Target:
    path = tmp_path / "target.txt"
    path.write_text("# an image: Python 3.12.3 in a venv\n" + text)
    return kit.Target.read(path)


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


def _fake_index(tmp_path: Path, packages: dict[str, tuple[str, list[str]]]):
    """A fetch over fake wheels: name -> (version, requirements); records each call."""
    folder = tmp_path / "index"
    folder.mkdir()
    files = {name: _wheel(folder, name, v, reqs) for name, (v, reqs) in packages.items()}
    calls: list[list[str]] = []

    def fetch(requirements: list[str], sdists: bool) -> list[Path]:
        calls.append(requirements)
        return [files[kit.Requirement(r).name] for r in requirements]

    return fetch, calls


def test_the_target_file_is_read_with_its_python_and_bad_lines_refused(tmp_path):
    target = _target(tmp_path, "numpy==2.5.2\nOpenCV_Python_Headless\n\n# note\ntorch==2.11.0\n")
    assert target.python == "3.12.3"
    assert target.versions == {"numpy": "2.5.2", "opencv-python-headless": None, "torch": "2.11.0"}
    with pytest.raises(kit.KitError, match="not 'name' or 'name==version'"):
        _target(tmp_path, "numpy>=2\n")
    (tmp_path / "bare.txt").write_text("numpy\n")
    with pytest.raises(kit.KitError, match="names the target's Python"):
        kit.Target.read(tmp_path / "bare.txt")
    shipped = kit.Target.read(SHIPPED_TARGET)
    assert shipped.python.startswith("3.12.") and shipped.versions["torch"] == "2.11.0"


def test_what_the_target_meets_stays_out_and_the_rest_is_walked(tmp_path):
    target = _target(tmp_path, "numpy==2.5.2\nscipy\nsetuptools\nopencv-python-headless\ntorch==2.11.0\n")
    fetch, calls = _fake_index(tmp_path, {
        "mmfoo": ("1.0", ["numpy>=1.24", "scipy", "opencv-python", "barlib>=2", "torch>=2.1",
                          "winonly; sys_platform == 'win32'"]),
        "barlib": ("2.1", ["numpy<2"]),  # the target's numpy 2.5.2 does not meet it
        "numpy": ("1.26.4", []),
        "setuptools": ("80.10.2", []),
        "av": ("14.0", []),
    })
    walk = kit.Walk(target, fetch)
    walk.run([("mmfoo", "bmp"), ("av>=14", "bmp"), ("setuptools<81", "build"), ("scipy>=1.0", "bmp")])
    assert set(walk.picked) == {"mmfoo", "barlib", "numpy", "setuptools"}
    # An unread version is trusted with a lower bound only: setuptools < 81 comes along.
    assert walk.picked["setuptools"].why == ["build: setuptools<81 (the target has an unread version)"]
    # A true conflict comes along, and says so.
    assert walk.picked["numpy"].why == ["barlib: numpy<2 (the target has 2.5.2)"]
    assert walk.picked["numpy"].version == "1.26.4"
    assert set(walk.satisfied) == {"numpy", "scipy", "torch"}
    assert "opencv-python-headless provides" in walk.left_out["opencv-python"]
    assert "PyAV" in walk.left_out["av"]
    assert calls[0] == ["mmfoo", "setuptools<81"]  # one fetch per level, av never fetched
    assert all("winonly" not in c for call in calls for c in call)


def test_a_target_torch_that_does_not_fit_is_an_error_never_a_download(tmp_path):
    fetch, calls = _fake_index(tmp_path, {"sam9": ("1.0", ["torch>=2.12"])})
    walk = kit.Walk(_target(tmp_path, "torch==2.11.0\n"), fetch)
    with pytest.raises(kit.KitError, match=r"target's torch \(2.11.0\) does not meet sam9: torch>=2.12"):
        walk.run([("sam9", "bmp")])
    assert calls == [["sam9"]]


def test_pins_apply_and_conflicting_later_requirements_are_named(tmp_path):
    fetch, _ = _fake_index(tmp_path, {"mmengine": ("0.10.7", []), "mmdet": ("3.3.0", ["mmengine>=0.11"])})
    walk = kit.Walk(_target(tmp_path, ""), fetch, pins={"mmengine": kit.SpecifierSet("==0.10.7")})
    with pytest.raises(kit.KitError, match="mmengine 0.10.7 was picked .* but mmdet: mmengine>=0.11"):
        walk.run([("mmengine", "bmp"), ("mmdet", "bmp")])


def test_plan_checks_every_file_against_the_manifest(tmp_path, capsys):
    folder = tmp_path / "kit"
    folder.mkdir()
    wheel = _wheel(folder, "addict", "2.4.0", [])
    manifest = {"only": None, "files": [{"file": wheel.name, "kind": "wheel", "bytes": wheel.stat().st_size,
                                         "sha256": kit.sha256(wheel)}]}
    (folder / "kit.json").write_text(json.dumps(manifest))
    assert kit.main(["plan", str(folder)]) == 0
    assert capsys.readouterr().out == f"wheel {wheel.resolve()}\n"
    with open(wheel, "ab") as f:
        f.write(b"x")
    manifest["files"][0]["bytes"] = wheel.stat().st_size  # same size, other content
    (folder / "kit.json").write_text(json.dumps(manifest))
    assert kit.main(["plan", str(folder)]) == 2
    assert "not the file kit.json names" in capsys.readouterr().err


def test_the_wheelhouse_takes_its_sdists_and_their_needs_from_the_kit(capsys):
    """install.sh --wheelhouse asks kit.py for what is built on the target: one
    list, each name pinned by constraints.txt to the tested version."""
    assert kit.main(["built-on-target"]) == 0
    names = capsys.readouterr().out.split()
    assert names == list(kit.BUILT_ON_TARGET) and set(names) <= set(kit.pins())
    assert kit.main(["built-on-target", "--needs"]) == 0
    needs = {kit.canonicalize_name(kit.Requirement(line).name): kit.Requirement(line).specifier
             for line in capsys.readouterr().out.splitlines()}
    assert not set(needs) & {*names, "torch", "torchvision", "opencv-python"}
    assert {"mmengine", "portalocker", "cython", "hydra-core"} <= set(needs)
    assert needs["numpy"] == kit.SpecifierSet(">=1.20,>=1.24.4,>=1.8.1")  # merged, one line a name
    install = (ROOT / "tools" / "install.sh").read_text()
    assert "kit.py\" built-on-target" in install and "mmcv==2.1.0\" \"xtcocotools" not in install
    assert "kit.py\" fetch-sdists" in install and "helper" not in install  # one helper venv: kit.py's


def test_the_sdists_are_fetched_at_their_pins_through_the_helper(tmp_path, monkeypatch, capsys):
    made, asked = [], []

    def make_helper(path):
        made.append(path)
        return path

    def pip_fetcher(dest, python, platforms, helper):
        def fetch(requirements, sdists):
            asked.append((requirements, sdists, helper))
            return [dest / "mmcv-2.1.0.tar.gz"]
        return fetch

    monkeypatch.setattr(kit, "make_helper", make_helper)
    monkeypatch.setattr(kit, "pip_fetcher", pip_fetcher)
    assert kit.main(["fetch-sdists", str(tmp_path / "house")]) == 0
    pinned = kit.pins()
    assert asked == [([f"{n}{pinned[n]}" for n in kit.BUILT_ON_TARGET], True, made[0])]
    assert "mmcv==2.1.0" in asked[0][0] and (tmp_path / "house").is_dir()
    assert capsys.readouterr().out == "mmcv-2.1.0.tar.gz\n"


def test_wheel_needs_reads_the_wheels_for_the_target_less_what_is_skipped(tmp_path, capsys):
    """install.sh --wheelhouse reads its step-2 wheels' dependencies through kit.py."""
    mmpose = ["numpy", "Torch>=1.8", "chumpy; python_version < '3.11'",
              "json-tricks>=3.15; python_version >= '3.11'"]
    hydra = ["omegaconf<2.4,>=2.2", "pywin32; sys_platform == 'win32'", "rich; extra == 'dev'",
             "arm-only; platform_machine == 'aarch64'"]
    wheels = [_wheel(tmp_path, "mmpose", "1.3.2", mmpose), _wheel(tmp_path, "hydra-core", "1.3.8", hydra)]
    args = ["wheel-needs", "--python", "3.12.0", "--platform", "manylinux_2_17_x86_64",
            "--skip", "torch omegaconf", *map(str, wheels)]
    assert kit.main(args) == 0
    assert capsys.readouterr().out.splitlines() == ["numpy", "json-tricks>=3.15"]
    aarch64 = ["--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64"]
    assert kit.main([*args[:2], "3.10.0", *aarch64, "--skip", "", *map(str, wheels)]) == 0
    assert capsys.readouterr().out.splitlines() == ["numpy", "Torch>=1.8", "chumpy", "omegaconf<2.4,>=2.2",
                                                    "arm-only"]
    install = (ROOT / "tools" / "install.sh").read_text()
    assert "kit.py\" wheel-needs" in install and "Requires-Dist" not in install  # one reader: kit.py's
    assert "aarch64" not in install  # and one reading of a platform's machine: kit.py's


def test_the_platform_tags_name_the_machine_whose_markers_the_kit_follows(tmp_path, monkeypatch):
    assert kit.machine_of(kit.DEFAULT_PLATFORMS) == "x86_64"
    assert kit.machine_of(["manylinux_2_28_aarch64", "manylinux2014_aarch64", "musllinux_1_2_aarch64"]) \
        == "aarch64"
    assert kit.machine_of([]) == platform.machine()
    with pytest.raises(kit.KitError, match=r"tags for 2 machines \(aarch64, x86_64\)"):
        kit.machine_of(["manylinux2014_aarch64", "manylinux2014_x86_64"])
    with pytest.raises(kit.KitError, match="--platform win_amd64: not a Linux wheel platform tag"):
        kit.machine_of(["win_amd64"])
    # build walks with that machine: each kit brings what its machine's markers ask for.
    index = tmp_path / "index"
    index.mkdir()
    wheels = {name: _wheel(index, name, "1.0", reqs) for name, reqs in {
        "mmfoo": ["armdep; platform_machine == 'aarch64'", "x86dep; platform_machine == 'x86_64'"],
        "armdep": [], "x86dep": []}.items()}

    def fake_pip_fetcher(dest: Path, python: str, platforms: list[str], helper: Path) -> kit.Fetch:
        def fetch(requirements: list[str], sdists: bool) -> list[Path]:
            return [Path(shutil.copy(wheels[kit.Requirement(r).name], dest)) for r in requirements]
        return fetch

    monkeypatch.setattr(kit, "pip_fetcher", fake_pip_fetcher)
    _target(tmp_path, "")
    for tag, dep in (("manylinux_2_28_aarch64", "armdep"), (None, "x86dep")):
        out = tmp_path / f"kit-{dep}"
        build = ["build", "--target", str(tmp_path / "target.txt"), "--out", str(out), "--only", "mmfoo",
                 "--no-data", *(["--platform", tag] if tag else [])]
        assert kit.main(build) == 0
        assert {f["name"] for f in json.loads((out / kit.MANIFEST).read_text())["files"]} == {"mmfoo", dep}


def test_the_wheelhouse_and_the_kit_default_to_one_list_of_platforms(capsys):
    assert kit.main(["default-platforms"]) == 0
    assert capsys.readouterr().out.splitlines() == kit.DEFAULT_PLATFORMS
    assert "manylinux2014_x86_64" in kit.DEFAULT_PLATFORMS
    install = (ROOT / "tools" / "install.sh").read_text()
    assert "kit.py\" default-platforms" in install and "manylinux2014_x86_64" not in install


def test_the_kit_finds_the_shared_data_where_bmp_does(tmp_path, monkeypatch):
    from bmp import sample_data

    monkeypatch.delenv("BMP_SHARED", raising=False)
    assert kit.shared_dir() == sample_data.shared_dir(ROOT) == ROOT.parent / "shared"
    monkeypatch.setenv("BMP_SHARED", str(tmp_path))
    assert kit.shared_dir() == sample_data.shared_dir(ROOT) == tmp_path
    # One rule: kit.py runs bmp's own file rather than a copy of it.
    assert 'environ.get("BMP_SHARED"' not in (ROOT / "tools" / "kit.py").read_text()


def test_kit_options_are_checked(tmp_path):
    for args in (["--kit", str(tmp_path / "k")], ["--target", str(SHIPPED_TARGET)]):
        result = install_sh(*args)
        assert result.returncode == 2 and "--kit and --target go together" in result.stderr
    result = install_sh("--kit", str(tmp_path / "k"), "--target", str(tmp_path / "missing.txt"))
    assert result.returncode == 2 and "no such file" in result.stderr
    assert not (tmp_path / "k").exists()


@pytest.mark.network
def test_kit_round_trip_installs_offline_beside_a_parent_venvs_torch(tmp_path, need_pypi):  # noqa: F811
    # The target's python3 is itself a venv holding torch (a stub here) and platformdirs.
    target_file = tmp_path / "target.txt"
    target_file.write_text("# Python 3.12.3\ntorch==2.11.0\ntorchvision==0.26.0\nplatformdirs\n")
    folder = tmp_path / "kit"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    _ok(install_sh("--kit", str(folder), "--target", str(target_file), "--python", py,
                   BMP_INSTALL_ONLY="yapf addict"))
    manifest = json.loads((folder / "kit.json").read_text())
    assert {f["name"] for f in manifest["files"]} == {"yapf", "addict"}  # platformdirs: the target's
    assert manifest["satisfied_by_target"]["platformdirs"]["needed_by"][0].startswith("yapf: platformdirs")
    assert all(f["bytes"] > 0 and len(f["sha256"]) == 64 and f["why"] for f in manifest["files"])
    assert (folder / "MANIFEST.md").is_file() and (folder / "shared" / "data" / "coco").is_dir()

    parent = tmp_path / "image_venv"
    _fake_torch_venv(parent, "2.11.0+cu130")
    site = next(parent.glob("lib/python*/site-packages"))
    (site / "platformdirs").mkdir()
    (site / "platformdirs" / "__init__.py").write_text("")
    venv = tmp_path / "venv"
    constraints = (ROOT / "constraints.txt").read_text()
    out = _ok(install_sh("--from", str(folder), BMP_VENV=str(venv), PYTHON=str(parent / "bin" / "python"),
                         PIP_INDEX_URL=DEAD_INDEX, PIP_EXTRA_INDEX_URL=""))
    assert (ROOT / "constraints.txt").read_text() == constraints  # the kept torch is pinned in a copy
    assert "127.0.0.1:9" not in out and "keeping torch 2.11.0+cu130" in out
    # yapf itself would need the real platformdirs, which the stub is not.
    code = ("import addict, torch, platformdirs, importlib.metadata as m;"
            "print(m.version('yapf'), torch.__version__)")
    check = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the parent venv's packages are seen
    assert check.stdout.split()[1] == "2.11.0+cu130"
    # Again on the same environment (the acceptance's call 2): nothing to build.
    again = _ok(install_sh("--from", str(folder), BMP_VENV=str(venv), PYTHON=str(parent / "bin" / "python"),
                           PIP_INDEX_URL=DEAD_INDEX, PIP_EXTRA_INDEX_URL=""))
    assert "already installed from this kit" in again and "kit 1/3" not in again


@pytest.fixture(scope="module")
def shipped_kit(tmp_path_factory) -> dict:
    if not _pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is not reachable: the kit download needs it")
    folder = tmp_path_factory.mktemp("shipped") / "kit"
    build = [sys.executable, str(ROOT / "tools" / "kit.py"), "build", "--target", str(SHIPPED_TARGET),
             "--out", str(folder)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "kit.json").read_text())


def _imported_distributions() -> dict[str, str]:
    """Distribution -> a module of bmp that imports it (top-level imports found anywhere)."""
    modules: dict[str, str] = {}
    for path in (ROOT / "bmp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                modules.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    dists = importlib.metadata.packages_distributions()
    out: dict[str, str] = {}
    for module, where in modules.items():
        if module in sys.stdlib_module_names or module == "bmp":
            continue
        assert module in dists, f"{where} imports {module}, which no installed distribution provides"
        for dist in dists[module]:
            out.setdefault(kit.canonicalize_name(dist), where)
    return out


@pytest.mark.network
def test_the_shipped_kit_brings_only_what_the_target_lacks(shipped_kit):
    target = kit.Target.read(SHIPPED_TARGET)
    for entry in shipped_kit["files"]:
        assert not target.satisfies(entry["name"], kit.SpecifierSet(entry["needs"])), entry
    assert shipped_kit["bytes"]["total"] <= 20 * kit.MIB
    assert "torch" not in {f["name"] for f in shipped_kit["files"]}
    # Every distribution bmp imports is in the kit, in the target, or left out with a reason.
    covered = {f["name"] for f in shipped_kit["files"]} | set(target.versions) | set(shipped_kit["left_out"])
    missing = {d: where for d, where in _imported_distributions().items() if d not in covered}
    # opencv-python and -headless both provide cv2 where both are installed.
    missing.pop("opencv-python", None)
    assert not missing, f"imported by bmp, neither in the kit nor in the target: {missing}"


@pytest.mark.parametrize(
    ("modules", "told", "files"),
    [
        (("av",), "BMP_WITHOUT_PYAV",
         ["tests/test_video_io.py", "tests/test_video_kill.py", "tests/test_video_batching.py"]),
        # The optional extras (Gradio, supervision) and the browser tests' selenium.
        (("supervision", "gradio", "selenium"), "BMP_WITHOUT_EXTRAS",
         ["tests/test_supervision.py", "tests/test_demo_browser.py", "tests/test_html_report_browser.py"]),
    ],
)
def test_tests_skip_without_what_the_kit_leaves_out_only_when_told(tmp_path, modules, told, files):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in modules:
        hide = f"raise ModuleNotFoundError('{name} hidden by the test', name='{name}')\n"
        (hidden / f"{name}.py").write_text(hide)
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": str(hidden)}
    skipped = subprocess.run(run, cwd=ROOT, env={**env, told: "1"}, capture_output=True, text=True,
                             timeout=300)
    # Every module skips at collection, so pytest reports that no test ran (5), and nothing failed.
    assert skipped.returncode == 5 and f"{len(files)} skipped" in skipped.stdout, skipped.stdout[-2000:]
    untold = subprocess.run([*run, "--collect-only"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    hidden_error = f"{modules[0]} hidden by the test"
    assert untold.returncode != 0 and hidden_error in untold.stdout, untold.stdout[-2000:]
