"""Mean teacher: the teacher network is an exponential moving average of the student.

ξ ← m·ξ + (1 − m)·θ after every optimiser step, with a warm-up in which m grows from 0.

The teacher is a plain module, not a wrapper. In a LightningModule hold it as a regular submodule
next to the student::

    self.student = model
    self.teacher = make_teacher(model)          # saved in checkpoints, moved with .to(device)
    ...
    def configure_optimizers(self):
        return torch.optim.AdamW(self.student.parameters())   # never the teacher's
    def on_train_batch_end(self, outputs, batch, batch_idx):
        m = ema_momentum(self.global_step, self.hparams.ema_momentum, self.hparams.ema_warmup_steps)
        ema_update(self.teacher, self.student, m)

Lightning's ``model.train()`` at the start of every epoch puts all submodules in training mode,
the teacher included: call ``self.teacher.eval()`` in ``on_train_epoch_start`` (or before each
teacher forward), so that its BatchNorm uses the running statistics copied from the student.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` in eval mode with ``requires_grad`` off on every parameter."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def ema_momentum(step: int, momentum: float = 0.99, warmup_steps: int = 0) -> float:
    """EMA momentum m at optimiser step ``step`` (0-based).

    For the first ``warmup_steps`` steps m = 0: the teacher copies the student while the student
    is burnt in on the labels (averaging its random first weights would only hold the teacher
    back). Then, with s = step − warmup_steps, m = min(momentum, 1 − 1 / (s + 1))
    (Tarvainen & Valpola, 2017): m = 0, 1/2, 2/3, ..., so the teacher is the plain mean of the
    student's weights since the burn-in until that mean would remember longer than the EMA,
    after about 1 / (1 − momentum) steps.

    Args:
        step: optimiser step, 0 for the first.
        momentum: the final momentum, in [0, 1).
        warmup_steps: burn-in steps during which the teacher copies the student.

    Returns:
        m in [0, momentum].
    """
    since = step - warmup_steps
    if since < 0:
        return 0.0
    return min(momentum, 1.0 - 1.0 / (since + 1))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move the teacher towards the student: ξ ← m·ξ + (1 − m)·θ; copy the buffers.

    Buffers (BatchNorm running statistics and counters) are copied from the student as they are.

    Args:
        teacher: the EMA model, same architecture as ``student``; changed in place.
        student: the trained model.
        momentum: m in [0, 1]; 0 copies the student, 1 keeps the teacher.

    Raises:
        ValueError: if the two models do not have the same parameters and buffers.
    """
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    teacher_buffers = dict(teacher.named_buffers())
    student_buffers = dict(student.named_buffers())
    if teacher_params.keys() != student_params.keys() or teacher_buffers.keys() != student_buffers.keys():
        raise ValueError("teacher and student do not have the same parameters and buffers")
    for name, param in teacher_params.items():
        param.lerp_(student_params[name].detach().to(param.dtype), 1.0 - momentum)
    for name, buffer in teacher_buffers.items():
        buffer.copy_(student_buffers[name])
