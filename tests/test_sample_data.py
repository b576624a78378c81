"""The one rule for where the shared sample data lives, used by bmp (bench,
demo) and by the tests' conftest alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmp.sample_data import shared_dir, shared_samples_dir


def test_shared_data_is_beside_the_checkout_unless_bmp_shared_says_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BMP_SHARED", raising=False)
    assert shared_dir() == Path("../shared")
    assert shared_dir(tmp_path / "bmp") == tmp_path / "shared"
    assert shared_samples_dir(tmp_path / "bmp") == tmp_path / "shared" / "data" / "coco"

    monkeypatch.setenv("BMP_SHARED", str(tmp_path / "elsewhere"))
    assert shared_dir() == shared_dir(tmp_path / "bmp") == tmp_path / "elsewhere"
    assert shared_samples_dir() == tmp_path / "elsewhere" / "data" / "coco"
