"""Augmentation ablation studies: study files, the runner, reports and tracking."""

from .errors import SpecError
from .runner import RunResult, StudyListener, run_study
from .spec import RunSpec, StudySpec, expand_runs, load_spec

__all__ = ["RunResult", "RunSpec", "SpecError", "StudyListener", "StudySpec", "expand_runs", "load_spec", "run_study"]
