"""The real MSD Task04 Hippocampus folder loads completely: 210 cases, integer labels, finite images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from segment.data import MSDDataset


@pytest.fixture(scope="module")
def hippocampus(hippocampus_folder) -> MSDDataset:
    return MSDDataset(hippocampus_folder)


@pytest.fixture(scope="module")
def loaded_cases(hippocampus):
    return [hippocampus.load(files.case_id) for files in hippocampus.cases]


def test_hippocampus_lists_all_cases(hippocampus):
    assert len(hippocampus.cases) == 210
    assert hippocampus.classes == {0: "background", 1: "Anterior", 2: "Posterior"}


def test_hippocampus_labels_are_int64(loaded_cases):
    wrong_dtype = [case.case_id for case in loaded_cases if case.label.dtype != np.int64]

    assert wrong_dtype == []


def test_hippocampus_labels_have_both_classes(loaded_cases):
    # Both foreground classes occur in every case of this dataset.
    wrong_values = {case.case_id: np.unique(case.label).tolist() for case in loaded_cases if set(np.unique(case.label).tolist()) != {0, 1, 2}}

    assert wrong_values == {}


def test_hippocampus_float32_labels_load(hippocampus):
    float_labels = [files for files in hippocampus.cases if nib.load(files.label).get_data_dtype() == np.float32]

    assert [files.case_id for files in float_labels] == ["hippocampus_003", "hippocampus_243"]
    for files in float_labels:
        case = hippocampus.load(files.case_id)
        stored = np.asanyarray(nib.load(files.label).dataobj)
        assert case.label.dtype == np.int64, files.case_id
        np.testing.assert_array_equal(case.label[0], stored.astype(np.int64), err_msg=files.case_id)


def test_hippocampus_images_finite_after_normalisation(loaded_cases):
    not_finite = [case.case_id for case in loaded_cases if not np.isfinite(case.image).all()]

    assert not_finite == []
    assert {case.image.dtype for case in loaded_cases} == {np.dtype(np.float32)}
