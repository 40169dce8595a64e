"""Random intensity transforms applied to whole image batches on the image's device.

Shapes: images ``(B, C, *S)`` with ``S`` of length 2 or 3, spacing ``(B, D)`` in
millimetres. Intensity transforms read and write only the image: labels and any
other batch entry are never passed to them.

Every transform separates sampling from application. ``sample`` draws the
parameters of every sample and channel from an explicit CPU ``torch.Generator``,
so they are identical on any device, and returns them as tensors. ``apply`` uses
only those tensors, so the same parameters give the same output. The probability
``p`` selects samples and ``p_per_channel`` selects channels of selected samples.
Entries left out, and entries whose parameters are the identity (a factor of
exactly 1, a standard deviation of exactly 0), are recorded as not applied. They
keep their input values bit for bit.

Integer images are converted to float32 before any arithmetic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "IntensityTransform",
    "RandomAdditiveBrightness",
    "RandomBiasField",
    "RandomContrast",
    "RandomGamma",
    "RandomGaussianNoise",
    "RandomMultiplicativeBrightness",
    "RandomRicianNoise",
]

# Noise seeds are drawn from [0, 2**62), inside the non-negative int64 range that torch.Generator.manual_seed accepts.
_MAX_NOISE_SEED = 2**62


def check_probability(value: float, name: str) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def parse_range(
    value: float | Sequence[float],
    name: str,
    *,
    from_number: Callable[[float], tuple[float, float]],
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> tuple[float, float]:
    """Validate a ``(min, max)`` pair, or expand one number with ``from_number``.

    Raises:
        ValueError: naming ``name`` and the value, when the value is not a number
            or a pair of finite numbers with ``min <= max`` inside the allowed bounds.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if isinstance(value, (int, float)):
        low, high = from_number(float(value))
        if low > high:
            raise ValueError(f"{name} must be non-negative when given as one number, got {value!r}")
    else:
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{name} must contain numbers, got {value!r}")
        low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low > high:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    if minimum is not None:
        if exclusive_minimum and low <= minimum:
            raise ValueError(f"{name} must be greater than {minimum}, got {value!r}")
        if not exclusive_minimum and low < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    if maximum is not None and high > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return low, high


def zero_to(value: float) -> tuple[float, float]:
    """Expand one number ``v`` into the range ``(0, v)``."""
    return 0.0, value


def plus_minus(value: float) -> tuple[float, float]:
    """Expand one number ``v >= 0`` into the range ``(-v, v)``."""
    return -value, value


def around_one(value: float) -> tuple[float, float]:
    """Expand one number ``v`` into the factor range ``(1 - v, 1 + v)``."""
    return 1.0 - value, 1.0 + value


def check_bool(value: bool, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def uniform(generator: torch.Generator, shape: Sequence[int], low: float, high: float) -> Tensor:
    """Draw float64 values from ``U(low, high)``, or exactly ``low`` when the range is a single value."""
    draw = torch.rand(*shape, generator=generator, dtype=torch.float64)
    if low == high:
        return torch.full(tuple(shape), low, dtype=torch.float64)
    return low + (high - low) * draw


def factor_draw(generator: torch.Generator, shape: Sequence[int], low: float, high: float, split_at_one: bool) -> Tensor:
    """Draw multiplicative factors from ``[low, high]``.

    With ``split_at_one`` and ``low < 1 < high``, each factor comes from ``[low, 1]``
    or ``[1, high]`` with probability 0.5 each, so shrinking and growing are equally
    likely whatever the range's asymmetry. nnU-Net v2 samples its contrast,
    brightness and gamma factors this way (``BGContrast`` in batchgeneratorsv2's
    ``transforms/intensity/contrast.py``). Otherwise factors are uniform over the range.
    """
    side = torch.rand(*shape, generator=generator, dtype=torch.float64)
    draw = torch.rand(*shape, generator=generator, dtype=torch.float64)
    if low == high:
        return torch.full(tuple(shape), low, dtype=torch.float64)
    if split_at_one and low < 1.0 < high:
        below = low + (1.0 - low) * draw
        above = 1.0 + (high - 1.0) * draw
        return torch.where(side < 0.5, below, above)
    return low + (high - low) * draw


def channel_view(values: Tensor, ndim: int) -> Tensor:
    """Reshape per-(sample, channel) values ``(B, C)`` to broadcast over ``(B, C, *S)``."""
    return values.reshape(values.shape[0], values.shape[1], *(1,) * (ndim - 2))


class IntensityTransform:
    """Base class of transforms that change image values and nothing else.

    Subclasses implement ``_transform`` and, when they draw random values,
    ``_sample_parameters`` (tensors whose first two dimensions are ``(B, C)``) and
    ``_identity``. The base class draws which samples and channels are applied,
    records it as ``applied`` ``(B, C)`` bool, and keeps the input values wherever
    ``applied`` is false.

    Args:
        p: probability of applying the transform to a sample.
        p_per_channel: probability, given that a sample is selected, of applying
            the transform to each of its channels.
    """

    def __init__(self, *, p: float = 1.0, p_per_channel: float = 1.0) -> None:
        self.p = check_probability(p, "p")
        self.p_per_channel = check_probability(p_per_channel, "p_per_channel")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def sample(self, image_shape: Sequence[int], spacing: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw the parameters of every sample and channel of an image batch of shape ``image_shape``."""
        batch_size, channels = int(image_shape[0]), int(image_shape[1])
        spatial_shape = tuple(int(n) for n in image_shape[2:])
        selected = torch.rand(batch_size, generator=generator, dtype=torch.float64) < self.p
        channel_selected = torch.rand(batch_size, channels, generator=generator, dtype=torch.float64) < self.p_per_channel
        params = self._sample_parameters(batch_size, channels, spatial_shape, spacing, generator)
        params["applied"] = selected[:, None] & channel_selected
        params["applied"] &= ~self._identity(params)
        return params

    def apply(self, image: Tensor, params: dict[str, Tensor], spacing: Tensor | None = None) -> Tensor:
        """Apply recorded parameters to ``image`` ``(B, C, *S)``. The same parameters give the same output.

        ``spacing`` ``(B, D)`` in millimetres defaults to 1 mm. Only transforms
        with physical sizes (Gaussian blur) read it.
        """
        if not image.is_floating_point():
            image = image.to(torch.float32)
        if spacing is None:
            spacing = torch.ones(image.shape[0], image.ndim - 2, dtype=torch.float64)
        applied = params["applied"]
        if applied.shape != image.shape[:2]:
            raise ValueError(f"parameters are for a batch of shape {tuple(applied.shape)}, got image shape {tuple(image.shape)}")
        if not bool(applied.any()):
            return image

        # Half-precision images are transformed in float32: statistics such as the
        # standard deviation of a large volume lose too many digits in float16.
        work = image.float() if image.dtype in (torch.float16, torch.bfloat16) else image
        transformed = self._transform(work, params, spacing.cpu().to(torch.float64), applied.cpu())
        transformed = transformed.to(image.dtype)
        mask = channel_view(applied.to(image.device), image.ndim)
        return torch.where(mask, transformed, image)

    def _sample_parameters(self, batch_size: int, channels: int, spatial_shape: tuple[int, ...], spacing: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {}

    def _identity(self, params: dict[str, Tensor]) -> Tensor:
        """Mask ``(B, C)`` of the entries whose parameters leave the image unchanged, by default none."""
        return torch.zeros_like(params["applied"])

    def _transform(self, image: Tensor, params: dict[str, Tensor], spacing: Tensor, applied: Tensor) -> Tensor:
        """Return the transformed image. ``apply`` discards the entries where ``applied`` is false."""
        raise NotImplementedError


class _ChannelParameterTransform(IntensityTransform):
    """Intensity transform with one random value per sample, or per sample and channel."""

    def __init__(self, *, per_channel: bool, p: float, p_per_channel: float) -> None:
        super().__init__(p=p, p_per_channel=p_per_channel)
        self.per_channel = check_bool(per_channel, "per_channel")

    def _draw_shape(self, batch_size: int, channels: int) -> tuple[int, int]:
        return (batch_size, channels if self.per_channel else 1)

    def _expand(self, values: Tensor, channels: int) -> Tensor:
        return values.expand(values.shape[0], channels).contiguous()


class _NoiseTransform(_ChannelParameterTransform):
    """Shared sampling of additive noise: a standard deviation per entry and a seed per sample.

    The noise field of sample ``b`` is drawn on the image's device from a generator
    seeded with ``seed[b]``, so replaying the parameters on the same device
    reproduces it bit for bit.

    NOTE: CPU and CUDA generators give different streams for the same seed, so the
    noise values (not the recorded parameters) differ between devices.
    """

    def __init__(self, *, std: float | Sequence[float], per_channel: bool, p: float, p_per_channel: float) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.std = parse_range(std, "std", from_number=zero_to, minimum=0.0)

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        std = uniform(generator, self._draw_shape(batch_size, channels), *self.std)
        seed = torch.randint(0, _MAX_NOISE_SEED, (batch_size,), generator=generator, dtype=torch.int64)
        return {"std": self._expand(std, channels), "seed": seed}

    def _identity(self, params):
        return params["std"] == 0

    @staticmethod
    def _noise_generator(image: Tensor, seed: Tensor) -> torch.Generator:
        generator = torch.Generator(device=image.device)
        generator.manual_seed(int(seed))
        return generator


class RandomGaussianNoise(_NoiseTransform):
    """Add zero-mean Gaussian noise, independent per voxel and channel.

    Args:
        std: range of the noise standard deviation in image intensity units.
            One number ``s`` means ``(0, s)``. nnU-Net v2 uses ``(0, 0.1)`` on z-scored images.
        per_channel: draw one standard deviation per channel instead of one per sample.
        p_per_channel: probability of adding noise to each channel of a selected sample.
        p: probability of adding noise to a sample.
    """

    def __init__(self, *, std: float | Sequence[float] = (0.0, 0.1), per_channel: bool = False, p_per_channel: float = 1.0, p: float = 1.0) -> None:
        super().__init__(std=std, per_channel=per_channel, p=p, p_per_channel=p_per_channel)

    def _transform(self, image, params, spacing, applied):
        out = image.clone()
        std = params["std"].to(image.device, image.dtype)
        for b in torch.nonzero(applied.any(dim=1)).flatten().tolist():
            generator = self._noise_generator(image, params["seed"][b])
            noise = torch.randn(image.shape[1:], generator=generator, device=image.device, dtype=image.dtype)
            out[b] = image[b] + noise * channel_view(std[b : b + 1], image.ndim)[0]
        return out


class RandomRicianNoise(_NoiseTransform):
    """Replace each value ``x`` by ``sqrt((x + s n1)^2 + (s n2)^2)`` with ``n1, n2 ~ N(0, 1)``.

    This is the magnitude of a complex MR signal with Gaussian noise in both the real
    and imaginary channels. The output is non-negative, so the transform suits
    magnitude images (for example before z-scoring), not images with negative values.

    Args:
        std: range of the noise standard deviation ``s`` in image intensity units.
            One number ``s`` means ``(0, s)``.
        per_channel: draw one standard deviation per channel instead of one per sample.
        p_per_channel: probability of adding noise to each channel of a selected sample.
        p: probability of adding noise to a sample.
    """

    def __init__(self, *, std: float | Sequence[float] = (0.0, 0.1), per_channel: bool = False, p_per_channel: float = 1.0, p: float = 1.0) -> None:
        super().__init__(std=std, per_channel=per_channel, p=p, p_per_channel=p_per_channel)

    def _transform(self, image, params, spacing, applied):
        out = image.clone()
        std = params["std"].to(image.device, image.dtype)
        for b in torch.nonzero(applied.any(dim=1)).flatten().tolist():
            generator = self._noise_generator(image, params["seed"][b])
            real = torch.randn(image.shape[1:], generator=generator, device=image.device, dtype=image.dtype)
            imaginary = torch.randn(image.shape[1:], generator=generator, device=image.device, dtype=image.dtype)
            scale = channel_view(std[b : b + 1], image.ndim)[0]
            out[b] = torch.sqrt((image[b] + scale * real).square() + (scale * imaginary).square())
        return out


def _flat_statistics(flat: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row mean, population standard deviation, minimum and maximum of ``(B, C, N)`` values."""
    mean = flat.mean(dim=-1, keepdim=True)
    std = flat.std(dim=-1, correction=0, keepdim=True)
    return mean, std, flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)


class RandomGamma(_ChannelParameterTransform):
    """Raise the image, rescaled to [0, 1] per sample and channel, to a random power ``gamma``.

    Values are mapped to ``((x - min) / range) ** gamma * range + min``, so the
    minimum and maximum stay where they are. With ``retain_stats`` the result is then
    shifted and scaled back to the mean and standard deviation of the input, as
    nnU-Net v2 does with ``p_retain_stats=1``. With ``invert`` the image is negated
    before and after, so ``gamma`` acts on the bright end instead of the dark end.

    Args:
        gamma: range of the exponent, positive. One number ``g`` means ``(1 - g, 1 + g)``.
        invert: negate the image before and after the power.
        retain_stats: restore each sample's and channel's mean and standard deviation.
        split_at_one: draw exponents below and above 1 with probability 0.5 each
            (see ``factor_draw``), or else uniformly over the range.
        per_channel: draw one exponent per channel instead of one per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(
        self,
        *,
        gamma: float | Sequence[float] = (0.7, 1.5),
        invert: bool = False,
        retain_stats: bool = True,
        split_at_one: bool = True,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.gamma = parse_range(gamma, "gamma", from_number=around_one, minimum=0.0, exclusive_minimum=True)
        self.invert = check_bool(invert, "invert")
        self.retain_stats = check_bool(retain_stats, "retain_stats")
        self.split_at_one = check_bool(split_at_one, "split_at_one")

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        gamma = factor_draw(generator, self._draw_shape(batch_size, channels), *self.gamma, self.split_at_one)
        return {"gamma": self._expand(gamma, channels)}

    def _identity(self, params):
        return params["gamma"] == 1.0

    def _transform(self, image, params, spacing, applied):
        flat = image.flatten(2)
        if self.invert:
            flat = -flat
        mean, std, minimum, maximum = _flat_statistics(flat)
        value_range = maximum - minimum
        gamma = params["gamma"].to(image.device, image.dtype)[..., None]

        # (flat - minimum) is exactly >= 0 because minimum is one of the values.
        out = ((flat - minimum) / value_range.clamp(min=1e-7)).pow(gamma) * value_range + minimum
        if self.retain_stats:
            new_mean, new_std, _, _ = _flat_statistics(out)
            out = (out - new_mean) * (std / new_std.clamp(min=1e-7)) + mean
        if self.invert:
            out = -out
        return out.reshape(image.shape)


class RandomMultiplicativeBrightness(_ChannelParameterTransform):
    """Multiply the image by a random factor.

    Args:
        factor: range of the factor. One number ``f`` means ``(1 - f, 1 + f)``.
        split_at_one: draw factors below and above 1 with probability 0.5 each
            (see ``factor_draw``), or else uniformly over the range.
        per_channel: draw one factor per channel instead of one per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(
        self,
        *,
        factor: float | Sequence[float] = (0.75, 1.25),
        split_at_one: bool = True,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.factor = parse_range(factor, "factor", from_number=around_one)
        self.split_at_one = check_bool(split_at_one, "split_at_one")

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        factor = factor_draw(generator, self._draw_shape(batch_size, channels), *self.factor, self.split_at_one)
        return {"factor": self._expand(factor, channels)}

    def _identity(self, params):
        return params["factor"] == 1.0

    def _transform(self, image, params, spacing, applied):
        return image * channel_view(params["factor"].to(image.device, image.dtype), image.ndim)


class RandomAdditiveBrightness(_ChannelParameterTransform):
    """Add a random constant to the image.

    Args:
        shift: range of the added value in image intensity units. One number ``s`` means ``(-s, s)``.
        per_channel: draw one shift per channel instead of one per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(self, *, shift: float | Sequence[float] = 0.1, per_channel: bool = False, p_per_channel: float = 1.0, p: float = 1.0) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.shift = parse_range(shift, "shift", from_number=plus_minus)

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        shift = uniform(generator, self._draw_shape(batch_size, channels), *self.shift)
        return {"shift": self._expand(shift, channels)}

    def _identity(self, params):
        return params["shift"] == 0.0

    def _transform(self, image, params, spacing, applied):
        return image + channel_view(params["shift"].to(image.device, image.dtype), image.ndim)


class RandomContrast(_ChannelParameterTransform):
    """Scale the deviation from the mean: ``(x - mean) * factor + mean``, per sample and channel.

    Args:
        factor: range of the contrast factor, non-negative. One number ``f`` means ``(1 - f, 1 + f)``.
        preserve_range: clip the result to the input's minimum and maximum, as
            nnU-Net v2 does.
        split_at_one: draw factors below and above 1 with probability 0.5 each
            (see ``factor_draw``), or else uniformly over the range.
        per_channel: draw one factor per channel instead of one per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(
        self,
        *,
        factor: float | Sequence[float] = (0.75, 1.25),
        preserve_range: bool = True,
        split_at_one: bool = True,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.factor = parse_range(factor, "factor", from_number=around_one, minimum=0.0)
        self.preserve_range = check_bool(preserve_range, "preserve_range")
        self.split_at_one = check_bool(split_at_one, "split_at_one")

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        factor = factor_draw(generator, self._draw_shape(batch_size, channels), *self.factor, self.split_at_one)
        return {"factor": self._expand(factor, channels)}

    def _identity(self, params):
        return params["factor"] == 1.0

    def _transform(self, image, params, spacing, applied):
        flat = image.flatten(2)
        mean, _, minimum, maximum = _flat_statistics(flat)
        factor = params["factor"].to(image.device, image.dtype)[..., None]
        out = (flat - mean) * factor + mean
        if self.preserve_range:
            out = torch.minimum(torch.maximum(out, minimum), maximum)
        return out.reshape(image.shape)


def _polynomial_exponents(ndim: int, order: int) -> list[tuple[int, ...]]:
    """Exponent tuples of all monomials of degree 1 to ``order`` in ``ndim`` variables."""
    return [exponents for exponents in itertools.product(range(order + 1), repeat=ndim) if 1 <= sum(exponents) <= order]


def _centred_coordinates(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """Return voxel-centre coordinates per axis, scaled to [-1, 1], with 0 for an axis of size one."""
    coordinates = []
    for axis, size in enumerate(shape):
        half = max((size - 1) / 2.0, 0.5)
        values = (torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0) / half
        view = [1] * len(shape)
        view[axis] = size
        coordinates.append(values.reshape(view))
    return coordinates


class RandomBiasField(_ChannelParameterTransform):
    """Multiply the image by a smooth field ``exp(P(x))``, with ``P`` a random polynomial.

    ``P`` contains every monomial of degree 1 to ``order`` in the voxel coordinates,
    scaled to [-1, 1] over the field of view, with coefficients drawn uniformly from
    ``coefficients``. The constant term is left out, because a global factor is what
    ``RandomMultiplicativeBrightness`` does. This is the model of TorchIO's
    ``RandomBiasField`` (which does include the constant term), batched on the
    image's device.

    Args:
        coefficients: range of each coefficient. One number ``c`` means ``(-c, c)``.
        order: maximum degree of the polynomial, at least 1.
        per_channel: draw one field per channel instead of one per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(
        self,
        *,
        coefficients: float | Sequence[float] = 0.5,
        order: int = 3,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(per_channel=per_channel, p=p, p_per_channel=p_per_channel)
        self.coefficients = parse_range(coefficients, "coefficients", from_number=plus_minus)
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer of at least 1, got {order!r}")
        self.order = order

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        terms = len(_polynomial_exponents(len(spatial_shape), self.order))
        draw_shape = self._draw_shape(batch_size, channels) + (terms,)
        coefficients = uniform(generator, draw_shape, *self.coefficients)
        return {"coefficients": coefficients.expand(batch_size, channels, terms).contiguous()}

    def _identity(self, params):
        return (params["coefficients"] == 0).all(dim=-1)

    def _transform(self, image, params, spacing, applied):
        shape = tuple(image.shape[2:])
        coordinates = _centred_coordinates(shape, image.device, image.dtype)
        coefficients = params["coefficients"].to(image.device, image.dtype)
        log_field = torch.zeros(image.shape, device=image.device, dtype=image.dtype)
        for term, exponents in enumerate(_polynomial_exponents(len(shape), self.order)):
            monomial = torch.ones((1,) * len(shape), device=image.device, dtype=image.dtype)
            for axis_coordinates, exponent in zip(coordinates, exponents):
                if exponent:
                    monomial = monomial * axis_coordinates.pow(exponent)
            log_field = log_field + channel_view(coefficients[..., term], image.ndim) * monomial
        return image * torch.exp(log_field)
