"""bmp keeps mmpretrain importable beside transformers 5 (the H200 target's 5.17),
whose removed names break mmpretrain 1.2.0's multimodal models on import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _fake_transformers_5(folder: Path) -> dict[str, str]:
    # Installed as far as importlib.metadata can tell, without what mmpretrain imports.
    (folder / "transformers").mkdir()
    (folder / "transformers" / "__init__.py").write_text('__version__ = "5.17.0"\n')
    (folder / "transformers-5.17.0.dist-info").mkdir()
    (folder / "transformers-5.17.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: transformers\nVersion: 5.17.0\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_mmpretrain_models_import_after_bmp_beside_transformers_5(tmp_path):
    env = _fake_transformers_5(tmp_path)
    bare = _run("import mmpretrain.models", env)
    assert bare.returncode != 0, "the fake no longer breaks mmpretrain: the test proves nothing"
    after_bmp = _run("import bmp, mmpretrain.models\nfrom mmpretrain.registry import MODELS\n"
                     "assert 'VisionTransformer' in MODELS.module_dict\nprint('ok')", env)
    assert after_bmp.returncode == 0, after_bmp.stderr[-2000:]
    assert after_bmp.stdout.strip() == "ok"
