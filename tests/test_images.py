import numpy as np
import pytest
import torch

from bmp.images import ImageError, expand_inputs, load_image


def test_load_image_from_file_is_rgb(coco_images):
    import cv2

    img = load_image(coco_images[0])
    bgr = cv2.imread(str(coco_images[0]))
    assert img.dtype == np.uint8 and img.shape == bgr.shape
    assert (img[..., 0] == bgr[..., 2]).all()


def test_array_layouts_are_normalised():
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    assert (load_image(rgb) == rgb).all()
    assert (load_image(rgb[..., ::-1], color_order="bgr") == rgb).all()
    rgba = np.concatenate([rgb, np.full((8, 9, 1), 7, np.uint8)], 2)
    assert (load_image(rgba) == rgb).all()
    gray = rgb[..., 0]
    assert load_image(gray).shape == (8, 9, 3)
    assert load_image(rgb.astype(np.float32) / 255).dtype == np.uint8
    assert (load_image(torch.from_numpy(rgb).permute(2, 0, 1)) == rgb).all()


def test_bad_images_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(bad)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))


def test_expand_inputs_handles_files_folders_and_globs(coco_images, tmp_path):
    folder = coco_images[0].parent
    assert expand_inputs([folder]) == [p.resolve() for p in coco_images]
    assert len(expand_inputs([str(folder / "*.jpg"), coco_images[0]])) == len(coco_images)
    with pytest.raises(ImageError, match="not found"):
        expand_inputs([tmp_path / "nope"])
    with pytest.raises(ImageError, match="no images"):
        expand_inputs([tmp_path])


def test_uint16_is_scaled_to_8_bits():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    assert (load_image(rgb.astype(np.uint16) * 257) == rgb).all()
    assert (load_image(rgb.astype(np.uint16) * 16, value_range=(0, 255 * 16)) == rgb).all()  # 12-bit


def test_float_images_outside_0_1_need_a_value_range():
    rgb = np.random.default_rng(2).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match=r"value_range=\(0, 255\)"):
        load_image(rgb.astype(np.float32))
    assert (load_image(rgb.astype(np.float32), value_range=(0, 255)) == rgb).all()
    assert (load_image(rgb / 127.5 - 1, value_range=(-1, 1)) == rgb).all()
    # Resampling may overshoot [0, 1] by a hair: that is still a 0..1 image.
    assert load_image(np.full((4, 4, 3), 1.0 + 1e-6, np.float32)).min() == 255
    with pytest.raises(ImageError, match="outside"):
        load_image(np.full((4, 4), -0.5, np.float32))
    with pytest.raises(ImageError, match="outside"):
        load_image(np.full((4, 4), 300, np.int32))  # not silently clipped to white
    with pytest.raises(ValueError, match="value_range"):
        load_image(rgb.astype(np.float32), value_range=(1, 1))


def test_bool_and_nan_arrays_are_rejected_by_name():
    with pytest.raises(ImageError, match="bool"):
        load_image(np.ones((8, 9), bool))
    with pytest.raises(ImageError, match="bool"):
        load_image(torch.ones(3, 8, 9, dtype=torch.bool))
    nan = np.full((8, 9, 3), 0.5, np.float32)
    nan[2, 3, 1] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        load_image(nan)
    assert load_image(torch.full((3, 8, 9), 0.5, dtype=torch.bfloat16)).max() == 128


@pytest.fixture(scope="module")
def lite_bmp():
    from bmp import BMP
    from tests.conftest import MODELS_DIR, ROOT

    return BMP.from_config(ROOT / "configs" / "bmp_lite.py", device="cpu", weights_dirs=[MODELS_DIR])


def test_predict_rejects_what_it_would_silently_miss(lite_bmp, coco_images):
    rgb = load_image(coco_images[0])
    expected = len(lite_bmp.predict(rgb, num_iters=1))
    assert expected > 0
    with pytest.raises(ImageError, match="value_range"):
        lite_bmp.predict(rgb.astype(np.float32))
    assert len(lite_bmp.predict(rgb.astype(np.float32), num_iters=1, value_range=(0, 255))) == expected
    assert len(lite_bmp.predict(rgb.astype(np.uint16) * 257, num_iters=1)) == expected
    with pytest.raises(ImageError, match="bool"):
        lite_bmp.predict(rgb > 127)
    with pytest.raises(ImageError, match="NaN"):
        lite_bmp.predict(np.where(rgb == 0, np.nan, rgb / 255.0))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_iters"):
            lite_bmp.predict(rgb, num_iters=bad)
    with pytest.raises(ValueError, match="num_iters"):
        lite_bmp.predict_iterations(rgb, num_iters=0)
    assert len(lite_bmp.predict_iterations(rgb, num_iters=np.int64(1))) == 1
