import hashlib
import io
import pickle

import numpy as np
import pytest
import torch

from bmp import weights
from bmp.weights import (
    CHECKPOINTS,
    Checkpoint,
    WeightsError,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    resolve_checkpoints,
)
from tests.conftest import MODELS_DIR, ROOT


def test_missing_official_checkpoint_names_file_and_url(tmp_path):
    with pytest.raises(WeightsError) as err:
        resolve_checkpoint("sam2.1-hiera-b+", [tmp_path], download=False)
    text = str(err.value)
    assert "sam2.1_hiera_base_plus.pt" in text
    assert CHECKPOINTS["sam2.1-hiera-b+"].url in text
    assert str(tmp_path) in text


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.pth")


def test_weights_dir_and_checksum(tmp_path, monkeypatch):
    data = b"x" * 1000
    entry = Checkpoint("toy", "toy.pt", "https://example.invalid/toy.pt",
                       sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(CHECKPOINTS, "toy", entry)
    (tmp_path / "toy.pt").write_bytes(data)
    assert resolve_checkpoint("toy", [tmp_path]) == tmp_path / "toy.pt"
    (tmp_path / "toy.pt").write_bytes(data[:500])  # truncated download
    with pytest.raises(WeightsError, match="truncated"):
        resolve_checkpoint("toy", [tmp_path])


def test_download_goes_through_temp_file_and_verifies(tmp_path, monkeypatch):
    source = tmp_path / "src.pt"
    source.write_bytes(b"weights!")
    entry = Checkpoint("toy", "toy.pt", source.as_uri(),
                       sha256=hashlib.sha256(b"weights!").hexdigest())
    monkeypatch.setitem(CHECKPOINTS, "toy", entry)
    monkeypatch.setenv("BMP_HOME", str(tmp_path / "home"))
    path = resolve_checkpoint("toy", download=True)
    assert path == tmp_path / "home" / "checkpoints" / "toy.pt"
    assert path.read_bytes() == b"weights!"
    assert not list(path.parent.glob(".*part"))

    bad = Checkpoint("bad", "bad.pt", (tmp_path / "missing.pt").as_uri())
    monkeypatch.setitem(CHECKPOINTS, "bad", bad)
    with pytest.raises(WeightsError, match="downloading"):
        resolve_checkpoint("bad", download=True)
    assert not (tmp_path / "home" / "checkpoints" / "bad.pt").exists()


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_unregistered_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(WeightsError, match=r"refusing to unpickle .*\(it pickles print\)") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and "--trust-checkpoint" in str(err.value)
    with open(path, "wb") as f:  # a bare pickle is not a torch checkpoint at all
        pickle.dump({"state_dict": {}, "x": Payload()}, f)
    with pytest.raises(WeightsError, match="not a torch checkpoint"):
        load_checkpoint(path)
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_openmmlab_style_metadata_loads_safely(tmp_path):
    import numpy as np

    path = tmp_path / "mm.pth"
    meta = {"arr": np.arange(3), "f": np.float64(1.5), "dt": np.dtype("float32")}
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": meta}, path)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))


def test_message_hub_metadata_loads_only_for_registered_checkpoints(tmp_path, monkeypatch):
    from mmengine.logging.history_buffer import HistoryBuffer

    path = tmp_path / "official.pth"
    torch.save({"state_dict": {"w": torch.ones(2)},
                "message_hub": {"loss": HistoryBuffer([1.0, 2.0], [1, 1])}}, path)
    with pytest.raises(WeightsError, match="not a registered official checkpoint"):
        load_checkpoint(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(CHECKPOINTS, "official", Checkpoint("official", "official.pth",
                                                            "https://example.invalid", sha256=digest))
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(WeightsError, match="corrupt, truncated") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value)


# Item 9a: a damaged file under a registry name says so and gives its URL, not
# torch's advice to re-run with weights_only=False.

def _random_bytes(n: int = 4096) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def _truncated_torch_file() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(10_000)}}, buffer)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_damaged_file_under_registry_name_names_file_and_url(tmp_path, content):
    entry = CHECKPOINTS["sam2.1-hiera-t"]  # no digest in the registry: only loading can tell
    path = tmp_path / entry.filename
    path.write_bytes(_random_bytes() if content == "random" else _truncated_torch_file())
    assert resolve_checkpoint("sam2.1-hiera-t", [tmp_path]) == path
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "corrupt" in text and entry.url in text
    assert "weights_only" not in text and "\n" not in text
    assert not isinstance(err.value, weights.UntrustedCheckpointError)


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_damaged_yolo_under_registry_name(tmp_path, content):
    entry = CHECKPOINTS["yolo11n"]
    real = (MODELS_DIR / "yolo11n.pt").read_bytes()
    (tmp_path / entry.filename).write_bytes(_random_bytes() if content == "random" else real[:100_000])
    with pytest.raises(WeightsError) as err:
        resolve_checkpoint("yolo11n", [tmp_path])
    text = str(err.value)
    assert str(tmp_path / entry.filename) in text and "corrupt" in text and entry.url in text
    from bmp.models.detectors import UltralyticsDetector

    with pytest.raises(WeightsError, match="corrupt"):
        UltralyticsDetector(checkpoint="yolo11n", weights_dirs=[str(tmp_path)])


def test_damaged_unregistered_file_is_not_called_untrusted(tmp_path):
    path = tmp_path / "mine.pth"
    path.write_bytes(_random_bytes())
    with pytest.raises(WeightsError, match="corrupt, truncated or not a torch checkpoint") as err:
        load_checkpoint(path, trusted=True)
    assert "weights_only" not in str(err.value)


# Item 9b: offline, every missing checkpoint of a config in one message.

def test_full_config_offline_lists_every_missing_checkpoint(tmp_path, monkeypatch):
    from bmp import BMP

    monkeypatch.setenv("BMP_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        BMP.from_config(ROOT / "configs" / "bmp_rtmdet_vitpose_sam2.py", device="cpu",
                        weights_dirs=[tmp_path])
    text = str(err.value)
    assert text.startswith("3 checkpoints are not available")
    for name in ("rtmdet-ins-l-mask", "vitpose-b", "sam2.1-hiera-b+"):
        assert CHECKPOINTS[name].filename in text and CHECKPOINTS[name].url in text
    assert str(tmp_path) in text


def test_resolve_checkpoints_keeps_a_single_failure_as_is(tmp_path):
    with pytest.raises(weights.MissingCheckpointError, match="not found; looked in"):
        resolve_checkpoints({"a": "sam2.1-hiera-t", "b": None}, [tmp_path], download=False)
    (tmp_path / "ok.pt").write_bytes(b"x")
    assert resolve_checkpoints({"a": tmp_path / "ok.pt"}) == {"a": tmp_path / "ok.pt"}


def test_load_weights_reports_key_mismatch(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    torch.save({"state_dict": {"0.weight": torch.zeros(2, 2)}}, tmp_path / "a.pth")
    with pytest.raises(WeightsError, match="missing keys.*0.bias"):
        load_weights(model, tmp_path / "a.pth")
    load_weights(model, tmp_path / "a.pth", strict=False)
    assert torch.equal(model[0].weight, torch.zeros(2, 2))


def test_registry_lists_the_official_checkpoints():
    names = set(CHECKPOINTS)
    assert {"sam2.1-hiera-b+", "rtmdet-ins-l-mask", "maskpose-b", "pmpose-b",
            "sam-pose2seg-hiera-b+", "yolo11n-pose"} <= names
    assert all(c.url.startswith("https://") for c in CHECKPOINTS.values())
    assert weights.cache_dir().name == "checkpoints"
