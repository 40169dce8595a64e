"""Read NIfTI images and label maps with their affines, and check them."""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataError

logger = logging.getLogger(__name__)


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as ``(array, affine)`` with the scaling of its header applied.

    The affine is the sform when its code is positive, else the qform (nibabel's
    rule), so the translation column and axis signs stored in the file are kept.

    Raises:
        DataError: when the file is missing, truncated or not a NIfTI image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise DataError(f"cannot read {path} as a NIfTI image ({type(error).__name__}: {error}); re-export or re-download it") from error
    return array, np.asarray(image.affine, dtype=np.float64)


def check_image_values(array: np.ndarray, path: str | Path, case_id: str | None = None) -> None:
    """Check that an image contains finite real numbers; log a warning when it is constant.

    A constant image is accepted because datasets fill a missing modality with
    zeros; it normalises to all zeros (see ``normalize_intensity``).

    Raises:
        DataError: naming ``path`` when the data type is not a real number type
            (for example RGB or complex) or a voxel is NaN or infinite.
    """
    remove = f"remove case {case_id} from the dataset" if case_id else "remove the file"
    real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_
    if not real:
        raise DataError(f"image {path} has data type {array.dtype}, not real numbers; re-export it as a greyscale image with one value per voxel, or {remove}")
    if np.issubdtype(array.dtype, np.floating):
        not_finite = ~np.isfinite(array)
        if not_finite.any():
            first = tuple(int(i) for i in np.argwhere(not_finite)[0])
            raise DataError(
                f"image {path} contains {int(not_finite.sum())} NaN or infinite voxels (the first at voxel {first}); "
                f"replace them with a valid value such as the background intensity, or {remove}"
            )
    if array.size and array.min() == array.max():
        logger.warning(
            "image %s is constant (every voxel is %s): it normalises to zeros and shows no anatomy; "
            "check the export unless the channel is deliberately empty",
            path,
            array.flat[0],
        )


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in millimetres: the lengths of the affine's first three columns."""
    return np.linalg.norm(affine[:3, :3], axis=0)


def label_to_integer(array: np.ndarray, path: str | Path, classes: set[int] | None = None) -> np.ndarray:
    """Cast a label array to ``int64`` after checking every value is a whole, known class.

    Raises:
        DataError: naming ``path`` when a value is NaN, infinite, fractional, or
            not among ``classes``.
    """
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise DataError(f"label file {path} contains NaN or infinite values; labels must be whole class numbers")
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise DataError(
                f"label file {path} contains non-integer values (for example {fractional.flat[0]!r}); "
                "labels must be whole class numbers, re-export it without interpolation"
            )
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise DataError(f"label file {path} has unsupported dtype {array.dtype}; expected integers")
    labels = array.astype(np.int64)
    if classes is not None:
        unknown = sorted(set(np.unique(labels).tolist()) - classes)
        if unknown:
            raise DataError(
                f"label file {path} contains values {unknown} that are not among the classes {sorted(classes)} "
                "declared in dataset.json"
            )
    return labels


def _label_dtype(labels: np.ndarray) -> type:
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    raise DataError(f"label values {low}..{high} do not fit a 32-bit integer")


def save_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    label: bool = False,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write a NIfTI file atomically: it appears under ``path`` only once complete.

    Args:
        path: destination ending in ``.nii.gz`` or ``.nii``.
        array: spatial array ``(X, Y[, Z])``, without a channel axis.
        affine: 4x4 voxel-to-world matrix, stored as both sform and qform (code 1).
        label: store as the smallest integer type that fits the values (uint8,
            int16 or int32); values must be whole numbers.
        header: optional template, for example the source image's header. Its
            intensity scaling is reset to slope 1 and intercept 0, so values are
            stored exactly as given.

    Raises:
        DataError: when ``array`` is not 2D or 3D, or a label value is not whole.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise DataError(f"cannot write {path}: expected a 2D or 3D array, got shape {array.shape}")
    if label:
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(f"cannot write label file {path}: values must be whole class numbers")
        array = array.astype(_label_dtype(array))
    else:
        array = array.astype(np.float32)

    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header.copy() if header is not None else None)
    image.set_data_dtype(array.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    temporary = path.with_name(f".{path.name}.partial{suffix}")
    try:
        nib.save(image, str(temporary))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
