"""Input folders with symbolic-link loops (issue 22, item 9): a link to itself
is skipped with a warning, and ``**`` never enters a folder twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.images import ImageError, expand_inputs
from bmp.link_safe_glob import link_safe_glob
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT

LITE = str(ROOT / "configs" / "bmp_lite.py")


@pytest.fixture
def looped(tmp_path) -> Path:
    """d/a.jpg, d/sub/b.jpg; d/self.jpg -> itself; d/sub/up -> d, d/sub/top -> the
    folder above d, d/sub/again -> d/sub: every way back up a tree."""
    sources = sorted(COCO_DIR.glob("*.jpg"))
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    shutil.copy(sources[0], d / "a.jpg")
    shutil.copy(sources[1], d / "sub" / "b.jpg")
    (d / "self.jpg").symlink_to("self.jpg")
    (d / "sub" / "up").symlink_to("..")
    (d / "sub" / "top").symlink_to("../..")
    (d / "sub" / "again").symlink_to(d / "sub")
    return d


def test_a_link_to_itself_in_a_folder_is_skipped_with_a_warning(looped, caplog):
    assert expand_inputs([looped]) == [(looped / "a.jpg").resolve()]
    assert f"skipped {looped / 'self.jpg'}: a symbolic link loop" in caplog.text


def test_a_link_loop_named_directly_is_a_clear_error(looped):
    with pytest.raises(ImageError, match="broken link or a link loop"):
        expand_inputs([looped / "self.jpg"])


def test_a_recursive_glob_over_links_back_up_the_tree_ends(looped):
    # In a child process: the old glob never returned, and a hung test is no verdict.
    script = ("import sys\nfrom bmp.images import expand_inputs\n"
              "print('\\n'.join(map(str, expand_inputs([sys.argv[1]]))))\n")
    done = subprocess.run([sys.executable, "-c", script, f"{looped}/**/*.jpg"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    expected = [looped / "a.jpg", looped / "sub" / "b.jpg"]
    assert done.stdout.split() == [str(p.resolve()) for p in expected]
    assert "a link to a folder already searched" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_link_safe_glob_matches_what_glob_matches_without_links(tmp_path):
    for name in ("x.jpg", "s/y.jpg", "s/t/z.png", ".hidden/h.jpg", "s/.h.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    import glob

    for pattern in ("**/*.jpg", "**", "s/**/*", "*/**/*.png", "**/t/*", "**/.h*"):
        full = f"{tmp_path}/{pattern}"
        assert sorted(map(str, link_safe_glob(full))) == sorted(
            p.rstrip("/") for p in glob.glob(full, recursive=True) if p.rstrip("/") != str(tmp_path)
        ), pattern


def test_bmp_run_over_a_folder_with_a_loop_finishes(looped, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(looped), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
                 "--device", "cpu"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert [i["file_name"] for i in json.loads((out / "images.json").read_text())] == ["a.jpg"]
