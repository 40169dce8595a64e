"""The W&B API key never reaches a file, log or report, and no shell command is built from user input."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import make_msd_dataset

SENTINEL = "feedc0de" * 5  # 40 hexadecimal characters, the length of a W&B API key
REPOSITORY = Path(__file__).resolve().parents[2]


def test_api_key_written_nowhere(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    study = {
        "name": "secret",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 2, "batch_size": 1, "patch_size": [8, 8, 8], "val_every_steps": 1, "threads": 1},
        "tracking": {"mode": "offline"},
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    # Everything wandb may write outside the run folder (settings, caches, temporary
    # files) is redirected into tmp_path too, so the scan below reads every file.
    home = tmp_path / "home"
    home.mkdir()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {
        **os.environ,
        "WANDB_API_KEY": SENTINEL,
        "HOME": str(home),
        "TMPDIR": str(temporary),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
        "WANDB_CACHE_DIR": str(home / ".cache" / "wandb"),
        "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
        "WANDB_DATA_DIR": str(home / ".local" / "wandb"),
        # The working directory is tmp_path, so name the code under test explicitly.
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
    }

    result = subprocess.run(
        [sys.executable, "-m", "studies.cli", "study", "run", str(study_file), "-o", str(tmp_path / "out"), "--verbose"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    run_files = list((tmp_path / "out").glob("secret/*/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, "the offline W&B run was not written, so the scan would prove nothing"
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 20
    leaking = [str(path) for path in written if SENTINEL.encode() in path.read_bytes()]
    assert leaking == []
    assert SENTINEL not in result.stdout
    assert SENTINEL not in result.stderr


def _shell_calls(path: Path) -> list[str]:
    """Calls in ``path`` that run a shell or a subprocess: os.system, os.popen, os.exec*, os.spawn*, subprocess.*."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            module, name = function.value.id, function.attr
            if module == "subprocess" or (module == "os" and (name in ("system", "popen") or name.startswith(("exec", "spawn")))):
                found.append(f"{path.relative_to(REPOSITORY)}:{node.lineno} {module}.{name}")
    return found


def test_library_code_starts_no_shell():
    packages = ["augment", "segment", "gan", "studies"]
    sources = [path for package in packages for path in (REPOSITORY / package).rglob("*.py")]
    assert len(sources) > 50

    calls = [call for path in sources for call in _shell_calls(path)]
    imports = [str(path.relative_to(REPOSITORY)) for path in sources if "import subprocess" in path.read_text() or "from subprocess" in path.read_text()]

    assert calls == []
    assert imports == []


def _unsafe_loads(path: Path) -> list[str]:
    """``torch.load`` calls without a literal ``weights_only=True``, and pickle, marshal or full-YAML loads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
            continue
        module, name = node.func.value.id, node.func.attr
        where = f"{path.relative_to(REPOSITORY)}:{node.lineno} {module}.{name}"
        if module == "torch" and name == "load":
            safe = any(keyword.arg == "weights_only" and isinstance(keyword.value, ast.Constant) and keyword.value.value is True for keyword in node.keywords)
            if not safe:
                found.append(where)
        elif module in ("pickle", "marshal", "dill") and name in ("load", "loads"):
            found.append(where)
        elif module == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all"):
            found.append(where)
    return found


def test_library_code_loads_no_pickled_code():
    sources = [path for package in ["augment", "segment", "gan", "studies"] for path in (REPOSITORY / package).rglob("*.py")]
    torch_loads = [path for path in sources if "torch.load(" in path.read_text()]
    assert torch_loads, "no torch.load call found, so the check below would prove nothing"

    assert [call for path in sources for call in _unsafe_loads(path)] == []
