"""Weak and strong views of a batch, and CutMix, as batched tensor operations.

* :func:`weak_view`: geometry only (flips, 90° rotations, scale-crop), applied identically to the
  images and their label maps; the teacher sees this view.
* :func:`strong_view`: photometric jitter, blur and grayscale on top of a weak view; the student
  sees this view of the unlabelled images.
* :func:`appearance_view`: a strong view that may also invert the intensities, for labelled
  images when the model must carry over to imagery that looks different (roads dark in one
  region, light in another): the labels then say "road" for both looks, so the model leans on
  shape and context more than on brightness.
* :func:`cutmix_boxes` and :func:`apply_cutmix`: paste a box of another sample of the batch, the
  same box into images, pseudo-labels, confidences and validity masks.

Every random draw comes from the ``generator`` argument (on its device, the CPU by default) and
is then moved to the data's device, so a seeded generator gives the same views on CPU and CUDA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from geoccseg.errors import GeoccsegError
from geoccseg.label_values import IGNORE_INDEX

#: Most Gaussian blur sigma of the strong view, pixels.
BLUR_SIGMA_PX = (0.1, 2.0)


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` uniform draws in [0, 1), float64, drawn on the generator's device, returned on the CPU."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64).cpu()


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """``n`` uniform draws in [low, high), float64, on the CPU."""
    return low + (high - low) * _rand(n, generator)


def weak_view(
    images: Tensor,
    masks: Tensor | None = None,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.5, 1.0),
) -> tuple[Tensor, Tensor | None]:
    """Random flips, 90° rotations and scale-crop, per sample, the same for images and masks.

    Each sample is flipped horizontally and vertically with probability 0.5 each, rotated by
    k · 90° (k uniform in {0, 1, 2, 3} for square chips, {0, 2} otherwise, so the shape is kept),
    and cropped to a box of area fraction a ~ U(scale) with the chip's aspect ratio at a uniform
    position, resized back to H x W. All of it is one affine sampling grid per sample: bilinear
    for the images, nearest for the masks, so label values (including :data:`IGNORE_INDEX`)
    are copied, never blended. An area fraction above 1 zooms out (objects shrink by up to
    1 / sqrt(a), e.g. thinner cracks than the labeled ones): the box then reaches past the chip,
    whose outside is zero in the images and the ignore value in the masks; and a background
    pixel of a shrunk sample whose bilinear footprint touches a labeled pixel is ignored too
    (nearest sampling drops thin objects along part of their length, where the image still
    shows a trace of them: a dotted label would teach that trace to be background).

    Args:
        images: (B, C, H, W) float images.
        masks: optional (B, H, W) integer label maps.
        generator: random source.
        scale: range of the crop's area fraction, above 0 (above 1: zoom out).

    Returns:
        The transformed images (B, C, H, W) and masks (B, H, W) (None when no masks are given).

    Raises:
        GeoccsegError: if ``scale`` is not an interval of positive area fractions.
    """
    if not 0 < scale[0] <= scale[1]:
        raise GeoccsegError(f"weak-view crop scale must satisfy 0 < low <= high, got {tuple(scale)}")
    batch, _, height, width = images.shape
    hflip = _rand(batch, generator) < 0.5
    vflip = _rand(batch, generator) < 0.5
    square = height == width
    turns = (_rand(batch, generator) * 4).long() if square else 2 * (_rand(batch, generator) < 0.5).long()
    side = _uniform(batch, scale[0], scale[1], generator).sqrt()
    offset_x = _rand(batch, generator) * (1 - side)
    offset_y = _rand(batch, generator) * (1 - side)

    # Output grid (normalised, align_corners=False) → rotation/flips → crop box in the input.
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[turns]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[turns]
    flip_x = 1.0 - 2.0 * hflip.double()
    flip_y = 1.0 - 2.0 * vflip.double()
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = side * cos * flip_x
    theta[:, 0, 1] = -side * sin * flip_y
    theta[:, 1, 0] = side * sin * flip_x
    theta[:, 1, 1] = side * cos * flip_y
    theta[:, 0, 2] = 2 * offset_x + side - 1
    theta[:, 1, 2] = 2 * offset_y + side - 1

    grid = F.affine_grid(theta.to(images.device, torch.float32), [batch, 1, height, width], align_corners=False)
    zoom_out = scale[1] > 1
    out_images = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="zeros" if zoom_out else "border", align_corners=False
    ).to(images.dtype)
    if masks is None:
        return out_images, None
    out_masks = F.grid_sample(
        masks[:, None].float(), grid.to(masks.device), mode="nearest", padding_mode="border", align_corners=False
    )[:, 0].round().to(masks.dtype)
    if zoom_out:  # outside the chip: no label
        outside = (grid.abs() > 1).any(-1).to(masks.device)
        out_masks = out_masks.masked_fill(outside, IGNORE_INDEX)
        # Shrunk, a 1-2 px crack falls between the nearest samples along part of its length while
        # the bilinear image keeps a faint trace of it there: those pixels are not background.
        labeled = ((masks > 0) & (masks != IGNORE_INDEX)).float()[:, None]
        touched = F.grid_sample(labeled, grid.to(masks.device), mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0] > 0
        shrunk = (side > 1).to(masks.device)[:, None, None]
        out_masks = out_masks.masked_fill(touched & (out_masks == 0) & shrunk, IGNORE_INDEX)
    return out_images, out_masks


def strong_view(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Photometric jitter, Gaussian blur and grayscale, per sample, for any number of bands.

    Per sample: with probability 0.8 a colour jitter (brightness shift U(−0.1, 0.1), contrast
    U(0.75, 1.25) around the sample mean, a gain U(0.9, 1.1) per band); with probability 0.5 a
    Gaussian blur of sigma U(0.1, 2.0) pixels (reflect padding); with probability 0.2 every band
    replaced by the mean of the bands. Images are normalised floats (about unit range, centred
    on 0); the jitter keeps them in that range.

    Args:
        images: (B, C, H, W) float images.
        generator: random source.

    Returns:
        (B, C, H, W) images, same dtype and device.
    """
    batch, bands = images.shape[:2]
    device = images.device
    x = images.float()

    jitter = (_rand(batch, generator) < 0.8).double()
    brightness = _uniform(batch, -0.1, 0.1, generator) * jitter
    contrast = 1 + (_uniform(batch, 0.75, 1.25, generator) - 1) * jitter
    gain = 1 + (_uniform(batch * bands, 0.9, 1.1, generator).view(batch, bands) - 1) * jitter[:, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(batch, 1, 1, 1).to(device, torch.float32) + mean
    x = x * gain.view(batch, bands, 1, 1).to(device, torch.float32)
    x = x + brightness.view(batch, 1, 1, 1).to(device, torch.float32)

    blur = _rand(batch, generator) < 0.5
    sigma = _uniform(batch, *BLUR_SIGMA_PX, generator)
    x = _gaussian_blur(x, sigma, blur)

    gray = (_rand(batch, generator) < 0.2).to(device).view(batch, 1, 1, 1)
    x = torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x.to(images.dtype)


def appearance_view(images: Tensor, generator: torch.Generator | None = None, *, invert_p: float) -> Tensor:
    """A :func:`strong_view` whose intensities are also inverted (x → −x) with probability ``invert_p``.

    Normalised images are centred on 0 (see :class:`geoccseg.io.normalize.NormStats`), so −x
    swaps dark and light while keeping the range: dark asphalt between light roofs becomes light
    asphalt between dark roofs, the look of the other region.

    Args:
        images: (B, C, H, W) normalised float images.
        generator: random source.
        invert_p: probability, per sample, of the inversion (``TrainConfig.appearance_invert_p``).

    Returns:
        (B, C, H, W) images, same dtype and device.
    """
    x = strong_view(images, generator)
    invert = (_rand(x.shape[0], generator) < invert_p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(invert, -x, x)


def _gaussian_blur(x: Tensor, sigma_px: Tensor, apply: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma per sample; samples with ``apply`` false are kept.

    Args:
        x: (B, C, H, W) float32 images.
        sigma_px: (B,) blur sigma, pixels.
        apply: (B,) bool.
    """
    batch, bands, height, width = x.shape
    radius = math.ceil(3 * BLUR_SIGMA_PX[1])
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps[None] / sigma_px[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (taps == 0).double().expand(batch, -1)
    kernel = torch.where(apply[:, None], kernel, identity)
    kernel = kernel.repeat_interleave(bands, dim=0).to(x.device, torch.float32)
    pad = min(radius, height - 1, width - 1)
    kernel = kernel[:, radius - pad : radius + pad + 1]
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    flat = x.reshape(1, batch * bands, height, width)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=batch * bands)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), kernel[:, None, :, None], groups=batch * bands)
    return flat.view(batch, bands, height, width)


def cutmix_boxes(
    batch_size: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    p: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Draw CutMix partners and boxes.

    The partners form a random cycle (perm[i] ≠ i when the batch has two or more samples). Each
    sample is mixed with probability ``p``: its box has area U(0.1, 0.4) of the chip, aspect
    ratio log-uniform in [1/2, 2] (sides clipped to the chip) and a uniform position. Samples not
    mixed get an empty box.

    Args:
        batch_size: B.
        height: H, pixels.
        width: W, pixels.
        generator: random source.
        p: probability that a sample is mixed.

    Returns:
        ``perm`` (B,) int64, the partner of each sample, and ``box`` (B, H, W) bool, the pixels
        taken from the partner; both on the CPU (:func:`apply_cutmix` moves them).
    """
    order = torch.argsort(_rand(batch_size, generator))
    perm = torch.empty(batch_size, dtype=torch.long)
    perm[order] = order.roll(-1)
    mixed = _rand(batch_size, generator) < p
    area = _uniform(batch_size, 0.1, 0.4, generator) * height * width
    ratio = torch.exp(_uniform(batch_size, math.log(0.5), math.log(2.0), generator))
    box_h = (area * ratio).sqrt().round().clamp(1, height).long()
    box_w = (area / ratio).sqrt().round().clamp(1, width).long()
    top = (_rand(batch_size, generator) * (height - box_h + 1)).long()
    left = (_rand(batch_size, generator) * (width - box_w + 1)).long()
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    inside_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
    inside_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
    box = inside_rows & inside_cols & mixed.view(-1, 1, 1)
    return perm, box


def apply_cutmix(x: Tensor, perm: Tensor, box: Tensor) -> Tensor:
    """Replace the box of sample i by the same pixels of sample ``perm[i]``.

    Args:
        x: (B, C, H, W) images or (B, H, W) maps (labels, confidences, validity).
        perm: (B,) partner of each sample (:func:`cutmix_boxes`).
        box: (B, H, W) bool box mask.

    Returns:
        The mixed tensor, same shape, dtype and device as ``x``.
    """
    perm = perm.to(x.device)
    box = box.to(x.device)
    mask = box[:, None] if x.ndim == 4 else box
    return torch.where(mask, x[perm], x)
