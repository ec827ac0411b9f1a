"""The trainer end to end on real data: CFD photos, the SpaceNet chip with an AOI, resume, DDP."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import box
from torch.utils.data import DataLoader

from geoccseg.cli import cli
from geoccseg.data.photos import PhotoTrainingData
from geoccseg.errors import GeoccsegError
from geoccseg.io.bundle import resolve_model, weights_path
from geoccseg.io.scene import open_scene
from geoccseg.models import load_bundle
from geoccseg.train import TrainConfig, train
from geoccseg.train.checkpoint import load_checkpoint
from geoccseg.train.run import loader_workers
from geoccseg.train.stream import ChipStream
from geoccseg.train.targets import labels_at_stride, probs_at_stride

FAST = dict(tile_px=96, batch_size=2, unlabeled_batch_size=2, unlabeled_start_steps=4, rampup_steps=4, ema_warmup_steps=2, progress=False)


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _validate(module, items: list[dict]) -> dict:
    """Lightning's real validation of ``module`` on ``items`` (one per batch) in this process: its logged metrics."""
    import lightning.pytorch as pl

    from geoccseg.train.stream import ItemList

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    return trainer.validate(module, dataloaders=DataLoader(ItemList(items), batch_size=1), verbose=False)[0]


def test_labels_at_stride_keep_thin_foreground():
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[0, :, 5] = 1  # a one-pixel crack through the right cells
    y[0, 0:4, 0:4] = 255  # an unlabeled cell
    y4 = labels_at_stride(y, 2)
    assert y4.tolist() == [[[255, 1], [0, 1]]]
    p = torch.zeros(1, 2, 8, 8)
    p[:, 0] = 1.0
    p[0, :, 6, 6] = torch.tensor([0.1, 0.9])
    p4 = probs_at_stride(p)
    assert torch.allclose(p4[0, 1], torch.tensor([[0.0, 0.0], [0.0, 0.9]]))
    assert torch.allclose(p4[0, 0] + p4[0, 1], torch.ones(2, 2))


def test_cfd_run_lowers_loss_writes_bundle_and_resumes(data_dir, tmp_path):
    cfd = data_dir / "cfd"
    out = tmp_path / "cfd_model"
    config = TrainConfig(
        out=str(out), images=str(cfd / "images"), masks=str(cfd / "masks"), unlabeled=[str(cfd / "unlabeled")],
        labeled_fraction=0.035, max_steps=30, val_every=15, lr=3e-3, pseudo_centreline_px="auto", max_minutes=60, **FAST,
    )
    result = train(config)
    assert result.steps == 30 and len(result.labeled) == 3  # floor(0.035 * 107 training photos)
    assert 0.5 <= load_bundle(out).meta.training["pseudo_centreline_px"] < 3  # CrackForest's cracks: 1-2 px labels (0.5: a 1-px line, to its edge)
    rows = _rows(out / "metrics.csv")
    assert any(r["con"] for r in rows) and any(r["pl"] for r in rows)  # the unlabeled terms ran
    assert (out / "training.png").stat().st_size > 10_000
    bundle = load_bundle(out)
    assert bundle.meta.classes == ["crack"] and bundle.meta.bands == [1, 2, 3]
    assert "f1_crack" in bundle.meta.training["validation"]
    assert bundle.meta.training["data"]["labeled"] == result.labeled
    logits = bundle.model.forward_logits(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits).all()

    # resume continues from the saved step, with the optimiser state, up to the new budget (its
    # chips drawn by two data loader worker processes)
    code = CliRunner().invoke(cli, ["train", "--config", str(out / "config.yaml"), "--resume", "--max-steps", "45", "--num-workers", "2"])
    assert code.exit_code == 0, code.output
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 45 and ckpt["optimizer_states"][0]["state"]
    # --max-minutes is each command's wall-clock limit: no time spent is carried into a resumed run
    # (restored, it stopped a run resumed after its limit ran out again after one step)
    assert not [key for key in ckpt["callbacks"] if key.startswith("Timer")]
    rows = _rows(out / "metrics.csv")
    steps = [int(r["step"]) for r in rows]
    assert max(steps) == 45 and steps[0] == 1  # one history across both runs
    # rows are means over 10 steps; the batch Dice term of a 1.6 % class falls slowly, and how fast
    # depends on the processor's floating point (after 30 steps: 1.22 -> 1.10 on a Xeon, 1.23 -> 1.16
    # on an AMD EPYC), so the check looks at the last rows of all 45 steps, across the resume (AMD
    # EPYC: 1.23 -> 1.01)
    sup = [float(r["sup"]) for r in rows if r["sup"]]
    assert min(sup[-2:]) < 0.93 * sup[0], sup
    # training seconds (validation excluded) rise step by step and go on across the resume
    seconds = [float(r["seconds"]) for r in rows if r["seconds"]]
    assert len(seconds) == len([r for r in rows if r["sup"]]) and seconds[0] > 0
    assert all(b > a for a, b in zip(seconds, seconds[1:])), seconds


def test_the_teacher_copies_the_student_on_the_first_step_without_burn_in(data_dir, tmp_path):
    """ema_momentum is 0 at optimiser step 0: with no burn-in (ema_warmup_steps 0) the first update
    copies the student. The module passed a 1-based step, so the teacher kept half of the
    initial (random-headed) weights (review M6)."""
    cfd = data_dir / "cfd"
    out = tmp_path / "one_step"
    config = TrainConfig(out=str(out), images=str(cfd / "images"), masks=str(cfd / "masks"), max_steps=1, val_every=100,
                         **{**FAST, "tile_px": 64, "ema_warmup_steps": 0})
    train(config)
    state = load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    teacher = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    student = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    assert teacher.keys() == student.keys() and teacher
    differ = [k for k in teacher if not torch.equal(teacher[k], student[k])]
    assert differ == [], f"{len(differ)} of {len(teacher)} tensors differ, e.g. {differ[:3]}"


def test_scene_with_aoi_trains(vegas, tmp_path):
    scene = open_scene(vegas / "vegas_img0_rgb.tif")
    xmin, ymin, xmax, ymax = scene.bounds
    dx, dy = xmax - xmin, ymax - ymin
    gpd.GeoDataFrame(geometry=[box(xmin, ymin + 0.5 * dy, xmin + 0.6 * dx, ymax)], crs=scene.crs).to_file(tmp_path / "aoi.gpkg")
    gpd.GeoDataFrame(geometry=[box(xmin + 0.6 * dx, ymin + 0.5 * dy, xmax, ymax)], crs=scene.crs).to_file(tmp_path / "val.gpkg")
    out = tmp_path / "vegas_model"
    result = CliRunner().invoke(cli, [
        "train", "--scene", str(vegas / "vegas_img0_rgb.tif"), "--labels", str(vegas / "vegas_img0_roads.geojson"),
        "--aoi", str(tmp_path / "aoi.gpkg"), "--val-aoi", str(tmp_path / "val.gpkg"), "-o", str(out),
        "--max-steps", "40", "--val-every", "20", "--tile-px", "128", "--batch-size", "4", "--unlabeled-batch-size", "2",
        "--unlabeled-start-steps", "4", "--rampup-steps", "4", "--lr", "3e-3",
    ])
    assert result.exit_code == 0, result.output
    assert "validation (EMA teacher): f1_road" in result.output
    rows = _rows(out / "metrics.csv")
    sup = [float(r["sup"]) for r in rows if r["sup"]]
    assert np.mean(sup[-2:]) < np.mean(sup[:2]), sup  # two logged batches each side: one batch's loss is too noisy a start
    bundle = load_bundle(out)
    assert bundle.meta.pixel_size_m == pytest.approx(scene.pixel_size_m)
    assert bundle.meta.classes == ["road"] and len(bundle.meta.norm.low) == 3
    saved = json.loads((out / "bundle.json").read_text())
    assert saved["training"]["data"]["source"] == "scenes"


def test_aoi_narrower_than_a_tile_is_a_one_line_error(vegas, tmp_path):
    scene = open_scene(vegas / "vegas_img0_rgb.tif")
    xmin, ymin, xmax, ymax = scene.bounds
    strip = box(xmin, ymin, xmin + 0.25 * (xmax - xmin), ymax)  # 88 px wide at 1 m
    gpd.GeoDataFrame(geometry=[strip], crs=scene.crs).to_file(tmp_path / "aoi.gpkg")
    result = CliRunner().invoke(cli, [
        "train", "--scene", str(vegas / "vegas_img0_rgb.tif"), "--labels", str(vegas / "vegas_img0_roads.geojson"),
        "--aoi", str(tmp_path / "aoi.gpkg"), "--pixel-size-m", "1", "--tile-px", "128", "-o", str(tmp_path / "m"),
    ])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "no 128-px chip fits inside the labeled AOI at 1.00 m/pixel; enlarge the AOI or lower --tile-px" in result.output


def test_fine_tuning_starts_from_the_shipped_road_model(vegas, tmp_path):
    """--init-from road: the road model's architecture, normalisation and 1 m pixels; a few small
    steps move its weights a little, where training from scratch starts from random ones."""
    road = load_bundle(resolve_model("road"))
    out = tmp_path / "tuned"
    result = CliRunner().invoke(cli, [
        "train", "--scene", str(vegas / "vegas_img0_rgb.tif"), "--labels", str(vegas / "vegas_img0_roads.geojson"),
        "--init-from", "road", "-o", str(out), "--max-steps", "3", "--tile-px", "128", "--batch-size", "2",
        "--no-pseudo", "--no-contrastive", "--lr", "1e-4",
    ])
    assert result.exit_code == 0, result.output
    tuned = load_bundle(out)
    assert tuned.meta.model == road.meta.model and tuned.meta.classes == ["road"]
    assert tuned.meta.norm == road.meta.norm and tuned.meta.pixel_size_m == road.meta.pixel_size_m == 1.0
    start, end = road.model.state_dict(), tuned.model.state_dict()
    moved = [torch.linalg.norm(end[k] - start[k]) / torch.linalg.norm(start[k]) for k in start if start[k].is_floating_point() and start[k].dim() > 1]
    assert 0 < max(moved) < 0.2, max(moved)

    crack = CliRunner().invoke(cli, [
        "train", "--scene", str(vegas / "vegas_img0_rgb.tif"), "--labels", str(vegas / "vegas_img0_roads.geojson"),
        "--init-from", "crack", "-o", str(tmp_path / "wrong"), "--max-steps", "1",
    ])
    assert crack.exit_code == 2 and "it predicts crack but the labels have road" in crack.output and crack.output.count("\n") == 1


def test_bundle_loading_refuses_tampered_files(data_dir, tmp_path):
    cfd = data_dir / "cfd"
    out = tmp_path / "m"
    train(TrainConfig(out=str(out), images=str(cfd / "images"), masks=str(cfd / "masks"), labeled_fraction=0.1,
                      max_steps=2, val_fraction=0.0, pseudo=False, contrastive=False, **FAST))
    load_bundle(out)
    weights = weights_path(out)
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["predict", str(data_dir / "spacenet-vegas" / "vegas_img0_rgb.tif"), "-o", str(tmp_path / "x.gpkg"), "--model", str(out)])
    assert result.exit_code == 2 and "checksum" in result.output and result.output.count("\n") == 1
    (out / "bundle.json").write_text("[1, 2]\n")  # JSON, but not an object
    result = CliRunner().invoke(cli, ["predict", str(data_dir / "spacenet-vegas" / "vegas_img0_rgb.tif"), "-o", str(tmp_path / "x.gpkg"), "--model", str(out)])
    assert result.exit_code == 2 and "has a damaged bundle.json" in result.output and result.output.count("\n") == 1


def test_bad_training_input(data_dir, tmp_path):
    cfd = data_dir / "cfd"
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((cfd / "masks").iterdir())[:5]:
        shutil.copy(p, masks / p.name)
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((cfd / "images").iterdir())[:5]:
        shutil.copy(p, images / p.name)
    Image.new("L", (100, 80)).save(masks / "001.png")
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "--images", str(images), "--masks", str(masks), "-o", str(tmp_path / "o"), "--val-fraction", "0"])
    assert r.exit_code == 2 and "mask 001.png is 100x80 but image 001.jpg is 480x320" in r.output
    r = runner.invoke(cli, ["train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"), "--labeled-fraction", "0.005", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "leaves no labeled image" in r.output and r.output.count("\n") == 1
    (tmp_path / "c.yaml").write_text("max_step: 10\n")
    r = runner.invoke(cli, ["train", "--config", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown config file c.yaml key(s) max_step" in r.output
    r = runner.invoke(cli, ["train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"), "-o", str(tmp_path / "empty"), "--resume"])
    assert r.exit_code == 2 and "holds no checkpoint" in r.output


@pytest.mark.slow
def test_loader_workers_draw_different_chips(data_dir):
    """Each data loader worker draws its own chips (seeded by its id), not copies of another's; the
    default is no worker on the CPU."""
    cfd = data_dir / "cfd"
    data = PhotoTrainingData(cfd / "images", cfd / "masks", classes=["crack"], labeled_fraction=0.05, tile_px=64)
    stream = ChipStream(data, batch_size=2, unlabeled_batch_size=2, seed=0)
    loader = iter(DataLoader(stream, batch_size=None, num_workers=2))
    first, second = next(loader), next(loader)  # one batch of each worker
    assert first["image_l"].shape == second["image_l"].shape == (2, 3, 64, 64)
    assert not torch.equal(first["image_l"], second["image_l"]) and not torch.equal(first["image_u"], second["image_u"])
    assert torch.equal(first["image_l"], next(iter(stream))["image_l"])  # worker 0 draws what the process itself would
    config = TrainConfig(out="unused", images="unused", masks="unused", accelerator="cpu")
    assert loader_workers(config) == 0 and loader_workers(replace(config, num_workers=3)) == 3


def test_ddp_two_cpu_processes(data_dir, tmp_path, torch_threads):
    """Lightning's DDP on the gloo backend with 2 CPU processes, through the real CLI, stopped by
    --max-minutes: both processes validate the teacher of the last step, each its share of the items."""
    cfd = data_dir / "cfd"
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "geoccseg.cli", "train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"),
           "--labeled-fraction", "0.05", "-o", str(out), "--max-steps", "1000", "--max-minutes", "0.05", "--tile-px", "64",
           "--batch-size", "2", "--unlabeled-batch-size", "2", "--unlabeled-start-steps", "2", "--rampup-steps", "2",
           "--accelerator", "cpu", "--devices", "2", "--val-every", "1000"]  # validated once, when time runs out
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr and "All distributed processes registered" in proc.stderr
    bundle = load_bundle(out)
    training = bundle.meta.training
    assert 0 < training["steps"] < 1000 and training["saved_step"] == training["steps"]
    # the two shares' counts add up to one process's validation of the same teacher on the same items
    import numpy as np

    from geoccseg.train.module import SemiSupervisedSegmenter
    from geoccseg.train.run import build_data

    torch_threads(1)  # as each rank ran (OMP_NUM_THREADS=1): the same logits to the last digit
    config = TrainConfig(out=str(tmp_path / "unused"), images=str(cfd / "images"), masks=str(cfd / "masks"), labeled_fraction=0.05,
                         tile_px=64, progress=False)
    items = build_data(config).validation_items()
    assert len(items) > 2 and len(items) % 2 == 1  # shares of unequal length: the short one gets a padding item
    module = SemiSupervisedSegmenter(config, bundle.model.config, np.ones(2))
    module.teacher, module.class_names = bundle.model, bundle.meta.classes
    alone = _validate(module, items)
    assert training["validation"]["f1"] == pytest.approx(alone["val/f1"], rel=1e-6)


def test_every_ddp_rank_draws_its_own_chips_and_validates_its_own_items(data_dir):
    """The chip stream took its rank from RANK, which Lightning's own launcher (--devices N) does not
    set: every rank drew rank 0's chips. Ranks hands it the trainer's global rank at setup, before
    any batch is drawn (the trainers here stand for ranks 0 and 1 of a DDP run). Validation items:
    Lightning's distributed sampler repeated some to even the shares (counted twice); now each
    counts once and every rank runs as many steps (the one short gets an item without valid pixel)."""
    from types import SimpleNamespace

    from geoccseg.train.run import Ranks
    from geoccseg.train.stream import ItemList

    cfd = data_dir / "cfd"
    data = PhotoTrainingData(cfd / "images", cfd / "masks", labeled_fraction=0.1, tile_px=64, val_fraction=0.03)
    streams = [ChipStream(data, 2, 0, seed=0) for _ in range(2)]
    items = [ItemList(data.validation_items()) for _ in range(2)]
    for rank in range(2):
        Ranks(streams[rank], items[rank]).setup(SimpleNamespace(global_rank=rank, world_size=2), None, "fit")
    first = [next(iter(stream))["image_l"] for stream in streams]
    assert streams[1].rank == 1 and not torch.equal(first[0], first[1])
    five = [{"image": torch.zeros(1, 4, 4), "mask": torch.zeros(4, 4), "valid": torch.ones(4, 4, dtype=torch.bool) * (i + 1) > 0}
            for i in range(5)]
    for i, item in enumerate(five):
        item["valid"][: i % 4] = False  # a different count per item
    shares = [ItemList(five) for _ in range(2)]
    for rank, share in enumerate(shares):
        share.rank, share.world = rank, 2
    served = [item for share in shares for item in share]
    assert [len(share) for share in shares] == [3, 3] and int(served[-1]["valid"].sum()) == 0  # rank 1's short share
    assert sum(int(item["valid"].sum()) for item in served) == sum(int(item["valid"].sum()) for item in five)
    n = len(data.validation_items())
    assert n > 1 and [len(share) for share in items] == [-(-n // 2)] * 2


def test_validation_counts_and_conventions_are_those_of_evaluate(tmp_path):
    """The trainer's validation (real Lightning validate) counts tp/fp/fn like geoccseg evaluate, over
    known and valid pixels only, and reads them with its conventions: a class that is neither true nor
    predicted anywhere scores 1, not 0."""
    import numpy as np
    from torch import nn

    from geoccseg.models import ModelConfig
    from geoccseg.train.module import SemiSupervisedSegmenter

    class LabelsAsLogits(nn.Module):
        """Predicts the class number written in the first band."""

        def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long(), 4).permute(0, 3, 1, 2).float()

    config = TrainConfig(out=str(tmp_path), images="unused", masks="unused", **FAST)
    module = SemiSupervisedSegmenter(config, ModelConfig(in_channels=1, num_classes=4), np.array([10.0, 1.0, 1.0, 1.0]))
    module.teacher = LabelsAsLogits()
    module.class_names = ["road", "crack", "river"]
    pred = torch.tensor([[1, 1, 0, 2], [0, 2, 2, 0]])
    truth = torch.tensor([[1, 0, 0, 2], [1, 255, 0, 0]])  # 255: not labeled
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    item = {"image": pred[None].float(), "mask": truth, "valid": valid}
    metrics = _validate(module, [item])
    # road: tp (0,0), fp (0,1), fn (1,0); crack: tp (0,3), fp (1,2), (1,1) is not labeled; river: nothing anywhere
    assert metrics["val/precision_road"] == pytest.approx(0.5) and metrics["val/recall_road"] == pytest.approx(0.5)
    assert metrics["val/f1_road"] == pytest.approx(0.5) and metrics["val/iou_road"] == pytest.approx(1 / 3)
    assert metrics["val/precision_crack"] == pytest.approx(0.5) and metrics["val/recall_crack"] == pytest.approx(1.0)
    assert metrics["val/f1_crack"] == pytest.approx(2 / 3) and metrics["val/iou_crack"] == pytest.approx(0.5)
    assert metrics["val/f1_river"] == 1.0 and metrics["val/iou_river"] == 1.0
    assert metrics["val/f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_validation_chooses_the_decision_threshold_as_evaluate_scores_it(tmp_path):
    """One foreground class: the validation also chooses the threshold of the best F1 over the
    evaluation's grid, counting pixels as its sweep does (known and valid pixels only), the one
    nearest 0.5 on ties; none when the validation holds no foreground pixel."""
    import numpy as np
    from torch import nn

    from geoccseg.evaluate.pixel import ThresholdSweep
    from geoccseg.models import ModelConfig
    from geoccseg.train.module import SemiSupervisedSegmenter

    class ProbabilityAsLogits(nn.Module):
        """Predicts the road probability written in the first band."""

        def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.zeros_like(x[:, 0]), torch.logit(x[:, 0].double()).float()], 1)

    rng = np.random.default_rng(0)
    items, sweep = [], ThresholdSweep()
    for shape in ((40, 50), (30, 20)):
        truth = rng.random(shape) < 0.2
        prob = np.clip(np.where(truth, rng.beta(2, 3, shape), rng.beta(1, 6, shape)), 0.005, 0.995).astype(np.float32)
        mask = truth.astype(np.int64)
        mask[1, :7] = 255  # not labeled
        valid = np.ones(shape, bool)
        valid[2, :9] = False
        items.append({"image": torch.from_numpy(prob)[None], "mask": torch.from_numpy(mask), "valid": torch.from_numpy(valid)})
        known = valid & (mask != 255)
        sweep.update(torch.softmax(ProbabilityAsLogits().forward_logits(torch.from_numpy(prob)[None, None]), 1)[0, 1].numpy(),
                     truth, known)
    config = TrainConfig(out=str(tmp_path), images="unused", masks="unused", **FAST)
    module = SemiSupervisedSegmenter(config, ModelConfig(in_channels=1, num_classes=2), np.array([10.0, 1.0]))
    module.teacher = ProbabilityAsLogits()
    module.class_names = ["road"]
    metrics = _validate(module, items)
    assert metrics["val/threshold"] == pytest.approx(sweep.ods_threshold) and sweep.ods_threshold != 0.5
    assert metrics["val/f1_at_threshold"] == pytest.approx(sweep.ods_f1) and metrics["val/f1_at_threshold"] > metrics["val/f1_road"]
    sure = [{**item, "image": torch.where(item["mask"] == 1, 0.999, 0.001)[None].float()} for item in items]
    metrics = _validate(module, sure)
    assert metrics["val/f1_at_threshold"] == 1.0 and metrics["val/threshold"] == pytest.approx(0.5)  # every threshold ties: 0.5, not 0.01
    for item in items:
        item["mask"] = torch.zeros_like(item["mask"])  # no road anywhere: nothing to choose a threshold on
    metrics = _validate(module, items)
    assert "val/threshold" not in metrics and "val/f1_road" in metrics


def test_unlabeled_schedule_scales_with_the_budget_and_the_encoder_takes_its_learning_rate_share(tmp_path: Path) -> None:
    """By default the unlabeled terms start at max_steps / 6 and reach full weight at 5/6 of the budget
    (50 and 200 at 300 steps, the recorded runs); explicit steps win. ``encoder_lr_scale`` gives the
    encoder that share of --lr and the rest of the network all of it; at 1 the optimiser has one group."""
    import numpy as np

    from geoccseg.models import ModelConfig
    from geoccseg.train.module import SemiSupervisedSegmenter

    def config(**options) -> TrainConfig:
        return TrainConfig(out=str(tmp_path), images="unused", masks="unused", **options)

    assert config(max_steps=300).unlabeled_schedule == (50, 200)
    assert config(max_steps=1200).unlabeled_schedule == (200, 800)
    assert config(max_steps=1200, unlabeled_start_steps=10, rampup_steps=0).unlabeled_schedule == (10, 0)
    module = SemiSupervisedSegmenter(config(max_steps=600), ModelConfig(encoder="light", num_classes=2), np.array([10.0, 1.0]))
    assert [module._ramp(s) for s in (99, 100, 500, 599)] == [0.0, pytest.approx(np.exp(-5)), 1.0, 1.0]
    (group,) = module.configure_optimizers()["optimizer"].param_groups
    assert group["lr"] == pytest.approx(2e-3 / 50)  # the first warm-up step of 50
    module = SemiSupervisedSegmenter(config(encoder_lr_scale=0.1), ModelConfig(encoder="light", num_classes=2), np.array([10.0, 1.0]))
    encoder, rest = module.configure_optimizers()["optimizer"].param_groups
    assert encoder["lr"] == pytest.approx(rest["lr"] / 10) and rest["lr"] > 0
    assert {id(p) for p in encoder["params"]} == {id(p) for p in module.student.encoder.parameters()}
    assert len(encoder["params"]) + len(rest["params"]) == len(list(module.student.parameters()))
    with pytest.raises(GeoccsegError, match="encoder_lr_scale"):
        config(encoder_lr_scale=0.0).validate()


def test_centreline_band_cuts_a_widened_road_mask_back_to_the_labels_width(data_dir) -> None:
    """A Massachusetts road mask (lines about 7 px wide) widened to about 21 px, as a teacher that marks
    the whole road surface would: the band of half-width 3.5 px around its skeleton is about as wide as
    the original lines again, lies inside the widened mask, and mostly on the original lines."""
    import numpy as np
    from scipy import ndimage as ndi

    from geoccseg.data.photos import read_mask
    from geoccseg.train.centreline import centreline_band

    masks = [read_mask(p) > 0 for p in sorted((data_dir / "massachusetts" / "train" / "masks").iterdir())[:10]]
    lines = max(masks, key=np.sum)  # the crop with the most road (400 x 400 px)
    wide = ndi.distance_transform_edt(~lines) <= 7
    band = centreline_band(wide, 3.5)
    assert not (band & ~wide).any()
    assert 0.7 < band.sum() / lines.sum() < 1.4 and band.sum() < 0.5 * wide.sum()
    assert (band & lines).sum() / band.sum() > 0.8
    as_tensor = centreline_band(torch.from_numpy(np.stack([wide, np.zeros_like(wide)])), 3.5)
    assert as_tensor.dtype == torch.bool and torch.equal(as_tensor[0], torch.from_numpy(band)) and not as_tensor[1].any()
    for bad in (-1, "wide"):
        with pytest.raises(GeoccsegError, match="pseudo_centreline_px"):
            TrainConfig(out="unused", images="unused", masks="unused", pseudo_centreline_px=bad).validate()


@pytest.mark.parametrize("taus", [{"tau_high": 1.2}, {"tau_high_fg": 1.5}, {"tau_high_fg": float("nan")}, {"tau_low": float("nan")},
                                  {"tau_low": 0.9, "tau_high_fg": 0.8}, {"tau_low": 0.0}])
def test_confidence_thresholds_out_of_range_or_nan_are_refused_before_training(taus: dict) -> None:
    """Only the smaller of tau_high and tau_high_fg was bounded by 1: --tau-high 1.2 trained the
    supervised phase, then stopped at the first unlabeled step (and a resume with the right value
    was refused, tau being a setting of the run); a NaN passed every comparison and switched
    foreground pseudo-labels off without a word. Prediction's thresholds are checked alike."""
    from geoccseg.inference.confidence import ConfidenceThresholds

    told = "confidence thresholds must satisfy 0 < tau_low <= tau_high, tau_high_fg <= 1"
    with pytest.raises(GeoccsegError, match=told):
        TrainConfig(out="unused", images="unused", masks="unused", **taus).validate()
    with pytest.raises(GeoccsegError, match=told):
        ConfidenceThresholds(**taus)


@pytest.mark.parametrize(("option", "told"), [
    ({"encoder": "resnet19"}, "model config: encoder='resnet19' is unknown"),
    ({"embed_dim": 0}, "model config: embed_dim=0 is invalid"),
    ({"decoder_channels": -8}, "model config: decoder_channels=-8 is invalid"),
    ({"region": "tversky", "tversky_alpha": 0.0, "tversky_beta": 0.0}, "they cannot both be 0"),
])
def test_network_and_loss_settings_are_refused_before_any_data_is_read(tmp_path, option: dict, told: str) -> None:
    """A misspelt encoder, an embedding of 0 channels or a Tversky term weighing nothing were
    refused only after the statistics over every scene, the label counts and the decoding of every
    labeled photo: minutes, then one line. The run's check refuses them first (the folders named
    here do not exist: nothing is read)."""
    with pytest.raises(GeoccsegError, match=re.escape(told)):
        TrainConfig(out=str(tmp_path / "m"), images="missing/images", masks="missing/masks", **option).validate()


def test_auto_centreline_half_width_is_measured_on_the_labeled_chips(data_dir, tmp_path) -> None:
    """``pseudo_centreline_px: auto`` measures the labels' half-width on labeled chips: Massachusetts road
    lines (about 5-6 px wide) give about 2.7 px to the labels' edge, the same on every call (a resumed run keeps its band),
    and the band at the measured half-width of a straight line is as wide as the line (it was 2 px wider);
    the config reads auto from YAML and from the command line's text, and a number as a number."""
    from geoccseg.benchmark import link_pairs
    from geoccseg.benchmark.split import read_pairs
    from geoccseg.train.centreline import label_half_width_px
    from geoccseg.train.run import build_data

    pairs = dict(list(read_pairs(data_dir / "massachusetts" / "train").items())[:12])
    folder = link_pairs(tmp_path / "mass", pairs)
    config = TrainConfig.from_dict({"out": str(tmp_path / "o"), "images": str(folder / "images"), "masks": str(folder / "masks"),
                                    "val_fraction": 0.0, "pseudo_centreline_px": "auto"}).validate()
    width = label_half_width_px(build_data(config))
    assert 2.4 < width < 3.1 and width == label_half_width_px(build_data(config))
    from geoccseg.train.centreline import centreline_band, half_widths_px

    for line_px in (1, 3, 5, 7):
        mask = np.zeros((40, 60), bool)
        mask[20 - line_px // 2:20 + line_px // 2 + 1, 5:55] = True
        measured = float(np.median(half_widths_px(mask)))
        assert measured == line_px / 2
        assert centreline_band(mask, measured)[:, 30].sum() == line_px
    assert TrainConfig.from_dict({"pseudo_centreline_px": "3.5"}).pseudo_centreline_px == 3.5


def test_feature_perturbation_adds_a_dropped_channel_pass_on_the_teachers_view(data_dir, tmp_path: Path) -> None:
    """``feature_perturbation`` > 0: the student segments the teacher's weak view again with encoder
    channels dropped, and that pass learns the same pseudo-labels (logged as ``fp``); plain inference
    stays deterministic, and a dropout probability of 1 or more is refused."""
    import numpy as np

    from geoccseg.data.photos import read_photo
    from geoccseg.models import ModelConfig, build_model
    from geoccseg.train.module import SemiSupervisedSegmenter

    photos = sorted((data_dir / "cfd" / "images").iterdir())[:4]
    chips = torch.stack([torch.from_numpy(read_photo(p)[:, :96, :96].astype(np.float32) / 255.0 - 0.5) for p in photos])
    model = build_model(ModelConfig(encoder="light", num_classes=2)).eval()
    with torch.no_grad():
        plain = model.forward_logits(chips)
        assert torch.equal(plain, model.forward_logits(chips))
        assert not torch.allclose(plain, model.forward_logits(chips, feature_dropout=0.5))

    def step_logs(fp: float) -> dict:
        config = TrainConfig(out=str(tmp_path), images="unused", masks="unused", feature_perturbation=fp,
                             unlabeled_start_steps=0, rampup_steps=0, tau_high=0.5, tau_low=0.5, tau_high_fg=0.5)
        module = SemiSupervisedSegmenter(config, ModelConfig(encoder="light", num_classes=2), np.array([10.0, 1.0]))
        logged = {}
        module.log_dict = lambda values, **_: logged.update(values)  # no Trainer here to log to
        batch = {"image_l": chips[:2], "mask_l": torch.zeros(2, 96, 96, dtype=torch.long), "image_u": chips[2:],
                 "valid_u": torch.ones(2, 96, 96, dtype=torch.bool)}
        loss = module.training_step(batch, 0)
        loss.backward()
        assert all(p.grad is not None for p in module.student.encoder.parameters())
        return logged

    assert "train/fp" in step_logs(0.5) and "train/fp" not in step_logs(0.0)
    with pytest.raises(GeoccsegError, match="feature_perturbation"):
        TrainConfig(out=str(tmp_path), images="unused", masks="unused", feature_perturbation=1.0).validate()


def test_per_image_normalisation_makes_a_photo_and_its_darker_copy_look_alike(data_dir, tmp_path, vegas):
    from dataclasses import replace

    import numpy as np

    from geoccseg.data.photos import read_photo
    from geoccseg.inference.array import predict_array
    from geoccseg.inference.predict import scene_norm

    cfd = data_dir / "cfd"
    out = tmp_path / "m"
    train(TrainConfig(out=str(out), images=str(cfd / "images"), masks=str(cfd / "masks"), labeled_fraction=0.1, per_image_norm=True,
                      max_steps=2, val_fraction=0.0, pseudo=False, contrastive=False, **FAST))
    assert json.loads((out / "bundle.json").read_text())["norm"]["per_image"] is True
    bundle = load_bundle(out)
    image = read_photo(cfd / "images" / "001.jpg")
    darker = (image.astype(np.float32) * 0.5 + 20).round().astype(np.uint8)  # dimmer, lower contrast pavement
    own = bundle.meta.norm.for_image(darker)
    assert own.high[0] < bundle.meta.norm.high[0] and not own.per_image
    as_float = bundle.meta.norm.for_image(darker.astype(np.float32))  # float photos: the histogram of float scenes
    assert np.allclose(as_float.low, own.low, atol=0.1) and np.allclose(as_float.high, own.high, atol=0.1)
    # what the network sees: the same picture (up to rounding), where the training set's stretch shows a dark, flat one
    seen = np.abs(bundle.meta.norm.for_image(image).apply(image) - own.apply(darker)).mean()
    assert seen < 0.03 and np.abs(bundle.meta.norm.apply(image) - bundle.meta.norm.apply(darker)).mean() > 0.1

    def change(b) -> float:
        return float(np.abs(predict_array(b, image, device="cpu") - predict_array(b, darker, device="cpu")).max())

    per_image = change(bundle)
    bundle.meta.norm = replace(bundle.meta.norm, per_image=False)  # the same weights, the training set's statistics
    fixed = change(bundle)
    assert per_image < 0.5 * fixed, (per_image, fixed)
    # scenes are normalised with their own statistics by a per-image model, with the bundle's otherwise
    scene = open_scene(vegas / "vegas_img0_rgb.tif")
    assert scene_norm(scene, bundle.meta) is None
    assert scene_norm(scene, replace(bundle.meta, norm=replace(bundle.meta.norm, per_image=True))).low != bundle.meta.norm.low
    with pytest.raises(GeoccsegError, match="photo folders"):
        TrainConfig(out=str(tmp_path / "s"), scenes=[str(vegas / "vegas_img0_rgb.tif")], labels=str(vegas / "vegas_img0_roads.geojson"),
                    per_image_norm=True).validate()


def test_a_validation_photo_larger_than_a_window_is_validated_in_windows_as_if_whole(data_dir, tmp_path):
    """Validation ran the teacher on each whole photo: a 40-100 Mpx drone photo or pavement panorama
    needed 5-10 GB of activations in one pass (a CUDA out-of-memory traceback at the first
    validation, again after every resume). Now a photo above VAL_WHOLE_PX goes in windows with a
    margin of context, and scores as the whole pass does."""
    from geoccseg.train.module import VAL_CORE_PX, VAL_MARGIN_PX, VAL_WHOLE_PX, SemiSupervisedSegmenter, validation_windows

    cfd = data_dir / "cfd"
    names = sorted(p.name for p in (cfd / "masks").iterdir())[:30]
    tiles = [(np.asarray(Image.open(cfd / "images" / n.replace(".png", ".jpg")).convert("RGB")), np.asarray(Image.open(cfd / "masks" / n)))
             for n in names if (cfd / "images" / n.replace(".png", ".jpg")).is_file()][:30]
    assert len(tiles) == 30
    rows = [np.concatenate([t[i] for t in tiles[r * 6:(r + 1) * 6]], axis=1) for r in range(5) for i in (0, 1)]
    image, mask = np.concatenate(rows[0::2], axis=0), np.concatenate(rows[1::2], axis=0)  # 5 x 6 photos
    assert image.shape[0] * image.shape[1] > VAL_WHOLE_PX
    for folder, array in (("val_images", image), ("val_masks", mask)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "mosaic.png")
    # the cores tile the photo once; each window is its core and a margin, clipped at the edges
    windows = validation_windows(*image.shape[:2])
    covered = np.zeros(image.shape[:2], dtype=int)
    for window, core in windows:
        covered[core] += 1
        assert all(w.start == max(0, c.start - VAL_MARGIN_PX) and w.stop == min(n, c.stop + VAL_MARGIN_PX)
                   for w, c, n in zip(window, core, image.shape[:2]))
        assert (core[0].stop - core[0].start) <= VAL_CORE_PX and (core[1].stop - core[1].start) <= VAL_CORE_PX
    assert (covered == 1).all() and len(windows) > 1
    data = PhotoTrainingData(cfd / "images", cfd / "masks", labeled_fraction=0.1, tile_px=64,
                             val_images=tmp_path / "val_images", val_masks=tmp_path / "val_masks")
    (item,) = data.validation_items()
    bundle = load_bundle(resolve_model("crack"))
    config = TrainConfig(out=str(tmp_path / "unused"), images=str(cfd / "images"), masks=str(cfd / "masks"), tile_px=64, progress=False)
    module = SemiSupervisedSegmenter(config, bundle.model.config, np.ones(2))
    module.teacher, module.class_names = bundle.model.eval(), bundle.meta.classes
    seen = []
    forward = module.teacher.forward_logits
    module.teacher.forward_logits = lambda x: seen.append(x.shape[-2] * x.shape[-1]) or forward(x)
    windowed = _validate(module, [item])
    assert len(seen) == len(windows) and max(seen) <= (VAL_CORE_PX + 2 * VAL_MARGIN_PX) ** 2  # never the whole photo
    module.teacher.forward_logits = forward
    with torch.no_grad():  # the whole pass, as validation ran it before
        module.on_validation_epoch_start()
        known = (item["mask"] != 255) & item["valid"]
        module._count(forward(item["image"][None]), item["mask"][None], known[None])
    tp, fp, fn = module._val_counts[1].tolist()
    whole_f1 = 2 * tp / (2 * tp + fp + fn)
    assert tp > 1000 and windowed["val/f1"] == pytest.approx(whole_f1, abs=0.005)


def test_a_time_budget_that_ends_the_run_before_its_schedule_says_so(data_dir, tmp_path):
    """The learning rate's cosine and the unlabeled terms' ramp are laid over --max-steps: a
    30-minute run of 1000 steps on a CPU stopped near step 450 with its unlabeled terms at a fifth
    of their weight, without a word. Once the pace is known, the run says where the minutes will
    end it and what --max-steps would fit."""
    cfd = data_dir / "cfd"
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "geoccseg.cli", "train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"),
           "--unlabeled", str(cfd / "unlabeled"), "--labeled-fraction", "0.05", "-o", str(out), "--max-steps", "1000",
           "--max-minutes", "0.5", "--tile-px", "64", "--batch-size", "2", "--unlabeled-batch-size", "2", "--val-every", "1000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "--max-minutes 0.5 ends this run near step" in line]
    assert len(warned) == 1, proc.stderr[-3000:]
    near = int(re.search(r"near step (\d+) of the 1000 its schedule is laid over", warned[0]).group(1))
    assert re.search(r"its unlabeled terms would stop at 0\.\d\d of their weight", warned[0])
    assert warned[0].endswith(f"start it over with --max-steps {near}")  # what the minutes allow a run from step 0
    steps = load_bundle(out).meta.training["steps"]
    assert near < 900 and steps / 3 <= near <= 3 * steps + 20, (near, steps)  # about where the minutes did end it
