"""Generative models for synthetic training data: CycleGAN and a pix2pix-style conditional GAN on 2D slices."""

from .checkpoint import load_generator, save_generator, sha256_file
from .conditional import ConditionalGAN, generate_from_labels
from .cyclegan import CycleGAN
from .errors import GanError
from .intensity import CTWindow, FittedPercentiles, Percentiles, ZScoreClip, intensity_from_state, make_intensity
from .networks import PatchDiscriminator, build_generator, receptive_field
from .pool import ImagePool
from .slices import SliceDataset, find_volumes, load_domain
from .training import Domain, train_conditional, train_cyclegan, translate_volume

__all__ = [
    "CTWindow",
    "ConditionalGAN",
    "CycleGAN",
    "Domain",
    "FittedPercentiles",
    "GanError",
    "ImagePool",
    "PatchDiscriminator",
    "Percentiles",
    "SliceDataset",
    "ZScoreClip",
    "build_generator",
    "find_volumes",
    "generate_from_labels",
    "intensity_from_state",
    "load_domain",
    "load_generator",
    "make_intensity",
    "receptive_field",
    "save_generator",
    "sha256_file",
    "train_conditional",
    "train_cyclegan",
    "translate_volume",
]
