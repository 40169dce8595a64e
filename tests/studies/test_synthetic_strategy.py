"""Synthetic-data strategies: spec checks, leakage checks and a tiny end-to-end study with a per-run GAN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from segment.errors import DataError
from studies.errors import SpecError
from studies.runner import run_study
from studies.spec import expand_runs, load_spec
from studies.synthetic import SyntheticSpec, mix_count, prepare_synthetic_cases
from tests.conftest import make_msd_dataset

TINY_GAN = {"steps": 3, "batch_size": 2, "image_size": 32, "generator_features": 4, "discriminator_features": 4}


def write_study(tmp_path: Path, dataset: Path, **changes) -> Path:
    study = {
        "name": "synthetic-tiny",
        "dataset": {"name": dataset.name, "path": str(dataset)},
        "split": {"scheme": "kfold", "folds": 2, "seed": 3},
        "strategies": ["rigid", "rigid+synthetic"],
        "definitions": {
            "rigid+synthetic": {
                "augmentation": "rigid",
                "synthetic": {"ratio": 0.5, "per_case": 1, "label_strategy": "rigid", "gan": TINY_GAN},
            }
        },
        "folds": [0],
        "model": {"name": "unet", "features": [4, 8]},
        "training": {"max_steps": 2, "batch_size": 2, "patch_size": [8, 8, 8], "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_mix_count_gives_the_ratio_of_synthetic_cases():
    assert mix_count(20, 0.5) == 20
    assert mix_count(21, 0.25) == 7
    assert mix_count(3, 0.1) == 1  # never zero: a synthetic strategy always adds data


def test_definition_not_listed_in_strategies_is_rejected(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    path = write_study(tmp_path, dataset, strategies=["rigid"])
    with pytest.raises(SpecError, match=r"definitions \['rigid\+synthetic'\] are not listed in strategies"):
        load_spec(path)


def test_unknown_label_strategy_is_named(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    definitions = {"rigid+synthetic": {"augmentation": "rigid", "synthetic": {"label_strategy": "rigd"}}}
    with pytest.raises(SpecError, match="label_strategy.*rigd"):
        load_spec(write_study(tmp_path, dataset, definitions=definitions))


def test_inline_augmentation_definition_builds_its_strategy(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    inline = {"transforms": [{"flip": {"p": 0.5}}]}
    path = write_study(tmp_path, dataset, strategies=["none", "flips"], definitions={"flips": {"augmentation": inline}})
    runs = expand_runs(load_spec(path))
    flips = [run for run in runs if run.strategy == "flips"][0]
    assert flips.config["strategy_config"]["transforms"][0]["flip"]["p"] == 0.5
    assert "synthetic" not in flips.config


def test_bad_inline_augmentation_rejected(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    inline = {"transforms": [{"flipp": {}}]}
    path = write_study(tmp_path, dataset, strategies=["none", "flips"], definitions={"flips": {"augmentation": inline}})
    with pytest.raises(SpecError, match=r"strategies\[1\].*flipp"):
        load_spec(path)


def _fake_export(folder: Path, trained_on: list[str], sources: list[str]) -> Path:
    make_msd_dataset(folder, n_cases=len(sources))
    cases = [{"case_id": f"case_{i:03d}", "source_case": source} for i, source in enumerate(sources)]
    manifest = {"provenance": {"checkpoint_sha256": "0" * 64, "generator_train_cases": trained_on}, "cases": cases}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_dataset_generator_saw_validation_case(tmp_path):
    export = _fake_export(tmp_path / "export", trained_on=["a", "v1"], sources=["a", "a"])
    spec = SyntheticSpec(dataset=str(export))
    with pytest.raises(DataError, match="validation cases of this run \\(v1\\)"):
        prepare_synthetic_cases(spec, dataset_folder=tmp_path, train_ids=["a"], val_ids=["v1"], seed=0, study_dir=tmp_path)


def test_dataset_from_validation_label_map(tmp_path):
    export = _fake_export(tmp_path / "export", trained_on=["a"], sources=["a", "v2"])
    spec = SyntheticSpec(dataset=str(export))
    with pytest.raises(DataError, match="v2"):
        prepare_synthetic_cases(spec, dataset_folder=tmp_path, train_ids=["a"], val_ids=["v2"], seed=0, study_dir=tmp_path)


def test_given_dataset_without_training_record_is_refused(tmp_path):
    export = _fake_export(tmp_path / "export", trained_on=None, sources=["a"])
    with pytest.raises(DataError, match="does not record the cases its generator was trained on"):
        prepare_synthetic_cases(SyntheticSpec(dataset=str(export)), dataset_folder=tmp_path, train_ids=["a"], val_ids=["b"], seed=0, study_dir=tmp_path)


def test_clean_given_dataset_gives_the_ratio_of_cases(tmp_path):
    export = _fake_export(tmp_path / "export", trained_on=["a", "b"], sources=["a", "b", "a"])
    spec = SyntheticSpec(dataset=str(export), ratio=0.5)
    cases = prepare_synthetic_cases(spec, dataset_folder=tmp_path, train_ids=["a", "b", "c", "d"], val_ids=["v"], seed=0, study_dir=tmp_path)
    assert len(cases) == 4  # 3 distinct synthetic cases, one repeated
    assert {case.case_id for case in cases} == {"case_000", "case_001", "case_002"}


@pytest.mark.slow
def test_synthetic_study_gan_training_cases(tmp_path):
    torch.set_num_threads(1)
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=4, shape=(12, 14, 10))
    path = write_study(tmp_path, dataset)
    spec = load_spec(path)
    results = run_study(spec, output_dir=tmp_path / "results", study_path=path)
    assert all(result.status == "finished" for result in results), [result.error for result in results]

    study_dir = tmp_path / "results" / spec.name
    synthetic_run = next(run for run in expand_runs(spec, path) if run.strategy == "rigid+synthetic")
    config = json.loads((study_dir / synthetic_run.run_id / "config.json").read_text())
    metrics = json.loads((study_dir / synthetic_run.run_id / "metrics.json").read_text())
    assert metrics["train_cases"] == 2
    assert metrics["synthetic_cases"] == 2

    (gan_folder,) = (study_dir / "synthetic").iterdir()
    manifest = json.loads((gan_folder / "dataset" / "manifest.json").read_text())
    real_train = [case for case in config["train_cases"] if "_synth" not in case]
    assert sorted(manifest["provenance"]["generator_train_cases"]) == sorted(real_train)
    assert not set(manifest["provenance"]["generator_train_cases"]) & set(config["val_cases"])
    assert {record["source_case"] for record in manifest["cases"]} <= set(real_train)

    # A rerun finds every run finished and does not train the GAN again.
    generator = gan_folder / "gan" / "generator.pt"
    stamp = generator.stat().st_mtime_ns
    run_study(spec, output_dir=tmp_path / "results", study_path=path)
    assert generator.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("gan", "message"),
    [({"image_size": 8}, "image_size must be one or two sizes of at least 32"), ({"intensity": "foo"}, "intensity")],
)
def test_bad_gan_settings_are_rejected_before_any_run(tmp_path, gan, message):
    # Found by a new-user test: these used to fail only after the other runs had trained.
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    definitions = {"rigid+synthetic": {"augmentation": "rigid", "synthetic": {"gan": gan}}}
    with pytest.raises(SpecError, match=message):
        load_spec(write_study(tmp_path, dataset, definitions=definitions))


def test_missing_synthetic_dataset_is_rejected_at_load(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    definitions = {"rigid+synthetic": {"augmentation": "rigid", "synthetic": {"dataset": "does-not-exist"}}}
    with pytest.raises(SpecError, match=r"definitions\.rigid\+synthetic\.synthetic\.dataset: .*does-not-exist is not a synthetic dataset"):
        load_spec(write_study(tmp_path, dataset, definitions=definitions))
