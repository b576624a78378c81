import cv2
import numpy as np
import pytest

from bmp.coco import OutputError
from bmp.structures import Instances
from bmp.vis import draw_instances, iteration_color, write_image


def test_overlay_gives_each_person_a_colour_and_marks_the_iteration_by_outline_and_legend():
    image = np.full((120, 160, 3), 255, np.uint8)
    masks = np.zeros((3, 120, 160), bool)
    masks[0, 40:60, 10:40] = True
    masks[1, 40:60, 40:70] = True  # a neighbour found in the same iteration
    masks[2, 70:110, 90:150] = True
    people = Instances(
        (120, 160), boxes=np.array([[10, 40, 40, 60], [40, 40, 70, 60], [90, 70, 150, 110]], np.float32),
        masks=masks, iteration=np.array([1, 1, 2], np.int32),
        prompts=np.array([[[150.0, 20.0]], [[150.0, 30.0]], [[10.0, 100.0]]], np.float32),
        prompt_labels=np.array([[1], [1], [0]], np.int32),
    )
    out = draw_instances(image, people)  # BGR
    assert out.shape == (120, 160, 3)
    fill = [out[50, 25].astype(int), out[50, 55].astype(int), out[90, 120].astype(int)]
    # Same-iteration neighbours get clearly different fills.
    assert np.abs(fill[0] - fill[1]).sum() > 60
    # The outline is in the iteration's colour.
    assert np.abs(out[100, 90].astype(int) - iteration_color(2)).sum() < 60
    # The legend's swatches, top left: iteration 1 then 2.
    assert tuple(out[8, 8]) == iteration_color(1)
    assert tuple(out[8 + 14, 8]) == iteration_color(2)
    assert tuple(out[20, 150]) == (0, 255, 0)  # positive prompt: green star
    assert tuple(out[100, 10]) == (0, 0, 255)  # negative prompt: red cross


def test_write_image_raises_where_cv2_imwrite_returns_false(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    assert cv2.imwrite(str(tmp_path / "missing" / "x.jpg"), image) is False  # what it replaces
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match="x.jpg"):  # a file where the folder should be
        write_image(tmp_path / "a_file" / "x.jpg", image)
    with pytest.raises(OutputError, match="cannot encode"):
        write_image(tmp_path / "x.unknown", image)
    write_image(tmp_path / "ok.jpg", image)
    assert cv2.imread(str(tmp_path / "ok.jpg")).shape == (8, 8, 3)
    assert not list(tmp_path.glob(".*.tmp"))
