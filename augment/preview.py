"""Preview a strategy: a PNG grid of real cases next to augmented draws, labels overlaid."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchio as tio

from .pipeline import Pipeline
from .seeding import derive_generator


def load_pairs(dataset: Path, count: int) -> list[dict[str, Any]]:
    """Read the first ``count`` image/label pairs listed in a Decathlon ``dataset.json`` with TorchIO.

    Images are z-scored per volume so different scanners share one grey scale.
    """
    manifest_path = dataset / "dataset.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"dataset.json not found in {dataset}; give a Decathlon dataset folder")
    entries = json.loads(manifest_path.read_text()).get("training", [])[:count]
    if not entries:
        raise ValueError(f"{manifest_path} lists no training cases")
    pairs = []
    for entry in entries:
        image = tio.ScalarImage(dataset / entry["image"])
        label = tio.LabelMap(dataset / entry["label"])
        data = image.data[:1].float()
        data = (data - data.mean()) / data.std().clamp_min(1e-8)
        pairs.append({"image": data, "label": label.data[:1].round().long(), "spacing": torch.tensor(image.spacing, dtype=torch.float64)})
    return pairs


def _pad_to(tensor: torch.Tensor, shape: tuple[int, ...], value: float) -> torch.Tensor:
    pad: list[int] = []
    for size, target in zip(reversed(tensor.shape[1:]), reversed(shape)):
        pad += [0, target - size]
    return F.pad(tensor, pad, value=value)


def preview_grid(pipeline: Pipeline, pairs: list[dict[str, Any]], path: Path, *, draws: int = 3, seed: int = 0) -> Path:
    """Write a PNG with one row per case: the original, then ``draws`` augmented versions.

    Each panel is the middle slice along the last axis (3D) or the whole image (2D),
    with the label drawn as coloured contours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(max(p["image"].shape[k] for p in pairs) for k in range(1, pairs[0]["image"].ndim))
    batch = {
        "image": torch.stack([_pad_to(p["image"], shape, float(p["image"].min())) for p in pairs]),
        "label": torch.stack([_pad_to(p["label"], shape, 0) for p in pairs]),
        "spacing": torch.stack([p["spacing"][: len(shape)] for p in pairs]),
    }
    columns = [batch] + [pipeline(batch, derive_generator(seed, draw)) for draw in range(draws)]

    figure, axes = plt.subplots(len(pairs), len(columns), figsize=(2.4 * len(columns), 2.4 * len(pairs)), squeeze=False)
    for column, result in enumerate(columns):
        for row in range(len(pairs)):
            image, label = result["image"][row, 0], result["label"][row, 0]
            if image.ndim == 3:
                image, label = image[..., image.shape[-1] // 2], label[..., label.shape[-1] // 2]
            axis = axes[row][column]
            axis.imshow(image.T.numpy(), cmap="gray", origin="lower")
            classes = [int(c) for c in torch.unique(label) if c != 0]
            for cls in classes:
                # One colour per class value, the same in every panel.
                axis.contour((label == cls).T.numpy().astype(float), levels=[0.5], colors=[f"C{cls % 10}"], linewidths=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("original" if column == 0 else f"draw {column}", fontsize=9)
    figure.tight_layout()

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(descriptor)
    try:
        figure.savefig(temporary, dpi=100)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
        plt.close(figure)
    return path
