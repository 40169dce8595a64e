"""Save and load trained generators as ``{"state_dict", "config"}`` files read without unpickling objects."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segment.errors import DataError
from segment.files import atomic_write

from .errors import GanError
from .networks import build_generator

KINDS = ("cyclegan", "conditional")


def sha256_file(path: str | Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise GanError(f"{where}: config must be a mapping, got {type(config).__name__}")
    generator = config.get("generator")
    if not isinstance(generator, dict) or not {"name", "in_channels", "out_channels"} <= set(generator):
        raise GanError(f"{where}: config['generator'] must be a mapping with 'name', 'in_channels' and 'out_channels'")
    if config.get("kind") not in KINDS:
        raise GanError(f"{where}: config['kind'] must be one of {list(KINDS)}, got {config.get('kind')!r}")
    return config


def save_generator(path: str | Path, generator: nn.Module, config: dict[str, Any]) -> str:
    """Write the generator's weights and ``config`` to ``path`` atomically; return the file's SHA-256.

    ``config`` must contain plain JSON values only (so ``torch.load(weights_only=True)``
    can read it back) and at least ``"generator"`` (``{"name", "in_channels",
    "out_channels", **kwargs}`` as given to ``build_generator``) and ``"kind"``
    (``"cyclegan"`` or ``"conditional"``). The training functions also store
    ``direction``, ``intensity``, ``input_intensity``, ``context``, ``num_classes``,
    ``seed`` and ``train_cases``.

    Raises:
        GanError: when ``config`` lacks a required key or contains a value JSON cannot represent.
    """
    path = Path(path)
    _check_config(config, str(path))
    try:
        # A JSON round trip turns tuples into lists and rejects numpy scalars and objects,
        # which the weights-only loader would refuse later.
        plain_config = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise GanError(f"cannot save {path}: config must contain only JSON values (numbers, strings, lists, mappings); {error}") from error
    state_dict = {key: value.detach().cpu() for key, value in generator.state_dict().items()}
    checkpoint = {"state_dict": state_dict, "config": plain_config}
    atomic_write(path, lambda handle: torch.save(checkpoint, handle), binary=True)
    return sha256_file(path)


def load_generator(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the generator stored in ``path`` in evaluation mode; return it and its config.

    The file is read with ``torch.load(weights_only=True)``, which accepts only
    tensors and plain containers, so a tampered file cannot run code.

    Raises:
        DataError: when the file is missing, unreadable, contains pickled objects,
            or is not a generator written by ``save_generator``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"generator checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        # PyTorch's own message suggests weights_only=False, which would run code from the file.
        raise DataError(
            f"cannot load generator checkpoint {path} safely ({type(error).__name__}); "
            "it is not a file written by medaug's GAN training, or it is corrupt"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise DataError(f"{path} is not a medaug generator checkpoint (expected keys 'state_dict' and 'config')")

    config = _check_config(checkpoint["config"], str(path))
    settings = dict(config["generator"])
    network = build_generator(settings.pop("name"), settings.pop("in_channels"), settings.pop("out_channels"), **settings)
    try:
        network.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise DataError(f"generator checkpoint {path} does not match its own generator settings: {str(error).splitlines()[0]}") from error
    return network.eval(), config
