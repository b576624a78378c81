"""CrowdPose in `bmp eval`: its 14 keypoints, its protocol (xtcocotools'
``keypoints_crowd``) and the mapping of the loop's poses onto its layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from xtcocotools.coco import COCO as XCOCO
from xtcocotools.cocoeval import COCOeval as XCOCOeval

from bmp.cli import main
from bmp.coco import instances_to_coco
from bmp.evaluation.crowdpose import SIGMAS, STAT_NAMES, to_crowdpose_result
from bmp.evaluation.crowdpose_keypoints import CROWDPOSE_KEYPOINT_NAMES, HEAD_TOP_FACTOR
from bmp.evaluation.dataset import EvalDataset
from bmp.evaluation.evaluate import evaluate_records
from bmp.models.pose import extra_keypoint_index
from bmp.structures import Instances
from tests.conftest import COCO_ANN, COCO_DIR, ROOT
from tests.test_eval_cli import eval_args
from tests.test_eval_metrics import as_records, gt_as_results

#: Easy, medium, hard and medium again (CrowdPose's split: < 0.2, < 0.8, else).
CROWD_INDEX = {785: 0.1, 40083: 0.5, 196141: 0.9, 197388: 0.3}


def mmpose_crowdpose_meta() -> dict:
    import mmpose
    from mmengine.config import Config

    path = Path(mmpose.__file__).parent / ".mim/configs/_base_/datasets/crowdpose.py"
    return Config.fromfile(str(path)).dataset_info


def crowdpose_file(dst: Path) -> Path:
    """The shared COCO ground truth as CrowdPose ships its files: 14 keypoints
    (the limbs exact, head top and neck by the COCO-17 approximation), no masks,
    no area, a crowd index per image."""
    data = json.loads(COCO_ANN.read_text())
    data["categories"][0]["keypoints"] = list(CROWDPOSE_KEYPOINT_NAMES)
    for image in data["images"]:
        image["crowdIndex"] = CROWD_INDEX[image["id"]]
    for a in data["annotations"]:
        kpts = np.asarray(to_crowdpose_result({"keypoints": a["keypoints"]})["keypoints"]).reshape(14, 3)
        kpts[:, 2] = np.rint(kpts[:, 2])  # GT visibility flags stay integers
        kpts[kpts[:, 2] == 0] = 0
        a["keypoints"] = [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.reshape(-1))]
        a["num_keypoints"] = int((kpts[:, 2] > 0).sum())
        for key in ("segmentation", "area"):
            del a[key]
    dst.write_text(json.dumps(data))
    return dst


def direct_xtcocotools(ann: Path, results: Path) -> list[float]:
    """xtcocotools as mmpose's CocoMetric calls it for CrowdPose, with mmpose's sigmas."""
    gt = XCOCO(str(ann))
    ev = XCOCOeval(gt, gt.loadRes(str(results)), "keypoints_crowd",
                   np.array(mmpose_crowdpose_meta()["sigmas"]), use_area=False)
    ev.params.useSegm = None
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats]


def test_layout_and_sigmas_are_mmposes():
    meta = mmpose_crowdpose_meta()
    names = [meta["keypoint_info"][i]["name"] for i in range(14)]
    assert names[:12] == list(CROWDPOSE_KEYPOINT_NAMES[:12]) and names[12:] == ["top_head", "neck"]
    assert list(SIGMAS) == meta["sigmas"]


def test_coco17_mapping_of_a_known_pose_lands_where_expected():
    kpts = np.zeros((17, 3))
    kpts[:, 2] = 0.9
    kpts[0] = (20, 60, 0.8)  # nose
    kpts[1], kpts[2] = (15, 55, 0.7), (25, 55, 0.6)  # eyes
    kpts[5], kpts[6] = (0, 100, 0.5), (40, 100, 0.95)  # shoulders
    kpts[7:17, :2] = np.arange(20).reshape(10, 2)
    result = to_crowdpose_result({"keypoints": kpts.reshape(-1).tolist(), "visibility": [1.0] * 17})
    out = np.asarray(result["keypoints"]).reshape(14, 3)
    assert np.allclose(out[:12], kpts[5:17])  # the limbs, unchanged and in order
    face = np.array([20, (60 + 55 + 55) / 3])
    neck = np.array([20, 100])
    assert np.allclose(out[13], [*neck, 0.5])  # shoulder midpoint, the weaker shoulder's score
    assert np.allclose(out[12, :2], neck + HEAD_TOP_FACTOR * (face - neck), atol=1e-3)
    assert out[12, 2] == pytest.approx(0.5)  # min over nose, eyes and shoulders
    assert len(result["visibility"]) == 14

    kpts[0:3, 2] = 0  # no face seen (a back view): no head top to claim
    out = to_crowdpose_result({"keypoints": kpts.reshape(-1).tolist()})["keypoints"]
    out = np.asarray(out).reshape(14, 3)
    assert out[12, 2] == 0 and np.allclose(out[12, :2], neck)


def test_a_models_own_neck_and_head_top_are_used_exactly():
    kpts = np.ones((17, 3))
    extra = [5.0, 6.0, 0.7, 7.0, 8.0, 0.8]  # neck, head top
    out = to_crowdpose_result({"keypoints": kpts.reshape(-1).tolist(), "extra_keypoints": extra})
    assert out["keypoints"][36:] == [7.0, 8.0, 0.8, 5.0, 6.0, 0.7] and "extra_keypoints" not in out


@pytest.mark.parametrize(("layout", "expected"), [("coco_aic_mpii_23.py", [21, 22]),
                                                  ("coco_aic_mpii_21.py", [19, 20])])
def test_maskpose_layouts_give_ai_challengers_neck_and_head_top(layout, expected):
    from mmengine.config import Config

    info = Config.fromfile(str(ROOT / "configs" / "pose" / layout)).dataset_info["keypoint_info"]
    assert extra_keypoint_index({i: k["name"] for i, k in info.items()}) == expected
    coco17 = {i: k["name"] for i, k in info.items() if i < 17}
    assert extra_keypoint_index(coco17) == [-1, -1]


def test_extra_keypoints_reach_the_results_only_when_predicted():
    people = Instances((10, 10), boxes=np.array([[0, 0, 5, 5]], np.float32))
    assert "extra_keypoints" not in instances_to_coco(people, 1)[0]
    extra = np.array([[[1, 2, 0.5], [3, 4, 0.25]]], np.float32)
    people = people.replace(extra_keypoints=extra)
    assert instances_to_coco(people, 1)[0]["extra_keypoints"] == [1, 2, 0.5, 3, 4, 0.25]
    assert Instances.cat([people, people]).extra_keypoints.shape == (2, 2, 3)


def test_crowdpose_file_is_scored_by_its_protocol_with_the_loops_17_keypoints(tmp_path):
    ann = crowdpose_file(tmp_path / "crowdpose.json")
    dataset = EvalDataset(ann, COCO_DIR)
    assert dataset.crowdpose and dataset.iou_types == ("bbox", "keypoints_crowd")
    assert dataset.skipped == {"segm": "CrowdPose has no person masks: mask AP skipped"}
    # The loop's records hold COCO-17 poses: the COCO GT as results, mapped like predictions.
    metrics = evaluate_records(dataset, as_records(gt_as_results(COCO_ANN)), [1], ["segmenter"])
    cell = metrics["metrics"]["all"]["1"]["segmenter"]
    assert list(cell["keypoints_crowd"]) == list(STAT_NAMES)
    assert cell["keypoints_crowd"]["AP"] == 1.0 and cell["bbox"]["AP"] == 1.0
    # Image 196141 is the only hard one; its persons all match too.
    assert cell["keypoints_crowd"]["AP_hard"] == 1.0


def test_crowdpose_without_crowd_index_skips_keypoint_ap_with_a_reason(tmp_path):
    data = json.loads(crowdpose_file(tmp_path / "c.json").read_text())
    del data["images"][1]["crowdIndex"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    dataset = EvalDataset(tmp_path / "c.json", COCO_DIR)
    assert dataset.iou_types == ("bbox",)
    assert "no numeric crowdIndex (e.g. image id 40083)" in dataset.skipped["keypoints_crowd"]


def test_bmp_eval_on_crowdpose_equals_xtcocotools_on_the_written_results(tmp_path, capsys):
    ann = crowdpose_file(tmp_path / "crowdpose.json")
    out = tmp_path / "out"
    assert main(eval_args(ann, out, "--iters", "2")) == 0
    printed = capsys.readouterr().out
    assert "| kpt AP | kpt AR | kpt AP(E) | kpt AP(M) | kpt AP(H) |" in printed
    assert "- segm: CrowdPose has no person masks: mask AP skipped" in printed
    assert "loop gain (iteration 1 → 2, segmenter): bbox AP" in printed and ", kpt AP " in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iou_types"] == ["bbox", "keypoints_crowd"]
    for k in (1, 2):
        path = out / f"results_iter{k}.json"
        results = json.loads(path.read_text())
        assert results and all(len(r["keypoints"]) == 42 for r in results)
        got = metrics["metrics"]["all"][str(k)]["segmenter"]["keypoints_crowd"]
        assert list(got.values()) == direct_xtcocotools(ann, path)
        assert got["AP"] > 0.2  # YOLO11n-pose's poses, mapped, do find these people
    for stage in ("detector", "pose", "segmenter"):
        assert metrics["metrics"]["all"]["1"][stage]["keypoints_crowd"]["AP"] >= 0
