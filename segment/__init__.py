"""Datasets, U-Net models, losses, metrics, Lightning training and inference."""

from .datamodule import PatchDataset, SegmentationDataModule, VolumeDataset
from .errors import DataError
from .inference import pad_to_multiple, predict_labels, predict_logits
from .losses import DiceCELoss, DiceLoss
from .metrics import EMPTY_BOTH_DICE, dice_per_class, mean_over_cases
from .models import MODELS, UNet, build_model
from .module import SegmentationModule

__all__ = [
    "EMPTY_BOTH_DICE",
    "MODELS",
    "DataError",
    "DiceCELoss",
    "DiceLoss",
    "PatchDataset",
    "SegmentationDataModule",
    "SegmentationModule",
    "UNet",
    "VolumeDataset",
    "build_model",
    "dice_per_class",
    "mean_over_cases",
    "pad_to_multiple",
    "predict_labels",
    "predict_logits",
]
