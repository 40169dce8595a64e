"""Time random affine + elastic augmentation of image and label batches on the CPU, side by side.

Every library is timed in this one process against "the floor": one bare
``torch.nn.functional.grid_sample`` per tensor (image bilinear, label nearest, both
float32) on a precomputed sampling grid. That is the core work of any method that
resamples both tensors through one grid. Each library and the floor alternate
within every repeat. The report gives the median time per batch and the median,
over repeats, of the library's time divided by the floor's time in the same
repeat, so machine load that changes during the run affects both.

Batches: 3D 8x1x64x64x64 and 2D 32x1x256x256, float32 image and int64 label
(``--label-dtype uint8`` for uint8) with classes 0, 1 and 2. Transforms: rotation within +-15 degrees, scaling within
0.85-1.15, and elastic deformation of about 2 voxels peak (see ``--measure-strength``
for the displacement each library actually produces). Libraries that work on one
sample at a time are called once per sample of the batch. The "labels exact" column
is "yes" when the warped labels contain only input values (0, 1, 2).

Peers are optional: a library that is not installed or raises is reported as
unavailable with the reason. Install them with ``pip install -e '.[bench]'``.

A second measurement, ``--training-step``, times one AdamW step of the quick
study's U-Net with and without the ``nonrigid`` augmentation preset.

Run: ``python benchmarks/augment_throughput.py [--threads 1] [--repeats 15] [--rounds 1]``.
With ``--rounds N`` the whole measurement runs N times and a last table gives the
median multiple of the floor over the rounds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import platform
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from augment import Pipeline, RandomAffine, RandomElastic, build_strategy, derive_generator
from augment.warp import normalised_affine

DEGREES = 15.0
SCALE = (0.85, 1.15)
# medaug, cornucopia: uniform displacement within +-2 voxels at 5 control points per axis,
# interpolated linearly, about 1.1 voxels RMS. The other libraries draw their fields
# differently. Their parameters below were scaled until --measure-strength gave about
# the same RMS displacement (1.0 to 1.2 voxels) on 3D and 2D batches.
ELASTIC_MAX_VOXELS = 2.0
ELASTIC_CONTROL_POINTS = 5
TORCHIO_MAX_DISPLACEMENT = {"3d": 3.5, "2d": 5.0}
MONAI_3D_SIGMA = 8.0
MONAI_MAGNITUDE = {"3d": 167.0, "2d": 0.87}
KORNIA_ALPHA = 0.625
NNUNET_MAGNITUDE = 2.2
NNUNET_SCALE = 0.1

SHAPES = {"3d": (8, (64, 64, 64)), "2d": (32, (256, 256))}

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Unavailable(Exception):
    """A peer library is not installed or cannot run this configuration."""


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def make_batch(ndim: str, seed: int = 0, label_dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a smooth random float32 image and a label of classes 0-2, ``(B, 1, *S)``."""
    batch_size, shape = SHAPES[ndim]
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch_size, 1, *(8,) * len(shape), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    image = F.interpolate(coarse, size=shape, mode=mode, align_corners=True).contiguous()
    label = torch.bucketize(image, torch.tensor([-0.3, 0.3])).to(label_dtype)
    return image, label


def coordinate_image(shape: tuple[int, ...], batch_size: int) -> torch.Tensor:
    """Return ``(B, D, *S)`` float32 images whose channel k is the voxel index along axis k."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    coordinates = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return coordinates.expand(batch_size, *coordinates.shape).contiguous()


# ---------------------------------------------------------------------------
# medaug and the floor


def medaug_pipeline(image_padding: str, elastic: bool = True) -> Pipeline:
    transforms = [RandomAffine(degrees=DEGREES, scale=SCALE, p=1.0)]
    if elastic:
        transforms.append(RandomElastic(max_displacement=ELASTIC_MAX_VOXELS, control_points=ELASTIC_CONTROL_POINTS, p=1.0))
    return Pipeline(transforms, image_padding=image_padding)


def make_medaug(ndim: str, image_padding: str = "zeros", affine: bool = True) -> Augment:
    if affine:
        pipeline = medaug_pipeline(image_padding)
    else:
        elastic = RandomElastic(max_displacement=ELASTIC_MAX_VOXELS, control_points=ELASTIC_CONTROL_POINTS, p=1.0)
        pipeline = Pipeline([elastic], image_padding=image_padding)
    counter = iter(range(1 << 62))

    def run(image, label):
        out = pipeline({"image": image, "label": label}, derive_generator(0, next(counter)))
        return out["image"], out["label"]

    return run


def floor_grid(image: torch.Tensor) -> torch.Tensor:
    """Return the affine + elastic sampling grid of one medaug draw, built once before timing."""
    shape = tuple(image.shape[2:])
    ndim = len(shape)
    pipeline = medaug_pipeline("zeros")
    params = pipeline.sample({"image": image}, derive_generator(1))
    spacing = torch.ones(image.shape[0], ndim, dtype=torch.float64)
    theta = normalised_affine(pipeline.forward_matrices(params, image.shape[0], ndim), shape, spacing)
    reversed_axes = list(reversed(range(ndim)))
    theta_xyz = theta[:, reversed_axes][:, :, reversed_axes + [ndim]].float()
    grid = F.affine_grid(theta_xyz, (image.shape[0], 1, *shape), align_corners=True)
    field = pipeline.spatial[1].displacement(params[1], shape).float()
    # Millimetres per normalised unit: half the extent between the first and last voxel centre.
    half_extent = torch.tensor([(n - 1) / 2.0 for n in shape], dtype=torch.float64)
    unit = (spacing * half_extent).float().view(-1, ndim, *(1,) * ndim)
    return (grid + (field / unit).flip(1).movedim(1, -1)).contiguous()


def make_floor(image: torch.Tensor, label: torch.Tensor) -> Callable[[], None]:
    grid = floor_grid(image)
    label_float = label.float()

    def run():
        F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        F.grid_sample(label_float, grid, mode="nearest", padding_mode="zeros", align_corners=True)

    return run


# ---------------------------------------------------------------------------
# Peers. Each factory returns a function of the whole batch, or raises Unavailable.


def make_torchio(ndim: str, affine: bool = True) -> Augment:
    try:
        import SimpleITK as sitk
        import torchio as tio
    except ImportError as error:
        raise Unavailable(f"torchio is not installed ({error})") from error
    # TorchIO resamples with SimpleITK, whose thread pool torch.set_num_threads does not reach.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(torch.get_num_threads())
    elastic = tio.RandomElasticDeformation(num_control_points=7, max_displacement=TORCHIO_MAX_DISPLACEMENT[ndim], locked_borders=2)
    if affine:
        transform = tio.Compose([tio.RandomAffine(scales=SCALE, degrees=DEGREES, default_pad_value=0.0), elastic])
    else:
        transform = elastic
    planar = ndim == "2d"

    def run(image, label):
        images, labels = [], []
        for b in range(image.shape[0]):
            # TorchIO stores 2D images as (C, X, Y, 1).
            sample_image = image[b, ..., None] if planar else image[b]
            sample_label = label[b, ..., None] if planar else label[b]
            subject = tio.Subject(image=tio.ScalarImage(tensor=sample_image), label=tio.LabelMap(tensor=sample_label))
            out = transform(subject)
            images.append(out["image"].data[..., 0] if planar else out["image"].data)
            labels.append(out["label"].data[..., 0] if planar else out["label"].data)
        return torch.stack(images), torch.stack(labels)

    return run


def make_monai(ndim: str, affine: bool = True) -> Augment:
    try:
        from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandAffined
    except ImportError as error:
        raise Unavailable(f"monai is not installed ({error})") from error
    keys = ["image", "label"]
    modes = ("bilinear", "nearest")
    spatial_dims = 2 if ndim == "2d" else 3
    radians = math.radians(DEGREES)
    transforms = []
    if affine:
        transforms.append(
            RandAffined(
                keys,
                prob=1.0,
                rotate_range=radians if spatial_dims == 2 else (radians,) * 3,
                scale_range=(SCALE[1] - 1.0,) * spatial_dims,
                mode=modes,
                padding_mode="zeros",
            )
        )
    if spatial_dims == 2:
        # Control points every 64 pixels: 5 per axis over 256 pixels, as medaug's grid.
        transforms.append(
            Rand2DElasticd(keys, spacing=(64, 64), magnitude_range=(MONAI_MAGNITUDE[ndim],) * 2, prob=1.0, mode=modes, padding_mode="zeros")
        )
    else:
        transforms.append(
            Rand3DElasticd(
                keys,
                sigma_range=(MONAI_3D_SIGMA,) * 2,
                magnitude_range=(MONAI_MAGNITUDE[ndim],) * 2,
                prob=1.0,
                mode=modes,
                padding_mode="zeros",
            )
        )
    transform = Compose(transforms)

    def run(image, label):
        images, labels = [], []
        for b in range(image.shape[0]):
            out = transform({"image": image[b], "label": label[b]})
            images.append(torch.as_tensor(out["image"]))
            labels.append(torch.as_tensor(out["label"]))
        return torch.stack(images), torch.stack(labels)

    return run


def make_kornia(ndim: str, affine: bool = True) -> Augment:
    try:
        import kornia.augmentation as K
    except ImportError as error:
        raise Unavailable(f"kornia is not installed ({error})") from error
    if ndim == "3d":
        if not affine:
            raise Unavailable("Kornia has no 3D elastic transform")
        return _kornia_affine_3d(K)
    transforms = [K.RandomElasticTransform(kernel_size=(63, 63), sigma=(32.0, 32.0), alpha=(KORNIA_ALPHA,) * 2, p=1.0)]
    if affine:
        transforms.insert(0, K.RandomAffine(degrees=DEGREES, scale=SCALE, p=1.0))
    sequence = K.AugmentationSequential(*transforms, data_keys=["input", "mask"])

    def run(image, label):
        # Kornia masks are float tensors, resampled by nearest neighbour.
        out_image, out_label = sequence(image, label.float())
        return out_image, out_label

    return run


def _kornia_affine_3d(K) -> Augment:
    """Kornia 0.9's AugmentationSequential rejects 3D masks, so the label replays the image's parameters."""
    image_affine = K.RandomAffine3D(degrees=DEGREES, scale=(SCALE,) * 3, p=1.0)
    label_affine = K.RandomAffine3D(degrees=DEGREES, scale=(SCALE,) * 3, resample="nearest", p=1.0)

    def run(image, label):
        out_image = image_affine(image)
        out_label = label_affine(label.float(), params=image_affine._params)
        return out_image, out_label

    return run


def make_nnunet(ndim: str, affine: bool = True) -> Augment:
    try:
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    except ImportError as error:
        raise Unavailable(f"batchgeneratorsv2 is not installed ({error})") from error
    _, shape = SHAPES[ndim]
    radians = math.radians(DEGREES)
    transform = SpatialTransform(
        patch_size=shape,
        patch_center_dist_from_border=0,
        random_crop=False,
        p_elastic_deform=1.0,
        elastic_deform_scale=(NNUNET_SCALE, NNUNET_SCALE),
        elastic_deform_magnitude=(NNUNET_MAGNITUDE, NNUNET_MAGNITUDE),
        p_rotation=1.0 if affine else 0.0,
        rotation=(-radians, radians),
        p_scaling=1.0 if affine else 0.0,
        scaling=SCALE,
        p_synchronize_scaling_across_axes=1.0,
        mode_seg="nearest",
    )

    def run(image, label):
        images, labels = [], []
        for b in range(image.shape[0]):
            out = transform(image=image[b], segmentation=label[b])
            images.append(out["image"])
            labels.append(out["segmentation"])
        return torch.stack(images), torch.stack(labels)

    return run


def make_cornucopia(ndim: str, affine: bool = True) -> Augment:
    try:
        import cornucopia as cc
    except ImportError as error:
        raise Unavailable(f"cornucopia is not installed ({error})") from error
    transform = cc.RandomAffineElasticTransform(
        dmax=cc.random.Fixed(ELASTIC_MAX_VOXELS),
        shape=cc.random.Fixed(ELASTIC_CONTROL_POINTS),
        rotations=DEGREES if affine else 0,
        zooms=SCALE[1] - 1.0 if affine else 0,
        iso=True,
        unit="vox",
        bound="zeros",
        order=1,
        nearest_if_label=True,
    )

    def run(image, label):
        images, labels = [], []
        for b in range(image.shape[0]):
            out_image, out_label = transform(image[b], label[b])
            images.append(out_image)
            labels.append(out_label)
        return torch.stack(images), torch.stack(labels)

    return run


LIBRARIES: dict[str, tuple[str, Callable[..., Augment]]] = {
    "medaug": ("medaug Pipeline", make_medaug),
    "medaug-minimum": ("medaug Pipeline, minimum padding", lambda ndim: make_medaug(ndim, image_padding="minimum")),
    "torchio": (f"TorchIO {package_version('torchio')}", make_torchio),
    "monai": (f"MONAI {package_version('monai')}", make_monai),
    "kornia": (f"Kornia {package_version('kornia')}", make_kornia),
    "nnunet": (f"batchgeneratorsv2 {package_version('batchgeneratorsv2')}", make_nnunet),
    "cornucopia": (f"cornucopia {package_version('cornucopia')}", make_cornucopia),
}
# Caveats printed in the note column.
NOTES = {
    ("kornia", "3d"): "affine only: Kornia has no 3D elastic transform",
    ("monai", "2d"): "its elastic grid also zooms by about 2.7 % (see docs/benchmarks.md)",
}
# Libraries whose elastic component --measure-strength can isolate.
STRENGTH_LIBRARIES = ("medaug", "torchio", "monai", "kornia", "nnunet", "cornucopia")


# ---------------------------------------------------------------------------
# Timing


@dataclass
class Row:
    name: str
    seconds: float | None = None
    multiple: float | None = None
    labels_exact: bool | None = None
    note: str = ""


def labels_exact(out_label: torch.Tensor, label: torch.Tensor) -> bool:
    """Return whether every output label value is an input label value or 0."""
    allowed = set(label.unique().tolist()) | {0}
    values = out_label.unique()
    if values.is_floating_point() and not torch.equal(values, values.round()):
        return False
    return set(values.tolist()) <= allowed


@dataclass
class PairedTiming:
    """Median seconds of a function and of the floor, and the median of their ratio within each repeat."""

    seconds: float
    floor_seconds: float
    multiple: float


def time_paired(run: Callable[[], object], floor: Callable[[], None], repeats: int, max_seconds: float) -> PairedTiming:
    """Time ``run`` and ``floor`` alternately, one call of each per repeat, after one warm-up call of each.

    The two calls swap order every repeat, because the second call of a pair
    finds the shared input batch partly in cache. Stops early, after at least three
    repeats, once ``run`` has taken ``max_seconds`` in total.
    """
    run()
    floor()
    run_times, floor_times = [], []
    for repeat in range(repeats):
        pair = [(floor, floor_times), (run, run_times)]
        if repeat % 2 == 1:
            pair.reverse()
        for function, times in pair:
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        if len(run_times) >= 3 and sum(run_times) > max_seconds:
            break
    ratios = [r / f for r, f in zip(run_times, floor_times)]
    return PairedTiming(statistics.median(run_times), statistics.median(floor_times), statistics.median(ratios))


def measure(ndim: str, names: list[str], repeats: int, max_seconds: float, label_dtype: torch.dtype) -> list[Row]:
    image, label = make_batch(ndim, label_dtype=label_dtype)
    floor = make_floor(image, label)
    rows = [Row("floor: grid_sample x2 on a precomputed grid", labels_exact=True)]
    timing = time_paired(floor, floor, repeats, max_seconds)
    rows[0].seconds, rows[0].multiple = timing.seconds, timing.multiple
    print(format_row(rows[0]), flush=True)

    for name in names:
        title, factory = LIBRARIES[name]
        row = Row(title, note=NOTES.get((name, ndim), ""))
        rows.append(row)
        try:
            augment = factory(ndim)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out_image, out_label = augment(image, label)
                if tuple(out_image.shape) != tuple(image.shape) or tuple(out_label.shape) != tuple(label.shape):
                    raise Unavailable(f"returned shapes {tuple(out_image.shape)} and {tuple(out_label.shape)}")
                row.labels_exact = labels_exact(out_label, label)
                timing = time_paired(lambda: augment(image, label), floor, repeats, max_seconds)
                row.seconds, row.multiple = timing.seconds, timing.multiple
        except Unavailable as error:
            row.note = f"unavailable: {error}"
        except Exception as error:  # A peer failing must not stop the others.
            last = traceback.extract_tb(error.__traceback__)[-1]
            row.note = f"unavailable: {type(error).__name__}: {error} ({last.filename}:{last.lineno})"
        print(format_row(row), flush=True)
    return rows


def format_row(row: Row) -> str:
    if row.seconds is None:
        return f"| {row.name} | - | - | - | {row.note} |"
    exact = {True: "yes", False: "no", None: "-"}[row.labels_exact]
    return f"| {row.name} | {row.seconds * 1e3:.1f} ms | {row.multiple:.2f} | {exact} | {row.note} |"


def print_round_summary(multiples: dict[tuple[str, str], list[float]], rounds: int) -> None:
    print(f"\nMultiple of the floor over {rounds} rounds\n")
    print("| batch | library | median | lowest | highest |")
    print("|---|---|---|---|---|")
    for (ndim, name), values in multiples.items():
        print(f"| {ndim.upper()} | {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


def cpu_name() -> str:
    """Return the CPU model from /proc/cpuinfo where there is one, else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(ndim: str, label_dtype: torch.dtype) -> None:
    batch_size, shape = SHAPES[ndim]
    label_type = str(label_dtype).removeprefix("torch.")
    print(f"\n{ndim.upper()}: batch {batch_size}x1x{'x'.join(map(str, shape))} image (float32) + label ({label_type})\n")
    print("| library | time per batch | multiple of floor | labels exact | note |")
    print("|---|---|---|---|---|")


# ---------------------------------------------------------------------------
# Elastic strength


def rms_displacement(factory: Callable[..., Augment], ndim: str, draws: int = 3) -> float:
    """Measure the root mean square displacement, in voxels, of a library's elastic-only transform.

    The image channels are voxel coordinates, so each output channel contains the
    sampled position. Voxels within 16 of the border are left out, so the padding
    does not count.
    """
    batch_size, shape = SHAPES[ndim]
    batch_size = min(batch_size, 4)
    image = coordinate_image(shape, batch_size)
    label = torch.zeros(batch_size, 1, *shape, dtype=torch.int64)
    augment = factory(ndim, affine=False)
    interior = (slice(None), slice(None)) + tuple(slice(16, n - 16) for n in shape)
    squares = []
    for _ in range(draws):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out_image, _ = augment(image, label)
        squares.append(((out_image - image)[interior] ** 2).sum(dim=1).mean())
    return float(torch.stack(squares).mean().sqrt())


def measure_strength(names: list[str]) -> None:
    print("\nElastic component alone: RMS displacement in voxels (interior voxels)\n")
    print("| library | 3D | 2D |")
    print("|---|---|---|")
    for name in names:
        if name not in STRENGTH_LIBRARIES:
            continue
        title, factory = LIBRARIES[name]
        cells = []
        for ndim in ("3d", "2d"):
            try:
                cells.append(f"{rms_displacement(factory, ndim):.2f}")
            except Unavailable as error:
                cells.append(f"unavailable: {error}")
            except Exception as error:  # A peer failing must not stop the others.
                cells.append(f"unavailable: {type(error).__name__}: {error}")
        print(f"| {title} | {cells[0]} | {cells[1]} |", flush=True)


# ---------------------------------------------------------------------------
# Training step


def measure_training_step(repeats: int) -> None:
    """Time an AdamW step of the quick study's U-Net with and without the nonrigid preset."""
    from segment.losses import DiceCELoss
    from segment.models import UNet

    torch.manual_seed(0)
    model = UNet(1, 3, features=(8, 16, 32, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_function = DiceCELoss()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(8, 1, 32, 48, 32, generator=generator)
    batch = {"image": image, "label": torch.bucketize(image, torch.tensor([0.0, 1.0]))}
    pipeline = build_strategy("nonrigid")
    counter = iter(range(1 << 62))

    def step(augment: bool) -> None:
        current = pipeline(batch, derive_generator(0, next(counter))) if augment else batch
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(current["image"]), current["label"])
        loss.backward()
        optimizer.step()

    timing = time_paired(lambda: step(True), lambda: step(False), repeats, max_seconds=600.0)
    augmented_seconds, plain_seconds = timing.seconds, timing.floor_seconds
    augmentation_seconds = statistics.median(
        [_time_once(lambda: pipeline(batch, derive_generator(1, i))) for i in range(repeats)]
    )
    overhead = 100.0 * (augmented_seconds - plain_seconds) / plain_seconds
    print("\nTraining step: U-Net features (8, 16, 32, 64), batch 8x1x32x48x32, DiceCELoss, AdamW\n")
    print("| step | time |")
    print("|---|---|")
    print(f"| no augmentation | {plain_seconds * 1e3:.1f} ms |")
    print(f"| nonrigid preset + step | {augmented_seconds * 1e3:.1f} ms |")
    print(f"| nonrigid preset alone | {augmentation_seconds * 1e3:.1f} ms |")
    print(f"\nAugmentation adds {overhead:.1f} % to a training step.")


def _time_once(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per library, each paired with the floor (default 15)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="stop timing a library after this many seconds of its own time, once it has 3 repeats (default 30)",
    )
    parser.add_argument("--dims", nargs="+", choices=sorted(SHAPES), default=["3d", "2d"], help="batch shapes to time")
    parser.add_argument("--libraries", nargs="+", choices=list(LIBRARIES), default=list(LIBRARIES), help="libraries to time")
    parser.add_argument(
        "--label-dtype",
        choices=["int64", "uint8"],
        default="int64",
        help="dtype of the label batch (default int64). The floor always samples a float32 copy",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole timing this many times and end with the median multiple of the floor per library (default 1)",
    )
    parser.add_argument("--measure-strength", action="store_true", help="also print the RMS displacement of each elastic transform")
    parser.add_argument("--training-step", action="store_true", help="also time a U-Net training step with and without augmentation")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: NumPy and SciPy keep their default thread pools")
    else:
        # Peers also compute with NumPy and SciPy, whose BLAS and OpenMP pools torch does not set.
        threadpool_limits(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), Python {platform.python_version()}, {cpu_name()}")
    label_dtype = getattr(torch, args.label_dtype)
    multiples: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        if args.rounds > 1:
            print(f"\nRound {round_index + 1} of {args.rounds}")
        for ndim in args.dims:
            print_header(ndim, label_dtype)
            for row in measure(ndim, args.libraries, args.repeats, args.max_seconds, label_dtype):
                if row.multiple is not None:
                    multiples.setdefault((ndim, row.name), []).append(row.multiple)
    if args.rounds > 1:
        print_round_summary(multiples, args.rounds)
    if args.measure_strength:
        measure_strength(args.libraries)
    if args.training_step:
        measure_training_step(args.repeats)


if __name__ == "__main__":
    main()
