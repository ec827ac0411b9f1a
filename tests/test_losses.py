"""Tests of the data imbalance loss, confidence levels, contrastive loss and EMA teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geoccseg.errors import GeoccsegError
from geoccseg.losses import (
    ConfidenceContrastiveLoss,
    ImbalanceLoss,
    KeyQueue,
    class_counts,
    class_weights,
    confidence_levels,
    sigmoid_rampup,
)
from geoccseg.train.teacher import ema_momentum, ema_update, make_teacher

LN3 = math.log(3.0)


def two_class_logits(p1: list[float], height: int, width: int) -> torch.Tensor:
    """(1, 2, H, W) logits whose softmax gives class 1 the probabilities ``p1`` (row-major)."""
    p = torch.tensor(p1, dtype=torch.float64)
    logit1 = torch.log(p / (1 - p))
    return torch.stack([torch.zeros_like(logit1), logit1]).view(1, 2, height, width).float()


# --- class counts and weights -------------------------------------------------------------


def test_class_counts_leave_out_ignore() -> None:
    masks = torch.tensor([[[0, 1], [255, 1]], [[0, 0], [2, 255]]])
    assert class_counts(masks, 3).tolist() == [3.0, 2.0, 1.0]
    assert class_counts(masks, 3).dtype == torch.float64
    with pytest.raises(GeoccsegError, match="outside"):
        class_counts(masks, 2)


def test_inv_sqrt_weights_by_hand() -> None:
    # f = (0.9, 0.1): raw = 1/sqrt(f); Σ f raw = sqrt(.9) + sqrt(.1); w0 = 1/(.9 + .3) = 5/6, w1 = 1/(.3 + .1) = 5/2.
    weights = class_weights(torch.tensor([900.0, 100.0]), method="inv_sqrt")
    assert weights.tolist() == pytest.approx([5 / 6, 5 / 2], rel=1e-6)


def test_effective_weights_use_per_mille_counts() -> None:
    # counts sum to 1000 already, so n_k = counts: w_k ∝ (1 - β) / (1 - β^{n_k}), then Σ f_k w_k = 1.
    beta = 0.995
    raw = [(1 - beta) / (1 - beta**900), (1 - beta) / (1 - beta**100)]
    norm = 0.9 * raw[0] + 0.1 * raw[1]
    expected = [raw[0] / norm, raw[1] / norm]
    assert class_weights(torch.tensor([900.0, 100.0]), beta=beta).tolist() == pytest.approx(expected, rel=1e-6)
    # the weights depend on frequencies only: a million times more pixels gives the same weights
    assert class_weights(torch.tensor([9e8, 1e8]), beta=beta).tolist() == pytest.approx(expected, rel=1e-6)


def test_default_weights_favour_a_three_percent_class() -> None:
    counts = torch.tensor([97e6, 3e6], dtype=torch.float64)
    # default β = 0.98, λ = −1000 ln β ≈ 20.2: ratio (1 − e^{−λ·0.97}) / (1 − e^{−λ·0.03}) ≈ 2.20;
    # inverse square root: sqrt(97 / 3) ≈ 5.69
    lam = -1000 * math.log(0.98)
    expected = {"effective": (1 - math.exp(-lam * 0.97)) / (1 - math.exp(-lam * 0.03)), "inv_sqrt": math.sqrt(97 / 3)}
    for method, ratio in expected.items():
        weights = class_weights(counts, method=method)
        assert float(weights[1] / weights[0]) == pytest.approx(ratio, rel=1e-5), method
        assert float((weights.double() * counts / counts.sum()).sum()) == pytest.approx(1.0, rel=1e-6)
    assert class_weights(counts, method="none").tolist() == [1.0, 1.0]


def test_weights_clip_and_missing_class() -> None:
    weights = class_weights(torch.tensor([1_000_000.0, 0.0, 1.0]), method="inv_sqrt", max_weight=50.0)
    assert weights[1] == 50.0 and weights[2] == 50.0 and weights[0] < 1.01
    with pytest.raises(GeoccsegError, match="unknown class weighting"):
        class_weights(torch.tensor([1.0, 1.0]), method="focal")
    with pytest.raises(GeoccsegError, match="no labelled pixel"):
        class_weights(torch.tensor([0.0, 0.0]))


# --- imbalance loss -----------------------------------------------------------------------


def ce_example() -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 pixels: CE = log 2, log 4, log 4/3 and one ignored pixel that would cost 200."""
    logits = torch.tensor([[[0.0, LN3], [0.0, 100.0]], [[0.0, 0.0], [LN3, -100.0]]])[None]
    target = torch.tensor([[[0, 1], [1, 255]]])
    return logits, target


def test_plain_cross_entropy_by_hand() -> None:
    logits, target = ce_example()
    loss = ImbalanceLoss(weights=None, region=None)(logits, target)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4) + math.log(4 / 3)) / 3, rel=1e-6)


def test_weighted_cross_entropy_by_hand() -> None:
    logits, target = ce_example()
    loss = ImbalanceLoss(weights=torch.tensor([1.0, 3.0]), region=None)(logits, target)
    expected = (1 * math.log(2) + 3 * math.log(4) + 3 * math.log(4 / 3)) / (1 + 3 + 3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pixel_weight_multiplies_the_cross_entropy_terms() -> None:
    logits, target = ce_example()
    pixel_weight = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    loss = ImbalanceLoss(weights=None, region=None)(logits, target, pixel_weight=pixel_weight)
    assert loss.item() == pytest.approx((math.log(2) + 0 + math.log(4 / 3)) / 3, rel=1e-6)


def test_rare_class_gets_larger_gradient() -> None:
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 4, :3] = 1  # 3 % of the pixels
    weights = class_weights(class_counts(target, 2))
    grads = []
    for w in (None, weights):
        logits = torch.zeros(1, 2, 10, 10, requires_grad=True)
        ImbalanceLoss(weights=w, region=None)(logits, target).backward()
        grads.append(logits.grad[0, 1].abs())
    plain, weighted = grads
    # plain CE: every pixel has |p - onehot| = 0.5, same gradient; weighted: ratio w1 / w0
    assert float(plain[4, 0]) == pytest.approx(float(plain[0, 0]))
    assert float(weighted[4, 0] / weighted[0, 0]) == pytest.approx(float(weights[1] / weights[0]), rel=1e-5)
    assert weights[1] > 2 * weights[0]  # default β = 0.98: about 2.2 times for a 3 % class


def test_tversky_and_dice_by_hand() -> None:
    # pixels (row-major): targets 1, 1, 0, 0, ignored; p1 = .8, .6, .3, .1, .9
    logits = two_class_logits([0.8, 0.6, 0.3, 0.1, 0.9, 0.5], 2, 3)
    target = torch.tensor([[[1, 1, 0], [0, 255, 255]]])
    ce = -(math.log(0.8) + math.log(0.6) + math.log(0.7) + math.log(0.9)) / 4
    tp, fp, fn = 1.4, 0.4, 0.6
    tversky = 1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
    assert tversky == pytest.approx(0.54 / 2.94)
    loss = ImbalanceLoss(weights=None, region="tversky", alpha=0.3, beta=0.7)(logits, target)
    assert loss.item() == pytest.approx(ce + tversky, rel=1e-5)
    dice = 1 - (tp + 1) / (tp + 0.5 * fp + 0.5 * fn + 1)
    loss = ImbalanceLoss(weights=None, region="dice", region_weight=2.0)(logits, target)
    assert loss.item() == pytest.approx(ce + 2 * dice, rel=1e-5)


def test_all_ignored_batch_gives_zero_and_finite_grad() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = ImbalanceLoss(weights=torch.tensor([0.5, 5.0, 20.0]))(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) == 0.0


def test_no_foreground_batch_is_finite() -> None:
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = ImbalanceLoss(weights=torch.tensor([0.5, 10.0]))(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(logits.grad).all()
    # the region term alone still pushes the foreground probability down
    assert float(logits.grad[:, 1].sum()) > 0


def test_bad_region_option() -> None:
    with pytest.raises(GeoccsegError, match="unknown region loss"):
        ImbalanceLoss(region="lovasz")


# --- confidence levels --------------------------------------------------------------------


def level_probs() -> torch.Tensor:
    # p0 per pixel: confidences .97 .55 .70 / .96 .62 .75; pseudo-labels 0 0 1 / 1 0 1
    p0 = torch.tensor([[0.97, 0.55, 0.3], [0.04, 0.62, 0.25]])
    return torch.stack([p0, 1 - p0])[None]


def test_confidence_levels_global_thresholds() -> None:
    levels = confidence_levels(level_probs(), tau_high=0.95, tau_low=0.6)
    assert levels.pseudo.tolist() == [[[0, 0, 1], [1, 0, 1]]]
    assert levels.high.tolist() == [[[True, False, False], [True, False, False]]]
    assert levels.low.tolist() == [[[False, False, True], [False, True, True]]]
    assert levels.unreliable.tolist() == [[[False, True, False], [False, False, False]]]
    assert levels.confidence[0, 1, 2] == pytest.approx(0.75)
    assert levels.target(levels.high).tolist() == [[[0, 255, 255], [1, 255, 255]]]


def test_confidence_levels_per_class_thresholds() -> None:
    # class 1 (rare) is trusted from 0.75 on: the pixel at exactly 0.75 becomes high (c >= τ_h)
    levels = confidence_levels(level_probs(), tau_high=torch.tensor([0.95, 0.75]), tau_low=torch.tensor([0.6, 0.5]))
    assert levels.high.tolist() == [[[True, False, False], [True, False, True]]]
    assert levels.low.tolist() == [[[False, False, True], [False, True, False]]]
    assert levels.unreliable.tolist() == [[[False, True, False], [False, False, False]]]
    with pytest.raises(GeoccsegError, match="tau_low <= tau_high"):
        confidence_levels(level_probs(), tau_high=0.5, tau_low=0.6)
    with pytest.raises(GeoccsegError, match="one value per class"):
        confidence_levels(level_probs(), tau_high=torch.tensor([0.9, 0.9, 0.9]), tau_low=0.5)


def test_sigmoid_rampup() -> None:
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(50, 10) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0


# --- contrastive loss ---------------------------------------------------------------------


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def row_batch(vectors: list[list[float]]) -> torch.Tensor:
    """(1, 2, 1, N) embeddings from N 2-d vectors."""
    return torch.tensor(vectors).T[None, :, None, :].contiguous()


def contrast(
    loss_fn: ConfidenceContrastiveLoss,
    student: torch.Tensor | list[float],
    teacher: torch.Tensor | list[float],
    target: list[int],
    keys: list[bool],
    anchors: list[bool],
) -> torch.Tensor:
    """Loss of a (1, 2, 1, N) batch; embeddings as tensors or as the angles (degrees) of unit vectors."""

    def embed(x: torch.Tensor | list[float]) -> torch.Tensor:
        return x if isinstance(x, torch.Tensor) else row_batch([unit(deg) for deg in x])

    def as_map(values: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype)[None, None]

    return loss_fn(
        embed(student),
        embed(teacher),
        as_map(target, torch.long),
        as_map(keys, torch.bool),
        as_map(anchors, torch.bool),
        generator=torch.Generator().manual_seed(0),
    )


def test_one_anchor_one_prototype_one_negative_by_hand() -> None:
    temperature = 0.2
    loss_fn = ConfidenceContrastiveLoss(2, 2, temperature=temperature)
    teacher = row_batch([unit(0), unit(90), unit(45)])
    student = row_batch([unit(10), unit(80), unit(60)])
    loss = contrast(loss_fn, student, teacher, [0, 1, 0], [True, True, False], [False, False, True])
    a, b = math.cos(math.radians(60)), math.sin(math.radians(60))  # z·μ_0, z·z_neg
    expected = -math.log(math.exp(a / temperature) / (math.exp(a / temperature) + math.exp(b / temperature)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_similarities_stay_float32_under_mixed_precision() -> None:
    """Under autocast (bf16-mixed, the CUDA default) the similarity matmuls ran in bf16 despite the
    explicit .float() casts: a logit step of about 0.02 at T = 0.2. Checked with the CPU's autocast."""
    generator = torch.Generator().manual_seed(1)
    student = F.normalize(torch.randn(2, 16, 6, 6, generator=generator), dim=1)
    teacher = F.normalize(student + 0.05 * torch.randn(2, 16, 6, 6, generator=generator), dim=1)
    target = (torch.rand(2, 6, 6, generator=generator) < 0.3).long()
    keys, anchors = torch.rand(2, 6, 6, generator=generator) < 0.6, torch.rand(2, 6, 6, generator=generator) < 0.6

    def loss(mixed: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            return ConfidenceContrastiveLoss(2, 16)(student, teacher, target, keys, anchors, generator=torch.Generator().manual_seed(0))

    full, mixed = loss(False), loss(True)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(full.item(), rel=1e-6)


def test_anchor_near_own_prototype_costs_less() -> None:
    masks = ([0, 1, 0], [True, True, False], [False, False, True])
    near = contrast(ConfidenceContrastiveLoss(2, 2), [0, 90, 5], [0, 90, 0], *masks)
    far = contrast(ConfidenceContrastiveLoss(2, 2), [0, 90, 85], [0, 90, 0], *masks)
    assert float(near) < 0.05 < 1.0 < float(far)


def test_no_gradient_to_teacher_or_queue() -> None:
    loss_fn = ConfidenceContrastiveLoss(2, 2)
    teacher = row_batch([unit(0), unit(90), unit(45)]).requires_grad_(True)
    student = row_batch([unit(10), unit(80), unit(60)]).requires_grad_(True)
    loss = contrast(loss_fn, student, teacher, [0, 1, 0], [True, True, False], [False, False, True])
    loss.backward()
    assert teacher.grad is None
    assert not loss_fn.queue.queue.requires_grad and loss_fn.queue.queue.grad is None
    assert float(student.grad[..., 2].abs().sum()) > 0  # the anchor
    assert float(student.grad[..., :2].abs().sum()) == 0  # not anchors
    # the keys went into the queue, detached
    assert loss_fn.queue.filled.tolist() == [1, 1]
    assert torch.allclose(loss_fn.queue.get(1), torch.tensor([unit(90)]))


def test_queue_supplies_prototype_of_a_class_absent_from_the_batch() -> None:
    temperature = 0.2
    loss_fn = ConfidenceContrastiveLoss(2, 2, temperature=temperature)
    # first batch: keys of both classes, no anchor
    first = contrast(loss_fn, [0, 90], [0, 90], [0, 1], [True, True], [False, False])
    assert float(first) == 0.0
    # second batch: only a background key; a class-1 anchor at 60°
    second = contrast(loss_fn, [0, 60], [0, 30], [0, 1], [True, False], [False, True])
    # μ_1 = queue key (90°); negatives = background keys of the batch and of the queue (both 0°)
    b, a = math.sin(math.radians(60)), math.cos(math.radians(60))
    expected = -math.log(math.exp(b / temperature) / (math.exp(b / temperature) + 2 * math.exp(a / temperature)))
    assert float(second) == pytest.approx(expected, rel=1e-5)
    # without the memory, class 1 has no prototype and the batch gives no loss
    fresh = contrast(ConfidenceContrastiveLoss(2, 2), [0, 60], [0, 30], [0, 1], [True, False], [False, True])
    assert float(fresh) == 0.0


def test_negatives_are_capped() -> None:
    temperature = 0.5
    loss_fn = ConfidenceContrastiveLoss(2, 2, temperature=temperature, negatives_per_class=2)
    angles = [0] + [90] * 5 + [30]
    loss = contrast(loss_fn, angles, angles, [0] + [1] * 5 + [0], [True] * 6 + [False], [False] * 6 + [True])
    a, b = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = -math.log(math.exp(a / temperature) / (math.exp(a / temperature) + 2 * math.exp(b / temperature)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("n_background", "n_road", "used"), [(100, 20, (20, 20)), (100, 3, (16, 3))])
def test_anchors_are_class_balanced(n_background: int, n_road: int, used: tuple[int, int]) -> None:
    temperature = 0.5
    angles = [0, 90] + [20] * n_background + [50] * n_road  # two keys, then the anchors
    target = [0, 1] + [0] * n_background + [1] * n_road
    key_mask = [True, True] + [False] * (n_background + n_road)
    anchor_mask = [False, False] + [True] * (n_background + n_road)
    loss_fn = ConfidenceContrastiveLoss(2, 2, temperature=temperature)
    loss = contrast(loss_fn, angles, angles, target, key_mask, anchor_mask)

    def term(pos_deg: float, neg_deg: float) -> float:
        pos, neg = math.cos(math.radians(pos_deg)), math.cos(math.radians(neg_deg))
        return -math.log(math.exp(pos / temperature) / (math.exp(pos / temperature) + math.exp(neg / temperature)))

    # a 20° anchor: μ0 at 0°, negative at 90°; a 50° anchor: μ1 at 90°, negative at 0°
    background, road = term(20, 70), term(40, 50)
    expected = (used[0] * background + used[1] * road) / sum(used)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_no_anchor_gives_zero_loss_with_grad() -> None:
    student = torch.nn.functional.normalize(torch.randn(2, 4, 3, 3), dim=1).requires_grad_(True)
    teacher = torch.nn.functional.normalize(torch.randn(2, 4, 3, 3), dim=1)
    target = torch.randint(0, 2, (2, 3, 3))
    none = torch.zeros(2, 3, 3, dtype=torch.bool)
    loss_fn = ConfidenceContrastiveLoss(2, 4)
    for key_mask in (none, ~none):
        loss = loss_fn(student, teacher, target, key_mask, none)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.isfinite(student.grad).all()


def test_key_queue_fifo_and_state_dict() -> None:
    queue = KeyQueue(2, 1, size_per_class=2)
    queue.push(torch.tensor([[1.0], [2.0], [3.0], [7.0]]), torch.tensor([0, 0, 0, 1]))
    assert queue.get(0).flatten().tolist() == [2.0, 3.0]  # the newest two of three
    assert queue.get(1).flatten().tolist() == [7.0]
    queue.push(torch.tensor([[4.0]]), torch.tensor([0]))
    assert queue.get(0).flatten().tolist() == [4.0, 3.0]  # 2 was the oldest
    assert queue.ptr.tolist() == [1, 1] and queue.filled.tolist() == [2, 1]
    restored = KeyQueue(2, 1, size_per_class=2)
    restored.load_state_dict(queue.state_dict())
    assert restored.get(0).flatten().tolist() == [4.0, 3.0] and restored.filled.tolist() == [2, 1]
    assert set(queue.state_dict()) == {"queue", "ptr", "filled"}


# --- EMA teacher --------------------------------------------------------------------------


def test_ema_momentum_warmup() -> None:
    assert [ema_momentum(s, 0.99) for s in (0, 1, 2, 3)] == pytest.approx([0.0, 1 / 2, 2 / 3, 3 / 4])
    assert ema_momentum(99, 0.99) == pytest.approx(0.99)
    assert ema_momentum(5000, 0.99) == 0.99
    assert [ema_momentum(s, 0.99, warmup_steps=5) for s in (0, 4, 5, 6, 7)] == pytest.approx([0, 0, 0, 1 / 2, 2 / 3])


def test_ema_update_moves_teacher_by_expected_amount() -> None:
    student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    teacher = make_teacher(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for param in teacher.parameters():
            param.fill_(1.0)
        for param in student.parameters():
            param.fill_(3.0)
    student.train()
    student(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # BatchNorm running mean becomes 0.1 · batch mean
    ema_update(teacher, student, momentum=0.75)
    for param in teacher.parameters():
        assert torch.allclose(param, torch.full_like(param, 0.75 * 1.0 + 0.25 * 3.0))
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    assert int(teacher[1].num_batches_tracked) == 1
    # the student is untouched, and momentum 0 copies it
    assert all(torch.all(p == 3.0) for p in student.parameters())
    ema_update(teacher, student, momentum=0.0)
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(nn.Linear(2, 3, bias=False), nn.Linear(2, 3), 0.5)


def test_distribution_alignment_restores_the_labeled_share_of_a_rare_class():
    from geoccseg.losses import DistributionAlignment

    align = DistributionAlignment(torch.tensor([950.0, 50.0]), momentum=0.0, max_ratio=4.0)
    probs = torch.zeros(1, 2, 4, 4)
    probs[:, 1] = 0.025  # the teacher sees the rare class at half its labeled share (5 %)
    probs[:, 0] = 0.975
    first = align(probs, update=False)
    assert torch.allclose(first, probs)  # the running mean starts at the prior: no change yet
    aligned = align(probs)  # momentum 0: the running mean is this batch's mean
    assert torch.allclose(align.ratio, torch.tensor([0.95 / 0.975, 2.0], dtype=torch.float64))
    assert torch.allclose(aligned.sum(1), torch.ones(1, 4, 4))
    expected_fg = 0.025 * 2.0 / (0.025 * 2.0 + 0.975 * 0.95 / 0.975)
    assert torch.allclose(aligned[:, 1], torch.full((1, 4, 4), expected_fg))
    # a teacher that finds almost nothing is boosted by at most max_ratio
    probs[:, 1], probs[:, 0] = 0.001, 0.999
    align(probs)
    assert float(align.ratio[1]) == 4.0
    # pixels outside ``valid`` do not move the running mean
    align = DistributionAlignment(torch.tensor([950.0, 50.0]), momentum=0.0)
    valid = torch.zeros(1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0] = True
    probs[:, 1], probs[:, 0] = 0.0, 1.0
    probs[0, :, 0, 0] = torch.tensor([0.95, 0.05])
    align(probs, valid)
    assert torch.allclose(align.running, torch.tensor([0.95, 0.05], dtype=torch.float64))
