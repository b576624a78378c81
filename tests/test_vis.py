import cv2
import numpy as np
import pytest

from bmp.coco import OutputError
from bmp.structures import Instances
from bmp.vis import draw_instances, iteration_color, text_scale, write_image


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


def _two_people(h: int, w: int) -> Instances:
    boxes = np.array([[0.3, 0.5, 0.5, 0.95], [0.6, 0.5, 0.8, 0.95]], np.float32) * [w, h, w, h]
    masks = np.zeros((2, h, w), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
        mask[y0:y1, x0:x1] = True
    return Instances((h, w), boxes=boxes, masks=masks, iteration=np.array([1, 2], np.int32),
                     scores=np.array([0.9, 0.8], np.float32))


def _legend_row_ink(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """White (fill) and black (outline) pixels of the legend's first row,
    right of its swatch, drawn on a grey photo of two people."""
    out = draw_instances(np.full((h, w, 3), 128, np.uint8), _two_people(h, w))
    scale = text_scale((h, w))
    step, margin, top = round(35 * scale), round(10 * scale), round(15 * scale)
    row = out[max(0, top - margin): top + step - 2, margin + step: w // 2].astype(int)
    return (row > 220).all(-1), (row < 40).all(-1)


def test_legend_text_is_drawn_once_with_its_outline_around_it_at_1280x720():
    # The bug: the outline was a second putText at a larger thickness, which OpenCV 5
    # lays out wider, so it read as a shifted copy ("iteration 11").
    white, black = _legend_row_ink(720, 1280)
    wy, wx = np.nonzero(white)
    by, bx = np.nonzero(black)
    assert len(wx) and len(bx)
    scale = text_scale((720, 1280))
    (width, _), _ = cv2.getTextSize("iteration 1", cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(1.25 * scale)))
    assert abs((wx.max() - wx.min() + 1) - width) <= 8  # one rendering of "iteration 1", not two
    halo = max(1, round(1.5 * scale)) + 1
    assert wx.min() - halo <= bx.min() and bx.max() <= wx.max() + halo
    assert wy.min() - halo <= by.min() and by.max() <= wy.max() + halo


def test_label_outline_survives_at_4k():
    white, black = _legend_row_ink(2160, 3840)
    assert white.sum() > 0 and black.sum() > 0.3 * white.sum()


@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (2160, 3840)])
def test_label_height_is_in_proportion_to_the_image(size):
    h, w = size
    white, _ = _legend_row_ink(h, w)
    ys = np.nonzero(white)[0]
    height = ys.max() - ys.min() + 1  # "iteration 1": cap height of t/1, no descenders
    assert 0.015 * w <= height <= 0.03 * w
    assert height >= 10  # legible at the smallest size
