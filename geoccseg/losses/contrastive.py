"""Confidence-level contrastive loss: pull low-confidence features towards confident prototypes.

Keys come from the teacher's projection embeddings at high-confidence pixels (no gradient); for
each class k they give a prototype μ_k (the normalised mean key) and the negatives of the other
classes. Anchors are the student's embeddings at low-confidence pixels, sampled with the same
number per class. For an anchor z of class k, with negatives N(k):

    ℓ(z) = −log( exp(z·μ_k / T) / (exp(z·μ_k / T) + Σ_{n ∈ N(k)} exp(z·z_n / T)) )

A per-class FIFO memory of keys (:class:`KeyQueue`) gives a rare class keys even in a batch that
lacks it. Built on ReCo (Liu et al., ICLR 2022) and U2PL (Wang et al., CVPR 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoccseg.label_values import IGNORE_INDEX


def _subset(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Indices of ``k`` of ``n`` items drawn uniformly without replacement (all ``n`` if n ≤ k)."""
    if n <= k:
        return torch.arange(n, device=device)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=draw_device)[:k].to(device)


class KeyQueue(nn.Module):
    """Per-class FIFO memory of teacher keys.

    The state lives in buffers, so it is saved with ``state_dict`` and moves with ``.to(device)``:

    * ``queue``: (K, size, D) keys, float32;
    * ``ptr``: (K,) int64, next slot to overwrite per class;
    * ``filled``: (K,) int64, number of valid keys per class (slots ``[0, filled)``).

    Args:
        num_classes: K.
        dim: D, embedding channels.
        size_per_class: slots per class.
    """

    queue: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, num_classes: int, dim: int, size_per_class: int = 256) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.size = size_per_class
        self.register_buffer("queue", torch.zeros(num_classes, size_per_class, dim))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Tensor) -> None:
        """Store keys, oldest first out; labels outside [0, K) are dropped.

        Args:
            keys: (N, D) key embeddings (detached here).
            labels: (N,) class of each key.
        """
        keys = keys.detach().to(self.queue)
        labels = labels.to(self.queue.device)
        for k in range(self.num_classes):
            class_keys = keys[labels == k][-self.size :]
            n = class_keys.shape[0]
            if n == 0:
                continue
            start = int(self.ptr[k])
            slots = (start + torch.arange(n, device=self.queue.device)) % self.size
            self.queue[k, slots] = class_keys
            self.ptr[k] = (start + n) % self.size
            self.filled[k] = min(int(self.filled[k]) + n, self.size)

    def get(self, k: int) -> Tensor:
        """The stored keys of class ``k``, shape (n, D) with n ≤ size."""
        return self.queue[k, : int(self.filled[k])]


class ConfidenceContrastiveLoss(nn.Module):
    """Contrast low-confidence student features against high-confidence teacher keys.

    Per class k: the prototype μ_k is the normalised mean of the teacher keys of class k in the
    batch together with the queue's keys of class k; the negatives are up to
    ``negatives_per_class`` keys of the other classes (batch and queue), drawn uniformly; the
    anchors are student embeddings at anchor pixels of class k, drawn uniformly. Anchors are
    class-balanced: every class with anchors gets n = min over those classes of their anchor
    count, raised to ``min_anchors`` for classes that have that many, and capped at
    ``anchors_per_class``. A class without a prototype or without negatives contributes no anchor
    (nothing to contrast). After the loss, up to ``queue_size`` random keys per class of this
    batch enter the queue.

    Args:
        num_classes: K.
        dim: D, embedding channels.
        temperature: T.
        anchors_per_class: most anchors per class.
        negatives_per_class: most negatives per class.
        queue_size: keys stored per class.
        min_anchors: anchors per class kept even when another class has fewer.
        ignore_index: target value of pixels that are neither keys nor anchors.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        temperature: float = 0.2,
        anchors_per_class: int = 256,
        negatives_per_class: int = 512,
        queue_size: int = 256,
        min_anchors: int = 16,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.temperature = temperature
        self.anchors_per_class = anchors_per_class
        self.negatives_per_class = negatives_per_class
        self.min_anchors = min_anchors
        self.ignore_index = ignore_index
        self.queue = KeyQueue(num_classes, dim, queue_size)

    def forward(
        self,
        student_embed: Tensor,
        teacher_embed: Tensor,
        target: Tensor,
        key_mask: Tensor,
        anchor_mask: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Contrastive loss of one batch; pushes the batch's keys into the queue.

        Args:
            student_embed: (B, D, h, w) L2-normalised student embeddings (stride 4).
            teacher_embed: (B, D, h, w) L2-normalised teacher embeddings; never differentiated.
            target: (B, h, w) class per pixel (label or pseudo-label; ``ignore_index`` = none).
            key_mask: (B, h, w) bool, pixels whose teacher embedding is a high-confidence key.
            anchor_mask: (B, h, w) bool, low-confidence pixels whose student embedding is an anchor.
            generator: random source of the anchor, negative and queue sampling.

        Returns:
            Scalar mean loss over the anchors; a zero that still requires grad when there is none.
        """
        batch, dim, height, width = student_embed.shape
        if teacher_embed.shape != student_embed.shape or dim != self.queue.queue.shape[-1]:
            raise ValueError(
                f"student {tuple(student_embed.shape)} and teacher {tuple(teacher_embed.shape)} embeddings "
                f"must match each other and have {self.queue.queue.shape[-1]} channels"
            )
        for name, tensor in (("target", target), ("key_mask", key_mask), ("anchor_mask", anchor_mask)):
            if tensor.shape != (batch, height, width):
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {(batch, height, width)}")
        device = student_embed.device
        student = student_embed.permute(0, 2, 3, 1).reshape(-1, dim)
        teacher = teacher_embed.detach().permute(0, 2, 3, 1).reshape(-1, dim).float()
        labels = target.reshape(-1).to(device)
        known = (labels >= 0) & (labels < self.num_classes)
        is_key = key_mask.reshape(-1).to(device) & known
        is_anchor = anchor_mask.reshape(-1).to(device) & known
        batch_keys, key_labels = teacher[is_key], labels[is_key]

        keys = [torch.cat([batch_keys[key_labels == k], self.queue.get(k)]) for k in range(self.num_classes)]
        candidates: dict[int, Tensor] = {}
        for k in range(self.num_classes):
            has_negatives = any(keys[j].shape[0] for j in range(self.num_classes) if j != k)
            if keys[k].shape[0] and has_negatives:
                pixels = torch.nonzero(is_anchor & (labels == k)).squeeze(1)
                if pixels.numel():
                    candidates[k] = pixels

        losses = []
        if candidates:
            balanced = max(min(p.numel() for p in candidates.values()), self.min_anchors)
            per_class = min(balanced, self.anchors_per_class)
            # in float32 under mixed precision too: autocast ran the similarities (matmuls) in bf16 on
            # CUDA, a logit step of 0.02 at T = 0.2, whatever the .float() casts asked
            with torch.autocast(device_type=device.type, enabled=False):
                for k, pixels in candidates.items():
                    anchors = student[pixels[_subset(pixels.numel(), per_class, generator, device)]].float()
                    prototype = F.normalize(keys[k].mean(dim=0), dim=0)
                    others = torch.cat([keys[j] for j in range(self.num_classes) if j != k])
                    negatives = others[_subset(others.shape[0], self.negatives_per_class, generator, device)]
                    positive = anchors @ prototype / self.temperature
                    logits = torch.cat([positive[:, None], anchors @ negatives.T / self.temperature], dim=1)
                    losses.append(torch.logsumexp(logits, dim=1) - positive)

        self._enqueue(batch_keys, key_labels, generator)
        if not losses:
            return student_embed.sum() * 0
        return torch.cat(losses).mean()

    def _enqueue(self, keys: Tensor, labels: Tensor, generator: torch.Generator | None) -> None:
        """Push up to ``queue.size`` random keys per class of this batch."""
        for k in range(self.num_classes):
            class_keys = keys[labels == k]
            if class_keys.shape[0]:
                chosen = class_keys[_subset(class_keys.shape[0], self.queue.size, generator, keys.device)]
                self.queue.push(chosen, torch.full((chosen.shape[0],), k, device=keys.device))
