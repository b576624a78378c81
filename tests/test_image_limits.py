"""Decompression bombs and huge files (issue 22, item 2): an image's pixel count
is read from its header and its file size from the file system before anything
is decoded, and a refused image is skipped like any unreadable one."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.config import ConfigError
from bmp.images import DEFAULT_MAX_PIXELS, ImageError, ImageLimits, image_limits, load_image, set_image_limits
from bmp.input_limits import resolve_limits
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT, SHARED

LITE = str(ROOT / "configs" / "bmp_lite.py")


def png_bomb(path: Path, side: int) -> Path:
    """A black 1-bit ``side`` x ``side`` PNG written row by row: a ~100 KB file
    that decodes to gigabytes, made without ever holding the image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the packed zero bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", 30000)


@pytest.fixture(autouse=True)
def _default_limits():
    """The commands set the process's limits: every test starts and ends with the defaults."""
    set_image_limits(ImageLimits())
    yield
    set_image_limits(ImageLimits())


def test_the_bomb_is_small_on_disk(bomb):
    assert bomb.stat().st_size < 200_000


def test_a_bomb_is_refused_from_its_header_without_decoding(bomb, tmp_path):
    # In a fresh process, to read its peak memory: decoding would take 2.7 GB.
    script = (
        "import sys\n"
        "from bmp.images import ImageError, load_image\n"
        "try:\n"
        f"    load_image({str(bomb)!r})\n"
        "except ImageError as exc:\n"
        "    print(exc)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forked
        # parent (pytest, GBs late in a full run).
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    message, peak_kb = done.stdout.strip().splitlines()
    assert "900.0 megapixels, over the limit of 100" in message
    assert int(peak_kb) < 1_500_000  # torch and cv2 alone take a few hundred MB


def test_a_header_over_the_limit_names_its_size_and_pillow_stays_quiet(tmp_path):
    # 90 MP: over Pillow's warning threshold (89 MP), under its error one.
    image = png_bomb(tmp_path / "wide.png", 9500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=r"\(9500x9500\) has 90\.2 megapixels, over the limit of 50"):
            load_image(image, limits=ImageLimits(max_pixels=50_000_000))
    assert not caught, [str(w.message) for w in caught]


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    big = sparse_file(tmp_path / "big.jpg", 3 * 2**30)
    with pytest.raises(ImageError, match=r"3072\.0 MB, over the limit of 256 MB"):
        load_image(big)


def test_limits_can_be_lifted_or_lowered(coco_images, bomb):
    image = coco_images[0]
    assert load_image(image).ndim == 3
    with pytest.raises(ImageError, match="over the limit of 0.001"):
        load_image(image, limits=ImageLimits(max_pixels=1000))
    with pytest.raises(ImageError, match="MB, over the limit"):
        load_image(image, limits=ImageLimits(max_bytes=1000))
    set_image_limits(ImageLimits(max_pixels=1000))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(image)  # the process-wide default
    # Over Pillow's own DecompressionBombError threshold (2 x 89 MP): still bmp's limit that speaks.
    with pytest.raises(ImageError, match="over the limit of 200"):
        load_image(bomb, limits=ImageLimits(max_pixels=200_000_000))


def test_flags_win_over_the_config_which_wins_over_the_defaults(tmp_path):
    assert resolve_limits(None, None, None) == ImageLimits()
    config = tmp_path / "cfg.py"
    config.write_text(Path(LITE).read_text() + "\nimages = dict(max_pixels=5_000_000, max_mb=0)\n")
    assert resolve_limits(config, None, None) == ImageLimits(max_pixels=5_000_000, max_bytes=None)
    assert resolve_limits(config, 0, 1) == ImageLimits(max_pixels=None, max_bytes=2**20)
    with pytest.raises(ConfigError, match="--max-image-pixels must be a number >= 0"):
        resolve_limits(config, -1, None)
    config.write_text(Path(LITE).read_text() + "\nimages = dict(max_pixel=5)\n")
    with pytest.raises(ConfigError, match=r"images: unknown key\(s\) \['max_pixel'\]"):
        resolve_limits(config, None, None)
    assert image_limits().max_pixels == DEFAULT_MAX_PIXELS


def run_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(folder), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", *extra]


@pytest.mark.parametrize("extra", [(), ("--batch-size", "2", "--workers", "1")],
                         ids=["in-process", "workers"])
def test_run_skips_a_bomb_and_a_huge_file_sorted_first_and_finishes(bomb, tmp_path, capsys, extra):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(bomb, folder / "0_bomb.png")
    sparse_file(folder / "1_huge.jpg", 3 * 2**30)
    shutil.copy(sorted(COCO_DIR.glob("*.jpg"))[0], folder / "2_real.jpg")
    out = tmp_path / "out"
    assert main(run_args(folder, out, *extra)) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"skipped {(folder / '0_bomb.png').resolve()}: image" in captured.out
    assert "megapixels, over the limit" in captured.out
    assert f"skipped {(folder / '1_huge.jpg').resolve()}: image" in captured.out
    images = json.loads((out / "images.json").read_text())
    assert [i["file_name"] for i in images] == ["2_real.jpg"]


def test_run_flag_lowers_the_limit(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sorted(COCO_DIR.glob("*.jpg"))[0], folder / "a.jpg")
    assert main(run_args(folder, tmp_path / "out", "--max-image-pixels", "1000")) == 1  # nothing left
    assert "over the limit of 0.001" in capsys.readouterr().out


def test_video_frames_over_the_limit_are_a_one_line_error(tmp_path, capsys):
    clip = SHARED / "data" / "video" / "street_5frames.mp4"
    argv = ["video", str(clip), "--config", LITE, "--out", str(tmp_path / "out"),
            "--weights-dir", str(MODELS_DIR), "--device", "cpu", "--max-image-pixels", "1000"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("bmp: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "frame has" in lines[0] and "over the limit" in lines[0]


def test_a_corrupt_image_never_reaches_ultralytics_heif_installer(tmp_path, monkeypatch):
    # Importing Ultralytics replaces PIL's Image.open with a wrapper that pip-installs
    # a HEIF plugin when Pillow cannot identify a file; the header check must bypass it.
    pytest.importorskip("ultralytics")
    import ultralytics.utils.checks
    import ultralytics.utils.patches  # noqa: F401 -- applies the patch
    from PIL import Image

    assert Image.open.__module__ == "ultralytics.utils.patches"
    installs: list[tuple] = []
    monkeypatch.setattr(ultralytics.utils.checks, "check_requirements", lambda *a, **k: installs.append(a))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(bad)
    assert installs == []
