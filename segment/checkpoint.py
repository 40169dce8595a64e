"""Load trained networks from medaug checkpoints without unpickling arbitrary objects."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import DataError
from .models import build_model


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in ``path`` (a run's ``model.pt``) in evaluation mode.

    The file is read with ``torch.load(weights_only=True)``, which accepts only
    tensors and plain containers, so a tampered checkpoint cannot run code.

    Returns:
        The network and the hyperparameters it was trained with.

    Raises:
        DataError: when the file is missing, unreadable, or not a medaug checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        # PyTorch's own message suggests weights_only=False, which would run code from the file.
        raise DataError(f"cannot load checkpoint {path} safely ({type(error).__name__}); it is not a model.pt written by medaug or it is corrupt") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise DataError(f"{path} is not a medaug checkpoint (expected keys 'state_dict' and 'hyper_parameters')")

    hparams = dict(checkpoint["hyper_parameters"])
    model_kwargs = dict(hparams["model"])
    net = build_model(model_kwargs.pop("name"), hparams["in_channels"], hparams["num_classes"], **model_kwargs)
    try:
        net.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise DataError(f"checkpoint {path} does not match its own model settings: {str(error).splitlines()[0]}") from error
    return net.eval(), hparams
