"""``medaug segment``: train one run from a configuration, predict label maps with it, and evaluate them against references."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import lightning as L
import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, track

from .checkpoint import load_checkpoint
from .data.io import label_to_integer, load_nifti, save_nifti, spacing_from_affine
from .data.msd import MSDDataset
from .data.normalize import normalize_intensity
from .data.png import read_pixel_spacing, read_png_image, resample_to_spacing, resize_labels, save_label_png
from .errors import DataError
from .files import write_csv
from .inference import predict_labels
from .metrics import dice_per_class, hd95_per_class, mean_over_cases
from .slices import predict_slices
from .train_config import find_config_file, load_train_config
from .training import COMPLETION_MARKER, train_from_config

logger = logging.getLogger(__name__)
console = Console(stderr=True)

app = typer.Typer(help="Train one run, predict with a trained run and evaluate predictions.", no_args_is_help=True)

NIFTI = ".nii.gz"
PNG = ".png"


def _read_case_list(path: Path) -> list[str]:
    """Case ids from a run's ``config.json`` (its validation cases) or a text file, one id per line."""
    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    if path.suffix == ".json":
        config = json.loads(path.read_text())
        if "val_cases" not in config:
            raise DataError(f"{path} has no 'val_cases'; give a run's config.json or a text file of case ids")
        cases = list(config["val_cases"])
    else:
        cases = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not cases:
        raise DataError(f"case list {path} is empty; list one case id per line")
    return cases


def _case_files(folder: Path) -> dict[str, list[Path]]:
    """Image files of a plain folder by case id; ``case_0000.nii.gz``-style channel files are grouped."""
    by_case: dict[str, list[Path]] = {}
    for path in sorted(folder.glob(f"*{NIFTI}")):
        case_id = path.name[: -len(NIFTI)]
        if len(case_id) > 5 and case_id[-5] == "_" and case_id[-4:].isdigit():
            case_id = case_id[:-5]
        by_case.setdefault(case_id, []).append(path)
    return by_case


def iter_images(source: Path, cases: list[str] | None) -> Iterator[tuple[str, np.ndarray, np.ndarray, Path]]:
    """Yield ``(case id, normalised (C, *S) image, affine, first image file)`` from a dataset or plain folder."""
    if (source / "dataset.json").is_file():
        dataset = MSDDataset(source)
        for case_id in cases or [c.case_id for c in dataset.cases]:
            case = dataset.load(case_id)
            yield case_id, case.image, case.affine, dataset.case_files(case_id).images[0]
        return
    if not source.is_dir():
        raise DataError(f"input folder not found: {source}")
    files = _case_files(source)
    if not files:
        raise DataError(f"no {NIFTI} images in {source}")
    missing = sorted(set(cases or []) - set(files))
    if missing:
        raise DataError(f"cases {missing[:5]} have no image in {source}")
    for case_id in cases or sorted(files):
        arrays = [load_nifti(path) for path in files[case_id]]
        image = np.stack([array for array, _ in arrays])
        if not np.all(np.isfinite(image)):
            raise DataError(f"image {files[case_id][0]} contains NaN or infinite voxels")
        yield case_id, normalize_intensity(image), arrays[0][1], files[case_id][0]


class _StepProgress(L.Callback):
    """Shows a progress bar of training steps once training starts (cases are loaded by then)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.task = self.progress.add_task("training steps", total=trainer.max_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.progress.update(self.task, completed=trainer.global_step)


@app.command("train")
def train_command(
    config: Annotated[str, typer.Argument(help="Run configuration YAML file, or the name of one shipped in segment/configs, such as hippocampus-unet.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for results; the run writes <output>/<run id>/.")] = Path("results"),
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder that contains the datasets; default: $MEDAUG_DATA.")] = None,
) -> None:
    """Train and validate one run from a configuration file, or report it if it has finished before."""
    config_path = find_config_file(config)
    run_config = load_train_config(config_path)
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output} is a file; give a folder for the results")
    # Lightning announces hardware and tips on every run; keep the display to progress and results.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        run_dir, metrics, trained = train_from_config(
            run_config, config_path=config_path, output_dir=output, data_root=data_root, callbacks=[_StepProgress(progress)]
        )

    if not trained:
        console.print(f"run already finished earlier; delete {run_dir} to train it again", soft_wrap=True)
    console.print(f"run folder: {run_dir}", soft_wrap=True)
    console.print(
        f"metrics: {run_dir / COMPLETION_MARKER}: mean foreground Dice {metrics['dice_mean']:.4f} ± {metrics['dice_std']:.4f}, "
        f"mean HD95 {metrics['hd95_mean']:.2f} mm, over {metrics['val_cases']} validation cases",
        soft_wrap=True,
    )


def _is_png_folder(source: Path) -> bool:
    """Return whether ``source`` is a plain folder (no dataset.json) with PNG files and no NIfTI images."""
    if not source.is_dir() or (source / "dataset.json").is_file():
        return False
    return any(source.glob(f"*{PNG}")) and not any(source.glob(f"*{NIFTI}"))


def _run_target_spacing(checkpoint: Path) -> float | None:
    """Return ``dataset.target_spacing`` of the PNG run whose ``config.json`` is beside ``checkpoint``, if any."""
    config_path = checkpoint.parent / "config.json"
    if not config_path.is_file():
        return None
    dataset = json.loads(config_path.read_text()).get("dataset")
    if isinstance(dataset, dict) and dataset.get("format") == "png":
        return dataset.get("target_spacing")
    return None


def iter_png_images(
    source: Path, cases: list[str] | None, *, mask_suffix: str, spacing_csv: Path | None, target_spacing: float | None
) -> Iterator[tuple[str, np.ndarray, tuple[int, int]]]:
    """Yield ``(case id, normalised (1, X, Y) image at the model's pixel size, source shape)`` for a folder of PNG images.

    Files whose name ends with ``<mask_suffix>.png`` are masks and are skipped.
    With ``target_spacing``, each image is resampled from its pixel size in
    ``spacing_csv`` as in training.
    """
    files = {path.stem: path for path in sorted(source.glob(f"*{PNG}")) if not path.stem.endswith(mask_suffix)}
    if not files:
        raise DataError(f"no {PNG} images in {source} (files ending in {mask_suffix}{PNG} are masks)")
    missing = sorted(set(cases or []) - set(files))
    if missing:
        raise DataError(f"cases {missing[:5]} have no image in {source}")
    spacing = None
    if target_spacing is not None:
        if spacing_csv is None:
            raise DataError(
                f"the model was trained on {target_spacing} mm pixels, so PNG inputs need --spacing-csv "
                "(image file name, pixel size in mm) to be resampled; or pass --target-spacing"
            )
        spacing = read_pixel_spacing(spacing_csv)

    for case_id in cases or sorted(files):
        path = files[case_id]
        image = read_png_image(path)
        shape = image.shape
        if spacing is not None:
            if path.name not in spacing:
                raise DataError(f"{spacing_csv} gives no pixel size for {path.name}; add a row for it")
            if spacing[path.name] <= 0:
                raise DataError(f"{spacing_csv}: pixel size of {path.name} must be positive, got {spacing[path.name]}")
            image, _, _ = resample_to_spacing(image, None, spacing[path.name], target_spacing)
        yield case_id, normalize_intensity(image[None]), shape


def _predictor(net, hparams: dict, window: list[int] | None, overlap: float, tta: bool):
    """Function from a ``(C, *S)`` image to its label map ``(*S)``: slice by slice for 3D inputs of a slice-trained model."""
    slice_axis = hparams.get("slice_axis")

    def predict(image: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(image))[None]
        with torch.no_grad():
            if slice_axis is not None and batch.ndim == 5:
                labels = predict_slices(
                    net, batch, net.divisor, axis=slice_axis, context=hparams.get("slice_context", 0), patch_size=window, overlap=overlap, flip_tta=tta
                )
            else:
                labels = predict_labels(net, batch, net.divisor, patch_size=window, overlap=overlap, flip_tta=tta)
        return labels[0].numpy()

    return predict


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="A run's model.pt.")],
    source: Annotated[Path, typer.Argument(help="Decathlon dataset folder (with dataset.json), a folder of NIfTI images, or a folder of PNG images.")],
    output: Annotated[Path, typer.Argument(help="Folder for the predicted label maps, one <case id>.nii.gz or <case id>.png each.")],
    cases: Annotated[Optional[Path], typer.Option(help="Only these cases: a run's config.json (its validation cases) or a text file of ids.")] = None,
    patch_size: Annotated[Optional[str], typer.Option(help="Predict with Gaussian-weighted sliding windows of this size in voxels, e.g. 32,48,32 (in-plane for 2D models); default: the whole image at once.")] = None,
    overlap: Annotated[float, typer.Option(help="Overlap of neighbouring sliding windows, as a fraction of the window.")] = 0.5,
    tta: Annotated[bool, typer.Option("--tta", help="Average the softmax over all axis flips (test-time augmentation).")] = False,
    output_format: Annotated[Optional[str], typer.Option("--format", help="nifti or png (8-bit class indices, 2D only); default: png for a folder of PNG images, else nifti.")] = None,
    spacing_csv: Annotated[Optional[Path], typer.Option(help="PNG inputs: CSV of image file name and pixel size in mm, to resample images to the training pixel size.")] = None,
    target_spacing: Annotated[Optional[float], typer.Option(help="PNG inputs: pixel size in mm the model was trained at; default: dataset.target_spacing in the run's config.json beside the checkpoint.")] = None,
    mask_suffix: Annotated[str, typer.Option(help="PNG inputs: files ending in <suffix>.png are masks and are not predicted.")] = "_Annotation",
) -> None:
    """Predict label maps: NIfTI files carry each source image's affine, PNG files the source image's size."""
    net, hparams = load_checkpoint(checkpoint)
    case_ids = _read_case_list(cases) if cases else None
    window = _parse_patch_size(patch_size, net.spatial_dims)
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"--overlap must be in [0, 1), got {overlap}")
    if target_spacing is not None and target_spacing <= 0:
        raise DataError(f"--target-spacing must be a positive pixel size in mm, got {target_spacing}")
    png_input = _is_png_folder(source)
    input_folders = {source.resolve(), (source / "imagesTr").resolve()}
    if output.resolve() in input_folders:
        raise DataError(f"output {output} is the folder of the input images; predictions would replace them, so choose another output folder")
    if png_input and net.spatial_dims != 2:
        raise DataError(f"{checkpoint} is a {net.spatial_dims}D model and {source} contains 2D PNG images; use a model trained on 2D images")
    output_format = output_format or ("png" if png_input else "nifti")
    if output_format not in ("nifti", "png"):
        raise DataError(f"--format must be nifti or png, got {output_format!r}")
    if png_input and output_format != "png":
        raise DataError(f"{source} contains PNG images, which have no affine to write NIfTI label maps with; use --format png")
    if output_format == "png" and hparams["num_classes"] > 256:
        raise DataError(f"the model predicts {hparams['num_classes']} classes, more than 8-bit PNG values hold; use --format nifti")
    predict = _predictor(net, hparams, window, overlap, tta)

    written = 0
    if png_input:
        spacing = target_spacing if target_spacing is not None else _run_target_spacing(checkpoint)
        images = list(iter_png_images(source, case_ids, mask_suffix=mask_suffix, spacing_csv=spacing_csv, target_spacing=spacing))
        for case_id, image, shape in track(images, description="predicting", console=console):
            save_label_png(output / f"{case_id}{PNG}", resize_labels(predict(image), shape))
            written += 1
    else:
        for case_id, image, affine, _ in track(list(iter_images(source, case_ids)), description="predicting", console=console):
            labels = predict(image)
            if output_format == "png":
                if labels.ndim != 2:
                    raise DataError(f"--format png writes 2D label maps, but case {case_id} is {labels.ndim}D; use --format nifti")
                save_label_png(output / f"{case_id}{PNG}", labels)
            else:
                save_nifti(output / f"{case_id}{NIFTI}", labels, affine, label=True)
            written += 1
    console.print(f"wrote {written} label maps to {output}")


def _parse_patch_size(text: str | None, spatial_dims: int) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise DataError(f"--patch-size must be whole numbers separated by commas, e.g. 32,48,32; got {text!r}") from error
    if any(size < 1 for size in sizes) or len(sizes) != spatial_dims:
        raise DataError(f"--patch-size needs {spatial_dims} positive sizes for this model, got {text!r}")
    return sizes


def _reference_labels(reference: Path) -> tuple[dict[str, Path], set[int] | None]:
    if (reference / "dataset.json").is_file():
        dataset = MSDDataset(reference)
        return {c.case_id: c.label for c in dataset.cases if c.label is not None}, set(dataset.classes)
    if not reference.is_dir():
        raise DataError(f"reference folder not found: {reference}")
    return {path.name[: -len(NIFTI)]: path for path in sorted(reference.glob(f"*{NIFTI}"))}, None


@app.command("evaluate")
def evaluate_command(
    predictions: Annotated[Path, typer.Argument(help="Folder of predicted <case id>.nii.gz label maps.")],
    reference: Annotated[Path, typer.Argument(help="Decathlon dataset folder (labels from dataset.json) or a folder of reference label maps.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Per-case CSV to write.")] = Path("per_case.csv"),
) -> None:
    """Score every prediction against its reference: Dice per case and class, then the mean over cases."""
    if not predictions.is_dir():
        raise DataError(f"predictions folder not found: {predictions}")
    references, declared = _reference_labels(reference)
    predicted = {path.name[: -len(NIFTI)]: path for path in sorted(predictions.glob(f"*{NIFTI}"))}
    if not predicted:
        raise DataError(f"no {NIFTI} label maps in {predictions}")
    unmatched = sorted(set(predicted) - set(references))
    if unmatched:
        raise DataError(f"predictions {unmatched[:5]} have no reference in {reference}")

    rows = []
    for case_id, path in predicted.items():
        prediction, prediction_affine = load_nifti(path)
        truth, truth_affine = load_nifti(references[case_id])
        if prediction.shape != truth.shape:
            raise DataError(f"prediction {path} has shape {prediction.shape} but reference {references[case_id]} has {truth.shape}")
        if not np.allclose(prediction_affine, truth_affine, atol=1e-4):
            raise DataError(f"prediction {path} and reference {references[case_id]} have different affines")
        truth = label_to_integer(truth, references[case_id], declared)
        prediction = label_to_integer(prediction, path)
        # Without dataset.json, score every class found in either map, so false
        # positives of a class absent from the reference count as Dice 0.
        found = set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())
        classes = sorted(declared - {0}) if declared else sorted(found - {0})
        predicted_tensor, truth_tensor = torch.from_numpy(prediction), torch.from_numpy(truth)
        dice = dice_per_class(predicted_tensor, truth_tensor, classes)
        hd95 = hd95_per_class(predicted_tensor, truth_tensor, classes, spacing_from_affine(truth_affine)[: truth.ndim].tolist())
        row = {"case_id": case_id, **{f"dice_{c}": v for c, v in dice.items()}}
        row["dice_mean"] = float(np.mean(list(dice.values()))) if dice else float("nan")
        row.update({f"hd95_{c}": v for c, v in hd95.items()})
        row["hd95_mean"] = float(np.mean(list(hd95.values()))) if hd95 else float("nan")
        rows.append(row)

    write_csv(output, rows)
    mean, std, count = mean_over_cases([row["dice_mean"] for row in rows])
    hd95_mean = mean_over_cases([row["hd95_mean"] for row in rows])[0]
    console.print(f"mean foreground Dice {mean:.4f} ± {std:.4f}, mean HD95 {hd95_mean:.2f} mm, over {count} cases; per case: {output}")
