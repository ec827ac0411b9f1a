"""An endless stream of training batches: labeled chips plus unlabeled chips.

Each item of :class:`ChipStream` is a whole batch, so a single ``DataLoader`` (with
``batch_size=None``) feeds the trainer, and every DDP rank and DataLoader worker draws its own
chips. The batch of global step ``s`` is drawn from a generator seeded by (seed, rank, s) alone, so
a run resumed at step ``s`` trains on the very batches the uninterrupted run would have.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from geoccseg.data.base import TrainingData


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """Seed of the random draws of one training step: a function of the step, not of the draws
    before it, so that a resumed run draws as the uninterrupted one (``stream`` keeps the chips'
    and the augmentations' draws apart)."""
    return hash((seed, rank, step, stream)) % (2**63)


class ChipStream(IterableDataset):
    """Batches ``{"image_l", "mask_l", "image_u", "valid_u"}`` drawn forever from ``data``.

    Args:
        data: source of chips.
        batch_size: labeled chips per batch.
        unlabeled_batch_size: unlabeled chips per batch (0 for supervised training).
        seed: base seed.
        rank: distributed rank (different chips on every rank).
        start_step: global step the stream starts at (a resumed run's checkpoint step).
        foreground_share: share of each batch's labeled chips that must hold a labeled foreground
            pixel (the last ``ceil(batch_size * foreground_share)`` chips; the trainer's
            ``foreground_share``).
    """

    def __init__(self, data: TrainingData, batch_size: int, unlabeled_batch_size: int, seed: int, rank: int = 0, start_step: int = 0,
                 foreground_share: float = 0.0) -> None:
        self.data = data
        self.batch_size = batch_size
        self.foreground_from = batch_size - math.ceil(batch_size * foreground_share - 1e-9)  # any share above 0: at least one
        self.unlabeled_batch_size = unlabeled_batch_size
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        generator = torch.Generator()
        # the DataLoader takes batches from its workers in turn: worker w serves steps w, w + W, ...
        for step in itertools.count(self.start_step + worker, workers):
            generator.manual_seed(step_seed(self.seed, self.rank, step))
            labeled = [self.data.labeled_chip(generator, foreground=i >= self.foreground_from) for i in range(self.batch_size)]
            batch = {
                "image_l": torch.stack([c["image"] for c in labeled]),
                "mask_l": torch.stack([c["mask"] for c in labeled]),
            }
            if self.unlabeled_batch_size:
                unlabeled = [self.data.unlabeled_chip(generator) for _ in range(self.unlabeled_batch_size)]
                batch["image_u"] = torch.stack([c["image"] for c in unlabeled])
                batch["valid_u"] = torch.stack([c["valid"] for c in unlabeled])
            yield batch


class ItemList(Dataset):
    """Validation items (any size) served one at a time.

    Under DDP each process serves its share (``rank`` of ``world``, set once the processes are up):
    items ``rank``, ``rank + world``, ... and, where its share is one short, an item without a
    valid pixel. Every process so runs as many validation steps, and every item counts once
    (Lightning's distributed sampler repeats items to even the shares: they counted twice).
    """

    def __init__(self, items: Sequence[dict]) -> None:
        self.items = items
        self.rank, self.world = 0, 1

    def __len__(self) -> int:
        return -(-len(self.items) // self.world)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"validation item {i} of {len(self)}")
        index = self.rank + i * self.world
        item = self.items[min(index, len(self.items) - 1)]
        valid = item["valid"] if index < len(self.items) else item["valid"] & False  # counted nowhere
        return {"image": item["image"], "mask": item["mask"], "valid": valid}
