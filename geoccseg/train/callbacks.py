"""What a training run leaves behind: ``metrics.csv``, ``training.png`` and the model bundle.

Only rank 0 writes. The bundle holds the EMA teacher of the best validation F1 (or of the last
step when there is no validation set); every file is written atomically. ``bundle.json`` records
how the run ended: ``training.in_progress`` while it runs (a run killed outright keeps it),
``training.interrupted`` and ``training.stopped_step`` once it ended or was stopped by a signal.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from matplotlib.figure import Figure  # drawn without pyplot: no backend chosen, a notebook's stays as it is

from geoccseg.io.atomic import atomic_path
from geoccseg.io.bundle import BundleMeta, save_bundle, save_meta

LOSS_KEYS = ("loss", "sup", "pl", "con")
#: Steps between the loss rows of ``metrics.csv`` (step 1 is recorded too).
LOG_EVERY = 10


log = logging.getLogger(__name__)

class RunRecorder(pl.Callback):
    """Records mean losses every ``log_every`` steps and validation metrics, and saves the bundle.

    Every row also records ``seconds``: wall-clock seconds spent training up to that step (data
    loading, forward, backward, optimiser and checkpoints; validation excluded; continued across a
    resume), so that steps or chips per second can be read from ``metrics.csv``.

    Args:
        out: the output folder.
        meta: bundle metadata; ``training`` is filled in as the run goes.
        log_every: steps between loss rows.
    """

    def __init__(self, out: Path, meta: BundleMeta, log_every: int = LOG_EVERY) -> None:
        self.out = Path(out)
        self.meta = meta
        self.log_every = log_every
        self.rows: list[dict] = []
        self.best_f1 = -math.inf
        self.saved_step: int | None = None
        self.validation: dict = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._seconds = 0.0
        self._since: float | None = None
        self.ended = False  # _finish ran: the bundle records how the run ended

    @property
    def validated(self) -> bool:
        """Whether the bundle holds a validated teacher (else it is, or will be, the last step's)."""
        return self.best_f1 > -math.inf

    @property
    def last_validated_step(self) -> int | None:
        """The last step validated (its row in ``metrics.csv``); None before the first validation."""
        return max((row["step"] for row in self.rows if any(key.startswith("val_") for key in row)), default=None)

    def state_dict(self) -> dict:
        return {"rows": self.rows, "best_f1": self.best_f1, "saved_step": self.saved_step, "validation": self.validation,
                "sums": self._sums, "counts": self._counts, "seconds": self._seconds}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))
        self.best_f1 = state.get("best_f1", -math.inf)
        self.saved_step = state.get("saved_step")
        self.validation = dict(state.get("validation", {}))
        self._sums, self._counts = dict(state.get("sums", {})), dict(state.get("counts", {}))
        self._seconds = float(state.get("seconds", 0.0))
        on_disk = _saved_training(self.out)
        if (isinstance(on_disk.get("saved_step"), int) and on_disk["saved_step"] > (self.saved_step or 0)
                and isinstance(on_disk.get("validation"), dict) and isinstance(on_disk["validation"].get("f1"), float)):
            # a better bundle was saved after this checkpoint (killed between the two saves): it is the best so far
            self.saved_step, self.validation = on_disk["saved_step"], dict(on_disk["validation"])
            self.best_f1 = self.validation["f1"]
        if self.saved_step is not None:  # the bundle on disk is that of the resumed run
            self._record(self.saved_step, self.validation)

    def on_train_start(self, trainer, module) -> None:
        self.meta.training["in_progress"] = True
        self._since = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self._seconds += now - self._since
        self._since = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._tick()
        for k in LOSS_KEYS:
            v = trainer.callback_metrics.get(f"train/{k}")
            if v is not None:
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
                self._counts[k] = self._counts.get(k, 0) + 1
        step = trainer.global_step
        if step % self.log_every == 0 or step == 1:
            # mean of each loss term over the steps since the last row
            self.rows.append({"step": step, "seconds": round(self._seconds, 3), **{k: self._sums[k] / self._counts[k] for k in self._sums}})
            self._sums, self._counts = {}, {}

    def on_validation_end(self, trainer, module) -> None:
        self._since = time.perf_counter()  # validation is not training time
        if trainer.sanity_checking:
            return
        metrics = {k[4:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics:
            return
        self.rows.append({"step": trainer.global_step, **{f"val_{k}": v for k, v in metrics.items()}})
        if metrics.get("f1", -1) > self.best_f1:  # the counts are summed over processes: every one knows
            self.best_f1 = metrics["f1"]
            self._save(trainer, module, metrics)
        self._write(trainer)

    def on_train_end(self, trainer, module) -> None:
        self._finish(trainer, module, interrupted=False)

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):  # stopped by SIGTERM or SIGINT (see signals.py)
            self._finish(trainer, module, interrupted=True)

    def _finish(self, trainer, module, interrupted: bool) -> None:
        """Record how the run ended in the bundle; without a validated bundle, save the last step's teacher."""
        self.ended = True
        if not trainer.is_global_zero:
            return
        training = self.meta.training
        training.pop("in_progress", None)
        training.update({"steps": trainer.global_step, "interrupted": interrupted})
        if interrupted:
            training["stopped_step"] = trainer.global_step
        else:
            training.pop("stopped_step", None)
        if not self.validated and trainer.global_step > 0:
            self._save(trainer, module, {})
        elif self.saved_step is not None and (self.out / "bundle.json").is_file():
            save_meta(self.out, self.meta)
        self._write(trainer)

    def _save(self, trainer, module, metrics: dict) -> None:
        """Record the teacher of this step as the run's model; the first process writes it."""
        self.saved_step = trainer.global_step
        self.validation = metrics
        self._record(trainer.global_step, metrics)
        if trainer.is_global_zero:
            save_bundle(self.out, module.teacher, self.meta)

    def _record(self, step: int, metrics: dict) -> None:
        """Write the saved step and its validation into the bundle's metadata, and the decision
        threshold chosen on the validation images (one foreground class with a pixel of it in the
        validation; else the bundle has none, and predicts at 0.5)."""
        self.meta.training.update({"saved_step": step, "validation": metrics})
        if isinstance(metrics.get("threshold"), float):
            self.meta.threshold = round(metrics["threshold"], 4)

    def _write(self, trainer) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        columns = ["step", "seconds", *LOSS_KEYS] + sorted({k for r in self.rows for k in r if k.startswith("val_")})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_path(self.out / "metrics.csv", overwrite=True) as tmp:
            tmp.write_text(buf.getvalue())
        plot_training(self.rows, self.out / "training.png")


RATE_STEPS = 5
"""Steps over which :class:`TimeBudget` measures the pace."""


class TimeBudget(pl.Callback):
    """Warn once when ``--max-minutes`` will end a run well before its schedule does.

    The learning rate's cosine and the ramp of the unlabeled terms are laid over ``max_steps``
    (steps, so that a resumed run trains as the uninterrupted one): a 30-minute run of 1000 steps
    on a CPU stopped near step 450, its unlabeled terms at a fifth of their weight and its learning
    rate near its peak, without a word. The pace is measured over :data:`RATE_STEPS` steps from the
    first step, and again once the unlabeled terms have started (an unlabeled step costs two to
    three supervised ones), and the steps the remaining minutes allow projected from it.

    Args:
        schedule_steps: the steps the schedule is laid over.
        schedule_start: the step the unlabeled terms start at (0 for a supervised run).
        first_step: the run's first step (a resumed run's).
        ramp: the unlabeled terms' weight at a step (``module._ramp``), or None for a supervised run.
    """

    def __init__(self, schedule_steps: int, max_steps: int, max_minutes: float, schedule_start: int, first_step: int = 0,
                 ramp=None) -> None:
        self.schedule_steps, self.max_steps, self.max_minutes, self.ramp = schedule_steps, max_steps, max_minutes, ramp
        self.first_step = first_step
        self._windows = sorted({first_step + 1, *([schedule_start + 1] if schedule_start > first_step else [])})
        self._t0: float | None = None
        self._validating_s = 0.0  # validation time inside the window: not the pace of training steps
        self.projected: int | None = None

    def on_validation_start(self, trainer, module) -> None:
        self._validation_t0 = time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        self._validating_s += time.perf_counter() - self._validation_t0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self._windows or step < self._windows[0]:
            return
        if self._t0 is None:
            self._t0, self._from, self._validating_s = time.perf_counter(), step, 0.0
            return
        if step < self._from + RATE_STEPS:
            return
        per_step = (time.perf_counter() - self._t0 - self._validating_s) / (step - self._from)
        self._windows.pop(0)
        self._t0 = None
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining("train") if timer is not None else None
        if left is None or per_step <= 0:
            return
        self.projected = step + int(left / per_step)
        if self.projected >= 0.9 * min(self.schedule_steps, self.max_steps):  # the minutes are not what ends it early
            return
        self._windows = []  # said once
        if not trainer.is_global_zero:
            return
        weight = f"its unlabeled terms would stop at {self.ramp(self.projected):.2f} of their weight and " if self.ramp else ""
        fits = self.projected - self.first_step  # the steps this command's minutes allow, start-up included, as a new run's would
        log.warning("geoccseg: warning: at %.2g s per step, --max-minutes %g ends this run near step %d of the %d its schedule is "
                    "laid over: %sits learning rate short of its decay; for the whole schedule in that time, start it over "
                    "with --max-steps %d", per_step, self.max_minutes, self.projected, self.schedule_steps, weight, fits)


def _saved_training(out: Path) -> dict:
    """The ``training`` record of the bundle in ``out`` ({} when there is none)."""
    try:
        raw = json.loads((out / "bundle.json").read_text())
    except (OSError, ValueError):
        return {}
    training = raw.get("training") if isinstance(raw, dict) else None
    return training if isinstance(training, dict) else {}


def run_finished(out: str | Path) -> bool:
    """Whether ``out`` holds the bundle of a completed training (its step budget or
    ``max_minutes`` reached), not one that a signal (Ctrl-C, SIGTERM) or a kill left behind."""
    training = _saved_training(Path(out))
    return bool(training) and not training.get("in_progress", False) and not training.get("interrupted", False)


def plot_training(rows: list[dict], path: Path) -> None:
    """Loss terms (left) and validation F1 / IoU (right) over steps."""
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_val = fig.subplots(1, 2)
    for key in LOSS_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), label=key)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.set_title("training losses")
    for key in sorted({k for r in rows for k in r if k.startswith("val_f1") or k.startswith("val_iou")}):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax_val.plot(*zip(*pts), marker="o", label=key[4:])
    ax_val.set_xlabel("step")
    ax_val.set_ylim(0, 1)
    ax_val.set_title("validation (EMA teacher)")
    if ax_val.lines:
        ax_val.legend()
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
