"""The semi-supervised trainer as a Lightning module (method.md, "Losses").

One training step:

1. labeled batch, weak view -> student -> supervised loss L_sup (imbalance loss, or plain CE);
2. unlabeled batch, weak view -> EMA teacher -> confidence c and pseudo-label; the confidence
   levels split pixels into high (c >= tau_h, per class), low and unreliable;
3. strong view (photometric + CutMix) of the same weak view -> student -> pseudo-label loss L_pl on
   high-confidence pixels (the foreground ones optionally cut to a band around their skeleton,
   ``pseudo_centreline_px``; optionally averaged with the same loss on the weak view through the
   student with encoder channels dropped, ``feature_perturbation``);
4. contrastive loss L_con at stride 4: anchors are student embeddings at low-confidence pixels
   (and at labeled pixels the student gets wrong or is unsure of), keys and class prototypes are
   teacher embeddings at high-confidence and labeled pixels;
5. L = L_sup + lambda_pl(t) L_pl + lambda_con(t) L_con with sigmoid ramp-ups after
   ``unlabeled_start_steps`` (by default scaled to the budget); then the teacher takes an EMA step towards the student.

Validation scores the EMA teacher (the model that is saved) on held-apart items: precision,
recall, F1 and IoU of each foreground class, summed over all items (and all DDP ranks), counted and
read as ``geoccseg evaluate`` does (:func:`~geoccseg.evaluate.confusion_counts`, :class:`~geoccseg.evaluate.Counts`).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoccseg.evaluate.pixel import THRESHOLDS, Counts, confusion_counts, counts_by_threshold, f1_scores
from geoccseg.label_values import IGNORE_INDEX
from geoccseg.losses import ConfidenceContrastiveLoss, DistributionAlignment, ImbalanceLoss, class_weights, confidence_levels, sigmoid_rampup
from geoccseg.models import ModelConfig, build_model
from geoccseg.models.pretrained import SOURCES as PRETRAINED
from geoccseg.train.augment import appearance_view, apply_cutmix, cutmix_boxes, strong_view, weak_view
from geoccseg.train.centreline import centreline_band
from geoccseg.train.config import TrainConfig
from geoccseg.train.stream import step_seed
from geoccseg.train.targets import labels_at_stride, mask_at_stride, probs_at_stride
from geoccseg.train.teacher import ema_momentum, ema_update, make_teacher


VAL_WHOLE_PX = 2048 * 2048
"""Largest validation photo that goes through the teacher in one pass (the 1500 x 1500 px
Massachusetts crops do); larger ones (40-100 Mpx drone photos, stitched pavement panoramas: 5-10
GB of activations whole) go in windows of :data:`VAL_CORE_PX` with :data:`VAL_MARGIN_PX` of
context on every side, each scoring its core only."""

VAL_CORE_PX = 1536
VAL_MARGIN_PX = 256


def validation_windows(height: int, width: int) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """The windows (rows, columns) in which validation runs the teacher over a photo of ``height``
    x ``width`` pixels, each with the core (rows, columns; photo pixels) it scores: the whole photo
    once up to :data:`VAL_WHOLE_PX`, else cores that tile it, each read with its margin of context
    (clipped at the photo's edges), so that memory stays that of one window at any photo size."""
    if height * width <= VAL_WHOLE_PX:
        return [((slice(0, height), slice(0, width)), (slice(0, height), slice(0, width)))]

    def spans(size: int) -> list[tuple[slice, slice]]:
        cores = [slice(start, min(start + VAL_CORE_PX, size)) for start in range(0, size, VAL_CORE_PX)]
        return [(slice(max(0, c.start - VAL_MARGIN_PX), min(size, c.stop + VAL_MARGIN_PX)), c) for c in cores]

    return [((rows, cols), (core_rows, core_cols)) for rows, core_rows in spans(height) for cols, core_cols in spans(width)]


class SemiSupervisedSegmenter(pl.LightningModule):
    """Student, EMA teacher and the three loss terms.

    Args:
        config: training options (method switches, thresholds, optimiser).
        model_config: the network architecture.
        class_counts: labeled pixel counts per class (background first), for the loss weights.
        centreline_px: half-width of the pseudo-labels' centreline band, pixels (0: off); by default
            ``config.pseudo_centreline_px``, which must then be a number (``auto`` is measured on the
            data: :func:`~geoccseg.train.centreline.label_half_width_px`).
    """

    def __init__(self, config: TrainConfig, model_config: ModelConfig, class_counts: np.ndarray,
                 centreline_px: float | None = None) -> None:
        super().__init__()
        self.config = config
        if centreline_px is None:
            if config.pseudo_centreline_px == "auto":
                raise ValueError("pseudo_centreline_px is auto: pass the half-width measured on the data as centreline_px")
            centreline_px = float(config.pseudo_centreline_px)
        self.centreline_px = centreline_px
        self.model_config = model_config
        self.num_classes = model_config.num_classes
        self.register_buffer("class_counts", torch.as_tensor(class_counts, dtype=torch.float64))
        self.configure_networks()
        self.configure_loss_terms()
        self.generator = torch.Generator().manual_seed(config.seed)
        self._val_counts: Tensor | None = None
        self._val_levels: Tensor | None = None  # one foreground class: its pixels by probability level (decision threshold)
        #: steps the learning-rate schedule and the unlabeled ramp are laid over: ``max_steps``, or
        #: on resume the first run's (a resumed run given more steps keeps its schedule's end rate)
        self.schedule_steps = config.max_steps
        #: recorded in each checkpoint (:func:`~geoccseg.train.checkpoint.run_identity`)
        self.run_identity: dict = {}

    # -- hooks that subclasses may override ----------------------------------------------------
    def configure_networks(self) -> None:
        self.student = build_model(self.model_config)
        if self.config.use_pretrained and not self.config.resume and self.model_config.encoder in PRETRAINED:
            self.student.encoder.load_pretrained()  # a resumed run's weights all come from its checkpoint
        self.teacher = make_teacher(self.student)

    def start_from(self, model: nn.Module) -> None:
        """Fine-tune: copy a trained network's weights into the student and the teacher."""
        state = model.state_dict()
        self.student.load_state_dict(state)
        self.teacher.load_state_dict(state)

    def configure_loss_terms(self) -> None:
        c = self.config
        if c.loss == "ce":
            self.sup_loss = ImbalanceLoss(weights=None, region=None)
        else:
            weights = class_weights(self.class_counts.float(), method=c.class_weighting, beta=c.class_weight_beta) if c.class_weighting != "none" else None
            self.sup_loss = ImbalanceLoss(
                weights=weights, region=None if c.region == "none" else c.region, alpha=c.tversky_alpha, beta=c.tversky_beta,
            )
        self.pl_loss = self.sup_loss if c.pseudo_loss == "imbalance" else ImbalanceLoss(weights=None, region=None)
        self.con_loss = ConfidenceContrastiveLoss(
            self.num_classes, self.model_config.embed_dim, temperature=c.temperature,
            anchors_per_class=c.anchors_per_class, negatives_per_class=c.negatives_per_class, queue_size=c.queue_size,
        )
        self.align = DistributionAlignment(self.class_counts) if c.distribution_alignment else None
        tau_high = torch.full((self.num_classes,), c.tau_high_fg)
        tau_high[0] = c.tau_high
        self.register_buffer("tau_high", tau_high)

    def configure_optimizers(self):
        c = self.config
        groups = list(self.student.parameters())  # one group at one rate (also what earlier checkpoints hold)
        if c.encoder_lr_scale != 1.0:
            encoder = list(self.student.encoder.parameters())
            ids = {id(p) for p in encoder}
            groups = [{"params": encoder, "lr": c.lr * c.encoder_lr_scale},
                      {"params": [p for p in groups if id(p) not in ids], "lr": c.lr}]
        opt = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        warmup = max(1, min(50, self.schedule_steps // 10))
        total = max(self.schedule_steps, warmup + 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / (total - warmup)))) * 0.95 + 0.05

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"}}

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # channels-last convolutions are 30-45 % faster on CPUs (oneDNN's native layout; measured
        # for both encoders on 2 cores); weights keep their values, saved bundles are contiguous
        if self.device.type == "cpu":
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()  # Lightning switches every submodule to train mode

    def _ramp(self, step: int) -> float:
        start, length = self.config.unlabeled_schedule_over(self.schedule_steps)
        return 0.0 if step < start else sigmoid_rampup(step - start, length)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        c = self.config
        # every step's augmentations, CutMix boxes, contrastive samples and feature dropout from a seed of
        # (seed, rank, step): a resumed run, and each DDP rank after a resume, draws as the uninterrupted run
        gen = self.generator.manual_seed(step_seed(c.seed, self.global_rank, self.global_step, stream=1))
        scale = (0.5, c.crop_area_max)
        x_l, y_l = weak_view(batch["image_l"], batch["mask_l"], gen, scale)
        # the teacher always sees the weak view; the student may see a different-looking one
        x_l_student = appearance_view(x_l, gen, invert_p=c.appearance_invert_p) if c.appearance_augment else x_l
        ramp = self._ramp(self.global_step)
        use_unlabeled = c.semi_supervised and "image_u" in batch and ramp > 0
        logs = {}
        if not use_unlabeled:
            out = self.student(x_l_student) if c.contrastive else {"logits": self.student.forward_logits(x_l_student)}
            loss = l_sup = self.sup_loss(out["logits"], y_l)
            logs.update(sup=l_sup)
        else:
            n_l = x_l.shape[0]
            invalid_u = torch.where(batch["valid_u"], 0, IGNORE_INDEX).long()
            x_u, invalid_u = weak_view(batch["image_u"], invalid_u, gen, scale)
            valid_u = invalid_u != IGNORE_INDEX
            with torch.no_grad():
                t_out = self.teacher(torch.cat([x_l, x_u]))
                t_probs = t_out["logits"][n_l:].float().softmax(1)
                if self.align is not None:
                    t_probs = self.align(t_probs, valid_u)
                levels = confidence_levels(t_probs, self.tau_high, c.tau_low)
            # strong view of the same weak view, CutMix'ed; every target is mixed identically
            trusted = levels.high & valid_u
            if c.bg_margin_px:
                trusted &= ~((levels.pseudo == 0) & self._foreground_nearby(t_probs))
            if self.centreline_px:
                foreground = trusted & (levels.pseudo > 0)
                trusted &= ~foreground | centreline_band(foreground, self.centreline_px)
            perm, box = cutmix_boxes(x_u.shape[0], x_u.shape[2], x_u.shape[3], gen)
            x_s = apply_cutmix(strong_view(x_u, gen), perm, box)
            high = apply_cutmix(trusted, perm, box)
            pseudo = apply_cutmix(levels.pseudo, perm, box)
            s_out = self.student(torch.cat([x_l_student, x_s]))
            l_sup = self.sup_loss(s_out["logits"][:n_l], y_l)
            loss = l_sup
            logs.update(sup=l_sup, high=high.float().mean())
            if c.pseudo:
                target = torch.where(high, pseudo, IGNORE_INDEX)
                l_pl = self.pl_loss(s_out["logits"][n_l:], target)
                if c.feature_perturbation:
                    # the teacher's weak view itself, through the student with channels dropped
                    fp_logits = self.student.forward_logits(x_u, feature_dropout=c.feature_perturbation, generator=gen)
                    l_fp = self.pl_loss(fp_logits, torch.where(trusted, levels.pseudo, IGNORE_INDEX))
                    logs.update(fp=l_fp)
                    l_pl = 0.5 * (l_pl + l_fp)
                loss = loss + c.lambda_pl * ramp * l_pl
                logs.update(pl=l_pl)
            if c.contrastive:
                l_con = self._contrastive(s_out, t_out, y_l, t_probs, valid_u, perm, box, n_l)
                loss = loss + c.lambda_con * ramp * l_con
                logs.update(con=l_con)
        logs["loss"] = loss
        self.log_dict({f"train/{k}": v.detach() if isinstance(v, Tensor) else v for k, v in logs.items()},
                      prog_bar=False, on_step=True, batch_size=c.batch_size)
        self.log_dict({k: v for k, v in logs.items() if k in ("loss", "sup", "pl", "con")}, prog_bar=True, on_step=True, logger=False, batch_size=c.batch_size)
        return loss

    def _foreground_nearby(self, probs: Tensor) -> Tensor:
        """(B, H, W) pixels with some foreground evidence (p_fg >= 1 - tau_h of the background)
        within ``bg_margin_px`` pixels: not safe to teach as background."""
        r = self.config.bg_margin_px
        foreground = probs[:, 1:].amax(1, keepdim=True)
        return F.max_pool2d(foreground, 2 * r + 1, stride=1, padding=r)[:, 0] >= 1.0 - self.tau_high[0]

    def _contrastive(self, s_out, t_out, y_l, t_probs, valid_u, perm, box, n_l) -> Tensor:
        """Anchors at low-confidence pixels, keys at high-confidence and labeled pixels (stride 4)."""
        c = self.config
        k = self.num_classes
        # labeled part: target = ground truth; keys = every labeled cell; anchors = cells the student
        # gets wrong or holds with low confidence
        y4 = labels_at_stride(y_l, k)
        with torch.no_grad():
            s_probs4 = probs_at_stride(s_out["logits"][:n_l].detach().float().softmax(1))
            s_conf = s_probs4.gather(1, y4.clamp_max(k - 1)[:, None])[:, 0]
        known = y4 != IGNORE_INDEX
        anchors_l = known & ((s_probs4.argmax(1) != y4) | (s_conf < self.tau_high[y4.clamp_max(k - 1)]))
        # unlabeled part: teacher levels at stride 4, mixed like the student's input
        levels4 = confidence_levels(probs_at_stride(t_probs), self.tau_high, c.tau_low)
        box4 = F.avg_pool2d(box.float()[:, None], 4, 4, ceil_mode=True)[:, 0] > 0.5  # cells mostly inside the box
        valid4 = mask_at_stride(valid_u)
        mix = lambda t: apply_cutmix(t, perm, box4)  # noqa: E731
        target_u = mix(levels4.pseudo)
        keys_u = mix(levels4.high & valid4)
        anchors_u = mix(levels4.low & valid4)
        teacher_u = mix(t_out["embed"][n_l:])
        return self.con_loss(
            s_out["embed"],
            torch.cat([t_out["embed"][:n_l], teacher_u]).detach(),
            torch.cat([torch.where(known, y4, IGNORE_INDEX), torch.where(keys_u | anchors_u, target_u, IGNORE_INDEX)]),
            torch.cat([known, keys_u]),
            torch.cat([anchors_l, anchors_u]),
            generator=self.generator,
        )

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # the teacher follows right after the optimiser step, before callbacks run, so a checkpoint
        # of this step holds its teacher too; global_step counts this step only once the hook
        # returns, so here it is the step's 0-based index, what ema_momentum takes
        m = ema_momentum(self.global_step, self.config.ema_momentum, self.config.ema_warmup_steps)
        ema_update(self.teacher, self.student, m)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["geoccseg_run"] = {**self.run_identity, "schedule_steps": self.schedule_steps,
                                      "world_size": self.trainer.world_size}

    # -- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros(self.num_classes, 3, dtype=torch.float64, device=self.device)
        self._val_levels = torch.zeros(2, len(THRESHOLDS) + 1, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        image, truth = batch["image"], batch["mask"]
        known = (truth != IGNORE_INDEX) & batch["valid"]
        for window, core in validation_windows(*image.shape[-2:]):
            logits = self.teacher.forward_logits(image[..., window[0], window[1]])
            inner = [slice(c.start - w.start, c.stop - w.start) for w, c in zip(window, core)]  # the core in the window
            self._count(logits[..., inner[0], inner[1]], truth[..., core[0], core[1]], known[..., core[0], core[1]])

    def _count(self, logits: Tensor, truth: Tensor, known: Tensor) -> None:
        """Add the pixels of one validation window to the counts by class and by probability level."""
        pred = logits.argmax(1)
        for k in range(1, self.num_classes):
            self._val_counts[k] += torch.stack(confusion_counts(pred == k, truth == k, known)).double()
        if self.num_classes == 2:  # the foreground's pixels and the others' by level of its probability (ThresholdSweep's)
            level = torch.bucketize(logits.float().softmax(1)[:, 1][known], self._thresholds(), right=True)
            positive = truth[known] == 1
            for row, pixels in enumerate((level[positive], level[~positive])):
                self._val_levels[row] += torch.bincount(pixels, minlength=len(THRESHOLDS) + 1).double()

    def _thresholds(self) -> Tensor:
        """:data:`~geoccseg.evaluate.pixel.THRESHOLDS` as float32 on this module's device (as the
        probabilities: a score equal to a threshold counts as at or above it, as in the evaluation)."""
        return torch.as_tensor(THRESHOLDS, dtype=torch.float32, device=self.device)

    def decision_threshold(self, levels: np.ndarray) -> tuple[float, float] | None:
        """The threshold of the best validation F1 over the evaluation's grid and that F1, from the
        pixels by level; None without a foreground pixel to choose it on. On ties (a confident model
        on a small validation set scores the same F1 over a range of thresholds) the one nearest
        0.5: predictions on new images, whose probabilities are seldom as extreme, then stay in
        the middle of that range, not at its end (evaluate's ODS takes the lowest)."""
        positive, negative = levels
        if positive.sum() == 0:
            return None
        f1 = f1_scores(*counts_by_threshold(positive, negative))
        tied = np.flatnonzero(f1 == f1.max())
        best = int(tied[np.argmin(np.abs(THRESHOLDS[tied] - 0.5))])
        return float(THRESHOLDS[best]), float(f1[best])

    def on_validation_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self._val_counts, reduce_op="sum")
        f1s = []
        for k in range(1, self.num_classes):
            c = Counts(*(round(v) for v in counts[k].tolist()))  # tp, fp, fn
            name = self.class_names[k - 1]
            self.log_dict({f"val/precision_{name}": c.precision, f"val/recall_{name}": c.recall, f"val/f1_{name}": c.f1, f"val/iou_{name}": c.iou}, sync_dist=False)
            f1s.append(c.f1)
        self.log("val/f1", float(np.mean(f1s)), prog_bar=True, sync_dist=False)
        if self.num_classes == 2:
            chosen = self.decision_threshold(self.trainer.strategy.reduce(self._val_levels, reduce_op="sum").cpu().numpy())
            if chosen is not None:
                self.log_dict({"val/threshold": chosen[0], "val/f1_at_threshold": chosen[1]}, sync_dist=False)

    @property
    def class_names(self) -> list[str]:
        return getattr(self, "_class_names", [f"class_{k}" for k in range(1, self.num_classes)])

    @class_names.setter
    def class_names(self, names: list[str]) -> None:
        self._class_names = list(names)
