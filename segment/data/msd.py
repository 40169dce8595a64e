"""Reader for the Medical Segmentation Decathlon layout, which also covers nnU-Net raw datasets.

A dataset folder contains ``dataset.json``, ``imagesTr/`` and ``labelsTr/``. The MSD
schema lists ``training`` pairs and ``labels`` as ``{"0": "background", ...}``.
The nnU-Net v2 raw schema has ``labels`` as ``{"background": 0, ...}`` and
``file_ending``, and names images ``<case>_0000<file_ending>``, one per channel.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .io import check_image_values, label_to_integer, load_nifti, spacing_from_affine
from .normalize import normalize_intensity

logger = logging.getLogger(__name__)

DATA_ROOT_VARIABLE = "MEDAUG_DATA"
FETCH_HINT = "download a Decathlon task into it with `medaug data fetch NAME --cache DIR`"


@dataclass(frozen=True)
class CaseFiles:
    """Paths of one case: its image files (one per channel) and its label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class Case:
    """One loaded case: normalised ``(C, *S)`` float32 image, ``(1, *S)`` int64 label map."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: np.ndarray


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """Return the data root from the argument, else from ``MEDAUG_DATA``.

    Raises:
        DataError: when neither is set or the folder does not exist.
    """
    source = "--data-root"
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_VARIABLE)
        source = DATA_ROOT_VARIABLE
    if not data_root:
        raise DataError(f"no data root given: pass --data-root DIR or set {DATA_ROOT_VARIABLE} to the folder that contains the datasets, or {FETCH_HINT}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root not found: {root} (from {source}); pass --data-root DIR or set {DATA_ROOT_VARIABLE} to an existing folder, or {FETCH_HINT}")
    return root


def _case_id(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)] if path.name.endswith(suffix) else path.stem


class MSDDataset:
    """Cases of a Decathlon or nnU-Net raw dataset folder, loaded on demand.

    Args:
        folder: the dataset folder (the one holding ``dataset.json``).

    Every path in ``dataset.json`` must stay inside ``folder``, also after
    following symbolic links.

    Label maps without foreground are accepted, because a scan may show none
    of the structures, and loading one logs a warning. So does a constant image.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "dataset.json"
        if not manifest.is_file():
            raise DataError(f"dataset.json not found in {self.folder}; expected the Decathlon layout (dataset.json, imagesTr/, labelsTr/), or {FETCH_HINT}")
        try:
            self.metadata: dict[str, Any] = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{manifest} is not valid JSON: {error}") from error
        if not isinstance(self.metadata, dict):
            raise DataError(f"{manifest} must contain a JSON object with 'labels' and 'training', got a {type(self.metadata).__name__}")
        self.classes = self._read_classes(manifest)
        self.cases = self._read_cases(manifest)
        if not self.cases:
            raise DataError(f"{manifest} lists no training cases")
        self.spatial_dims = 2 if str(self.metadata.get("tensorImageSize", "3D")).upper() == "2D" else 3

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num_classes(self) -> int:
        """Number of output channels a model needs: the largest class index plus one."""
        return max(self.classes) + 1

    def _read_classes(self, manifest: Path) -> dict[int, str]:
        labels = self.metadata.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise DataError(f"{manifest} has no 'labels' mapping")
        classes: dict[int, str] = {}
        for key, value in labels.items():
            if str(key).lstrip("-").isdigit():
                classes[int(key)] = str(value)  # MSD: {"1": "Anterior"}
            elif isinstance(value, int):
                classes[value] = str(key)  # nnU-Net v2: {"Anterior": 1}
            else:
                raise DataError(f"{manifest}: cannot read label entry {key!r}: {value!r}; use {{\"1\": \"name\"}} or {{\"name\": 1}}")
        if 0 not in classes:
            raise DataError(f"{manifest}: 'labels' must declare class 0 (background)")
        return dict(sorted(classes.items()))

    def _inside(self, relative: str, manifest: Path) -> Path:
        path = self.folder / relative
        root = self.folder.resolve()
        if Path(relative).is_absolute():
            raise DataError(f"{manifest}: path {relative!r} is absolute; paths must be relative to the dataset folder {self.folder}")
        if not path.resolve().is_relative_to(root):
            inside = [self.folder / Path(*Path(relative).parts[: k + 1]) for k in range(len(Path(relative).parts))]
            links = [p for p in inside if p.is_symlink()]
            if links:
                raise DataError(
                    f"{manifest}: {links[0]} is a symbolic link to {links[0].resolve()}, outside the dataset folder; "
                    "copy the data into the folder, or point --data-root at the folder the link leads to"
                )
            raise DataError(f"{manifest}: path {relative!r} points outside the dataset folder {self.folder}; paths must stay inside it")
        return path

    def _read_cases(self, manifest: Path) -> list[CaseFiles]:
        training = self.metadata.get("training")
        cases = []
        if training is not None:
            if not isinstance(training, list):
                raise DataError(f"{manifest}: 'training' must be a list of {{\"image\": ..., \"label\": ...}} entries, got a {type(training).__name__}")
            for position, entry in enumerate(training):
                if not isinstance(entry, dict) or "image" not in entry:
                    raise DataError(f"{manifest}: training[{position}] must have 'image' and 'label' entries")
                for key in ("image", "label"):
                    if entry.get(key) is not None and not isinstance(entry[key], str):
                        raise DataError(f"{manifest}: training[{position}].{key} must be a relative path string, got {entry[key]!r}")
                image = self._inside(entry["image"], manifest)
                label = self._inside(entry["label"], manifest) if entry.get("label") else None
                cases.append(CaseFiles(_case_id(image, ".nii.gz"), self._channel_files(image, manifest), label))
        else:
            cases = self._scan_nnunet_raw(manifest)
        ids = [c.case_id for c in cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise DataError(f"{manifest}: case ids appear more than once: {duplicates[:5]}")
        return sorted(cases, key=lambda c: c.case_id)

    def _channel_files(self, image: Path, manifest: Path) -> tuple[Path, ...]:
        # MSD lists "imagesTr/case.nii.gz" while the files on disk may be the
        # nnU-Net-converted "case_0000.nii.gz", "case_0001.nii.gz", ...
        if image.exists():
            return (image,)
        stem = _case_id(image, ".nii.gz")
        channels = sorted(image.parent.glob(f"{stem}_[0-9][0-9][0-9][0-9].nii.gz"))
        # The channel files replace a path listed in dataset.json, so they
        # must stay inside the folder too, also after following symbolic links.
        root = self.folder.resolve()
        for channel in channels:
            if not channel.resolve().is_relative_to(root):
                raise DataError(
                    f"{manifest}: channel file {channel} of {image.name} resolves to {channel.resolve()}, "
                    f"outside the dataset folder {self.folder}; copy the file into the folder instead of linking to it"
                )
        return tuple(channels) if channels else (image,)

    def _scan_nnunet_raw(self, manifest: Path) -> list[CaseFiles]:
        ending = self.metadata.get("file_ending", ".nii.gz")
        images = self.folder / "imagesTr"
        if not images.is_dir():
            raise DataError(f"{manifest} has no 'training' list and {images} does not exist")
        by_case: dict[str, list[Path]] = {}
        for path in sorted(images.glob(f"*_[0-9][0-9][0-9][0-9]{ending}")):
            by_case.setdefault(_case_id(path, ending)[:-5], []).append(path)
        return [CaseFiles(case, tuple(files), self.folder / "labelsTr" / f"{case}{ending}") for case, files in by_case.items()]

    def case_files(self, case_id: str) -> CaseFiles:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DataError(f"case {case_id!r} is not in {self.folder / 'dataset.json'}")

    def _dimension_error(self, path: Path, shape: tuple[int, ...]) -> str:
        declared = f"dataset.json declares {self.spatial_dims}D images (tensorImageSize {self.metadata.get('tensorImageSize', '3D')!r})"
        if len(shape) == 2 and self.spatial_dims == 3:
            fix = f"a 2D image cannot feed a 3D model: store the slice as a volume of shape {(*shape, 1)}, or train a 2D study on it"
        else:
            fix = f"store it as a {self.spatial_dims}D image, optionally with one trailing channel axis, or correct tensorImageSize"
        return f"image {path} has shape {shape} ({len(shape)}D) but {declared}; {fix}"

    def _require_file(self, path: Path, case_id: str) -> None:
        if not path.is_file():
            raise DataError(f"file not found: {path} (case {case_id!r}); restore the file or remove the case from the dataset {self.folder}")

    def load(self, case_id: str, *, normalize: bool = True) -> Case:
        """Load one case, check image against label, and normalise the image.

        Raises:
            DataError: naming the file when it is missing or unreadable, is not
                a real-valued image, contains NaN or infinite voxels, has a
                different number of dimensions than ``tensorImageSize`` declares,
                or disagrees with its label in shape or affine, or when label
                values are not whole declared classes.
        """
        files = self.case_files(case_id)
        channels = []
        affine = None
        for path in files.images:
            self._require_file(path, case_id)
            array, file_affine = load_nifti(path)
            check_image_values(array, path, case_id)
            if array.ndim == self.spatial_dims + 1:
                # MSD stores several modalities as a trailing axis; medaug is channel-first.
                channels.extend(np.moveaxis(array, -1, 0))
            elif array.ndim == self.spatial_dims:
                channels.append(array)
            else:
                raise DataError(self._dimension_error(path, array.shape))
            affine = file_affine if affine is None else affine
        image = np.stack(channels)

        label = None
        if files.label is not None:
            self._require_file(files.label, case_id)
            raw_label, label_affine = load_nifti(files.label)
            if raw_label.shape != image.shape[1:]:
                raise DataError(
                    f"image {files.images[0]} has shape {image.shape[1:]} but label {files.label} has shape {raw_label.shape}; "
                    "they must share one voxel grid"
                )
            if not np.allclose(label_affine, affine, atol=1e-4):
                raise DataError(f"image {files.images[0]} and label {files.label} have different affines; resample the label onto the image grid")
            label = label_to_integer(raw_label, files.label, set(self.classes))[None]
            if not label.any():
                logger.warning(
                    "label %s of case %s has no foreground voxels; the case is kept because a scan may show none of the structures, "
                    "but check the file if every case should contain one",
                    files.label,
                    case_id,
                )

        image = normalize_intensity(image) if normalize else image.astype(np.float32)
        return Case(case_id, image, label, affine, spacing_from_affine(affine))
