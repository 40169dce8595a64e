"""Write synthetic datasets in the Decathlon / nnU-Net raw layout, atomically and resumably.

A finished export ``OUT/`` contains::

    dataset.json                  nnU-Net v2 keys (channel_names, labels as name -> value,
                                  numTraining, file_ending) and the MSD keys (name,
                                  tensorImageSize, modality, training list)
    manifest.json                 provenance: generator checkpoint SHA-256, kind, direction,
                                  intensity mapping, and per case its source case, seed,
                                  settings and sampled augmentation parameters
    imagesTr/<case>_0000.nii.gz   float32 image, one channel, in physical units (HU for CT)
    labelsTr/<case>.nii.gz        integer label map (uint8, int16 or int32), no intensity scaling

The ``training`` list names ``./imagesTr/<case>.nii.gz`` while the file on disk
is ``<case>_0000.nii.gz``. nnU-Net v2 ignores that list and finds images by the
``_0000`` channel suffix. ``segment.data.msd.MSDDataset`` resolves the listed
name to its ``_0000`` channel file. So both read the same folder.

Everything is written into ``OUT.partial/`` first. Each case's image and label
file appears atomically, then a record ``OUT.partial/.cases/<case>.json`` marks
the case finished. ``dataset.json`` is written only after every case and
``manifest.json``, and the folder is then renamed to ``OUT``. A folder without
``dataset.json`` is therefore never complete, and a rerun after a crash reuses
the finished cases whose checkpoint hash, source case, seed and settings match.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from augment import Pipeline, build_strategy, strategy_config
from augment.seeding import derive_generator, derive_seed
from segment.data.io import label_to_integer, load_nifti, save_nifti, spacing_from_affine
from segment.data.msd import MSDDataset
from segment.errors import DataError
from segment.files import write_json

from .checkpoint import load_generator, sha256_file
from .conditional import generate_from_labels
from .errors import GanError
from .slices import VolumeFiles, find_volumes, select_cases
from .training import translate_volume

logger = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"
RECORDS_FOLDER = ".cases"
MANIFEST_VERSION = 1

_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PlannedCase:
    """One output case, fixed before anything is generated.

    Attributes:
        case_id: output case id; files are ``<case_id>_0000.nii.gz`` and ``<case_id>.nii.gz``.
        source_case: case id of the input the output is generated from.
        seed: seed of every random draw for this case (noise, augmentation).
        settings: JSON-serialisable values that, with the seed and the generator
            checkpoint, determine the output (for example the draw index and the
            augmentation strategy). A rerun reuses a finished case only when they match.
    """

    case_id: str
    source_case: str
    seed: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """Return the values that a finished case's record must match to be reused."""
        return {"case_id": self.case_id, "source_case": self.source_case, "seed": int(self.seed), "settings": _plain(self.settings)}


@dataclass
class SyntheticCase:
    """One generated case, ready to write.

    Attributes:
        image: ``(X, Y)`` or ``(X, Y, Z)`` array in physical units (already mapped
            back from the generator's range), one channel.
        label: integer-valued label map of the same shape, or ``None``.
        affine: 4x4 voxel-to-world matrix of the source image.
        header: optional NIfTI header template of the source image; its intensity
            scaling is reset, so values are stored as given.
        parameters: JSON-serialisable values drawn while generating (for example
            augmentation parameters), recorded in ``manifest.json``.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata for ``dataset.json``.

    Attributes:
        name: dataset name.
        channel_name: name of the single image channel, for example ``"CT"`` or ``"T1c"``.
            nnU-Net v2 normalises a channel named ``"CT"`` with global statistics and any
            other name per case.
        labels: class value -> class name, with 0 (background). ``None`` names the
            classes ``class_<value>`` for every value from 0 to the largest label written.
        description: free text.
    """

    name: str
    channel_name: str
    labels: Mapping[int, str] | None = None
    description: str = ""


def case_seed(base_seed: int, source_case: str, draw: int = 0) -> int:
    """Derive the seed of one output case from the base seed, the source case id and the draw index.

    The source case enters through its CRC-32, so a case keeps its seed when
    other cases are added to or removed from the export.
    """
    return derive_seed(int(base_seed), zlib.crc32(source_case.encode("utf-8")), int(draw))


def denormalise_output(output: np.ndarray | torch.Tensor, intensity: Any) -> np.ndarray:
    """Map a single-channel generator output back to physical intensities as a spatial array.

    Args:
        output: generator output in ``[-1, 1]``, one of

            - ``(1, 1, X, Y)``: one 2D image, returned as ``(X, Y)``;
            - ``(Z, 1, X, Y)``: a stack of ``Z`` slices, returned as ``(X, Y, Z)``;
            - ``(1, 1, Z, X, Y)``: the same stack in PyTorch's ``(N, C, D, H, W)`` order,
              returned as ``(X, Y, Z)``.

            The slice index always becomes the last axis, the axis a 2D slice
            generator walks along (NIfTI k).
        intensity: mapping with ``from_model`` (``gan.intensity``); it clips to
            ``[-1, 1]`` and applies the same constants to every volume.

    Raises:
        GanError: when the output has more than one channel or another shape.
    """
    array = output.detach().cpu().float().numpy() if isinstance(output, torch.Tensor) else np.asarray(output, dtype=np.float32)
    if array.ndim not in (4, 5) or array.shape[1] != 1:
        raise GanError(
            f"generator output has shape {array.shape}; expected one channel as (1, 1, X, Y), (Z, 1, X, Y) or (1, 1, Z, X, Y), "
            "because synthetic images are single-channel"
        )
    if array.ndim == 5:
        if array.shape[0] != 1:
            raise GanError(f"generator output has shape {array.shape}; a 3D output must contain one volume, (1, 1, Z, X, Y)")
        spatial = np.moveaxis(array[0, 0], 0, -1)
    elif array.shape[0] == 1:
        spatial = array[0, 0]
    else:
        spatial = np.moveaxis(array[:, 0], 0, -1)
    return np.asarray(intensity.from_model(np.ascontiguousarray(spatial)), dtype=np.float32)


def image_path(folder: Path, case_id: str) -> Path:
    return folder / "imagesTr" / f"{case_id}{CHANNEL_SUFFIX}{FILE_ENDING}"


def label_path(folder: Path, case_id: str) -> Path:
    return folder / "labelsTr" / f"{case_id}{FILE_ENDING}"


def write_case(folder: Path, case_id: str, case: SyntheticCase) -> dict[str, Any]:
    """Write one case's image (float32) and label (integer, unscaled) with the source affine.

    Each file appears atomically under its final name.

    Returns:
        The case's file entries for the manifest: relative paths, SHA-256 and shape.

    Raises:
        GanError: when the image is not a finite 2D or 3D single-channel array,
            the affine is not a finite 4x4 matrix, or the label's shape differs.
    """
    image = np.asarray(case.image)
    if image.ndim not in (2, 3):
        raise GanError(f"synthetic image of case {case_id} has shape {image.shape}; expected one channel as (X, Y) or (X, Y, Z)")
    if not np.all(np.isfinite(image)):
        raise GanError(f"synthetic image of case {case_id} contains NaN or infinite values; check the generator checkpoint")
    affine = np.asarray(case.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise GanError(f"affine of case {case_id} must be a finite 4x4 matrix, got shape {affine.shape}")

    entry: dict[str, Any] = {"shape": list(image.shape)}
    path = save_nifti(image_path(folder, case_id), image.astype(np.float32), affine, header=case.header)
    entry["image"] = f"./imagesTr/{path.name}"
    entry["image_sha256"] = sha256_file(path)

    if case.label is not None:
        label = np.asarray(case.label)
        if label.shape != image.shape:
            raise GanError(f"label of case {case_id} has shape {label.shape} but its image has {image.shape}; they must share one voxel grid")
        path = save_nifti(label_path(folder, case_id), label, affine, label=True, header=case.header)
        entry["label"] = f"./labelsTr/{path.name}"
        entry["label_sha256"] = sha256_file(path)
        entry["label_values"] = [int(value) for value in np.unique(label)]
    return entry


def dataset_json(info: DatasetInfo, case_ids: Sequence[str], spatial_dims: int, labelled: bool, label_values: Sequence[int] = (0,)) -> dict[str, Any]:
    """Build a ``dataset.json`` that reads as an MSD dataset and as an nnU-Net v2 raw dataset.

    Labels use nnU-Net v2's form ``{"background": 0, ...}``, which
    ``MSDDataset`` also reads. Classes without a unique name get ``class_<value>``.
    Without ``info.labels``, the classes are 0 to the largest of ``label_values``,
    because nnU-Net requires consecutive class values.
    """
    labels = info.labels
    if labels is None:
        labels = {value: ("background" if value == 0 else f"class_{value}") for value in range(max(label_values, default=0) + 1)}
    if 0 not in labels:
        raise GanError(f"labels of dataset {info.name!r} must declare class 0 (background), got {dict(labels)}")
    undeclared = sorted(set(label_values) - set(labels))
    if undeclared:
        raise GanError(f"synthetic label maps contain values {undeclared} that dataset {info.name!r} does not declare in {dict(labels)}")
    names: dict[str, int] = {}
    for value, name in sorted(labels.items()):
        name = str(name) if str(name) and str(name) not in names else f"class_{value}"
        names[name] = int(value)

    training = []
    for case_id in case_ids:
        entry = {"image": f"./imagesTr/{case_id}{FILE_ENDING}"}
        if labelled:
            entry["label"] = f"./labelsTr/{case_id}{FILE_ENDING}"
        training.append(entry)
    return {
        "name": info.name,
        "description": info.description,
        "tensorImageSize": f"{spatial_dims}D",
        "modality": {"0": info.channel_name},
        "channel_names": {"0": info.channel_name},
        "labels": names,
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "file_ending": FILE_ENDING,
    }


def partial_folder(output: Path) -> Path:
    """Return the folder that an export of ``output`` writes into until it is complete."""
    return output.with_name(output.name + PARTIAL_SUFFIX)


def is_finished_export(folder: Path) -> bool:
    """Return whether ``folder`` contains a finished dataset, which ``dataset.json`` marks because it is written last."""
    return (folder / "dataset.json").is_file()


def _written_by_medaug(folder: Path) -> bool:
    """A finished export that carries medaug's manifest, unlike a source dataset that only has dataset.json."""
    manifest = _read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else None
    return is_finished_export(folder) and isinstance(manifest, dict) and "provenance" in manifest


def export_dataset(
    output: str | Path,
    planned: Sequence[PlannedCase],
    generate: Callable[[PlannedCase], SyntheticCase],
    *,
    info: DatasetInfo,
    provenance: Mapping[str, Any],
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate and write every planned case into ``output``, resuming an interrupted export.

    Args:
        output: folder of the finished dataset.
        planned: the cases to write, with unique ids.
        generate: called once for each case that is not already finished.
        info: metadata for ``dataset.json``.
        provenance: JSON-serialisable values for ``manifest.json``. It must contain
            ``checkpoint_sha256``, which a finished case's record must match to be reused.
        overwrite: replace an existing ``output``. Without it, an existing finished
            export is kept: when its manifest matches the request it is returned
            unchanged, otherwise ``GanError`` is raised.
        on_progress: called after each case with the number of cases done and the total.

    Returns:
        ``output``.

    Raises:
        GanError: when ``output`` exists and may not be replaced, another export is
            writing into the same partial folder, or a case is invalid.
    """
    output = Path(output)
    _check_plan(planned)
    if "checkpoint_sha256" not in provenance:
        raise GanError("provenance must contain 'checkpoint_sha256', the SHA-256 of the generator checkpoint")
    provenance = _plain(provenance)
    if _existing_output_matches(output, planned, provenance, overwrite):
        logger.info("%s is already a finished export of the same checkpoint, cases and seeds; kept it", output)
        return output

    partial = partial_folder(output)
    partial.mkdir(parents=True, exist_ok=True)
    with _exclusive(partial):
        # A dataset.json left from an earlier finished run would make the
        # folder look complete while its cases are being replaced.
        (partial / "dataset.json").unlink(missing_ok=True)
        finished = _finished_records(partial, planned, provenance["checkpoint_sha256"])
        _remove_unfinished_files(partial, planned, finished)
        for case_id, record in finished.items():
            # Records read from an interrupted run's manifest.json must outlive its removal below.
            if not (partial / RECORDS_FOLDER / f"{case_id}.json").is_file():
                write_json(partial / RECORDS_FOLDER / f"{case_id}.json", record)
        (partial / "manifest.json").unlink(missing_ok=True)
        if finished:
            logger.info("resuming %s: %d of %d cases already written", partial, len(finished), len(planned))

        records = []
        for case in planned:
            record = finished.get(case.case_id)
            if record is None:
                record = _write_planned_case(partial, case, generate(case), provenance["checkpoint_sha256"])
            records.append(record)
            if on_progress is not None:
                on_progress(len(records), len(planned))

        _finish(partial, output, records, info, provenance, overwrite)
    logger.info("wrote %d cases to %s", len(records), output)
    return output


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} value {value!r} in manifest.json")


def _plain(value: Any) -> Any:
    """Convert ``value`` to what JSON reads back: tuples, arrays and tensors become lists, keys become strings."""
    return json.loads(json.dumps(value, sort_keys=True, default=_json_value))


def _check_plan(planned: Sequence[PlannedCase]) -> None:
    if not planned:
        raise GanError("nothing to export: the list of cases is empty")
    seen: set[str] = set()
    for case in planned:
        if not _CASE_ID.fullmatch(case.case_id):
            raise GanError(f"invalid output case id {case.case_id!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit")
        if case.case_id in seen:
            raise GanError(f"output case id {case.case_id!r} appears more than once")
        seen.add(case.case_id)


def _existing_output_matches(output: Path, planned: Sequence[PlannedCase], provenance: dict[str, Any], overwrite: bool) -> bool:
    """Check that ``output`` may be written, and return True when it already contains this exact export."""
    if output.exists() and not output.is_dir():
        raise GanError(f"output {output} is a file; give a folder for the synthetic dataset")
    if not output.exists():
        return False
    if overwrite:
        # --overwrite replaces an earlier export only: a folder of anything else (the
        # source dataset, a project folder) would be deleted with it.
        if any(output.iterdir()) and not _written_by_medaug(output):
            raise GanError(
                f"output {output} is not a synthetic export written by medaug (no dataset.json and manifest.json), so "
                "--overwrite will not replace it; choose a new or empty output folder"
            )
        return False
    if is_finished_export(output):
        manifest = _read_json(output / "manifest.json")
        if manifest is not None and _manifest_matches(manifest, planned, provenance):
            return True
        raise GanError(f"output {output} already contains a dataset from other settings; pass --overwrite to replace it, or choose another output folder")
    if any(output.iterdir()):
        raise GanError(f"output {output} exists, is not empty and is not a finished export (no dataset.json); choose a new or empty output folder")
    return False


def _manifest_matches(manifest: dict[str, Any], planned: Sequence[PlannedCase], provenance: dict[str, Any]) -> bool:
    if not isinstance(manifest.get("provenance"), dict) or manifest["provenance"].get("checkpoint_sha256") != provenance["checkpoint_sha256"]:
        return False
    stored = manifest.get("cases", [])
    return [_record_key(record) for record in stored] == [case.key() for case in planned]


def _record_key(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in ("case_id", "source_case", "seed", "settings")}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def _exclusive(partial: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``partial`` so two exports never write into it at once."""
    try:
        import fcntl
    except ImportError:  # NOTE: no lock on Windows; two exports into one folder there can mix files.
        yield
        return
    lock_path = partial / ".lock"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise GanError(f"another export is writing into {partial}; wait for it to finish or choose another output folder") from error
        yield


def _finished_records(partial: Path, planned: Sequence[PlannedCase], checkpoint_sha256: str) -> dict[str, dict[str, Any]]:
    """Find the records of finished cases in ``partial`` that match the plan and whose files still match their hashes."""
    stored: dict[str, dict[str, Any]] = {}
    manifest = _read_json(partial / "manifest.json")
    if isinstance(manifest, dict):
        # A run killed after writing manifest.json has already removed the per-case records.
        for record in manifest.get("cases", []):
            if isinstance(record, dict) and "case_id" in record:
                stored[str(record["case_id"])] = record
    records_folder = partial / RECORDS_FOLDER
    if records_folder.is_dir():
        for path in sorted(records_folder.glob("*.json")):
            record = _read_json(path)
            if isinstance(record, dict) and "case_id" in record:
                stored[str(record["case_id"])] = record

    finished = {}
    for case in planned:
        record = stored.get(case.case_id)
        if record is None or _record_key(record) != case.key() or record.get("checkpoint_sha256") != checkpoint_sha256:
            continue
        if _files_intact(partial, record):
            finished[case.case_id] = record
    return finished


def _files_intact(partial: Path, record: Mapping[str, Any]) -> bool:
    for kind in ("image", "label"):
        if kind not in record:
            continue
        path = partial / record[kind]
        if not path.is_file() or sha256_file(path) != record.get(f"{kind}_sha256"):
            return False
    return True


def _remove_unfinished_files(partial: Path, planned: Sequence[PlannedCase], finished: Mapping[str, dict[str, Any]]) -> None:
    """Delete files of cases that are not finished, temporary files of killed writes, and stale records."""
    for path in partial.glob(".*.tmp"):
        path.unlink()
    keep = {(partial / record[kind]).resolve() for record in finished.values() for kind in ("image", "label") if kind in record}
    for subfolder in ("imagesTr", "labelsTr"):
        folder = partial / subfolder
        if folder.is_dir():
            for path in folder.iterdir():
                if path.resolve() not in keep:
                    path.unlink()
    records_folder = partial / RECORDS_FOLDER
    if records_folder.is_dir():
        for path in records_folder.iterdir():
            if path.name.removesuffix(".json") not in finished or not path.name.endswith(".json"):
                path.unlink()


def _write_planned_case(partial: Path, case: PlannedCase, synthetic: SyntheticCase, checkpoint_sha256: str) -> dict[str, Any]:
    record = {**case.key(), "checkpoint_sha256": checkpoint_sha256, **write_case(partial, case.case_id, synthetic)}
    if synthetic.parameters:
        record["parameters"] = _plain(synthetic.parameters)
    # The record is written after both files, so it marks the case finished.
    write_json(partial / RECORDS_FOLDER / f"{case.case_id}.json", record)
    return record


def _finish(partial: Path, output: Path, records: list[dict[str, Any]], info: DatasetInfo, provenance: dict[str, Any], overwrite: bool) -> None:
    dims = {len(record["shape"]) for record in records}
    if len(dims) != 1:
        raise GanError(f"synthetic cases mix 2D and 3D images ({sorted(dims)}); export them as separate datasets")
    labelled = {"label" in record for record in records}
    if len(labelled) != 1:
        missing = [record["case_id"] for record in records if "label" not in record]
        raise GanError(f"cases {missing[:5]} have no label map while others have one; give every case a label or none")

    manifest = {"version": MANIFEST_VERSION, "provenance": provenance, "dataset": {"name": info.name, "channel_name": info.channel_name}, "cases": records}
    write_json(partial / "manifest.json", manifest)
    shutil.rmtree(partial / RECORDS_FOLDER, ignore_errors=True)
    label_values = sorted({value for record in records for value in record.get("label_values", [])})
    write_json(partial / "dataset.json", dataset_json(info, [record["case_id"] for record in records], dims.pop(), labelled.pop(), label_values))
    (partial / ".lock").unlink(missing_ok=True)

    replaced = output.with_name(output.name + REPLACED_SUFFIX)
    if replaced.exists():
        shutil.rmtree(replaced)
    if output.exists():
        # Only reached with overwrite=True or for an empty folder (checked before generating).
        if not overwrite and any(output.iterdir()):
            raise GanError(f"output {output} appeared while exporting; the export is complete in {partial}, rename it yourself")
        os.replace(output, replaced)
    os.replace(partial, output)
    shutil.rmtree(replaced, ignore_errors=True)


# Sampling with a conditional generator and translation with a CycleGAN generator.

CHANNEL_NAMES = {"ct": "CT", "mr": "MRI", "zscore": "MRI"}


@dataclass
class _Source:
    """Loaded source image: the array in the file's voxel order, its affine and its header as a template."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header


def _load_generator_of_kind(checkpoint: Path, kind: str, command: str, device: str | None) -> tuple[torch.nn.Module, dict[str, Any], str]:
    generator, config = load_generator(checkpoint, map_location=device or "cpu")
    if config["kind"] != kind:
        other = "translate" if config["kind"] == "cyclegan" else "sample"
        raise GanError(f"{checkpoint} contains a {config['kind']} generator, but `gan {command}` needs a {kind} generator; use `gan {other}` with it")
    return generator, config, sha256_file(checkpoint)


def _read_source(path: Path, channel: int = 0) -> _Source:
    array, affine = load_nifti(path)
    if array.ndim == 4:
        if not 0 <= channel < array.shape[-1]:
            raise DataError(f"image {path} has {array.shape[-1]} channels on its last axis; channel {channel} does not exist")
        array = array[..., channel]
    if array.ndim not in (2, 3):
        raise DataError(f"image {path} has shape {array.shape}; expected a 2D or 3D volume, or 4D with channels last")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DataError(f"image {path} contains NaN, infinite or non-numeric voxels; fix or leave out this case")
    return _Source(np.asarray(array), affine, nib.load(str(path)).header)


def _read_labels(path: Path, shape: tuple[int, ...], classes: set[int] | None) -> np.ndarray:
    array, _ = load_nifti(path)
    if array.shape != shape:
        raise DataError(f"label map {path} has shape {array.shape} but its image has {shape}; they must share one voxel grid")
    return label_to_integer(array, path, classes)


def _source_volumes(source: str | Path, *, channel: int, labels: str | None, mask: str | None, cases: Sequence[str] | None, need_labels: bool) -> list[VolumeFiles]:
    volumes = select_cases(find_volumes(source, channel=channel, labels=labels, mask=mask), cases, source)
    unlabelled = [volume.case_id for volume in volumes if volume.label is None]
    if need_labels and unlabelled:
        raise DataError(
            f"cases {unlabelled[:5]} of {source} have no label map; give a labelled dataset folder, "
            "or a label file template (--labels) for a folder or pattern"
        )
    return volumes


def _source_info(source: str | Path, channel: int) -> tuple[dict[int, str] | None, str | None]:
    """Read the class names and the channel's modality from a source ``dataset.json``, when there is one."""
    folder = Path(source)
    if not (folder / "dataset.json").is_file():
        return None, None
    dataset = MSDDataset(folder)
    channels = dataset.metadata.get("channel_names") or dataset.metadata.get("modality") or {}
    return dict(dataset.classes), channels.get(str(channel)) if isinstance(channels, dict) else None


def _augment_labels(labels: np.ndarray, affine: np.ndarray, pipeline: Pipeline, seed: int) -> tuple[np.ndarray, list[Any]]:
    """Deform a label map with the pipeline's spatial transforms; return it and the sampled parameters."""
    label = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))[None, None]
    spacing = spacing_from_affine(affine)[: labels.ndim]
    batch = {"image": torch.zeros(label.shape, dtype=torch.float32), "label": label, "spacing": torch.as_tensor(spacing, dtype=torch.float64)[None]}
    augmented = pipeline(batch, derive_generator(seed))
    return augmented["label"][0, 0].numpy().astype(np.int64), augmented["augmentation"]


def sample_dataset(
    checkpoint: str | Path,
    label_dataset: str | Path,
    output: str | Path,
    *,
    per_case: int = 1,
    strategy: str | Mapping[str, Any] | None = None,
    seed: int = 0,
    cases: Sequence[str] | None = None,
    labels: str | None = None,
    stochastic: bool = False,
    name: str | None = None,
    channel_name: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write new image/label pairs generated by a conditional generator from label maps.

    Args:
        checkpoint: ``generator.pt`` of ``train_conditional``.
        label_dataset: source of the label maps: a dataset folder, or a folder or
            glob pattern of images with ``labels`` naming each one's label file.
        output: folder of the synthetic dataset.
        per_case: outputs per source case (draws 0 .. per_case - 1).
        strategy: augmentation strategy (preset name, YAML file or mapping) whose
            spatial transforms deform each label map before generating. ``None``
            keeps the label maps, so each output is co-registered with its source case.
        seed: base seed; each output's seed is ``case_seed(seed, source case, draw)``.
        cases: source case ids to use (all when ``None``).
        labels: label file template for folders and patterns (see ``gan.slices``).
        stochastic: keep the generator's dropout active, so draws of one label map differ.
        name: dataset name (default: the output folder's name).
        channel_name: image channel name (default: the source dataset's, else from the intensity mapping).
        batch_size: slices per generator call.
        device: ``"cpu"``, ``"cuda"``, ...; default CPU.
        overwrite, on_progress: see ``export_dataset``.

    Returns:
        ``output``.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    if per_case < 1:
        raise GanError(f"per_case must be at least 1, got {per_case}")
    generator, config, digest = _load_generator_of_kind(checkpoint, "conditional", "sample", device)
    volumes = _source_volumes(label_dataset, channel=0, labels=labels, mask=None, cases=cases, need_labels=True)
    classes, source_channel = _source_info(label_dataset, 0)

    pipeline = None
    strategy_settings = None
    if strategy is not None:
        strategy_settings = strategy_config(strategy)
        pipeline = build_strategy(strategy_settings)
        if not pipeline.spatial:
            logger.warning("strategy %s has no spatial transforms; the label maps are used unchanged", strategy)
            pipeline = None
    if per_case > 1 and pipeline is None and not stochastic and not int(config.get("noise_channels", 0)):
        logger.warning("the %d draws of each case will be identical: no spatial augmentation, no dropout (--stochastic) and no noise channels", per_case)

    settings = {"strategy": strategy_settings, "stochastic": stochastic}
    planned = [
        PlannedCase(f"{volume.case_id}_synth{draw:03d}", volume.case_id, case_seed(seed, volume.case_id, draw), {**settings, "draw": draw})
        for volume in volumes
        for draw in range(per_case)
    ]
    by_case = {volume.case_id: volume for volume in volumes}

    def generate(case: PlannedCase) -> SyntheticCase:
        files = by_case[case.source_case]
        source = _read_source(files.image)
        label_map = _read_labels(files.label, source.array.shape, set(classes) if classes else None)
        parameters: dict[str, Any] = {}
        if pipeline is not None:
            label_map, parameters["augmentation"] = _augment_labels(label_map, source.affine, pipeline, case.seed)
        image, label_map = generate_from_labels(generator, label_map, config, seed=case.seed, stochastic=stochastic, batch_size=batch_size, device=device)
        return SyntheticCase(image, label_map, source.affine, source.header, parameters)

    provenance = {
        "command": "sample",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": digest,
        "kind": config["kind"],
        "direction": config.get("direction"),
        "intensity": config.get("intensity"),
        "generator_train_cases": config.get("train_cases"),
        "source": str(label_dataset),
        "seed": seed,
        "per_case": per_case,
        "strategy": strategy_settings,
        "stochastic": stochastic,
    }
    info = DatasetInfo(
        name or output.name,
        channel_name or source_channel or CHANNEL_NAMES.get(str(config.get("intensity", {}).get("name")), "MRI"),
        classes,
        f"Synthetic images generated by a conditional GAN from the label maps of {label_dataset} (medaug gan sample)",
    )
    return export_dataset(output, planned, generate, info=info, provenance=provenance, overwrite=overwrite, on_progress=on_progress)


def translate_dataset(
    checkpoint: str | Path,
    dataset: str | Path,
    output: str | Path,
    *,
    channel: int = 0,
    labels: str | None = None,
    mask: str | None = None,
    cases: Sequence[str] | None = None,
    seed: int = 0,
    name: str | None = None,
    channel_name: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Translate every case of a labelled domain-A dataset into domain B; labels are copied unchanged.

    Args:
        checkpoint: ``generator_AB.pt`` (or ``generator_BA.pt``) of ``train_cyclegan``.
        dataset: domain-A cases: a dataset folder, a folder of NIfTI files or a glob pattern.
        output: folder of the synthetic dataset.
        channel: modality index of multi-channel cases.
        labels: label file template for folders and patterns (see ``gan.slices``).
        mask: mask file template; MR percentiles of the input are fitted inside it,
            as training does for a domain with a mask.
        cases: case ids to translate (all when ``None``).
        seed: base seed recorded per case and used to seed torch before each case.
        name, channel_name, batch_size, device, overwrite, on_progress: as in ``sample_dataset``;
            the channel name defaults to one derived from the output intensity mapping.

    Returns:
        ``output``.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    generator, config, digest = _load_generator_of_kind(checkpoint, "cyclegan", "translate", device)
    volumes = _source_volumes(dataset, channel=channel, labels=labels, mask=mask, cases=cases, need_labels=True)
    classes, _ = _source_info(dataset, channel)

    planned = [PlannedCase(f"{volume.case_id}_synth", volume.case_id, case_seed(seed, volume.case_id), {"channel": channel}) for volume in volumes]
    by_case = {volume.case_id: volume for volume in volumes}

    def generate(case: PlannedCase) -> SyntheticCase:
        files = by_case[case.source_case]
        source = _read_source(files.image, files.channel)
        label_map = _read_labels(files.label, source.array.shape, set(classes) if classes else None)
        foreground = None
        if files.mask is not None:
            foreground = load_nifti(files.mask)[0] > 0
        torch.manual_seed(case.seed)
        image = translate_volume(generator, config, source.array, batch_size=batch_size, mask=foreground, device=device)
        return SyntheticCase(image, label_map, source.affine, source.header)

    provenance = {
        "command": "translate",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": digest,
        "kind": config["kind"],
        "direction": config.get("direction"),
        "intensity": config.get("intensity"),
        "input_intensity": config.get("input_intensity"),
        "generator_train_cases": config.get("train_cases"),
        "generator_train_cases_b": config.get("train_cases_b"),
        "source": str(dataset),
        "channel": channel,
        "seed": seed,
    }
    info = DatasetInfo(
        name or output.name,
        channel_name or CHANNEL_NAMES.get(str(config.get("intensity", {}).get("name")), "MRI"),
        classes,
        f"Synthetic images translated {config.get('direction')} by a CycleGAN from {dataset} (medaug gan translate); labels copied",
    )
    return export_dataset(output, planned, generate, info=info, provenance=provenance, overwrite=overwrite, on_progress=on_progress)
