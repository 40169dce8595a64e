"""``medaug gan``: train GANs, write synthetic datasets with them, and score those datasets.

Dataset arguments are paths, or names under the data root (``--data-root`` or
``$MEDAUG_DATA``) such as ``Task04_Hippocampus`` or
``BraTS2015-examples/train/*/Flair_subtrMeanDivStd.nii.gz``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segment.data.msd import DATA_ROOT_VARIABLE, resolve_data_root
from segment.errors import DataError

from .errors import GanError

logger = logging.getLogger(__name__)
console = Console(stderr=True)

app = typer.Typer(help="Train GANs, write synthetic datasets with them, and score those datasets.", no_args_is_help=True)
train_app = typer.Typer(help="Train a CycleGAN or a conditional GAN on 2D slices.", no_args_is_help=True)
app.add_typer(train_app, name="train")

DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help=f"Folder that contains the datasets; default: ${DATA_ROOT_VARIABLE}.")]
Threads = Annotated[Optional[int], typer.Option(help="Torch CPU threads; default: torch's choice.")]
Seed = Annotated[int, typer.Option(help="Seed of weights, slice sampling and every random draw.")]
Accelerator = Annotated[str, typer.Option(help="Lightning accelerator: auto (a GPU when present), cpu or gpu.")]
Steps = Annotated[int, typer.Option(help="Training steps; each draws --batch-size random slices.")]
Context = Annotated[int, typer.Option(help="Neighbouring slices on each side given as extra channels (2.5D); 0 is plain 2D.")]
Axis = Annotated[int, typer.Option(help="Voxel axis the 2D slices are taken across; -1 is the last.")]
GeneratorFeatures = Annotated[int, typer.Option(help="Width (channels) of the generator's first layer.")]
DiscriminatorFeatures = Annotated[int, typer.Option(help="Width (channels) of the discriminator's first layer.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output dataset.")]
Device = Annotated[str, typer.Option(help="Where the generator runs: cpu, cuda, cuda:1, ...")]
BatchSize = Annotated[int, typer.Option(help="Slices per generator call.")]
GeneratorOptions = Annotated[
    Optional[list[str]],
    typer.Option("--generator-option", help="Further generator setting as KEY=VALUE (VALUE read as JSON), e.g. depth=4 or blocks=6; repeatable."),
]


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False, show_time=False)], force=True)
    # Lightning announces hardware and tips on every fit; keep the display to progress and results.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*treespec.*")


def _exists(path: Path) -> bool:
    return path.exists() or bool(glob.glob(str(path)))


def input_path(text: str, data_root: Path | None, description: str) -> str:
    """Return ``text`` when it names existing files, else the same path under the data root.

    Glob patterns count as existing when they match a file.

    Raises:
        DataError: naming ``text`` (and the data root searched) when neither exists.
    """
    path = Path(text).expanduser()
    if _exists(path):
        return str(path)
    root = None
    if not path.is_absolute() and (data_root is not None or os.environ.get(DATA_ROOT_VARIABLE)):
        root = resolve_data_root(data_root)
        if _exists(root / text):
            return str(root / text)
    where = f" (also looked under the data root {root})" if root else f"; give an existing path, or pass --data-root / set {DATA_ROOT_VARIABLE} to look it up there"
    raise DataError(f"{description} not found: {text}{where}")


def read_case_list(path: Path | None, key: str = "train_cases") -> list[str] | None:
    """Case ids from a text file (one per line) or from ``key`` of a JSON file such as a run's ``config.json``."""
    if path is None:
        return None
    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"case list {path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{path} has no list '{key}'; give a run's config.json or a text file of case ids")
        cases = [str(case) for case in data[key]]
    else:
        cases = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not cases:
        raise DataError(f"case list {path} is empty; list one case id per line")
    return cases


def parse_intensity(text: str, option: str) -> dict[str, Any]:
    """Read an intensity mapping option: ``ct``, ``ct:LOW,HIGH`` (HU), ``mr``, ``mr:LOWER,UPPER`` (percentiles), ``zscore`` or ``zscore:LIMIT``."""
    name, _, values = text.partition(":")
    keys = {"ct": ("low", "high"), "mr": ("lower", "upper"), "zscore": ("limit",)}
    if name not in keys:
        raise GanError(f"{option} must be ct, mr or zscore (optionally with values, e.g. ct:-1000,2000), got {text!r}")
    if not values:
        return {"name": name}
    try:
        numbers = [float(part) for part in values.split(",")]
    except ValueError as error:
        raise GanError(f"{option} {text!r}: the values after ':' must be numbers separated by commas") from error
    if len(numbers) != len(keys[name]):
        raise GanError(f"{option} {text!r}: {name} takes {len(keys[name])} value(s), {', '.join(keys[name])}")
    return {"name": name, **dict(zip(keys[name], numbers))}


def _check_device(device: str) -> str:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise GanError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise GanError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
    return device


def parse_options(items: list[str] | None, option: str) -> dict[str, Any]:
    """Read repeated ``KEY=VALUE`` options; each value is parsed as JSON, or kept as text when it is not JSON."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, separator, value = item.partition("=")
        if not separator or not key.isidentifier():
            raise GanError(f"{option} must look like KEY=VALUE (e.g. depth=4), got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as error:
        raise GanError(f"--range must be two numbers LOW,HIGH, e.g. -1000,2000; got {text!r}") from error
    if not low < high:
        raise GanError(f"--range must have LOW < HIGH, got {text!r}")
    return low, high


@contextmanager
def _case_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over cases; yields the ``on_progress(done, total)`` callback that moves it."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@train_app.command("cyclegan")
def train_cyclegan_command(
    domain_a: Annotated[str, typer.Argument(help="Domain A: dataset folder, folder of NIfTI files or quoted glob pattern.")],
    domain_b: Annotated[str, typer.Argument(help="Domain B, in the same forms.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for generator_AB.pt, generator_BA.pt and training_log.json.")],
    intensity_a: Annotated[str, typer.Option(help="Intensity mapping of domain A: ct[:LOW,HIGH] (HU window), mr[:LOWER,UPPER] (percentiles per volume) or zscore[:LIMIT].")] = "mr",
    intensity_b: Annotated[str, typer.Option(help="Intensity mapping of domain B, as --intensity-a.")] = "mr",
    channel_a: Annotated[int, typer.Option(help="Modality index of multi-channel cases of domain A.")] = 0,
    channel_b: Annotated[int, typer.Option(help="Modality index of multi-channel cases of domain B.")] = 0,
    mask_a: Annotated[Optional[str], typer.Option(help="Mask file next to each domain-A image, e.g. brainmask.nii.gz or {stem}_mask.nii.gz.")] = None,
    mask_b: Annotated[Optional[str], typer.Option(help="Mask file next to each domain-B image.")] = None,
    cases: Annotated[Optional[Path], typer.Option(help="Train only on these domain-A cases: text file of ids, or a run's config.json (train_cases).")] = None,
    cases_b: Annotated[Optional[Path], typer.Option(help="Train only on these domain-B cases, in the same forms.")] = None,
    steps: Steps = 1000,
    batch_size: Annotated[int, typer.Option(help="Slices per domain and step.")] = 1,
    image_size: Annotated[int, typer.Option(help="Training slices are cropped or padded to this size in pixels.")] = 128,
    context: Context = 0,
    generator: Annotated[str, typer.Option(help="Generator: resnet or unet.")] = "resnet",
    generator_features: GeneratorFeatures = 32,
    generator_option: GeneratorOptions = None,
    discriminator_features: DiscriminatorFeatures = 64,
    axis: Axis = -1,
    seed: Seed = 0,
    threads: Threads = None,
    accelerator: Accelerator = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train a CycleGAN between two unpaired domains on random 2D (or 2.5D) slices."""
    _configure_logging()
    from .training import Domain, train_cyclegan

    first = Domain(input_path(domain_a, data_root, "domain A"), parse_intensity(intensity_a, "--intensity-a"), channel_a, None, mask_a)
    second = Domain(input_path(domain_b, data_root, "domain B"), parse_intensity(intensity_b, "--intensity-b"), channel_b, None, mask_b)
    folder = train_cyclegan(
        first, second, output, steps=steps, batch_size=batch_size, image_size=image_size, context=context, generator=generator,
        generator_features=generator_features, generator_options=parse_options(generator_option, "--generator-option"),
        discriminator_features=discriminator_features, seed=seed, threads=threads,
        train_cases=read_case_list(cases), train_cases_b=read_case_list(cases_b), axis=axis, accelerator=accelerator,
    )
    _report_training(folder)


@train_app.command("conditional")
def train_conditional_command(
    dataset: Annotated[str, typer.Argument(help="Labelled images: dataset folder, folder of NIfTI files or quoted glob pattern (then give --labels).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for generator.pt and training_log.json.")],
    intensity: Annotated[str, typer.Option(help="Intensity mapping of the images: ct[:LOW,HIGH], mr[:LOWER,UPPER] or zscore[:LIMIT].")] = "mr",
    channel: Annotated[int, typer.Option(help="Modality index of multi-channel cases.")] = 0,
    labels: Annotated[Optional[str], typer.Option(help="Label file next to each image for folders and patterns, e.g. {stem}_seg.nii.gz.")] = None,
    mask: Annotated[Optional[str], typer.Option(help="Mask file next to each image; slices are kept by their mask coverage.")] = None,
    cases: Annotated[Optional[Path], typer.Option(help="Train only on these cases: text file of ids, or a run's config.json (train_cases).")] = None,
    steps: Steps = 1000,
    batch_size: Annotated[int, typer.Option(help="Slices per step.")] = 4,
    image_size: Annotated[int, typer.Option(help="Training slices are cropped or padded to this size in pixels.")] = 64,
    context: Context = 0,
    generator: Annotated[str, typer.Option(help="Generator: unet or resnet.")] = "unet",
    generator_features: GeneratorFeatures = 32,
    generator_option: GeneratorOptions = None,
    discriminator_features: DiscriminatorFeatures = 64,
    noise_channels: Annotated[int, typer.Option(help="Channels of Gaussian noise appended to the generator input.")] = 0,
    num_classes: Annotated[Optional[int], typer.Option(help="Label classes including background; default: from dataset.json, else the largest label plus one.")] = None,
    axis: Axis = -1,
    seed: Seed = 0,
    threads: Threads = None,
    accelerator: Accelerator = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train a conditional GAN (pix2pix) from label-map slices to image slices."""
    _configure_logging()
    from .training import Domain, train_conditional

    domain = Domain(input_path(dataset, data_root, "dataset"), parse_intensity(intensity, "--intensity"), channel, labels, mask)
    folder = train_conditional(
        domain, output, steps=steps, batch_size=batch_size, image_size=image_size, context=context, generator=generator,
        generator_features=generator_features, generator_options=parse_options(generator_option, "--generator-option"),
        discriminator_features=discriminator_features, noise_channels=noise_channels,
        num_classes=num_classes, seed=seed, threads=threads, train_cases=read_case_list(cases), axis=axis, accelerator=accelerator,
    )
    _report_training(folder)


def _report_training(folder: Path) -> None:
    log = json.loads((folder / "training_log.json").read_text())
    losses = ", ".join(f"{name} {value:.4g}" for name, value in log.get("final_losses", {}).items())
    console.print(f"trained in {log.get('wall_time_s', float('nan')):.0f} s on {log.get('device')}; final losses: {losses}", highlight=False)
    for name, digest in log.get("checkpoints", {}).items():
        console.print(f"{folder / name}  sha256 {digest}", highlight=False)


@app.command("sample")
def sample_command(
    checkpoint: Annotated[Path, typer.Argument(help="Conditional generator: the generator.pt of `gan train conditional`.")],
    label_dataset: Annotated[str, typer.Argument(help="Label maps to generate from: dataset folder, or folder / quoted glob pattern of images with --labels.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the synthetic dataset (dataset.json, imagesTr/, labelsTr/, manifest.json).")],
    per_case: Annotated[int, typer.Option(help="Synthetic cases per source label map.")] = 1,
    strategy: Annotated[Optional[str], typer.Option(help="Deform each label map first with this strategy's spatial transforms: preset (rigid, nonrigid, ...) or YAML file.")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; each output's seed derives from it, its source case and its draw.")] = 0,
    cases: Annotated[Optional[Path], typer.Option(help="Use only these source cases: text file of ids, or a run's config.json (train_cases).")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Label file next to each image for folders and patterns, e.g. {stem}_seg.nii.gz.")] = None,
    stochastic: Annotated[bool, typer.Option("--stochastic", help="Keep the generator's dropout active, so draws of one label map differ.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Dataset name in dataset.json; default: the output folder's name.")] = None,
    channel_name: Annotated[Optional[str], typer.Option(help="Image channel name in dataset.json (CT makes nnU-Net normalise globally); default: the source's.")] = None,
    batch_size: BatchSize = 16,
    device: Device = "cpu",
    overwrite: Overwrite = False,
    data_root: DataRoot = None,
) -> None:
    """Generate new image/label pairs from (optionally deformed) label maps with a conditional GAN."""
    _configure_logging()
    from .export import sample_dataset

    source = input_path(label_dataset, data_root, "label dataset")
    case_ids = read_case_list(cases)
    _check_device(device)
    with _case_progress("sampling") as on_progress:
        folder = sample_dataset(
            checkpoint, source, output, per_case=per_case, strategy=strategy, seed=seed, cases=case_ids, labels=labels, stochastic=stochastic,
            name=name, channel_name=channel_name, batch_size=batch_size, device=device, overwrite=overwrite, on_progress=on_progress,
        )
    _report_export(folder)


@app.command("translate")
def translate_command(
    checkpoint: Annotated[Path, typer.Argument(help="CycleGAN generator: generator_AB.pt or generator_BA.pt of `gan train cyclegan`.")],
    dataset_a: Annotated[str, typer.Argument(help="Labelled input-domain cases: dataset folder, or folder / quoted glob pattern of images with --labels.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the synthetic dataset (dataset.json, imagesTr/, labelsTr/, manifest.json).")],
    channel: Annotated[int, typer.Option(help="Modality index of multi-channel cases.")] = 0,
    labels: Annotated[Optional[str], typer.Option(help="Label file next to each image for folders and patterns, e.g. OTMultiClass.nii.gz.")] = None,
    mask: Annotated[Optional[str], typer.Option(help="Mask file next to each image; MR percentiles of the input are fitted inside it.")] = None,
    cases: Annotated[Optional[Path], typer.Option(help="Translate only these cases: text file of ids, or a run's config.json (train_cases).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed, recorded per case in manifest.json.")] = 0,
    name: Annotated[Optional[str], typer.Option(help="Dataset name in dataset.json; default: the output folder's name.")] = None,
    channel_name: Annotated[Optional[str], typer.Option(help="Image channel name in dataset.json; default: CT for a CT output mapping, else MRI.")] = None,
    batch_size: BatchSize = 16,
    device: Device = "cpu",
    overwrite: Overwrite = False,
    data_root: DataRoot = None,
) -> None:
    """Translate a labelled dataset into the generator's output domain; label maps are copied unchanged."""
    _configure_logging()
    from .export import translate_dataset

    source = input_path(dataset_a, data_root, "dataset")
    case_ids = read_case_list(cases)
    _check_device(device)
    with _case_progress("translating") as on_progress:
        folder = translate_dataset(
            checkpoint, source, output, channel=channel, labels=labels, mask=mask, cases=case_ids, seed=seed, name=name,
            channel_name=channel_name, batch_size=batch_size, device=device, overwrite=overwrite, on_progress=on_progress,
        )
    _report_export(folder)


def _report_export(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    provenance = manifest["provenance"]
    console.print(
        f"wrote {len(manifest['cases'])} cases to {folder} from checkpoint sha256 {provenance['checkpoint_sha256'][:12]}... ({provenance.get('direction')})",
        highlight=False,
    )


@app.command("evaluate")
def evaluate_command(
    synthetic: Annotated[Path, typer.Argument(help="Synthetic dataset folder written by `gan sample` or `gan translate`.")],
    real: Annotated[str, typer.Argument(help="Real images of the source cases: dataset folder, folder or quoted glob pattern.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, per_case.csv and samples.png.")],
    mask: Annotated[Optional[str], typer.Option(help="Voxels to score: 'label' (synthetic foreground) or a mask file next to each real image, e.g. brainmask.nii.gz; default: all.")] = None,
    intensity_range: Annotated[Optional[str], typer.Option("--range", help="LOW,HIGH in the images' units; both images are clipped to it and HIGH - LOW is the data range of PSNR and SSIM. Default: the generator's CT window or z-score limit.")] = None,
    normalise: Annotated[Optional[str], typer.Option(help="'percentiles': map each image by its own 0.5th-99.5th percentiles inside the mask to [-1, 1] before scoring, for MR without an absolute scale; excludes --range.")] = None,
    channel: Annotated[int, typer.Option(help="Modality index of multi-channel real cases.")] = 0,
    ssim: Annotated[str, typer.Option(help="SSIM per 2D slice along the last axis (2d) or in 3D (3d).")] = "2d",
    segmenter: Annotated[Optional[Path], typer.Option(help="A segmentation run's model.pt; adds the Dice of its predictions on the synthetic images against their labels.")] = None,
    grid_cases: Annotated[int, typer.Option(help="Rows of the PNG grid.")] = 4,
    device: Annotated[str, typer.Option(help="Where the segmenter runs: cpu, cuda, ...")] = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Score synthetic images against co-registered real ones (SSIM, PSNR, MAE) and by segmentation consistency."""
    _configure_logging()
    from .evaluate import SSIM_MODES, evaluate_synthetic

    if ssim not in SSIM_MODES:
        raise GanError(f"--ssim must be one of {list(SSIM_MODES)}, got {ssim!r}")
    if grid_cases < 0:
        raise GanError(f"--grid-cases must be 0 or more, got {grid_cases}")
    if not (synthetic / "dataset.json").is_file():
        raise DataError(f"{synthetic} is not a finished synthetic dataset (no dataset.json); give the folder `gan sample` or `gan translate` wrote")
    real_path = input_path(real, data_root, "real images")
    _check_device(device)

    with _case_progress("evaluating") as on_progress:
        result = evaluate_synthetic(
            synthetic, real_path, output, intensity_range=_parse_range(intensity_range), normalise=normalise, mask=mask, channel=channel,
            ssim_mode=ssim, segmenter=segmenter, grid_cases=grid_cases, device=device, on_progress=on_progress,
        )
    _report_evaluation(result, output)


def _report_evaluation(result: dict[str, Any], output: Path) -> None:
    if not result["mean"]:
        console.print("no scores: no synthetic case has a co-registered real counterpart, and no --segmenter was given", highlight=False)
        console.print(f"sample grid: {output / 'samples.png'}", highlight=False)
        return
    table = Table(title=f"{result['cases']} synthetic cases, {result['paired_cases']} with a real counterpart")
    for column in ("metric", "mean", "std", "cases"):
        table.add_column(column)
    for name, summary in result["mean"].items():
        table.add_row(name, f"{summary['mean']:.4g}", f"{summary['std']:.3g}", str(summary["cases"]))
    Console().print(table)
    if result["intensity_range"] is not None:
        scale = f", each image normalised by its {result['normalise']}" if result["normalise"] else ""
        console.print(f"intensity range {result['intensity_range']}{scale}, mask {result['mask']}, SSIM {result['ssim']['mode']}", highlight=False)
    console.print(f"results: {output / 'metrics.json'}, {output / 'per_case.csv'}, {output / 'samples.png'}", highlight=False)
