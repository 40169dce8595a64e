"""Synthetic-data strategies: a conditional GAN trained on one run's training cases adds generated cases.

A strategy with a ``synthetic`` section trains a label-map-to-image GAN
(``gan.training.train_conditional``) on the training cases of the run, never
on its validation cases, writes new image/label pairs with ``gan.export.sample_dataset``
(optionally from deformed label maps), and mixes those cases into the run's
training set. Alternatively it names a dataset already written by ``medaug gan
sample``; its manifest must then show that neither its generator nor its source
label maps saw one of the run's validation cases.

Generated data live under ``<study>/synthetic/<key>/``, where the key hashes the
training cases and the settings, so runs that share them (for example the same
fold with two segmentation seeds) share one GAN. A rerun after a kill reuses a
finished GAN and resumes its export case by case; a GAN killed during training
is trained again from its first step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segment.data.msd import Case, MSDDataset
from segment.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["GanTrainingSpec", "SyntheticSpec", "mix_count", "prepare_synthetic_cases"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GanTrainingSpec(_Strict):
    """Training settings of the per-run conditional GAN (see ``gan.training.train_conditional``)."""

    steps: int = Field(600, gt=0)
    batch_size: int = Field(16, gt=0)
    image_size: int | list[int] = 64
    generator_features: int = Field(32, gt=0)
    discriminator_features: int = Field(32, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    intensity: Literal["mr", "ct", "zscore"] = Field("mr", description="intensity mapping of the images")

    @field_validator("image_size")
    @classmethod
    def _large_enough(cls, size: int | list[int]) -> int | list[int]:
        from gan.training import MIN_IMAGE_SIZE

        sizes = [size] if isinstance(size, int) else size
        if len(sizes) not in (1, 2) or min(sizes) < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be one or two sizes of at least {MIN_IMAGE_SIZE} pixels, got {size}")
        return size


class SyntheticSpec(_Strict):
    """Generated cases added to a run's training set.

    ``ratio`` is the share of training patches that come from synthetic cases:
    the patch sampler visits cases uniformly, so a run with ``n`` real cases gets
    ``round(n * ratio / (1 - ratio))`` synthetic ones.
    """

    ratio: float = Field(0.5, gt=0, lt=1)
    per_case: int = Field(2, ge=1, description="generated cases per training case")
    label_strategy: str | None = Field(
        "nonrigid", description="augmentation strategy that deforms each label map before an image is generated; null keeps them"
    )
    dataset: str | None = Field(None, description="an existing synthetic dataset instead of a GAN trained per run")
    gan: GanTrainingSpec = GanTrainingSpec()

    @model_validator(mode="after")
    def _label_strategy_known(self) -> SyntheticSpec:
        if self.label_strategy is not None:
            from augment import StrategyError, build_strategy

            try:
                build_strategy(self.label_strategy)
            except StrategyError as error:
                raise ValueError(f"label_strategy: {error}") from error
        return self


def mix_count(real_cases: int, ratio: float) -> int:
    """Number of synthetic cases that make ``ratio`` of the cases a uniform sampler visits."""
    return max(1, round(real_cases * ratio / (1.0 - ratio)))


def _key(settings: dict[str, Any], train_ids: list[str], seed: int) -> str:
    payload = json.dumps({"settings": settings, "train_cases": sorted(train_ids), "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _check_leakage(manifest: dict[str, Any], folder: Path, val_ids: list[str]) -> None:
    """Refuse synthetic data whose generator or source label maps include a validation case."""
    provenance = manifest.get("provenance", {})
    trained_on = provenance.get("generator_train_cases")
    if trained_on is None:
        raise DataError(
            f"{folder / 'manifest.json'} does not record the cases its generator was trained on, so medaug cannot check "
            "that no validation case leaked into it; export it again with `medaug gan sample`"
        )
    sources = {record.get("source_case") for record in manifest.get("cases", [])}
    leaked = sorted((set(trained_on) | sources) & set(val_ids))
    if leaked:
        raise DataError(
            f"synthetic dataset {folder} was generated with validation cases of this run ({', '.join(leaked[:5])}); "
            "a GAN used in a study may only see the run's training cases. Leave out synthetic.dataset to train one per run"
        )


def _train_and_sample(spec: SyntheticSpec, dataset_folder: Path, train_ids: list[str], seed: int, folder: Path, threads: int | None) -> Path:
    from gan.export import is_finished_export, sample_dataset
    from gan.training import TRAINING_LOG, Domain, train_conditional

    gan_dir = folder / "gan"
    if not (gan_dir / TRAINING_LOG).is_file():
        if gan_dir.exists():
            logger.warning("removing unfinished GAN training %s and training it again", gan_dir)
            shutil.rmtree(gan_dir)
        logger.info("training a conditional GAN on %d training cases into %s", len(train_ids), gan_dir)
        gan = spec.gan
        train_conditional(
            Domain(dataset_folder, intensity=gan.intensity),
            gan_dir,
            steps=gan.steps,
            batch_size=gan.batch_size,
            image_size=gan.image_size,
            generator_features=gan.generator_features,
            discriminator_features=gan.discriminator_features,
            learning_rate=gan.learning_rate,
            seed=seed,
            threads=threads,
            train_cases=train_ids,
        )
    export = folder / "dataset"
    if not is_finished_export(export):
        sample_dataset(
            gan_dir / "generator.pt",
            dataset_folder,
            export,
            per_case=spec.per_case,
            strategy=spec.label_strategy,
            seed=seed,
            cases=train_ids,
        )
    return export


def prepare_synthetic_cases(
    spec: SyntheticSpec,
    *,
    dataset_folder: Path,
    train_ids: list[str],
    val_ids: list[str],
    seed: int,
    study_dir: Path,
    threads: int | None = None,
) -> list[Case]:
    """Synthetic training cases for one run, generated or reused, checked against its validation cases.

    Returns:
        ``mix_count(len(train_ids), spec.ratio)`` loaded cases; when fewer were
        generated, cases repeat in a seeded order, which weights them the same way.

    Raises:
        DataError: when a given dataset is missing, unfinished or saw a validation case.
    """
    from gan.export import is_finished_export

    if spec.dataset is not None:
        folder = Path(spec.dataset)
        if not is_finished_export(folder):
            raise DataError(f"synthetic.dataset {folder} is not a finished synthetic export (no dataset.json and manifest.json); run `medaug gan sample` first")
    else:
        key = _key(spec.model_dump(exclude={"ratio"}), train_ids, seed)
        folder = _train_and_sample(spec, dataset_folder, train_ids, seed, study_dir / "synthetic" / key, threads)

    manifest = json.loads((folder / "manifest.json").read_text())
    _check_leakage(manifest, folder, val_ids)
    synthetic = MSDDataset(folder)
    ids = [case.case_id for case in synthetic.cases]
    needed = mix_count(len(train_ids), spec.ratio)
    order = np.random.default_rng(seed).permutation(len(ids))
    chosen = [ids[order[i % len(ids)]] for i in range(needed)]
    if needed > len(ids):
        logger.warning("ratio %.2f needs %d synthetic cases but %s contains %d, so cases repeat", spec.ratio, needed, folder, len(ids))
    loaded = {case_id: synthetic.load(case_id) for case_id in dict.fromkeys(chosen)}
    logger.info("adding %d synthetic cases from %s to %d real training cases", needed, folder, len(train_ids))
    return [loaded[case_id] for case_id in chosen]
