"""Datasets, the U-Net family, losses, metrics, Lightning training and inference."""

from .datamodule import PatchDataset, SegmentationDataModule, VolumeDataset
from .errors import DataError
from .inference import gaussian_importance_map, pad_to_multiple, predict_labels, predict_logits, predict_probabilities
from .losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from .metrics import EMPTY_BOTH_DICE, EMPTY_BOTH_HD95, dice_per_class, hd95_per_class, image_diagonal_mm, mean_over_cases
from .models import MODELS, UNet, build_model
from .module import SegmentationModule

__all__ = [
    "EMPTY_BOTH_DICE",
    "EMPTY_BOTH_HD95",
    "MODELS",
    "DataError",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "PatchDataset",
    "SegmentationDataModule",
    "SegmentationModule",
    "UNet",
    "VolumeDataset",
    "build_model",
    "dice_per_class",
    "gaussian_importance_map",
    "hd95_per_class",
    "image_diagonal_mm",
    "mean_over_cases",
    "pad_to_multiple",
    "predict_labels",
    "predict_logits",
    "predict_probabilities",
]
