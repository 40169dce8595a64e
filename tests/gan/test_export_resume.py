"""Atomic, resumable export: partial folders never look finished, reruns reuse matching cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gan.errors import GanError
from gan.export import DatasetInfo, PlannedCase, SyntheticCase, case_seed, export_dataset, is_finished_export, partial_folder

INFO = DatasetInfo("Synth", "CT", {0: "background", 1: "organ"})
SHA = "cd" * 32


class Crash(RuntimeError):
    pass


def make_generate(calls: list[str], crash_after: int | None = None):
    """Deterministic fake generator: the image depends only on the case's seed."""

    def generate(case: PlannedCase) -> SyntheticCase:
        if crash_after is not None and len(calls) == crash_after:
            raise Crash("simulated crash")
        calls.append(case.case_id)
        rng = np.random.default_rng(case.seed)
        image = rng.normal(size=(5, 6, 4)).astype(np.float32)
        return SyntheticCase(image, (image > 0.5).astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))

    return generate


def plan(count: int = 5, base_seed: int = 0) -> list[PlannedCase]:
    return [PlannedCase(f"case_{i}", f"src_{i}", case_seed(base_seed, f"src_{i}"), {"draw": 0}) for i in range(count)]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_crash_leaves_no_finished_folder(tmp_path):
    output = tmp_path / "out"
    calls: list[str] = []
    with pytest.raises(Crash):
        export_dataset(output, plan(), make_generate(calls, crash_after=2), info=INFO, provenance={"checkpoint_sha256": SHA})

    assert not output.exists()
    assert not is_finished_export(partial_folder(output))
    assert not (partial_folder(output) / "manifest.json").exists()


def test_rerun_reuses_finished_cases(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(Crash):
        export_dataset(output, plan(), make_generate([], crash_after=2), info=INFO, provenance={"checkpoint_sha256": SHA})

    calls: list[str] = []
    export_dataset(output, plan(), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": SHA})
    reference = export_dataset(tmp_path / "reference", plan(), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})

    assert calls == ["case_2", "case_3", "case_4"]
    assert not partial_folder(output).exists()
    assert folder_bytes(output) == folder_bytes(reference)


def test_rerun_with_other_checkpoint_regenerates(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(Crash):
        export_dataset(output, plan(), make_generate([], crash_after=2), info=INFO, provenance={"checkpoint_sha256": SHA})

    calls: list[str] = []
    export_dataset(output, plan(), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": "ef" * 32})
    assert calls == [f"case_{i}" for i in range(5)]


def test_rerun_with_other_seed_regenerates(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(Crash):
        export_dataset(output, plan(base_seed=0), make_generate([], crash_after=2), info=INFO, provenance={"checkpoint_sha256": SHA})

    calls: list[str] = []
    export_dataset(output, plan(base_seed=1), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": SHA})
    manifest = json.loads((output / "manifest.json").read_text())
    assert calls == [f"case_{i}" for i in range(5)]
    assert [case["seed"] for case in manifest["cases"]] == [case.seed for case in plan(base_seed=1)]


def test_corrupted_case_file_is_regenerated(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(Crash):
        export_dataset(output, plan(), make_generate([], crash_after=2), info=INFO, provenance={"checkpoint_sha256": SHA})
    (partial_folder(output) / "imagesTr" / "case_0_0000.nii.gz").write_bytes(b"truncated")
    (partial_folder(output) / "imagesTr" / ".case_2_0000.nii.gz.partial.nii.gz").write_bytes(b"left by a killed write")
    (partial_folder(output) / ".manifest.json.abc.tmp").write_text("left by a killed write")

    calls: list[str] = []
    export_dataset(output, plan(), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": SHA})
    assert calls == ["case_0", "case_2", "case_3", "case_4"]
    assert sorted(p.name for p in (output / "imagesTr").iterdir()) == [f"case_{i}_0000.nii.gz" for i in range(5)]
    assert sorted(p.name for p in output.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "manifest.json"]


def test_kill_after_manifest_reuses_all_cases(tmp_path):
    output = tmp_path / "out"
    export_dataset(output, plan(), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    before = folder_bytes(output)
    # The state a kill leaves between writing manifest.json and writing dataset.json.
    output.rename(partial_folder(output))
    (partial_folder(output) / "dataset.json").unlink()

    calls: list[str] = []
    export_dataset(output, plan(), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": SHA})
    assert calls == []
    assert folder_bytes(output) == before


def test_finished_output_is_not_overwritten(tmp_path):
    output = tmp_path / "out"
    export_dataset(output, plan(), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    before = folder_bytes(output)

    with pytest.raises(GanError, match="--overwrite"):
        export_dataset(output, plan(base_seed=7), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    assert folder_bytes(output) == before
    assert not partial_folder(output).exists()


def test_same_request_keeps_finished_output(tmp_path):
    output = tmp_path / "out"
    export_dataset(output, plan(), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    calls: list[str] = []
    export_dataset(output, plan(), make_generate(calls), info=INFO, provenance={"checkpoint_sha256": SHA})
    assert calls == []


def test_overwrite_replaces_finished_output(tmp_path):
    output = tmp_path / "out"
    export_dataset(output, plan(3), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    export_dataset(output, plan(2, base_seed=7), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA}, overwrite=True)

    manifest = json.loads((output / "manifest.json").read_text())
    assert [case["case_id"] for case in manifest["cases"]] == ["case_0", "case_1"]
    assert sorted(p.name for p in (output / "labelsTr").iterdir()) == ["case_0.nii.gz", "case_1.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_non_dataset_folder_is_not_replaced(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(GanError, match=r"out exists, is not empty and is not a finished export"):
        export_dataset(output, plan(), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})
    assert (output / "notes.txt").read_text() == "keep me"


def test_duplicate_case_ids_are_rejected(tmp_path):
    cases = [PlannedCase("same", "a", 0), PlannedCase("same", "b", 1)]
    with pytest.raises(GanError, match="'same' appears more than once"):
        export_dataset(tmp_path / "out", cases, make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})


def test_case_id_with_path_is_rejected(tmp_path):
    with pytest.raises(GanError, match="invalid output case id '../escape'"):
        export_dataset(tmp_path / "out", [PlannedCase("../escape", "a", 0)], make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA})


SLOW_EXPORT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from gan.export import DatasetInfo, PlannedCase, SyntheticCase, export_dataset

    def generate(case):
        time.sleep(float(sys.argv[2]))  # slow enough that the test can kill the process between cases
        image = np.random.default_rng(case.seed).normal(size=(5, 6, 4)).astype(np.float32)
        return SyntheticCase(image, (image > 0.5).astype(np.uint8), np.eye(4))

    cases = [PlannedCase(f"case_{i}", f"src_{i}", i) for i in range(10)]
    info = DatasetInfo("Synth", "CT", {0: "background", 1: "organ"})
    if __name__ == "__main__":
        export_dataset(sys.argv[1], cases, generate, info=info, provenance={"checkpoint_sha256": "ab" * 32})
    """
)


def test_killed_export_resumes_to_same_files(tmp_path):
    script = tmp_path / "export.py"
    script.write_text(SLOW_EXPORT)
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}

    process = subprocess.Popen([sys.executable, str(script), str(output), "0.3"], env=env)
    records = partial_folder(output) / ".cases"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert len(list(records.glob("*.json"))) < 10
    assert not output.exists()
    assert not is_finished_export(partial_folder(output))

    subprocess.run([sys.executable, str(script), str(output), "0"], env=env, check=True, timeout=120)
    assert is_finished_export(output)
    assert not partial_folder(output).exists()

    namespace = {"__name__": "reference"}
    exec(compile(SLOW_EXPORT.replace("float(sys.argv[2])", "0"), "export.py", "exec"), namespace)
    reference = export_dataset(tmp_path / "reference", namespace["cases"], namespace["generate"], info=namespace["info"], provenance={"checkpoint_sha256": "ab" * 32})
    assert folder_bytes(output) == folder_bytes(reference)


def test_overwrite_never_deletes_a_folder_that_is_not_an_export(tmp_path):
    # A user pointing -o at a project folder must not lose it (found by a new-user test).
    output = tmp_path / "project"
    output.mkdir()
    (output / "thesis.txt").write_text("important")
    with pytest.raises(GanError, match="not a synthetic export written by medaug"):
        export_dataset(output, plan(1), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA}, overwrite=True)
    assert (output / "thesis.txt").read_text() == "important"


def test_overwrite_never_deletes_a_source_dataset(tmp_path):
    # A Decathlon dataset has dataset.json too, but no medaug manifest.
    output = tmp_path / "Task97"
    output.mkdir()
    (output / "dataset.json").write_text("{}")
    with pytest.raises(GanError, match="not a synthetic export written by medaug"):
        export_dataset(output, plan(1), make_generate([]), info=INFO, provenance={"checkpoint_sha256": SHA}, overwrite=True)
    assert (output / "dataset.json").exists()
