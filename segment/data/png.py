"""Reader for folders of 2D image/mask pairs stored as PNG files, with pixel spacing from a CSV.

The layout is that of the HC18 challenge: ``<id>.png`` images with masks named
``<id><mask_suffix>.png`` beside them, and a CSV that gives each image's pixel
size in millimetres. Arrays keep PIL's order, rows then columns, as the two
spatial axes. Masks may be greyscale or RGB; a pixel is foreground (class 1)
when its first channel exceeds 127.

Predicted label maps are written as 8-bit greyscale PNGs whose pixel values are
the class indices, at the size of the source image.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..files import atomic_write
from .msd import Case, CaseFiles
from .normalize import normalize_intensity


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"cannot read {path} as a PNG image ({error}); re-export it") from error


def read_png_image(path: Path) -> np.ndarray:
    """Read an image PNG as float32 ``(rows, columns)``; colour images become the mean of their RGB channels."""
    image = _read_png(path)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)  # colour-coded ultrasound exports: use the luminance mean
    return image.astype(np.float32)


def resample_to_spacing(
    image: np.ndarray, label: np.ndarray | None, spacing: float, target_spacing: float | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resample a 2D image (bilinear) and label (nearest) to about ``target_spacing`` mm pixels.

    The size is rounded to whole pixels, so the exact pixel size per axis, which
    is returned third, differs slightly from ``target_spacing``. ``None`` keeps
    the image's own grid.
    """
    if target_spacing is None:
        return image, label, np.array([spacing, spacing])
    factor = spacing / target_spacing
    size = [max(1, round(n * factor)) for n in image.shape]
    pixel_size = np.array([spacing * n / m for n, m in zip(image.shape, size)])
    resized = F.interpolate(torch.from_numpy(image)[None, None], size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
    mask = None
    if label is not None:
        # Nearest neighbour keeps the mask binary.
        mask = F.interpolate(torch.from_numpy(label)[None, None].float(), size=size, mode="nearest")[0, 0].long().numpy()
    return resized[0, 0].numpy(), mask, pixel_size


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a 2D label map to ``shape`` by nearest neighbour at pixel centres, the inverse of ``resample_to_spacing``."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    resized = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=tuple(shape), mode="nearest-exact")
    return resized[0, 0].to(torch.int64).numpy()


def save_label_png(path: Path, labels: np.ndarray) -> Path:
    """Write a 2D label map as an 8-bit greyscale PNG of class indices, atomically.

    Raises:
        DataError: when the map is not 2D or a value is outside 0..255.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"cannot write {path}: a PNG label map must be 2D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise DataError(f"cannot write {path}: class indices {int(labels.min())}..{int(labels.max())} do not fit 8-bit PNG values 0..255")
    image = Image.fromarray(labels.astype(np.uint8))  # 2D uint8 gives mode "L"
    atomic_write(Path(path), lambda handle: image.save(handle, format="PNG"), binary=True)
    return Path(path)


def read_pixel_spacing(csv_path: Path) -> dict[str, float]:
    """Pixel size in millimetres by image file name, from the first two CSV columns (after a header row)."""
    if not csv_path.is_file():
        raise DataError(f"pixel spacing file not found: {csv_path}")
    spacing = {}
    with open(csv_path, newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)  # header
        for line, row in enumerate(rows, start=2):
            try:
                spacing[row[0]] = float(row[1])
            except (IndexError, ValueError) as error:
                raise DataError(f"{csv_path}, line {line}: expected 'file name, pixel size in mm', got {row!r}") from error
    return spacing


class PNGDataset:
    """2D image/mask pairs in one folder, resampled on load to a common pixel spacing.

    Args:
        folder: dataset folder.
        images: glob, relative to ``folder``, that matches the images and not the masks.
        mask_suffix: inserted before ``.png`` to name an image's mask.
        spacing_csv: CSV, relative to ``folder``, of image file name and pixel size (mm).
        target_spacing: pixel size (mm) every case is resampled to; ``None`` keeps
            each image's own grid.
        group_pattern: regular expression whose first group, matched at the start
            of a case id, names the subject, so images of one subject share a fold.
    """

    spatial_dims = 2

    def __init__(
        self,
        folder: str | Path,
        *,
        images: str,
        mask_suffix: str,
        spacing_csv: str,
        target_spacing: float | None = None,
        group_pattern: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"dataset folder not found: {self.folder}")
        self.mask_suffix = mask_suffix
        self.target_spacing = target_spacing
        self.spacing = read_pixel_spacing(self.folder / spacing_csv)
        self.classes = {0: "background", 1: "foreground"}
        self.group_pattern = re.compile(group_pattern) if group_pattern else None

        paths = [p for p in sorted(self.folder.glob(images)) if not p.stem.endswith(mask_suffix)]
        if not paths:
            raise DataError(f"no images match {images!r} in {self.folder}")
        self.cases = [CaseFiles(p.stem, (p,), p.with_name(f"{p.stem}{mask_suffix}.png")) for p in paths]
        missing = [c.images[0].name for c in self.cases if c.images[0].name not in self.spacing]
        if missing:
            raise DataError(f"{self.folder / spacing_csv} gives no pixel size for {missing[:3]}; add a row per image")

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num_classes(self) -> int:
        return 2

    def group(self, case_id: str) -> str:
        """Subject of a case: the first group of ``group_pattern``, or the case id itself."""
        if self.group_pattern is None:
            return case_id
        match = self.group_pattern.match(case_id)
        if match is None:
            raise DataError(f"case id {case_id!r} does not match group_pattern {self.group_pattern.pattern!r}")
        return match.group(1)

    def case_files(self, case_id: str) -> CaseFiles:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DataError(f"case {case_id!r} is not in {self.folder}")

    def load(self, case_id: str, *, normalize: bool = True) -> Case:
        """Load, check, resample and normalise one image with its mask."""
        files = self.case_files(case_id)
        image = read_png_image(files.images[0])
        mask = _read_png(files.label)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != image.shape:
            raise DataError(f"image {files.images[0]} has shape {image.shape} but mask {files.label} has shape {mask.shape}")
        label = (mask > 127).astype(np.int64)

        spacing = self.spacing[files.images[0].name]
        if spacing <= 0:
            raise DataError(f"pixel size of {files.images[0].name} must be positive, got {spacing}")
        image, label, pixel_size = resample_to_spacing(image, label, spacing, self.target_spacing)
        image = normalize_intensity(image[None]) if normalize else image[None]
        affine = np.diag([*pixel_size, 1.0, 1.0])
        return Case(case_id, image, label[None], affine, pixel_size)
