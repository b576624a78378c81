#!/usr/bin/env python3
"""A kit: exactly what a known target environment lacks to run bmp, its ``cuda``
tests and ``bmp bench``, plus the test data, in one folder that travels to an
air-gapped machine.

    python tools/kit.py build --target tools/targets/h200-cuda13-py312.txt --out DIR
    python tools/kit.py plan DIR        # the install order, for tools/install.sh --from DIR
    python tools/kit.py built-on-target [--needs]   # the sdists, for tools/install.sh --wheelhouse
    python tools/kit.py fetch-sdists DIR            # and their files, at constraints.txt's pins
    python tools/kit.py wheel-needs --python X.Y.Z [--platform TAG...] WHEEL...  # what they need there
    python tools/kit.py default-platforms           # the wheel platforms when none is given

(``bash tools/install.sh --kit DIR --target FILE`` runs ``build``.)

The target is a pip-freeze-style file: one distribution a line, ``name==version``
where the version is known, bare ``name`` where it is not, ``#`` comments; a
comment naming ``Python X.Y.Z`` gives the target's Python. The kit starts from
bmp's own requirements (pyproject.toml, pinned by constraints.txt) and walks
their dependencies; a requirement the target satisfies stays out, so does one
whose only version is a known lower bound on a package the target has without
a version (the image's packages are recent). A requirement with an upper bound
on such a package cannot be verified and comes along (setuptools < 81). Wheels
are taken for the target's Python and platform; the sdists of BUILT_ON_TARGET
are built there against its torch and numpy. DIR/kit.json is the manifest:
every file with its size, sha256 and why it is there, what the target
satisfies, and what was left out on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.specifiers import SpecifierSet
from pip._vendor.packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "kit.json"
MIB = 1 << 20


def shared_dir() -> Path:
    """bmp.sample_data.shared_dir for this checkout, loaded from its file: kit.py
    runs on a bare Python, before bmp (and the torch it imports) is installed."""
    spec = importlib.util.spec_from_file_location("_bmp_sample_data", ROOT / "bmp" / "sample_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shared_dir(ROOT)


#: Distributions the acceptance does not need, with the reason the manifest gives.
LEFT_OUT = {
    "av": "PyAV (33 MiB) serves `bmp video` only; its tests skip without it (BMP_WITHOUT_PYAV=1)",
    "ultralytics": "the lite config's YOLO models; the acceptance runs the full config at random init",
    "ruff": "lint only",
    "gradio": "the optional extra bmp[demo] (~187 MB with its dependencies) serves `bmp demo` only; "
              "its tests skip without it (BMP_WITHOUT_EXTRAS=1)",
    "supervision": "the optional extra bmp[supervision] (interop only); its tests skip without it "
                   "(BMP_WITHOUT_EXTRAS=1)",
}
#: A requirement another distribution meets: mmengine and mmpose ask for
#: opencv-python (76 MiB), whose cv2 module opencv-python-headless provides.
PROVIDED_BY = {"opencv-python": "opencv-python-headless"}
#: Built on the target (C extensions against its torch and numpy, or sdist-only);
#: install order. Their metadata lists no dependencies, so these are theirs.
BUILT_ON_TARGET: dict[str, list[str]] = {
    "antlr4-python3-runtime": [],
    "iopath": ["tqdm", "typing_extensions", "portalocker"],
    "chumpy": ["numpy>=1.8.1", "scipy>=0.13.0", "six>=1.11.0"],
    "xtcocotools": ["setuptools>=18.0", "cython>=0.27.3", "matplotlib>=2.1.0", "numpy>=1.20"],
    "sam2": ["torch>=2.3.1", "torchvision>=0.18.1", "numpy>=1.24.4", "tqdm>=4.66.1",
             "hydra-core>=1.3.2", "iopath>=0.1.10", "pillow>=9.4.0"],
    "mmcv": ["addict", "mmengine>=0.3.0", "numpy", "packaging", "Pillow", "pyyaml", "yapf",
             "opencv-python>=3"],
}
#: What building them needs beyond the target (pkg_resources: setuptools < 81),
#: and what runs the cuda tests.
BUILD_AND_TEST = ["setuptools<81", "wheel", "ninja", "cython", "pytest>=7"]
#: The kit never carries these: the target's CUDA build is the point.
TARGET_MUST_HAVE = ("torch", "torchvision")
#: Operators whose bound an unknown target version may break.
UPPER_BOUNDS = {"<", "<=", "==", "===", "~="}
DEFAULT_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 29)] + ["manylinux2014_x86_64"]
LINUX_PLATFORM = re.compile(r"(?:manylinux_\d+_\d+|manylinux\d+|musllinux_\d+_\d+|linux)_(\w+)")


class KitError(Exception):
    """A kit that cannot be built as asked; the message is one line."""


@dataclass
class Target:
    versions: dict[str, str | None]  # canonical name -> version, None when not read
    python: str  # X.Y.Z

    @classmethod
    def read(cls, path: Path) -> Target:
        if not path.is_file():
            raise KitError(f"--target {path}: no such file")
        versions: dict[str, str | None] = {}
        python = None
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if line.startswith("#"):
                found = re.search(r"Python (3\.\d+\.\d+)", line)
                python = python or (found and found.group(1))
                continue
            if not line:
                continue
            name, _, version = line.partition("==")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name.strip()):
                raise KitError(f"{path}:{number}: not 'name' or 'name==version': {raw!r}")
            versions[canonicalize_name(name)] = version.strip() or None
        if python is None:
            raise KitError(f"{path}: no comment names the target's Python ('Python 3.12.3')")
        return cls(versions, python)

    def satisfies(self, name: str, spec: SpecifierSet) -> bool:
        """Whether the target's own ``name`` meets ``spec``. An unread version
        is taken to meet lower bounds only."""
        if name not in self.versions:
            return False
        version = self.versions[name]
        if version is None:
            return not any(s.operator in UPPER_BOUNDS for s in spec)
        return spec.contains(version, prereleases=True)


@dataclass
class Picked:
    name: str
    version: str
    path: Path
    kind: str  # "wheel" or "sdist"
    spec: SpecifierSet
    why: list[str] = field(default_factory=list)


#: fetch(requirements, sdists) -> downloaded files; injected so the walk is testable offline.
Fetch = Callable[[list[str], bool], list[Path]]


def project_requirements() -> list[str]:
    """bmp's runtime requirements, as pyproject.toml states them."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def pins() -> dict[str, SpecifierSet]:
    """constraints.txt, less torch and torchvision (the target's are kept)."""
    out: dict[str, SpecifierSet] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if canonicalize_name(req.name) not in TARGET_MUST_HAVE:
                out[canonicalize_name(req.name)] = req.specifier
    return out


def file_name_version(path: Path) -> tuple[str, str]:
    if path.suffix == ".whl":
        name, version, _, _ = parse_wheel_filename(path.name)
    else:
        name, version = parse_sdist_filename(path.name)
    return canonicalize_name(name), str(version)


def marker_env(python: str, machine: str) -> dict[str, str]:
    """The environment markers of CPython ``python`` (X.Y.Z) on Linux ``machine``."""
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": machine, "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "extra": ""}


def machine_of(platforms: list[str]) -> str:
    """The ``platform_machine`` of the Linux wheel platform tags ``platforms``
    (manylinux_2_17_aarch64: aarch64); this machine's when there are none."""
    if not platforms:
        return platform.machine()
    machines = set()
    for tag in platforms:
        match = LINUX_PLATFORM.fullmatch(tag)
        if match is None:
            raise KitError(f"--platform {tag}: not a Linux wheel platform tag (manylinux_2_17_x86_64, ...)")
        machines.add(match[1])
    if len(machines) > 1:
        raise KitError(f"--platform tags for {len(machines)} machines ({', '.join(sorted(machines))}); "
                       "one target is one machine")
    return machines.pop()


def applies(requirement: Requirement, env: dict[str, str]) -> bool:
    """Whether ``requirement``'s marker, if any, holds in ``env`` (see marker_env)."""
    return requirement.marker is None or requirement.marker.evaluate(env)


def wheel_requirements(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        lines = wheel.read(meta).decode().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]


@dataclass
class Walk:
    """The dependency walk: which requirements the target meets, which the kit
    must bring, and why each is there."""

    target: Target
    fetch: Fetch
    machine: str = field(default_factory=lambda: machine_of(DEFAULT_PLATFORMS))  # build passes its own
    pins: dict[str, SpecifierSet] = field(default_factory=dict)
    picked: dict[str, Picked] = field(default_factory=dict)
    satisfied: dict[str, list[str]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=lambda: dict(LEFT_OUT))

    def run(self, roots: Iterable[tuple[str, str]]) -> None:
        env = marker_env(self.target.python, self.machine)
        queue: deque[tuple[Requirement, str]] = deque((Requirement(r), why) for r, why in roots)
        while queue:
            # One level at a time: the requirements of a level are fetched together.
            wanted: dict[str, tuple[SpecifierSet, list[str]]] = {}
            for _ in range(len(queue)):
                req, why = queue.popleft()
                if not applies(req, env):
                    continue
                name = canonicalize_name(req.name)
                spec = req.specifier & self.pins.get(name, SpecifierSet())
                reason = f"{why}: {req.name}{req.specifier}" if str(req.specifier) else f"{why}: {req.name}"
                if name in self.target.versions and not self.target.satisfies(name, spec):
                    reason += f" (the target has {self.target.versions[name] or 'an unread version'})"
                if self._settled(name, spec, reason):
                    continue
                previous, whys = wanted.get(name, (SpecifierSet(), []))
                wanted[name] = (previous & spec, [*whys, reason])
            for path in self._fetch_level(wanted):
                name, version = file_name_version(path)
                spec, whys = wanted[name]
                kind = "wheel" if path.suffix == ".whl" else "sdist"
                self.picked[name] = Picked(name, version, path, kind, spec, whys)
                deps = BUILT_ON_TARGET[name] if name in BUILT_ON_TARGET else wheel_requirements(path)
                queue.extend((Requirement(dep), name) for dep in deps)

    def _settled(self, name: str, spec: SpecifierSet, reason: str) -> bool:
        """True when ``name`` needs no (further) download; records why."""
        if name in LEFT_OUT:
            return True
        provider = PROVIDED_BY.get(name)
        if provider and (provider in self.target.versions or provider in self.picked):
            self.left_out[name] = f"{provider} provides its module ({reason})"
            return True
        if self.target.satisfies(name, spec):
            self.satisfied.setdefault(name, []).append(reason)
            return True
        if name in TARGET_MUST_HAVE:
            have = self.target.versions.get(name, "absent")
            raise KitError(f"the target's {name} ({have}) does not meet {reason}; "
                           f"the kit never carries {name}")
        if name in self.picked:
            picked = self.picked[name]
            if not spec.contains(picked.version, prereleases=True):
                raise KitError(f"{name} {picked.version} was picked for {picked.why[0]!r}, but {reason}")
            picked.spec &= spec
            picked.why.append(reason)
            return True
        return False

    def _fetch_level(self, wanted: dict[str, tuple[SpecifierSet, list[str]]]) -> list[Path]:
        sdists = [f"{n}{s}" for n, (s, _) in wanted.items() if n in BUILT_ON_TARGET]
        wheels = [f"{n}{s}" for n, (s, _) in wanted.items() if n not in BUILT_ON_TARGET]
        files = [*(self.fetch(sdists, True) if sdists else []),
                 *(self.fetch(wheels, False) if wheels else [])]
        got = {file_name_version(p)[0] for p in files}
        if missing := set(wanted) - got:
            raise KitError(f"no file came for {', '.join(sorted(missing))}")
        return files


def pip_fetcher(dest: Path, python: str, platforms: list[str], helper: Path) -> Fetch:
    """Downloads with pip, no dependencies, for the target's Python and platform.
    sdists go through ``helper``, a venv with what their setup.py imports to
    report metadata (numpy, cython, setuptools < 81)."""
    target = ["--python-version", python, "--implementation", "cp"]
    for tag in platforms:
        target += ["--platform", tag]

    def fetch(requirements: list[str], sdists: bool) -> list[Path]:
        before = set(dest.iterdir())
        if sdists:
            cmd = [str(helper / "bin" / "python"), "-m", "pip", "download", "--no-binary", ":all:",
                   "--no-build-isolation"]
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", *target]
        cmd += ["--no-deps", "--progress-bar", "off", "--dest", str(dest), *requirements]
        env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": "", "SAM2_BUILD_CUDA": "0"}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode:
            last = result.stderr.strip().splitlines()[-1]
            raise KitError(f"pip download {' '.join(requirements)} failed: {last}")
        new = set(dest.iterdir()) - before
        # A file an earlier level downloaded is reported as "File was already downloaded".
        for line in result.stdout.splitlines():
            if line.startswith("File was already downloaded "):
                new.add(Path(line.removeprefix("File was already downloaded ").strip()))
        return sorted(new)

    return fetch


def make_helper(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": ""}
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--progress-bar", "off",
                    "setuptools<81", "wheel", "numpy", "cython"], check=True, env=env)
    return path


def roots(only: list[str] | None) -> list[tuple[str, str]]:
    if only is not None:
        return [(r, "asked for") for r in only]
    return [*((r, "bmp") for r in project_requirements()), *((r, "build and tests") for r in BUILD_AND_TEST)]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def copy_data(shared: Path, out: Path) -> list[dict]:
    """The shared COCO sample the cuda tests and the bench read, under
    ``out/shared`` so that BMP_SHARED=out/shared points at it."""
    source = shared / "data" / "coco"
    if not (source / "annotations.json").is_file():
        raise KitError(f"no test data at {source} (set --shared or BMP_SHARED)")
    dest = out / "shared" / "data" / "coco"
    shutil.copytree(source, dest, dirs_exist_ok=True)
    return [{"file": str(p.relative_to(out)), "bytes": p.stat().st_size} for p in sorted(dest.rglob("*"))
            if p.is_file()]


def install_order(picked: dict[str, Picked]) -> list[Picked]:
    """Wheels first (build tools among them), then the sdists in BUILT_ON_TARGET's order."""
    wheels = sorted((p for p in picked.values() if p.kind == "wheel"), key=lambda p: p.name)
    sdists = [picked[n] for n in BUILT_ON_TARGET if n in picked]
    return [*wheels, *sdists]


def write_manifest(out: Path, target_file: Path, target: Target, walk: Walk, data: list[dict],
                   platforms: list[str], only: list[str] | None) -> dict:
    files = [{"file": p.path.name, "name": p.name, "version": p.version, "kind": p.kind, "needs": str(p.spec),
              "bytes": p.path.stat().st_size, "sha256": sha256(p.path), "why": p.why}
             for p in install_order(walk.picked)]
    package_bytes = sum(f["bytes"] for f in files)
    data_bytes = sum(d["bytes"] for d in data)
    manifest = {
        "target": target_file.name, "python": target.python, "platforms": platforms,
        # A kit of some requirements only (tests): installed without bmp itself.
        "only": only,
        "files": files, "data": data,
        "satisfied_by_target": {n: {"version": target.versions.get(n), "needed_by": w}
                                for n, w in sorted(walk.satisfied.items())},
        "left_out": dict(sorted(walk.left_out.items())),
        "bytes": {"packages": package_bytes, "data": data_bytes, "total": package_bytes + data_bytes},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.copy(target_file, out / "target.txt")
    lines = [f"# Kit for {target_file.name} (Python {target.python})", "",
             f"{len(files)} packages, {package_bytes / MIB:.1f} MiB; data {data_bytes / MIB:.1f} MiB; "
             f"total {(package_bytes + data_bytes) / MIB:.1f} MiB", "",
             "| file | MiB | why |", "|---|---:|---|"]
    lines += [f"| {f['file']} | {f['bytes'] / MIB:.2f} | {'; '.join(f['why'])} |" for f in files]
    lines += ["", "Left out:", ""] + [f"- {n}: {why}" for n, why in manifest["left_out"].items()]
    (out / "MANIFEST.md").write_text("\n".join(lines) + "\n")
    return manifest


def build(args: argparse.Namespace) -> int:
    target_file = Path(args.target)
    target = Target.read(target_file)
    python = args.python or ".".join(target.python.split(".")[:2])
    platforms = args.platform or DEFAULT_PLATFORMS
    machine = machine_of(platforms)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise KitError(f"--kit {out}: exists and is not a kit; give an empty or new folder")
    only = args.only.split() if args.only else None
    with tempfile.TemporaryDirectory() as tmp:
        # Built in a side folder and moved in whole: a failed build leaves no half kit.
        stage = Path(tmp) / "kit"
        stage.mkdir()
        needs_helper = only is None or set(only) & set(BUILT_ON_TARGET)
        helper = make_helper(Path(tmp) / "helper") if needs_helper else Path()
        walk = Walk(target, pip_fetcher(stage, python, platforms, helper), machine=machine, pins=pins())
        walk.run(roots(only))
        for path in set(stage.iterdir()) - {p.path for p in walk.picked.values()}:
            path.unlink()  # fetched for a level, then settled by the target
        data = [] if args.no_data else copy_data(Path(args.shared), stage)
        manifest = write_manifest(stage, target_file, target, walk, data, platforms, only)
        total = manifest["bytes"]["total"] / MIB
        if total > args.max_mib:
            largest = sorted(manifest["files"], key=lambda f: -f["bytes"])[:3]
            raise KitError(f"the kit is {total:.1f} MiB, over --max-mib {args.max_mib:g}; largest: "
                           + ", ".join(f"{f['file']} ({f['bytes'] / MIB:.1f} MiB)" for f in largest))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(stage, out)
    print(f"kit {out}: {len(manifest['files'])} packages {manifest['bytes']['packages'] / MIB:.1f} MiB, "
          f"data {manifest['bytes']['data'] / MIB:.1f} MiB, total {total:.1f} MiB "
          f"({len(manifest['satisfied_by_target'])} requirements met by the target); see {out}/MANIFEST.md")
    return 0


def plan(args: argparse.Namespace) -> int:
    """Prints ``KIND FILE`` per line in install order, checking each file's
    sha256; first ``only`` when the kit holds some requirements only."""
    kit = Path(args.kit)
    manifest = json.loads((kit / MANIFEST).read_text())
    if manifest.get("only"):
        print("only -")
    for entry in manifest["files"]:
        path = kit / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise KitError(f"{path}: missing or not the file kit.json names (size/sha256); rebuild the kit")
        print(entry["kind"], path.resolve())
    return 0


def built_on_target(args: argparse.Namespace) -> int:
    """BUILT_ON_TARGET for ``tools/install.sh --wheelhouse``, one name a line in
    install order (constraints.txt pins them); ``--needs``: what they need instead,
    less each other, torch and what PROVIDED_BY covers, one merged requirement a name."""
    if not args.needs:
        print(*BUILT_ON_TARGET, sep="\n")
        return 0
    skip = {*BUILT_ON_TARGET, *TARGET_MUST_HAVE, *PROVIDED_BY}
    needs: dict[str, SpecifierSet] = {}
    for requirement in (Requirement(r) for reqs in BUILT_ON_TARGET.values() for r in reqs):
        name = canonicalize_name(requirement.name)
        if name not in skip:
            needs[name] = needs.get(name, SpecifierSet()) & requirement.specifier
    print(*(f"{name}{spec}" for name, spec in needs.items()), sep="\n")
    return 0


def fetch_sdists(args: argparse.Namespace) -> int:
    """BUILT_ON_TARGET's sdists at constraints.txt's pins into ``args.dest``, through
    the same helper venv ``build`` uses (for ``tools/install.sh --wheelhouse``)."""
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    pinned = pins()
    requirements = [f"{name}{pinned.get(name, '')}" for name in BUILT_ON_TARGET]
    with tempfile.TemporaryDirectory() as tmp:
        # An sdist has no Python or platform tag to ask for.
        fetch = pip_fetcher(dest, "", [], make_helper(Path(tmp) / "helper"))
        files = fetch(requirements, True)
    print(*(path.name for path in files), sep="\n")
    return 0


def wheel_needs(args: argparse.Namespace) -> int:
    """The requirements of ``args.wheels`` that apply to CPython ``args.python`` on
    the machine of ``args.platform`` (see machine_of), less the names in
    ``args.skip``, one a line (for ``tools/install.sh --wheelhouse``)."""
    env = marker_env(args.python, machine_of(args.platform or []))
    skip = {canonicalize_name(name) for name in args.skip.split()}
    for path in args.wheels:
        for requirement in map(Requirement, wheel_requirements(Path(path))):
            if canonicalize_name(requirement.name) not in skip and applies(requirement, env):
                print(f"{requirement.name}{requirement.specifier}")
    return 0


def default_platforms(args: argparse.Namespace) -> int:
    """DEFAULT_PLATFORMS, one tag a line, for ``tools/install.sh --wheelhouse --python``."""
    print(*DEFAULT_PLATFORMS, sep="\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/kit.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download what the target lacks into --out")
    b.add_argument("--target", required=True, help="pip-freeze-style list of the target's distributions")
    b.add_argument("--out", required=True, help="the kit folder (replaced whole when the build succeeds)")
    b.add_argument("--python", default=None, help="X.Y (default: the target file's 'Python X.Y.Z' comment)")
    b.add_argument("--platform", action="append", default=None, help="wheel platform tag, repeatable")
    b.add_argument("--shared", default=str(shared_dir()),
                   help="the shared folder whose data/coco comes along (default: $BMP_SHARED or ../shared)")
    b.add_argument("--no-data", action="store_true", help="packages only")
    b.add_argument("--max-mib", type=float, default=20.0, help="refuse a kit larger than this (default 20)")
    b.add_argument("--only", default=os.environ.get("BMP_INSTALL_ONLY"),
                   help="space-separated requirements instead of bmp's (tests; default: $BMP_INSTALL_ONLY)")
    p = sub.add_parser("plan", help="print the install order of a kit, checking its files")
    p.add_argument("kit")
    s = sub.add_parser("built-on-target", help="print the sdists built on the target, in install order")
    s.add_argument("--needs", action="store_true", help="print what they need instead")
    f = sub.add_parser("fetch-sdists", help="download the sdists built on the target, pinned, into DEST")
    f.add_argument("dest")
    w = sub.add_parser("wheel-needs", help="print what the given wheels need on the target")
    w.add_argument("--python", required=True, help="the target's X.Y.Z")
    w.add_argument("--platform", action="append", default=None,
                   help="its wheel platform tag, repeatable (default: this machine's)")
    w.add_argument("--skip", default="", help="space-separated names to leave out")
    w.add_argument("wheels", nargs="+")
    sub.add_parser("default-platforms", help="print the wheel platforms a target gets when none is given")
    args = parser.parse_args(argv)
    try:
        commands = {"build": build, "plan": plan, "built-on-target": built_on_target,
                    "fetch-sdists": fetch_sdists, "wheel-needs": wheel_needs,
                    "default-platforms": default_platforms}
        return commands[args.command](args)
    except KitError as e:
        print(f"tools/kit.py: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # the helper venv; pip said why above
        print(f"tools/kit.py: {' '.join(map(str, e.cmd))} failed with exit {e.returncode}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
