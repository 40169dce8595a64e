"""Lightning module: U-Net training with on-device augmentation and per-case validation Dice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from augment import build_strategy, derive_generator

from .losses import DeepSupervisionLoss, DiceCELoss
from .metrics import dice_per_class, hd95_per_class, mean_over_cases
from .distributed import gather_case_rows
from .inference import predict_labels
from .models import build_model


class SegmentationModule(L.LightningModule):
    """Train a segmentation network on augmented patches; validate on whole volumes.

    Args:
        in_channels: image channels.
        num_classes: classes including background.
        class_names: names of the foreground classes ``1..K-1``, for logging.
        model: registry name and keyword arguments, e.g. ``{"name": "unet", "features": [8, 16]}``.
        augmentation: strategy preset name, YAML path or mapping (see ``augment.strategies``).
        learning_rate: initial AdamW learning rate, decayed polynomially to 0 at ``max_steps``.
        max_steps: training steps, for the learning-rate schedule.
        seed: run seed; step ``t`` augments with a generator derived from ``(seed, t)``.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        class_names: Sequence[str],
        model: Mapping[str, Any],
        augmentation: str | Mapping[str, Any],
        learning_rate: float,
        max_steps: int,
        seed: int,
        weight_decay: float = 1e-5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_kwargs = dict(model)
        self.net = build_model(model_kwargs.pop("name"), in_channels, num_classes, **model_kwargs)
        self.pipeline = build_strategy(augmentation)
        # Deep-supervision models return a list of outputs in training; plain ones a tensor.
        self.loss = DeepSupervisionLoss(DiceCELoss())
        self.foreground = list(range(1, num_classes))
        self.class_names = list(class_names)
        self.validation_results: list[dict[str, Any]] = []
        self.validated_at_step = -1

    @property
    def divisor(self) -> int:
        return self.net.divisor

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Augment whole batches on the training device; validation data stay untouched.
        if self.trainer is not None and self.trainer.training:
            generator = derive_generator(self.hparams.seed, self.global_step)
            batch = self.pipeline(batch, generator)
        return batch

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._pending_results: list[dict[str, Any]] = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._pending_results.extend(self.evaluate_batch(batch))

    def on_validation_epoch_end(self) -> None:
        # Under DDP each process validated part of the cases, and the sampler's padding repeats
        # some. The gathered rows contain every case once, in dataset order, on every process.
        self.validation_results = gather_case_rows(self._pending_results)
        self.validated_at_step = self.global_step
        # One value per case and class, averaged over cases: independent of batch size.
        # Every process logs the same values, so sync_dist's averaging changes them by float32 rounding at most.
        mean, _, _ = mean_over_cases([r["dice_mean"] for r in self.validation_results])
        self.log("val/dice_mean", mean, batch_size=1, sync_dist=True)
        self.log("val/hd95_mean", mean_over_cases([r["hd95_mean"] for r in self.validation_results])[0], batch_size=1, sync_dist=True)
        for cls, name in zip(self.foreground, self.class_names):
            class_mean, _, _ = mean_over_cases([r[f"dice_{cls}"] for r in self.validation_results])
            self.log(f"val/dice_{name}", class_mean, batch_size=1, sync_dist=True)

    def predict_volumes(self, image: Tensor) -> Tensor:
        """Predict label maps ``(B, *S)`` of whole validation images ``(B, C, *S)``; ``SliceSegmentationModule`` predicts slice by slice."""
        return predict_labels(self.net, image, self.divisor)

    def evaluate_batch(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Per-case foreground Dice and HD95 (mm) of whole volumes; a batch may contain several cases of one shape."""
        predictions = self.predict_volumes(batch["image"])
        results = []
        for index, (prediction, reference) in enumerate(zip(predictions, batch["label"][:, 0])):
            # Without spacing, distances are in voxels (1 mm per voxel).
            spacing = batch["spacing"][index].tolist() if "spacing" in batch else [1.0] * prediction.ndim
            dice = dice_per_class(prediction, reference, self.foreground)
            hd95 = hd95_per_class(prediction, reference, self.foreground, spacing)
            row: dict[str, Any] = {"case_id": batch["case_id"][index]}
            row.update({f"dice_{cls}": value for cls, value in dice.items()})
            row["dice_mean"] = sum(dice.values()) / len(dice)
            row.update({f"hd95_{cls}": value for cls, value in hd95.items()})
            row["hd95_mean"] = sum(hd95.values()) / len(hd95)
            results.append(row)
        return results

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        total = max(1, self.hparams.max_steps)
        # Polynomial decay with exponent 0.9, as in nnU-Net, per optimiser step.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total) ** 0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
