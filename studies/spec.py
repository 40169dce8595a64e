"""Study files: schema, validation with errors that name the key, and expansion into runs."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from augment import StrategyError, build_strategy, strategy_config
from segment.models import build_model
from segment.train_config import DatasetConfig, ModelConfig

from .errors import SpecError
from .synthetic import SyntheticSpec

PACKAGED_STUDIES = Path(__file__).parent

# A study names its dataset and model exactly as a single run does (``medaug segment train``).
DatasetSpec = DatasetConfig
ModelSpec = ModelConfig

# Estimated training memory in bytes per unit of samples x patch voxels x sum over levels of
# channels / 2**(dims * level). The peak resident memory of one U-Net step (forward, backward and
# AdamW) measured 58-60 bytes per unit on CPU with torch 2.13 for features of 16 channels and more.
# It measured 86 bytes for features [8, 16, 32, 64], where the loss terms weigh more.
BYTES_PER_FEATURE_VOXEL = 60
# No single accelerator holds a training step above this estimate (the largest GPUs of 2025 have
# under 300 GB), so such a patch is taken to be a typing mistake.
MAX_STEP_MEMORY_GIB = 512


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Strict):
    """Case-level cross-validation: ``kfold`` from a seed, or nnU-Net v2's five folds."""

    scheme: Literal["kfold", "nnunet"] = "kfold"
    folds: int = Field(5, ge=2)
    seed: int = Field(12345, ge=0)
    splits_file: str | None = None


class TrainingSpec(_Strict):
    """Training budget and optimisation; steps are optimiser steps."""

    max_steps: int = Field(gt=0)
    batch_size: int = Field(8, gt=0)
    patch_size: list[int] = Field(min_length=2, max_length=3)
    learning_rate: float = Field(3e-3, gt=0)
    val_every_steps: int | None = Field(None, gt=0)
    threads: int | None = Field(None, gt=0, description="torch CPU threads per run; default: all cores")


class TrackingSpec(_Strict):
    """Weights & Biases: ``offline`` writes run files to sync later, ``online`` uploads, ``disabled`` writes nothing."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "medaug"
    entity: str | None = None


class StrategyDefinition(_Strict):
    """A strategy named in ``definitions``: an augmentation and, optionally, synthetic training data.

    ``augmentation`` is a preset name, a strategy YAML file, or an inline
    strategy mapping in the format of docs/strategies.md.
    """

    augmentation: str | dict[str, Any] = "none"
    synthetic: SyntheticSpec | None = None


class StudySpec(_Strict):
    """A study: dataset x strategies x training fractions x folds x seeds."""

    name: str
    dataset: DatasetSpec
    split: SplitSpec = SplitSpec()
    strategies: list[str] = Field(min_length=1)
    definitions: dict[str, StrategyDefinition] = Field(
        default_factory=dict, description="strategies defined in the study file, by the name the strategies list uses"
    )
    baseline: str | None = None
    train_fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: ModelSpec = ModelSpec()
    training: TrainingSpec
    tracking: TrackingSpec = TrackingSpec()

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-' (it becomes a folder name), got {name!r}")
        return name

    @field_validator("train_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        for fraction in fractions:
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"every training fraction must be in (0, 1], got {fraction}")
        return fractions

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if any(seed < 0 for seed in seeds):
            raise ValueError(f"seeds must be non-negative, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        for key in ("strategies", "train_fractions", "folds", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice: {values}")
        for fold in self.folds:
            if not 0 <= fold < self.split.folds:
                raise ValueError(f"folds: fold {fold} does not exist with split.folds = {self.split.folds}")
        unused = sorted(set(self.definitions) - set(self.strategies))
        if unused:
            raise ValueError(f"definitions {unused} are not listed in strategies {self.strategies}")
        if self.dataset.format != "msd" and any(d.synthetic for d in self.definitions.values()):
            raise ValueError("synthetic strategies need a dataset of format 'msd' (3D volumes with label maps)")
        if self.baseline is not None and self.baseline not in self.strategies:
            raise ValueError(f"baseline {self.baseline!r} is not one of the strategies {self.strategies}")
        if self.split.scheme == "nnunet" and self.split.folds != 5:
            raise ValueError("split.folds must be 5 with scheme 'nnunet'")
        if self.split.scheme == "nnunet" and self.dataset.format != "msd":
            raise ValueError("split.scheme 'nnunet' needs a dataset of format 'msd'")
        if len(self.training.patch_size) != self.dataset.spatial_dims:
            raise ValueError(
                f"training.patch_size {self.training.patch_size} must have {self.dataset.spatial_dims} sizes "
                f"for a {self.dataset.spatial_dims}D dataset (format {self.dataset.format!r})"
            )
        self._check_patch_size()
        return self

    def _check_patch_size(self) -> None:
        levels = len(self.model.features)
        divisor = 2 ** (levels - 1)
        patch = self.training.patch_size
        if any(size % divisor for size in patch):
            raise ValueError(f"training.patch_size {patch} must be multiples of {divisor} for a U-Net with {levels} levels")
        estimate = estimate_step_memory(patch, self.training.batch_size, self.model.features)
        if estimate > MAX_STEP_MEMORY_GIB * 2**30:
            raise ValueError(
                f"training.patch_size {patch} with batch_size {self.training.batch_size} and model.features {self.model.features} "
                f"needs an estimated {estimate / 2**30:,.0f} GiB per training step, more than any single accelerator holds "
                f"(limit {MAX_STEP_MEMORY_GIB} GiB); reduce training.patch_size or training.batch_size"
            )

    @property
    def baseline_strategy(self) -> str:
        return self.baseline or self.strategies[0]


def estimate_step_memory(patch_size: Sequence[int], batch_size: int, features: Sequence[int]) -> float:
    """Estimated peak memory in bytes of one U-Net training step; see ``BYTES_PER_FEATURE_VOXEL``.

    NOTE: an estimate from CPU measurements of the plain U-Net; attention, residual
    and UNet++ variants and mixed precision differ by a small factor.
    """
    dims = len(patch_size)
    channels_per_voxel = sum(width / 2 ** (dims * level) for level, width in enumerate(features))
    return float(BYTES_PER_FEATURE_VOXEL * batch_size * math.prod(patch_size) * channels_per_voxel)


def check_case_shapes(spec: StudySpec, shapes: Mapping[str, Sequence[int]], dataset: str | Path) -> None:
    """Check the study's model and patch size against the spatial shapes of the cases it trains on.

    Args:
        spec: the validated study.
        shapes: spatial shape of each case, by case id, without the channel axis.
        dataset: the dataset folder, for messages.

    Raises:
        SpecError: when a case has a different number of spatial dimensions
            than the patch size, or the patch is larger than every case along an axis.
    """
    patch = spec.training.patch_size
    for case_id, shape in sorted(shapes.items()):
        if len(shape) != len(patch):
            raise SpecError(
                f"case {case_id} of {dataset} is {len(shape)}D (shape {tuple(shape)}) but the study trains a {len(patch)}D model "
                f"(training.patch_size {patch}); use a {len(patch)}D dataset or change dataset.format and training.patch_size to match the images"
            )
    if not shapes:
        return
    largest = [max(shape[axis] for shape in shapes.values()) for axis in range(len(patch))]
    if any(size > limit for size, limit in zip(patch, largest)):
        divisor = 2 ** (len(spec.model.features) - 1)
        fitting = [min(size, max(divisor, limit // divisor * divisor)) for size, limit in zip(patch, largest)]
        raise SpecError(
            f"training.patch_size {patch} is larger than every case of {dataset} along some axis (largest case extent {largest} voxels), "
            f"so those axes would be mostly padding; use at most {fitting}"
        )


def model_arguments(model: dict[str, Any], spatial_dims: int) -> dict[str, Any]:
    """Return the registry name and keyword arguments of a model, with its ``options`` flattened in."""
    arguments = {key: value for key, value in model.items() if key != "options"}
    arguments.update(model.get("options", {}))
    arguments["spatial_dims"] = spatial_dims
    return arguments


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in loc).replace(".[", "[")


def _suggestion(loc: tuple[Any, ...]) -> str:
    """Closest valid key for a misspelled one, found by walking the schema along ``loc``."""
    model: Any = StudySpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_validation_error(path: Path, error: ValidationError) -> str:
    errors = error.errors()
    # A misspelled key also shows up as the correct key missing; report the misspelling.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    key = _location(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"study file {path}: unknown key {key!r}{_suggestion(loc)}"
    if first["type"] == "missing":
        return f"study file {path}: missing required key {key!r}"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    if not loc:
        # Checks across several keys name their keys in the message.
        return f"study file {path}: {message}{more}"
    return f"study file {path}: invalid value for {key!r}: {message}{more}"


def find_study_file(name_or_path: str | Path) -> Path:
    """Return the path of a study file, accepting the name of a study shipped with medaug."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGED_STUDIES / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    shipped = sorted(p.stem for p in PACKAGED_STUDIES.glob("*.yaml"))
    raise SpecError(f"study file not found: {path}; give a path or one of the shipped studies {shipped}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML safe loader that rejects a key repeated in one mapping, which plain YAML loaders let silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            # Merge keys (<<) may legitimately override; they are expanded by the base class.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                repeated = key in first_lines
            except TypeError:
                continue  # an unhashable key; the base class reports it
            if repeated:
                raise SpecError(
                    f"study file {self.name}: key {key!r} appears twice, on lines {first_lines[key]} and {line}; "
                    "delete one of them (YAML would silently keep only the last)"
                )
            first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    loader = _UniqueKeyLoader(path.read_text())
    loader.name = str(path)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_spec(name_or_path: str | Path) -> StudySpec:
    """Read and fully validate a study file, strategies included, before anything runs.

    Raises:
        SpecError: naming the file and the key at fault.
    """
    path = find_study_file(name_or_path)
    try:
        raw = _read_yaml(path)
    except yaml.YAMLError as error:
        raise SpecError(f"study file {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise SpecError(f"study file {path} must contain a mapping of keys such as name, dataset, strategies, training")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(_format_validation_error(path, error)) from error

    model_kwargs = model_arguments(spec.model.model_dump(), spec.dataset.spatial_dims)
    try:
        build_model(model_kwargs.pop("name"), 1, 2, **model_kwargs)
    except (TypeError, ValueError) as error:
        raise SpecError(f"study file {path}: invalid model settings: {error}") from error

    for position, strategy in enumerate(spec.strategies):
        try:
            build_strategy(augmentation_reference(spec, strategy, path))
        except StrategyError as error:
            raise SpecError(f"study file {path}: strategies[{position}]: {error}") from error
    definitions = _anchor_definitions(spec, path)
    for name, definition in definitions.items():
        given = definition.synthetic.dataset if definition.synthetic is not None else None
        if given is not None and not (Path(given) / "manifest.json").is_file():
            raise SpecError(
                f"study file {path}: definitions.{name}.synthetic.dataset: {given} is not a synthetic dataset written by "
                "`medaug gan sample` (no manifest.json); write it first or leave the key out to train a GAN per run"
            )
    return spec.model_copy(update={"dataset": _anchor_dataset(spec.dataset, path), "definitions": definitions})


def augmentation_reference(spec: StudySpec, strategy: str, study_path: Path) -> str | dict[str, Any]:
    """What ``augment.build_strategy`` takes for a listed strategy: its definition's augmentation, or the name itself."""
    definition = spec.definitions.get(strategy)
    if definition is None:
        return _strategy_reference(strategy, study_path)
    if isinstance(definition.augmentation, dict):
        return definition.augmentation
    return _strategy_reference(definition.augmentation, study_path)


def _strategy_reference(strategy: str, study_path: Path) -> str:
    """Strategy YAML files are found relative to the study file; preset names pass through."""
    if strategy.endswith((".yaml", ".yml")) and not Path(strategy).is_absolute():
        return str(study_path.parent / strategy)
    return strategy


def _anchor_definitions(spec: StudySpec, study_path: Path) -> dict[str, StrategyDefinition]:
    """A synthetic dataset named relative to the study file is found next to it."""
    anchored = {}
    for name, definition in spec.definitions.items():
        synthetic = definition.synthetic
        if synthetic is not None and synthetic.dataset is not None and not Path(synthetic.dataset).is_absolute():
            synthetic = synthetic.model_copy(update={"dataset": str((study_path.parent / synthetic.dataset).resolve())})
            definition = definition.model_copy(update={"synthetic": synthetic})
        anchored[name] = definition
    return anchored


def _anchor_dataset(dataset: DatasetSpec, study_path: Path) -> DatasetSpec:
    if dataset.path is None or Path(dataset.path).is_absolute():
        return dataset
    return dataset.model_copy(update={"path": str((study_path.parent / dataset.path).resolve())})


class RunSpec(BaseModel):
    """One training run of a study, with the configuration its id is derived from."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    strategy: str
    train_fraction: float
    fold: int
    seed: int
    config: dict[str, Any]


def expand_runs(spec: StudySpec, study_path: Path | None = None) -> list[RunSpec]:
    """Every (strategy, fraction, fold, seed) combination, with a stable run id.

    The id ends with a hash of the resolved configuration (strategy parameters,
    split, model, training), so editing any of those gives new runs while
    reruns of the same file find the runs they already finished. Tracking
    settings and the study name are left out of the hash: they do not change results.
    """
    anchor = study_path or Path(".")
    runs = []
    for strategy, fraction, fold, seed in itertools.product(spec.strategies, spec.train_fractions, spec.folds, spec.seeds):
        config = {
            "dataset": spec.dataset.name if spec.dataset.format == "msd" else spec.dataset.model_dump(exclude={"path"}),
            "split": spec.split.model_dump(),
            "strategy": strategy,
            "strategy_config": strategy_config(augmentation_reference(spec, strategy, anchor)),
            "train_fraction": fraction,
            "fold": fold,
            "seed": seed,
            "model": spec.model.model_dump(),
            "training": spec.training.model_dump(exclude={"threads"}),
        }
        definition = spec.definitions.get(strategy)
        if definition is not None and definition.synthetic is not None:
            # Only synthetic strategies carry this key, so ids of the other runs stay as they were.
            config["synthetic"] = definition.synthetic.model_dump()
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(strategy).stem if strategy.endswith((".yaml", ".yml")) else strategy)
        run_id = f"{label}-frac{fraction:g}-fold{fold}-seed{seed}-{digest}"
        runs.append(RunSpec(run_id=run_id, strategy=strategy, train_fraction=fraction, fold=fold, seed=seed, config=config))
    return runs
