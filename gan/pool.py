"""History pool of generated images for discriminator updates.

Shrivastava et al. ("Learning from Simulated and Unsupervised Images through
Adversarial Training", CVPR 2017) and CycleGAN update the discriminator with a mix
of current and earlier generator outputs, so it does not chase only the latest
generator. The pool keeps up to ``size`` earlier images. While the pool is not
full, each new image is stored and returned. Once it is full, a new image
replaces a random stored image with probability 1/2, and the stored image is
returned instead. Otherwise the new image is returned and the pool is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import GanError


class ImagePool:
    """Pool of up to ``size`` generated images with a seeded swap rule; ``size=0`` returns inputs unchanged.

    Stored images are detached copies, so the pool never keeps a graph alive.
    """

    def __init__(self, size: int = 50, *, seed: int = 0) -> None:
        if not isinstance(size, int) or size < 0:
            raise GanError(f"pool size must be a non-negative integer, got {size!r}")
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same shape as ``images`` ``(B, C, X, Y)``, mixing in stored images."""
        if self.size == 0:
            return images
        returned = []
        for image in images.detach():
            image = image.clone()
            if len(self.images) < self.size:
                self.images.append(image)
                returned.append(image)
                continue
            if torch.rand((), generator=self.generator) < 0.5:
                position = int(torch.randint(len(self.images), (), generator=self.generator))
                returned.append(self.images[position])
                self.images[position] = image
            else:
                returned.append(image)
        return torch.stack(returned)
