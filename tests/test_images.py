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
