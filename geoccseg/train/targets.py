"""Labels and teacher probabilities at the embedding stride (4), without losing thin structures.

The projection head works at stride 4, where a one-pixel crack covers a fraction of a cell.
Plain nearest or average downsampling would turn most crack cells into background, leaving the
rare class without anchors or keys. Both maps here give foreground priority instead:

- labels: a cell takes a foreground class if any of its pixels has it; background if at least half
  its pixels are labeled background and none foreground; otherwise it is ignored.
- probabilities: foreground channels are max-pooled (the most confident pixel of the cell), and
  background is ``1 - max foreground``, so the cell is foreground as soon as one pixel is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geoccseg.label_values import IGNORE_INDEX


def labels_at_stride(labels: Tensor, num_classes: int, stride: int = 4, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(B, H, W) class map -> (B, ceil(H/s), ceil(W/s)) with foreground priority."""
    b, h, w = labels.shape
    known = labels != ignore_index
    onehot = F.one_hot(torch.where(known, labels, 0), num_classes).permute(0, 3, 1, 2).float() * known[:, None]
    pooled = F.max_pool2d(onehot, stride, stride, ceil_mode=True)  # class present in the cell
    share_bg = F.avg_pool2d(onehot[:, :1], stride, stride, ceil_mode=True)[:, 0]
    fg = pooled[:, 1:]
    out = torch.full(share_bg.shape, ignore_index, dtype=torch.long, device=labels.device)
    out[share_bg >= 0.5] = 0
    if num_classes > 1:
        has_fg = fg.amax(1) > 0
        # the highest foreground class present wins (classes are ordered, later ones overwrite)
        fg_class = num_classes - 1 - torch.flip(fg, dims=[1]).argmax(1)
        out[has_fg] = fg_class[has_fg]
    return out


def probs_at_stride(probs: Tensor, stride: int = 4) -> Tensor:
    """(B, K, H, W) probabilities -> (B, K, ceil(H/s), ceil(W/s)) with foreground priority."""
    fg = F.max_pool2d(probs[:, 1:], stride, stride, ceil_mode=True)
    bg = (1.0 - fg.amax(1, keepdim=True)).clamp_min(0.0)
    return torch.cat([bg, fg], dim=1)


def mask_at_stride(mask: Tensor, stride: int = 4) -> Tensor:
    """(B, H, W) bool -> cells whose pixels are all True."""
    return -F.max_pool2d(-(mask.float()[:, None]), stride, stride, ceil_mode=True)[:, 0] > 0.5
