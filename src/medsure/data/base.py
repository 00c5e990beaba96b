"""In-memory dataset container shared by every loader, the trainer and ``predict``.

Medical datasets that medsure ships or reads for demos are small enough to hold in memory;
keeping them as plain arrays makes splits, hashing and thumbnails trivial and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from medsure.validation import input_error


@dataclass(frozen=True)
class ImageDataset:
    """Images plus targets for one task.

    Attributes
    ----------
    images : ndarray, shape (N, H, W, C), uint8 (or float32 in [0, 1] for CT patches)
    targets : ndarray, int64; shape (N,) class labels for classification,
        (N, H, W) label maps for segmentation; None when unlabelled.
    ids : ndarray of str, shape (N,), unique
    class_names : ndarray of str, shape (K,)
    task : "classification" or "segmentation"
    meta : dict of str to ndarray (N,): per-sample covariates (sex, age, group hash...)
    provenance : dict: source, file MD5s and whether they matched the official ones
    """

    images: np.ndarray
    targets: np.ndarray | None
    ids: np.ndarray
    class_names: np.ndarray
    task: Literal["classification", "segmentation"] = "classification"
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise input_error("images", f"shape {self.images.shape}", "shape (N, H, W, C)", raw=True)
        if self.ids.shape != (n,):
            raise input_error("ids", f"shape {self.ids.shape}", f"shape ({n},), one id per image", raw=True)
        if self.targets is not None:
            want = (n,) if self.task == "classification" else (n, *self.images.shape[1:3])
            if self.targets.shape != want:
                raise input_error("targets", f"shape {self.targets.shape}", f"shape {want}", raw=True)
            k = len(self.class_names)
            if self.targets.size and (self.targets.min() < 0 or self.targets.max() >= k):
                raise input_error(
                    "targets",
                    f"values in [{self.targets.min()}, {self.targets.max()}]",
                    f"class indices in [0, {k - 1}] for {k} class names",
                    raw=True,
                )
        for key, values in self.meta.items():
            if np.shape(values) != (n,):
                raise input_error(
                    f"meta '{key}'", f"shape {np.shape(values)}", f"shape ({n},), one value per image", raw=True
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def require_targets(self, what: str = "dataset") -> np.ndarray:
        """``targets`` (labels ``(N,)`` or label maps ``(N, H, W)``); raise naming ``what`` when the
        dataset is unlabelled."""
        if self.targets is None:
            raise input_error(
                what, f"{len(self)} images without targets", "a labelled dataset (labels or masks)", raw=True
            )
        return self.targets

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, index: np.ndarray) -> ImageDataset:
        index = np.asarray(index)
        return replace(
            self,
            images=self.images[index],
            targets=None if self.targets is None else self.targets[index],
            ids=self.ids[index],
            meta={k: np.asarray(v)[index] for k, v in self.meta.items()},
        )
