"""MoCo v2 aug+ with histology options, driven by an explicit random generator.

Each sample gets its own ``torch.Generator`` seeded from (run seed, epoch, position in the epoch),
so the views of a tile do not depend on which DataLoader worker made them, on the number of
workers, or on whether the run was resumed mid-epoch: this is what makes a resumed run identical
to an uninterrupted one.

Views are returned as uint8 (3, S, S) tensors (4x less inter-process traffic than float);
normalisation by mean/std happens on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from training.config import AugmentConfig

# Ruifrok & Johnston optical-density vectors of haematoxylin, eosin and DAB (rows), as used by
# stain-augmentation work (Tellez et al. 2018); rows are normalised below.
_STAIN_OD = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _STAIN_OD / _STAIN_OD.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_OD_EPS = 1e-6


def sample_generator(seed: int, epoch: int, position: int) -> torch.Generator:
    """Generator for one sample, independent of worker layout and resume point."""
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TwoViews:
    """Two independent augmented views of a tile: the query image and the key image."""

    def __init__(self, options: AugmentConfig, size: int) -> None:
        self.options = options
        self.size = size

    def __call__(self, tile: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``tile`` (H, W, 3) uint8 -> two uint8 tensors (3, size, size)."""
        image = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1).float() / 255.0
        return tuple(_to_uint8(augment(image, self.options, self.size, generator)) for _ in "qk")


def augment(
    image: torch.Tensor, options: AugmentConfig, size: int, generator: torch.Generator
) -> torch.Tensor:
    """One view of ``image`` (3, H, W) float in [0, 1] -> (3, size, size) float in [0, 1]."""
    out = random_resized_crop(image, size, options.crop_scale, generator)
    out = random_flips_rotations(out, options, generator)
    if options.hed_jitter > 0:
        out = hed_jitter(out, options.hed_jitter, generator)
    if _coin(options.color_jitter_p, generator):
        out = color_jitter(out, options.color_jitter, generator)
    if _coin(options.grayscale_p, generator):
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    if _coin(options.blur_p, generator):
        out = gaussian_blur(out, options.blur_sigma, generator)
    return out


def random_resized_crop(
    image: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Crop of random area fraction ``scale`` and aspect ratio 3/4..4/3, resized to ``size``."""
    _, height, width = image.shape
    top, left, h, w = _crop_box(height, width, scale, generator)
    crop = image[:, top : top + h, left : left + w].unsqueeze(0)
    resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
    return resized.squeeze(0).clamp_(0.0, 1.0)


def _crop_box(
    height: int, width: int, scale: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        ratio = math.exp(_uniform(*log_ratio, generator))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
            return top, left, h, w
    side = min(height, width)  # all tries fell outside: take the central square
    return (height - side) // 2, (width - side) // 2, side, side


def random_flips_rotations(
    image: torch.Tensor, options: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Horizontal/vertical flips and 90-degree rotations (tissue has no orientation)."""
    if options.hflip and _coin(0.5, generator):
        image = image.flip(-1)
    if options.vflip and _coin(0.5, generator):
        image = image.flip(-2)
    if options.rot90:
        image = torch.rot90(image, _randint(4, generator), dims=(-2, -1))
    return image


def color_jitter(
    image: torch.Tensor, strength: tuple[float, float, float, float], generator: torch.Generator
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes in a random order (as aug+)."""
    brightness, contrast, saturation, hue = strength
    ops = [
        lambda x: TF.adjust_brightness(
            x, _uniform(max(0, 1 - brightness), 1 + brightness, generator)
        ),
        lambda x: TF.adjust_contrast(x, _uniform(max(0, 1 - contrast), 1 + contrast, generator)),
        lambda x: TF.adjust_saturation(
            x, _uniform(max(0, 1 - saturation), 1 + saturation, generator)
        ),
        lambda x: TF.adjust_hue(x, _uniform(-hue, hue, generator)) if hue > 0 else x,
    ]
    for index in torch.randperm(len(ops), generator=generator).tolist():
        image = ops[index](image)
    return image.clamp_(0.0, 1.0)


def gaussian_blur(
    image: torch.Tensor, sigma_range: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Gaussian blur with sigma drawn from ``sigma_range``; kernel ~10% of the side (23 at 224)."""
    size = image.shape[-1]
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    sigma = _uniform(*sigma_range, generator)
    offsets = torch.arange(kernel, dtype=image.dtype) - kernel // 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).expand(3, 1, 1, kernel)  # (3, 1, 1, k), one per channel
    # Separable: a row pass then a column pass, 2k instead of k^2 multiplies per pixel.
    padded = F.pad(image.unsqueeze(0), (kernel // 2,) * 4, mode="reflect")
    rows = F.conv2d(padded, weights, groups=3)
    return F.conv2d(rows, weights.transpose(2, 3), groups=3).squeeze(0)


def hed_jitter(image: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Stain jitter: scale and shift each H, E, D concentration by up to ``strength``.

    RGB -> optical density -> stain concentrations (colour deconvolution), c' = c * a + b with
    a in [1 - s, 1 + s] and b in [-s, s] per stain, then back to RGB.
    """
    channels, height, width = image.shape
    od = -torch.log10(image.clamp(min=_OD_EPS)).reshape(channels, -1)  # (3, H*W)
    hed = _HED_FROM_RGB.T @ od  # (3, H*W) concentrations of H, E, D
    alpha = 1 + (torch.rand(3, 1, generator=generator) * 2 - 1) * strength
    beta = (torch.rand(3, 1, generator=generator) * 2 - 1) * strength
    od_new = _RGB_FROM_HED.T @ (hed * alpha + beta)
    return torch.pow(10.0, -od_new).reshape(channels, height, width).clamp_(0.0, 1.0)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255.0).round_().to(torch.uint8)


def _coin(p: float, generator: torch.Generator) -> bool:
    return p > 0 and float(torch.rand((), generator=generator)) < p


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (), generator=generator))
