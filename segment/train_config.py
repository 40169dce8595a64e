"""Configuration of one training run (``medaug segment train``): schema, validation and case selection.

A run configuration names a dataset, the cases to train and validate on (a
fold of a case-level split, or explicit lists), a strategy, a model and the
training options. It is validated completely, strategy and model included,
before any case is loaded, and errors name the file and the key at fault.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from augment import StrategyError, build_strategy, strategy_config

from .data import MSDDataset, kfold_split, nnunet_split, resolve_data_root, training_subset
from .data.png import PNGDataset
from .errors import DataError
from .models import MODELS, build_model

PACKAGED_CONFIGS = Path(__file__).parent / "configs"

# Training options that set where a run trains, so they stay out of run ids. With several
# processes each step still trains on the same batch_size patches, split among the processes,
# but not bit for bit as one process would: the Dice loss is computed per process, augmentation
# draws follow a sample's position in its process's share, and sums run in another order.
PLACEMENT_OPTIONS = {"threads", "accelerator", "devices", "num_nodes", "strategy"}


class ConfigError(DataError):
    """A run configuration is missing or invalid; the message names the file, the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Dataset location (a folder name under the data root, or an explicit path) and its format.

    ``msd`` is the Decathlon / nnU-Net raw layout (3D NIfTI). ``png`` is a folder
    of 2D image/mask pairs (see ``segment.data.png``) and needs ``images`` and
    ``spacing_csv``.
    """

    name: str = Field(min_length=1)
    path: str | None = None
    format: Literal["msd", "png"] = "msd"
    images: str | None = None
    mask_suffix: str = "_Annotation"
    spacing_csv: str | None = None
    target_spacing: float | None = Field(None, gt=0)
    group_pattern: str | None = None

    @model_validator(mode="after")
    def _format_keys(self) -> DatasetConfig:
        if self.format == "png":
            for key in ("images", "spacing_csv"):
                if getattr(self, key) is None:
                    raise ValueError(f"dataset.{key} is required when dataset.format is 'png'")
        else:
            for key in ("images", "spacing_csv", "target_spacing", "group_pattern"):
                if getattr(self, key) is not None:
                    raise ValueError(f"dataset.{key} applies only to dataset.format 'png'")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as error:
                raise ValueError(f"dataset.group_pattern is not a valid regular expression: {error}") from error
        return self

    @property
    def spatial_dims(self) -> int:
        return 2 if self.format == "png" else 3


class SplitConfig(_Strict):
    """One fold of a case-level split: ``kfold`` from a seed, or nnU-Net v2's five folds."""

    scheme: Literal["kfold", "nnunet"] = "kfold"
    folds: int = Field(5, ge=2)
    seed: int = Field(12345, ge=0)
    fold: int = Field(0, ge=0)
    splits_file: str | None = None

    @model_validator(mode="after")
    def _fold_exists(self) -> SplitConfig:
        if self.fold >= self.folds:
            raise ValueError(f"split.fold {self.fold} does not exist with split.folds = {self.folds}")
        if self.scheme == "nnunet" and self.folds != 5:
            raise ValueError("split.folds must be 5 with scheme 'nnunet'")
        return self


class CaseLists(_Strict):
    """Explicit training and validation case ids."""

    train: list[str] = Field(min_length=1)
    val: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _disjoint(self) -> CaseLists:
        for key in ("train", "val"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"cases.{key} lists a case twice")
        shared = sorted(set(self.train) & set(self.val))
        if shared:
            raise ValueError(f"cases {shared[:3]} are in both cases.train and cases.val; a validation case must not be trained on")
        return self


class ModelConfig(_Strict):
    """Registry name, channel counts per level, normalisation and further model keyword arguments."""

    name: str = "unet"
    features: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=2)
    norm: Literal["instance", "batch", "none"] = "instance"
    options: dict[str, Any] = Field(default_factory=dict, description="further keyword arguments of the model, e.g. deep_supervision")

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            close = difflib.get_close_matches(name, list(MODELS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown model {name!r}; {hint}known models: {sorted(MODELS)}")
        return name

    @field_validator("features")
    @classmethod
    def _positive(cls, features: list[int]) -> list[int]:
        if any(f < 1 for f in features):
            raise ValueError(f"channel counts must be positive, got {features}")
        return features

    def arguments(self, spatial_dims: int) -> dict[str, Any]:
        """Registry name and keyword arguments for ``build_model``, with ``options`` flattened in."""
        arguments: dict[str, Any] = {"name": self.name, "features": list(self.features), "norm": self.norm}
        arguments.update(self.options)
        arguments["spatial_dims"] = spatial_dims
        return arguments


class TrainingOptions(_Strict):
    """Training budget and optimisation; steps are optimiser steps.

    ``slice_axis`` trains a 2D model on slices along that spatial axis of 3D
    cases, with ``slice_context`` neighbouring slices on each side as extra
    channels. ``patch_size`` is then the 2D in-plane patch.
    """

    max_steps: int = Field(gt=0)
    batch_size: int = Field(8, gt=0)
    patch_size: list[int] = Field(min_length=2, max_length=3)
    learning_rate: float = Field(3e-3, gt=0)
    val_every_steps: int | None = Field(None, gt=0)
    threads: int | None = Field(None, gt=0, description="torch CPU threads; default: all cores")
    slice_axis: int | None = Field(None, ge=0, le=2)
    slice_context: int = Field(0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(1, gt=0, description="training processes per node, one per device; batch_size is split among all processes")
    num_nodes: int = Field(1, gt=0)
    strategy: str = Field("auto", description="Lightning strategy: auto (DDP when more than one process) or ddp")

    @model_validator(mode="after")
    def _context_needs_axis(self) -> TrainingOptions:
        if self.slice_context and self.slice_axis is None:
            raise ValueError("training.slice_context needs training.slice_axis")
        if any(size < 1 for size in self.patch_size):
            raise ValueError(f"training.patch_size must be positive, got {self.patch_size}")
        return self

    @model_validator(mode="after")
    def _processes_share_batch(self) -> TrainingOptions:
        # Spawn and fork strategies train in child processes inside trainer.fit and hand
        # back no validation results, so the run folder could not be written.
        if any(word in self.strategy for word in ("spawn", "fork", "notebook")):
            raise ValueError(f"training.strategy {self.strategy!r} is not supported; use 'ddp', which runs this program once per process")
        if self.batch_size % self.processes:
            raise ValueError(
                f"training.batch_size {self.batch_size} must be divisible by the {self.processes} training processes "
                f"(devices {self.devices} x num_nodes {self.num_nodes}), because each process loads an equal share of every batch"
            )
        return self

    @property
    def processes(self) -> int:
        """Training processes of the run, all nodes together (the DDP world size)."""
        return self.devices * self.num_nodes

    def model_spatial_dims(self, data_spatial_dims: int) -> int:
        """Spatial dimensions of the network: 2 when training on slices, else the data's."""
        return 2 if self.slice_axis is not None else data_spatial_dims


class TrainConfig(_Strict):
    """One training run: dataset, cases, strategy, model, training options and seed."""

    dataset: DatasetConfig
    split: SplitConfig | None = None
    cases: CaseLists | None = None
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    strategy: str = "none"
    model: ModelConfig = ModelConfig()
    training: TrainingOptions
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.split is not None and self.cases is not None:
            raise ValueError("give either split (a fold of a case-level split) or cases (explicit lists), not both")
        if self.cases is not None and self.train_fraction != 1.0:
            raise ValueError("train_fraction applies to split folds only; list the training cases under cases.train instead")
        if self.split is not None and self.split.scheme == "nnunet" and self.dataset.format != "msd":
            raise ValueError("split.scheme 'nnunet' needs a dataset of format 'msd'")
        if self.training.slice_axis is not None and self.dataset.spatial_dims != 3:
            raise ValueError(f"training.slice_axis needs a 3D dataset, but dataset.format {self.dataset.format!r} is 2D")
        dims = self.training.model_spatial_dims(self.dataset.spatial_dims)
        if len(self.training.patch_size) != dims:
            where = "2D slices" if self.training.slice_axis is not None else f"a {dims}D dataset (format {self.dataset.format!r})"
            raise ValueError(f"training.patch_size {self.training.patch_size} must have {dims} sizes for {where}")
        return self

    @property
    def selected_split(self) -> SplitConfig:
        """The split to take cases from; the default split when neither ``split`` nor ``cases`` is given."""
        return self.split or SplitConfig()

    def resolved(self, strategy_reference: str) -> dict[str, Any]:
        """Everything that determines the run's result, as plain data: the run id hashes it, config.json stores it."""
        if self.dataset.format == "msd":
            dataset: Any = self.dataset.name
        else:
            dataset = self.dataset.model_dump(exclude={"path"})
        selection: dict[str, Any]
        if self.cases is not None:
            selection = {"cases": self.cases.model_dump()}
        else:
            selection = {"split": self.selected_split.model_dump(), "train_fraction": self.train_fraction}
        return {
            "dataset": dataset,
            **selection,
            "strategy": self.strategy,
            "strategy_config": strategy_config(strategy_reference),
            "seed": self.seed,
            "model": self.model.model_dump(),
            "training": self.training.model_dump(exclude=PLACEMENT_OPTIONS),
        }


def run_id(resolved: dict[str, Any], name: str) -> str:
    """``<name>-<hash>``: the hash of the resolved configuration, so an edited configuration gets a new run folder."""
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return f"{label}-{digest}"


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in loc).replace(".[", "[")


def _suggestion(loc: tuple[Any, ...]) -> str:
    """Closest valid key for a misspelled one, found by walking the schema along ``loc``."""
    model: Any = TrainConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        # Optional sections (split, cases) are "X | None"; walk into X.
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_validation_error(path: Path, error: ValidationError) -> str:
    errors = error.errors()
    # A misspelled key also shows up as the correct key missing; report the misspelling.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    key = _location(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"run configuration {path}: unknown key {key!r}{_suggestion(loc)}"
    if first["type"] == "missing":
        return f"run configuration {path}: missing required key {key!r}"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"run configuration {path}: invalid value for {key!r}: {message}{more}"


def find_config_file(name_or_path: str | Path) -> Path:
    """Return the path of a run configuration, accepting the name of one shipped in ``segment/configs``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    shipped = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"run configuration not found: {path}; give a path or one of the shipped configurations {shipped}")


def strategy_reference(strategy: str, config_path: Path) -> str:
    """Strategy YAML files are found relative to the configuration file; preset names pass through."""
    if strategy.endswith((".yaml", ".yml")) and not Path(strategy).is_absolute():
        return str(config_path.parent / strategy)
    return strategy


def load_train_config(path: Path) -> TrainConfig:
    """Read and fully validate a run configuration, strategy and model included.

    A relative ``dataset.path`` or ``split.splits_file`` is made absolute
    against the configuration's folder.

    Raises:
        ConfigError: naming the file and the key at fault.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"run configuration {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"run configuration {path} must contain a mapping with the keys dataset, training and optionally split, cases, strategy, model, seed")
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(path, error)) from error

    spatial_dims = config.training.model_spatial_dims(config.dataset.spatial_dims)
    model_kwargs = config.model.arguments(spatial_dims)
    try:
        net = build_model(model_kwargs.pop("name"), 1, 2, **model_kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"run configuration {path}: invalid model settings: {error}") from error
    if any(size % net.divisor for size in config.training.patch_size):
        raise ConfigError(
            f"run configuration {path}: training.patch_size {config.training.patch_size} must be multiples of {net.divisor}, "
            f"the size divisor of model {config.model.name!r} with {len(config.model.features)} levels"
        )

    try:
        build_strategy(strategy_reference(config.strategy, path))
    except StrategyError as error:
        raise ConfigError(f"run configuration {path}: strategy: {error}") from error

    if config.dataset.path is not None and not Path(config.dataset.path).is_absolute():
        anchored = config.dataset.model_copy(update={"path": str((path.parent / config.dataset.path).resolve())})
        config = config.model_copy(update={"dataset": anchored})
    if config.split is not None and config.split.splits_file is not None and not Path(config.split.splits_file).is_absolute():
        anchored_split = config.split.model_copy(update={"splits_file": str((path.parent / config.split.splits_file).resolve())})
        config = config.model_copy(update={"split": anchored_split})
    return config


def dataset_folder(dataset: DatasetConfig, data_root: str | Path | None) -> Path:
    """Return the dataset folder: ``dataset.path`` if set, else ``<data root>/<dataset.name>``."""
    if dataset.path is not None:
        folder = Path(dataset.path)
    else:
        folder = resolve_data_root(data_root) / dataset.name
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}; check dataset.name or dataset.path and the data root (--data-root or MEDAUG_DATA)")
    return folder


def open_dataset(dataset: DatasetConfig, folder: Path) -> MSDDataset | PNGDataset:
    """Open ``folder`` with the reader of ``dataset.format``."""
    if dataset.format == "png":
        return PNGDataset(
            folder,
            images=dataset.images,
            mask_suffix=dataset.mask_suffix,
            spacing_csv=dataset.spacing_csv,
            target_spacing=dataset.target_spacing,
            group_pattern=dataset.group_pattern,
        )
    return MSDDataset(folder)


def select_cases(config: TrainConfig, dataset: MSDDataset | PNGDataset) -> tuple[list[str], list[str]]:
    """Return the training and validation case ids of the run.

    From a split, the training cases are the nested ``train_fraction`` subset
    that a study with the same split, fold and fraction trains on.

    Raises:
        DataError: when an explicitly listed case is not in the dataset.
    """
    case_ids = [case.case_id for case in dataset.cases]
    if config.cases is not None:
        known = set(case_ids)
        for key in ("train", "val"):
            unknown = [case for case in getattr(config.cases, key) if case not in known]
            if unknown:
                raise DataError(f"cases.{key}: case {unknown[0]!r} is not in the dataset {dataset.folder}; check the case ids")
        return list(config.cases.train), list(config.cases.val)

    split = config.selected_split
    if split.scheme == "nnunet":
        folds = nnunet_split(case_ids, split.splits_file)
    else:
        groups = {case: dataset.group(case) for case in case_ids} if isinstance(dataset, PNGDataset) else None
        folds = kfold_split(case_ids, folds=split.folds, seed=split.seed, groups=groups)
    fold = folds[split.fold]
    train = training_subset(fold["train"], config.train_fraction, seed=split.seed + split.fold)
    return train, fold["val"]
