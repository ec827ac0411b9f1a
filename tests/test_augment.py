"""Tests of the weak and strong views and CutMix."""

from __future__ import annotations

import pytest
import torch

from geoccseg.errors import GeoccsegError
from geoccseg.train.augment import appearance_view, apply_cutmix, cutmix_boxes, strong_view, weak_view


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dihedral(x: torch.Tensor, square: bool) -> list[torch.Tensor]:
    """The 8 flips/rotations of a (..., H, W) tensor (4 when it is not square)."""
    turns = (0, 1, 2, 3) if square else (0, 2)
    return [torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1)) for flip in (False, True) for k in turns]


def block_mask(batch: int, size: int) -> torch.Tensor:
    """(B, size, size) labels in 4x4 blocks of 0/1, left quarter 255 (ignore)."""
    blocks = torch.randint(0, 2, (batch, size // 4, size // 4), generator=seeded(1))
    mask = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
    mask[:, :, : size // 4] = 255
    return mask


@pytest.mark.parametrize(("height", "width"), [(8, 8), (6, 10)])
def test_weak_view_without_crop_is_a_flip_or_rotation_of_image_and_mask(height: int, width: int) -> None:
    batch = 16
    mask = torch.randint(0, 3, (batch, height, width), generator=seeded(2))
    texture = torch.randn(batch, 1, height, width, generator=seeded(3))
    images = torch.cat([mask[:, None].float(), texture], dim=1)
    out_images, out_mask = weak_view(images, mask, seeded(4), scale=(1.0, 1.0))
    used = set()
    for i in range(batch):
        candidates = dihedral(images[i], square=height == width)
        matches = [j for j, c in enumerate(candidates) if torch.allclose(out_images[i], c, atol=1e-4)]
        assert len(matches) == 1, f"sample {i} is not a flip/rotation of its input"
        expected_mask = dihedral(mask[i], square=height == width)[matches[0]]
        assert torch.equal(out_mask[i], expected_mask)
        used.add(matches[0])
    assert len(used) >= 3  # the geometry really varies between samples
    assert out_mask.dtype == mask.dtype and out_images.shape == images.shape


def test_weak_view_crop_keeps_image_and_mask_aligned_and_ignore_values() -> None:
    batch, size = 8, 32
    mask = block_mask(batch, size)
    images = torch.stack([mask.float(), torch.randn(batch, size, size, generator=seeded(5))], dim=1)
    out_images, out_mask = weak_view(images, mask, seeded(6), scale=(0.5, 1.0))
    assert set(out_mask.unique().tolist()) <= {0, 1, 255}
    for i in range(batch):
        assert (out_mask[i] == 255).any()  # a crop of >= 71 % of each side keeps some of the ignore strip
        agree = (out_mask[i] == out_images[i, 0].round().long()).float().mean()
        assert agree > 0.8  # they differ only where bilinear blends across a block edge


def test_weak_view_rejects_bad_scale() -> None:
    with pytest.raises(GeoccsegError, match="crop scale"):
        weak_view(torch.zeros(1, 1, 4, 4), scale=(0.0, 1.0))


def test_weak_view_crop_zooms_by_the_crop_side() -> None:
    # a ramp of one unit per column: a crop of area 1/4 (side 1/2) resized back has slope 1/2
    size = 16
    ramp = torch.arange(size, dtype=torch.float32).expand(size, size)
    images = ramp.expand(6, 1, size, size).clone()
    out, _ = weak_view(images, generator=seeded(7), scale=(0.25, 0.25))
    for sample in out[:, 0]:
        along_x = (sample[1:-1, 2:-1] - sample[1:-1, 1:-2]).abs()
        along_y = (sample[2:-1, 1:-1] - sample[1:-2, 1:-1]).abs()
        slopes = sorted([float(along_x.mean()), float(along_y.mean())])
        assert slopes == pytest.approx([0.0, 0.5], abs=1e-4)


def test_views_are_reproducible_with_a_seeded_generator() -> None:
    images = torch.randn(4, 3, 16, 16, generator=seeded(8))
    mask = block_mask(4, 16)
    first = weak_view(images, mask, seeded(9))
    second = weak_view(images, mask, seeded(9))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], weak_view(images, mask, seeded(10))[0])
    assert torch.equal(strong_view(images, seeded(11)), strong_view(images, seeded(11)))
    assert not torch.equal(strong_view(images, seeded(11)), strong_view(images, seeded(12)))
    perm_a, box_a = cutmix_boxes(4, 16, 16, seeded(13))
    perm_b, box_b = cutmix_boxes(4, 16, 16, seeded(13))
    assert torch.equal(perm_a, perm_b) and torch.equal(box_a, box_b)


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_strong_view_changes_pixels_but_keeps_range(bands: int) -> None:
    images = torch.rand(64, bands, 12, 12, generator=seeded(14)) - 0.5
    out = strong_view(images, seeded(15))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert out.abs().max() < 1.0  # unit range in, about unit range out
    assert (out - images).abs().mean() > 0.01
    if bands > 1:  # grayscale (p = 0.2) makes every band equal in some of the 64 samples
        gray = (out - out.mean(dim=1, keepdim=True)).abs().amax(dim=(1, 2, 3)) < 1e-6
        assert 2 <= int(gray.sum()) <= 30


def test_appearance_view_inverts_a_share_of_the_strong_views() -> None:
    images = torch.rand(200, 3, 8, 8, generator=seeded(30)) - 0.5
    strong = strong_view(images, seeded(31))
    assert torch.equal(appearance_view(images, seeded(31), invert_p=0.0), strong)
    out = appearance_view(images, seeded(31), invert_p=0.3)
    inverted = torch.isclose(out, -strong).flatten(1).all(1) & ~torch.isclose(out, strong).flatten(1).all(1)
    kept = torch.isclose(out, strong).flatten(1).all(1)
    assert bool((inverted | kept).all())  # each sample is either the strong view or its negative
    assert 40 <= int(inverted.sum()) <= 80  # about 30 % of 200
    assert out.abs().max() < 1.0


def test_cutmix_boxes_shape_area_and_partners() -> None:
    height, width = 40, 50
    perm, box = cutmix_boxes(8, height, width, seeded(16), p=1.0)
    assert perm.dtype == torch.long and sorted(perm.tolist()) == list(range(8))
    assert all(int(perm[i]) != i for i in range(8))
    for sample in box:
        rows, cols = sample.any(dim=1), sample.any(dim=0)
        assert int(sample.sum()) == int(rows.sum()) * int(cols.sum())  # one rectangle
        assert 0.09 <= float(sample.float().mean()) <= 0.42
    _, empty = cutmix_boxes(8, height, width, seeded(16), p=0.0)
    assert not empty.any()


def test_apply_cutmix_mixes_images_and_labels_identically() -> None:
    batch, height, width = 4, 6, 7
    images = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) * 10 + torch.arange(3.0).view(1, 3, 1, 1)
    images = images.expand(batch, 3, height, width).clone()
    labels = torch.arange(batch).view(batch, 1, 1).expand(batch, height, width).clone()
    perm, box = cutmix_boxes(batch, height, width, seeded(17), p=1.0)
    mixed_images = apply_cutmix(images, perm, box)
    mixed_labels = apply_cutmix(labels, perm, box)
    source = torch.where(box, perm.view(batch, 1, 1), torch.arange(batch).view(batch, 1, 1))
    assert torch.equal(mixed_labels, source)
    assert torch.equal(mixed_images, source[:, None].float() * 10 + torch.arange(3.0).view(1, 3, 1, 1))
    assert box.any() and mixed_labels.dtype == labels.dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_on_cuda_match_cpu() -> None:
    images = torch.randn(4, 3, 16, 16, generator=seeded(18))
    mask = block_mask(4, 16)
    cpu = weak_view(images, mask, seeded(19))
    gpu = weak_view(images.cuda(), mask.cuda(), seeded(19))
    assert torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-5) and torch.equal(gpu[1].cpu(), cpu[1])
    assert torch.allclose(strong_view(images.cuda(), seeded(20)).cpu(), strong_view(images, seeded(20)), atol=1e-5)
    perm, box = cutmix_boxes(4, 16, 16, seeded(21))
    assert torch.equal(apply_cutmix(images.cuda(), perm, box).cpu(), apply_cutmix(images, perm, box))


def test_weak_view_zoom_out_shrinks_objects_and_ignores_outside_the_chip() -> None:
    # a crop of area 4 (side 2) halves every object: a 16 px wide band becomes 8 px, and the three
    # quarters of the output that lie outside the input chip carry no label and zero intensity
    size = 32
    mask = torch.zeros(4, size, size, dtype=torch.long)
    mask[:, :, 8:24] = 1
    images = mask[:, None].float() + 1.0
    out, out_mask = weak_view(images, mask, seeded(8), scale=(4.0, 4.0))
    for i in range(4):
        inside = out[i, 0] > 0.5
        assert inside.float().mean() == pytest.approx(0.25, abs=0.04)
        assert (out_mask[i][~inside] == 255).float().mean() > 0.97  # no label outside (but where bilinear blends its edge)
        assert (out[i, 0][~inside] == 0).float().mean() > 0.9  # zeros outside (blended at the edge)
        band = (out_mask[i] == 1).sum()
        assert band == pytest.approx(size * size * 0.25 * 0.5, rel=0.15)  # half the inside, as in the input
        labeled = out_mask[i] != 255
        agree = ((out[i, 0][labeled] > 1.5) == (out_mask[i][labeled] == 1)).float().mean()
        assert agree > 0.85  # image and mask stay aligned (they differ where bilinear blends an edge)


def test_weak_view_zoom_out_never_labels_a_trace_of_a_thin_crack_background() -> None:
    """Shrunk 2x, a 1 px diagonal crack falls between the nearest-neighbour samples along half its
    length, while the bilinear image still shows it there: those pixels must not be background."""
    size = 64
    mask = torch.zeros(4, size, size, dtype=torch.long)
    index = torch.arange(size)
    mask[:, index, index] = 1
    mask[:, index[:-3], index[:-3] + 3] = 1  # a second, parallel crack
    images = mask[:, None].float() + 1.0  # background 1, crack 2 (outside the chip: 0)
    out, out_mask = weak_view(images, mask, seeded(9), scale=(4.0, 4.0))
    trace = out[:, 0] > 1.0 + 1e-4
    assert trace.sum() > 4 * 40
    assert (out_mask[trace] != 0).all()  # crack, or ignored; never background
    kept = (out_mask == 1).sum(dim=(1, 2)).float()
    assert (kept > 0).all()  # the crack is still taught where nearest sampling keeps it
    background = (out_mask == 0) & ~trace
    assert background.sum() > 4 * 0.15 * size * size  # most of the shrunk chip still teaches background
