import numpy as np

from bmp.structures import Instances
from bmp.vis import draw_instances, iteration_color


def test_overlay_draws_masks_by_iteration_and_prompt_points():
    image = np.full((60, 80, 3), 255, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 30:50, 40:70] = True
    people = Instances(
        (60, 80), boxes=np.array([[5, 5, 20, 20], [40, 30, 70, 50]], np.float32), masks=masks,
        iteration=np.array([1, 2], np.int32),
        prompts=np.array([[[60.0, 10.0]], [[10.0, 50.0]]], np.float32),
        prompt_labels=np.array([[1], [0]], np.int32),
    )
    out = draw_instances(image, people)  # BGR
    assert out.shape == (60, 80, 3)
    tint1 = out[12, 12].astype(int)
    tint2 = out[45, 55].astype(int)
    # Each mask is tinted toward its iteration's colour, and the two differ.
    assert np.argmin(tint1) == np.argmin(iteration_color(1, 0))
    assert not np.array_equal(tint1, tint2)
    assert tuple(out[10, 60]) == (0, 255, 0)  # positive prompt: green star
    assert tuple(out[50, 10]) == (0, 0, 255)  # negative prompt: red cross
