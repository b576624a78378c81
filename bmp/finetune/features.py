"""Frozen SAM 2 image-encoder features for fine-tuning, computed once per image and cached.

The image encoder does not train, so its output for an image (and flip side)
never changes: :class:`FrozenEncoder` computes it without gradients and, when
asked, keeps it in memory or on disk. What is cached is the encoder's raw FPN
output; the decoder's trainable projections are applied afterwards by
:func:`bmp.models.sam_features.decoder_features`. A cache entry holds
256 x (256² + 128² + 64²) floats at S = 1024, about 88 MB per image side in
float32, so caching suits small datasets and CPU runs; on a GPU, encoding on
the fly is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import ConfigError
from ..models.sam_features import EncoderFeatures, encode


class FeatureCache:
    """Encoder features by key, in memory (``'memory'``) or in a folder.

    A folder remembers what filled it (``signature``: sam2 config, checkpoint
    digest, image size) and refuses to serve features of another model.
    Files are written atomically, so an interrupted run leaves no torn entry.
    """

    def __init__(self, where: str, signature: dict[str, object]) -> None:
        self.memory: dict[str, EncoderFeatures] | None = None
        self.folder: Path | None = None
        if where == "memory":
            self.memory = {}
            return
        self.folder = Path(where)
        self.folder.mkdir(parents=True, exist_ok=True)
        sig_path = self.folder / "signature.json"
        if sig_path.is_file():
            previous = json.loads(sig_path.read_text())
            if previous != signature:
                raise ConfigError(
                    f"feature cache {self.folder} holds features of another model or image size "
                    f"({previous}); point data.feature_cache to a new folder"
                )
        else:
            sig_path.write_text(json.dumps(signature))

    def _file(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def get(self, key: str) -> EncoderFeatures | None:
        if self.memory is not None:
            return self.memory.get(key)
        path = self._file(key)
        if not path.is_file():
            return None
        levels = torch.load(path, map_location="cpu", weights_only=True)
        return EncoderFeatures(list(levels))

    def put(self, key: str, features: EncoderFeatures) -> None:
        cpu = EncoderFeatures([x.detach().cpu().clone() for x in features.levels])
        if self.memory is not None:
            self.memory[key] = cpu
            return
        path = self._file(key)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(cpu.levels, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class FrozenEncoder:
    """Encoder features for a batch of images, from the cache where possible.

    Args:
        model: the SAM 2 model (its image encoder is used, frozen).
        cache: a :class:`FeatureCache`, or None to encode every time.
        batch_size: images encoded per forward pass.
    """

    def __init__(
        self, model: torch.nn.Module, cache: FeatureCache | None = None, batch_size: int = 4
    ) -> None:
        self.model = model
        self.cache = cache
        self.batch_size = batch_size

    def __call__(self, keys: Sequence[str], images: Sequence[torch.Tensor]) -> EncoderFeatures:
        """Features of the images (each (3, S, S)) on the model's device, in order."""
        device = next(self.model.parameters()).device
        found: list[EncoderFeatures | None] = [
            self.cache.get(k) if self.cache is not None else None for k in keys
        ]
        todo = [i for i, f in enumerate(found) if f is None]
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            batch = torch.stack([images[i] for i in rows]).to(device)
            feats = encode(self.model, batch)
            for j, i in enumerate(rows):
                found[i] = feats[j]
                if self.cache is not None:
                    self.cache.put(keys[i], feats[j])
        return EncoderFeatures.cat([f.to(device) for f in found])
