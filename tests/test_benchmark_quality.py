"""End-to-end test of pipelines/benchmark_quality.py (quick profile on CrackForest) and of its pieces in
geoccseg.benchmark.

CrackForest has 118 labeled photos. The fixed split holds out floor(118 * 0.10) = 11 test and
floor(118 * 0.05) = 5 select photos, leaving 102 training photos, of which floor(102 * 0.1) = 10 are
labeled at fraction 0.1; the quick profile trains 10 steps and scores the first 4 test photos.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geoccseg import benchmark
from geoccseg.benchmark.machine import machine
from geoccseg.errors import GeoccsegError
from geoccseg.io.bundle import weights_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "benchmark_quality.py"
METRICS = ("precision", "recall", "f1", "iou", "ods_f1", "ois_f1", "select_f1")


def _load_script(name: str):
    """Import ``pipelines/<name>.py`` (the pipelines are scripts, not a package; they import geoccseg only)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bq = _load_script("benchmark_quality")


@pytest.fixture(scope="module")
def quick_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The command of the issue, run once for the tests of this module."""
    out = tmp_path_factory.mktemp("bench") / "tmp"
    cmd = [sys.executable, str(SCRIPT), "--dataset", "cfd", "--data", str(data_dir / "cfd"), "--labeled-fraction", "0.1",
           "--profile", "quick", "--seeds", "0", "--arms", "sup_ce", "full", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_quick_results_are_well_formed(quick_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = quick_run
    records = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in records] == ["sup_ce", "full"]
    for r in records:
        assert set(benchmark.RECORD_FIELDS) <= set(r), set(benchmark.RECORD_FIELDS) - set(r)
        assert (r["dataset"], r["labeled_fraction"], r["seed"], r["profile"]) == ("cfd", 0.1, 0, "quick")
        assert r["steps"] == r["max_steps"] == 10
        assert r["n_labeled"] == 10 and r["n_test"] == 4
        assert r["relaxed_f1"] is None  # cracks: no relaxed metric
        assert all(0.0 <= r[k] <= 1.0 for k in METRICS), {k: r[k] for k in METRICS}
        assert r["train_seconds"] > 0 and r["device"] == "cpu"
        # the bundle's own threshold, chosen on the select photos, and the test F1 there
        assert 0 < r["model_threshold"] < 1 and 0 <= r["model_threshold_f1"] <= 1
        assert r["machine"] == machine() and machine() in (out / "results.md").read_text()  # pair runs by machine
        assert f"{r['run']}: F1 {r['f1']:.3f}" in proc.stdout  # progress names the run and its F1
    # the semi-supervised arm also sees the 102 - 10 unlabeled training photos and the 37 of cfd/unlabeled
    assert [r["n_unlabeled"] for r in records] == [0, 92 + 37]
    assert records[0]["labeled"] == records[1]["labeled"]


@pytest.mark.slow
def test_quick_split_keeps_test_images_out_of_training(quick_run: tuple[Path, subprocess.CompletedProcess], data_dir: Path) -> None:
    out, _ = quick_run
    split = json.loads((out / "split.json").read_text())
    test, select, train = set(split["test"]), set(split["select"]), set(split["train"])
    assert (len(test), len(select), len(train)) == (11, 5, 102)
    assert not test & train and not test & select and not select & train
    assert test | select | train == {p.stem for p in (data_dir / "cfd" / "images").iterdir()}
    labeled = set(json.loads((out / "results.json").read_text())[0]["labeled"])
    assert labeled <= train and not labeled & test
    assert split == benchmark.split_stems(sorted(test | select | train)) | {"holdout_seed": benchmark.HOLDOUT_SEED, "test_dir": None}


def test_an_unlabeled_copy_of_a_held_out_image_is_refused_before_training(data_dir: Path, tmp_path: Path) -> None:
    """``data/unlabeled`` went to the semi-supervised arms unread: a copy of a test or select image
    in it was trained on as unlabeled data, and its held-out score counted as unseen."""
    cfd, data = data_dir / "cfd", tmp_path / "data"
    for sub in ("images", "masks", "unlabeled"):
        (data / sub).mkdir(parents=True)
    for image in sorted((cfd / "images").iterdir()):
        (data / "images" / image.name).symlink_to(image)
        (data / "masks" / f"{image.stem}.png").symlink_to(cfd / "masks" / f"{image.stem}.png")
    test_stem = benchmark.split_stems(sorted(p.stem for p in (cfd / "images").iterdir()))["test"][0]
    (data / "unlabeled" / "other.jpg").symlink_to(sorted((cfd / "unlabeled").iterdir())[0])
    (data / "unlabeled" / f"{test_stem}.jpg").symlink_to(cfd / "images" / f"{test_stem}.jpg")
    with pytest.raises(GeoccsegError, match=rf"1 photo\(s\) of {data / 'unlabeled'} are held-out select or test images, by name, by photo "
                                            rf"or by their bytes \(e.g. {test_stem}\); the unlabeled folder must hold other photos"):
        benchmark.run_benchmark("cfd", data, tmp_path / "out", profile="quick", seeds=[0], arms=["full"])
    assert not (tmp_path / "out").exists()


def test_an_unlabeled_crop_of_a_held_out_photo_is_refused(tmp_path: Path) -> None:
    """DeepCrack's split keeps the crops of a photo together (``11116-1``, ``11116-2``...): an
    unlabeled ``11116-5.jpg`` is a crop of a held-out photo, but the check compared names only."""
    from geoccseg.benchmark.split import unlabeled_folders

    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "11116-5.jpg").write_bytes(b"a photo")  # listed by name, not read
    split = {"train": ["200-1"], "select": ["300-1"], "test": ["11116-1", "11116-2"], "photo_of": r"-\d+$"}
    with pytest.raises(GeoccsegError, match=r"are held-out select or test images, by name, by photo or by their bytes \(e.g. 11116-5\)"):
        unlabeled_folders(tmp_path, split)
    assert unlabeled_folders(tmp_path, {**split, "test": ["400-1"]}) == [tmp_path / "unlabeled"]
    assert unlabeled_folders(tmp_path, {k: v for k, v in split.items() if k != "photo_of"}) == [tmp_path / "unlabeled"]  # by stem


@pytest.mark.slow
def test_quick_writes_table_plots_and_bundles(quick_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = quick_run
    table = (out / "results.md").read_text()
    assert "| sup_ce | 0.1 | 10 | 1 |" in table and "| full | 0.1 | 10 | 1 |" in table
    assert "relaxed" not in table
    for name in ("f1_vs_fraction.png", "examples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for arm in ("sup_ce", "full"):
        run = out / "runs" / f"cfd_{arm}_0.1_s0"
        assert (run / "bundle.json").is_file() and weights_path(run).is_file()
        assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_quick_resume_skips_done_runs_and_refuses_to_overwrite(
    quick_run: tuple[Path, subprocess.CompletedProcess], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = quick_run
    args = ["--dataset", "cfd", "--data", str(data_dir / "cfd"), "--labeled-fraction", "0.1", "--profile", "quick",
            "--seeds", "0", "--arms", "sup_ce", "full", "--out", str(out)]
    before = (out / "results.json").read_text()
    assert bq.main(args) == 2
    assert "already holds results.json; pass --resume" in capsys.readouterr().err
    t0 = time.perf_counter()
    assert bq.main([*args, "--resume"]) == 0
    assert capsys.readouterr().out.count("already in results.json, skipped") == 2
    assert (out / "results.json").read_text() == before
    assert time.perf_counter() - t0 < 30  # nothing was trained


def test_a_finished_run_without_its_record_is_never_deleted(data_dir: Path, tmp_path: Path) -> None:
    """Review B6: a finished run whose record results.json lost (two invocations writing one --out;
    the last writer wins) has no checkpoint left, so --resume took its folder for a run killed
    before its first checkpoint and deleted the finished bundle to train it again."""
    from geoccseg.benchmark.design import PROFILES, RunSpec
    from geoccseg.benchmark.runs import train_and_score
    from geoccseg.benchmark.split import link_pairs, make_split
    from geoccseg.io.bundle import resolve_model

    pairs, split, test_pairs = make_split(data_dir / "cfd", None)
    folders = {part: link_pairs(tmp_path / "links" / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
    spec = RunSpec("sup_ce", 0.1, 0)
    run_dir = tmp_path / "out" / "runs" / spec.name("cfd")
    shutil.copytree(resolve_model("crack"), run_dir)  # a finished bundle, its checkpoints removed after scoring
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(GeoccsegError, match=r"holds a finished run that .*results.json does not record .*move it away"):
        train_and_score(spec, "cfd", PROFILES["quick"], folders, split["train"], [], dict(list(test_pairs.items())[:1]), tmp_path / "out")
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_kept_records_of_another_split_are_refused(tmp_path: Path) -> None:
    """Review B2: a folder whose split.json was lost is split as kept_photo_of guesses, and its kept
    records were never compared with that split: runs of two splits were averaged and paired."""
    from geoccseg.benchmark.runs import check_records_split

    split = {"train": ["a", "b", "c"], "select": ["d"], "test": ["e", "f"]}
    path = tmp_path / "results.json"
    check_records_split([{"run": "r0", "labeled": ["a"], "n_test": 2}, {"run": "old"}], split, 2, path)  # the same split
    with pytest.raises(GeoccsegError, match=r"holds run r1 of another split than this one"):
        check_records_split([{"run": "r1", "labeled": ["a", "e"], "n_test": 2}], split, 2, path)  # trained on a test image
    with pytest.raises(GeoccsegError, match=r"holds run r2 of another split"):
        check_records_split([{"run": "r2", "labeled": ["a"], "n_test": 3}], split, 2, path)


def test_linked_pairs_keep_the_names_the_dataset_gives_them(data_dir: Path, tmp_path: Path) -> None:
    """Review B4: link_pairs named each link after the file it resolves to. A dataset of links
    (git-annex, DVC: content-hash names) then matched no image to its mask, and two empty masks
    stored once collided (FileExistsError)."""
    from geoccseg.benchmark.split import link_pairs, read_pairs

    raw, data = tmp_path / "raw", tmp_path / "data"
    raw.mkdir()
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    shutil.copy(data_dir / "cfd" / "masks" / "001.png", raw / "shared-mask.png")
    for stem in ("001", "002"):
        shutil.copy(data_dir / "cfd" / "images" / f"{stem}.jpg", raw / f"blob-{stem}.jpg")
        (data / "images" / f"{stem}.jpg").symlink_to(raw / f"blob-{stem}.jpg")
        (data / "masks" / f"{stem}.png").symlink_to(raw / "shared-mask.png")
    root = link_pairs(tmp_path / "linked", read_pairs(data))
    assert sorted(p.name for p in (root / "images").iterdir()) == ["001.jpg", "002.jpg"]
    assert sorted(p.name for p in (root / "masks").iterdir()) == ["001.png", "002.png"]
    assert (root / "masks" / "002.png").resolve() == raw / "shared-mask.png"


def test_rescoring_takes_only_the_finished_runs_the_benchmark_recorded(data_dir: Path, tmp_path: Path) -> None:
    """Review B5: rescore_thresholds took every run folder with a bundle.json, a run still training
    (the trainer saves a bundle at each better validation) or one of another invocation too."""
    from geoccseg.benchmark.split import make_split
    from geoccseg.io.bundle import resolve_model

    rescore = _load_script("rescore_thresholds")
    bench = tmp_path / "bench"
    _, split, _ = make_split(data_dir / "cfd", None)
    (bench / "runs").mkdir(parents=True)
    (bench / "split.json").write_text(json.dumps(split))
    for name in ("recorded", "training", "unrecorded"):
        shutil.copytree(resolve_model("crack"), bench / "runs" / name)
    meta = json.loads((bench / "runs" / "training" / "bundle.json").read_text())
    meta["training"]["in_progress"] = True
    (bench / "runs" / "training" / "bundle.json").write_text(json.dumps(meta))
    (bench / "results.json").write_text(json.dumps([{"run": "recorded"}, {"run": "training"}]))
    assert [r["run"] for r in rescore.rescore(bench, "cfd", data_dir / "cfd")] == ["recorded"]


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_continues_from_it(data_dir: Path, tmp_path: Path) -> None:
    """A benchmark killed mid-run (a session's end, out of memory) continues that run from its
    checkpoint with --resume instead of training it again from step 0; a run folder of another
    configuration is trained again."""
    from geoccseg.benchmark.design import PROFILES, RunSpec, train_config
    from geoccseg.benchmark.runs import train_and_score
    from geoccseg.benchmark.split import link_pairs, make_split
    from geoccseg.data.photos import split_labeled
    from geoccseg.train.checkpoint import load_checkpoint

    pairs, split, test_pairs = make_split(data_dir / "cfd", None)
    test_pairs = dict(list(test_pairs.items())[:2])
    folders = {part: link_pairs(tmp_path / "links" / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
    quick = PROFILES["quick"]
    profile = replace(quick, max_steps=12, val_every=12, train={**quick.train, "checkpoint_every": 2})
    spec = RunSpec("sup_ce", 0.1, 0)
    labeled = split_labeled(list(split["train"]), 0.1, 0)[0]
    run_dir = tmp_path / "out" / "runs" / spec.name("cfd")
    run_dir.mkdir(parents=True)
    (tmp_path / "run.yaml").write_text(train_config(spec, "cfd", profile, folders, labeled, [], run_dir).to_yaml())
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a pipe nobody reads could fill and block the run
        proc = subprocess.Popen([sys.executable, "-m", "geoccseg.cli", "train", "--config", str(tmp_path / "run.yaml")],
                                stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "MPLBACKEND": "Agg"})
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    step = load_checkpoint(ckpt)["global_step"]
    assert 0 < step < profile.max_steps

    shutil.copytree(run_dir, tmp_path / "killed")
    relinked = {part: link_pairs(tmp_path / "again" / part, {s: pairs[s] for s in split[part]}) for part in ("train", "select")}
    other = replace(profile, train={**profile.train, "lr": 1e-3})
    record = train_and_score(spec, "cfd", other, relinked, split["train"], [], test_pairs, tmp_path / "out")
    assert "resumed_from_step" not in record and record["steps"] == profile.max_steps

    shutil.rmtree(run_dir)
    shutil.copytree(tmp_path / "killed", run_dir)
    record = train_and_score(spec, "cfd", profile, relinked, split["train"], [], test_pairs, tmp_path / "out")
    assert record["resumed_from_step"] == step and record["steps"] == profile.max_steps


def test_shipped_model_recipes_never_reuse_a_run_of_other_settings(data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """train_default_models reused a finished run in --work whatever --option or --steps said, and
    recorded the new options against the old weights."""
    recipes = _load_script("train_default_models")
    run = tmp_path / "work" / "crack"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("max_steps: 1200\nseed: 0\ncrop_area_max: 1.0\n")
    before = sorted(p.name for p in run.iterdir())
    argv = ["--models", "crack", "--work", str(tmp_path / "work"), "--data-root", str(data_dir), "--target-root", str(tmp_path / "out")]
    assert recipes.main([*argv, "--option", "encoder_tf_same=true"]) == 2
    assert "holds a run of other settings (options, steps or seed); choose another --work folder" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "out").exists()


def test_shipped_model_recipes_refuse_unlabeled_photos_that_are_held_out(data_dir: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Review B1: --option unlabeled=[FOLDER] went to training as it was, and training keeps only
    the select photos out of it: a test image there (here a renamed copy) was trained on, then
    scored as held out."""
    from geoccseg.benchmark.split import SHIPPED_SOURCES

    recipes = _load_script("train_default_models")
    (source,) = [s for s in SHIPPED_SOURCES["crack"] if s.name == "deepcrack"]
    image, _ = next(iter(source.split(data_dir)["test"].values()))
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    shutil.copy(image, unlabeled / "renamed.jpg")
    argv = ["--models", "crack", "--work", str(tmp_path / "work"), "--data-root", str(data_dir), "--target-root", str(tmp_path / "out"),
            "--option", "pseudo=true", "--option", f"unlabeled=[{unlabeled}]"]
    assert recipes.main(argv) == 2
    assert "are held-out select or test images, by name, by photo or by their bytes (e.g. renamed)" in capsys.readouterr().err
    assert not (tmp_path / "work" / "crack").exists() and not (tmp_path / "out").exists()


def test_shipped_model_runs_keep_their_held_out_images(tmp_path: Path) -> None:
    """train_default_models compared a --work run's settings but not its data: a run trained on
    another split (the crack source moving to the photo split, another --data-root) was reused and
    scored on "held-out" images it had trained on."""
    recipes = _load_script("train_default_models")
    run = tmp_path / "crack"
    held_out = {"deepcrack": {"select": ["11116-1", "7Q3A9060-3"], "test": ["IMG33-2"]}}
    recipes.check_run_split(run, held_out)  # a new run records its held-out stems
    assert json.loads((run / "split.json").read_text()) == held_out
    (run / "config.yaml").write_text("seed: 0\n")
    recipes.check_run_split(run, held_out)  # the same split continues
    other = {"deepcrack": {"select": ["11116-1"], "test": ["IMG33-2", "7Q3A9060-3"]}}
    with pytest.raises(GeoccsegError, match="trained with other held-out images"):
        recipes.check_run_split(run, other)
    (run / "split.json").unlink()  # a run begun before splits were recorded: checked against what its bundle trained on
    with pytest.raises(GeoccsegError, match="begun before its held-out images were recorded, and no bundle names"):
        recipes.check_run_split(run, held_out)
    (run / "bundle.json").write_text(json.dumps({"training": {"data": {"labeled": ["11116", "IMG33-2"]}}}))
    with pytest.raises(GeoccsegError, match="was trained on 1 of today's held-out images"):
        recipes.check_run_split(run, held_out)
    (run / "bundle.json").write_text(json.dumps({"training": {"data": {"labeled": ["11116", "IMG34"]}}}))
    recipes.check_run_split(run, held_out)  # disjoint: the split is recorded and the run kept
    assert json.loads((run / "split.json").read_text()) == held_out


def test_shipped_model_run_killed_before_its_first_checkpoint_starts_over(data_dir: Path, tmp_path: Path) -> None:
    """build() resumed only beside a checkpoint: a run killed before its first one (its config.yaml
    written) was then refused as "a run" in the way. The export records the held-out photos it was
    scored on, and the crack source is split by photo."""
    import re

    from geoccseg.benchmark.split import PHOTO_OF, link_pairs, read_pairs

    root = tmp_path / "data"
    link_pairs(root / "deepcrack" / "train", dict(list(read_pairs(data_dir / "deepcrack" / "train").items())[:24]))
    link_pairs(root / "cfd", dict(list(read_pairs(data_dir / "cfd").items())[:2]))
    work, target = tmp_path / "work", tmp_path / "models"
    cmd = [sys.executable, str(ROOT / "pipelines" / "train_default_models.py"), "--models", "crack", "--work", str(work),
           "--data-root", str(root), "--target-root", str(target), "--steps", "4", "--val-every", "4"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (work / "crack" / "config.yaml").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:] if first.poll() is not None else "no config.yaml"
            time.sleep(0.02)
        first.kill()
    finally:
        first.wait()
    assert not (work / "crack" / "checkpoints" / "last.ckpt").exists() and not target.exists()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    training = json.loads((target / "crack" / "bundle.json").read_text())["training"]
    held = training["held_out"]["deepcrack"]
    assert held == json.loads((work / "crack" / "split.json").read_text())["deepcrack"]
    photo = lambda s: re.sub(PHOTO_OF["deepcrack"], "", s)  # noqa: E731
    assert held["test"] and held["select"] and not {photo(s) for s in held["test"] + held["select"]} & {photo(s) for s in training["data"]["labeled"]}
    assert training["steps"] == 4 and "cfd" in training["transfer"] and (target / "crack" / "LICENCE.md").is_file()
    assert 0 <= training["select_pooled_f1"] <= 1  # what the threshold was chosen on: select photos and fainter copies


def test_a_fine_tuned_shipped_model_keeps_its_parents_held_out_photos(data_dir: Path, tmp_path: Path) -> None:
    """build() split the data afresh for a model fine-tuned from the shipped crack model (--option
    init_from=crack): the photo split made "held-out" photos of some the parent had trained on. And
    the unlabeled terms could not be turned on (the recipe passed pseudo twice to TrainConfig)."""
    from geoccseg.benchmark.split import link_pairs, read_pairs
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    root = tmp_path / "data"
    link_pairs(root / "deepcrack" / "train", read_pairs(data_dir / "deepcrack" / "train"))
    link_pairs(root / "cfd", dict(list(read_pairs(data_dir / "cfd").items())[:2]))
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for image in sorted((data_dir / "cfd" / "unlabeled").iterdir())[:3]:
        (unlabeled / image.name).symlink_to(image)
    recipes = _load_script("train_default_models")
    assert recipes.main(["--models", "crack", "--work", str(tmp_path / "work"), "--data-root", str(root),
                         "--target-root", str(tmp_path / "models"), "--steps", "2", "--val-every", "2",
                         "--option", "init_from=crack", "--option", "pseudo=true", "--option", "contrastive=true",
                         "--option", f"unlabeled=[{unlabeled}]", "--option", "unlabeled_start_steps=0"]) == 0
    parent = load_bundle(resolve_model("crack")).meta.training
    training = json.loads((tmp_path / "models" / "crack" / "bundle.json").read_text())["training"]
    assert training["held_out"] == parent["held_out"] and sorted(training["data"]["labeled"]) == sorted(parent["data"]["labeled"])
    assert training["arm"] == "method" and training["unlabeled"] == {"folders": [str(unlabeled)], "photos": 3}
    assert training["fine_tuned_from"] == {"model": "crack", "steps": parent["steps"], "train_minutes": parent["train_minutes"]}


def test_fine_tune_options_are_typed_and_the_parent_is_never_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--option unlabeled=FOLDER (no brackets) reached TrainConfig as a string, read as a list of
    letters; and a fine-tune exported into its own parent's folder would replace what it starts from."""
    recipes = _load_script("train_default_models")
    argv = ["--models", "crack", "--work", str(tmp_path / "work"), "--target-root", str(tmp_path / "models")]
    with pytest.raises(SystemExit):
        recipes.main([*argv, "--option", "unlabeled=../photos"])
    assert "--option: unlabeled must be a list of" in capsys.readouterr().err
    from geoccseg.io.bundle import resolve_model

    shipped = resolve_model("crack")
    assert recipes.main([*argv[:4], "--target-root", str(shipped.parent), "--option", "init_from=crack"]) == 2
    assert "is the model this run would replace" in capsys.readouterr().err and not (tmp_path / "work").exists()


def test_shipped_road_model_is_saved_only_once_scored(data_dir: Path, tmp_path: Path) -> None:
    """finish() saved the road model into the shipped folder before scoring it on the sample scene:
    a failure there left a new bundle with a half-written record."""
    from geoccseg.benchmark.split import read_pairs
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    recipes = _load_script("train_default_models")
    pairs = list(read_pairs(data_dir / "massachusetts" / "train").items())
    splits = {"massachusetts": {"select": dict(pairs[:1]), "test": dict(pairs[1:2])}}
    (tmp_path / "data").mkdir()  # no spacenet-vegas truth in this data root: the sample's scoring fails
    (tmp_path / "work").mkdir()
    with pytest.raises(GeoccsegError, match="vegas_img0_roads.geojson"):
        recipes.finish("road", recipes.RECIPES["road"], load_bundle(resolve_model("road")), {}, splits,
                       tmp_path / "data", tmp_path / "models", tmp_path / "work")
    assert not (tmp_path / "models").exists()


def test_crack_threshold_with_fainter_copies_is_chosen_on_the_select_photos_only(data_dir: Path, tmp_path: Path) -> None:
    """The crack recipe's threshold pools the select photos with half-contrast copies (a lower
    threshold than theirs alone for a model that finds fainter cracks less sure), and the F1 it
    reports is the select photos' own at it, beside the pooled one. Re-choosing
    the shipped model's threshold refuses a model trained on another split."""
    from dataclasses import replace

    from geoccseg.benchmark.split import SHIPPED_SOURCES, recorded_splits
    from geoccseg.benchmark.threshold import choose_threshold, fainter
    from geoccseg.data.photos import read_mask, read_photo
    from geoccseg.evaluate import PixelScorer
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle
    from geoccseg.benchmark.score import foreground_probability

    shipped_training = load_bundle(resolve_model("crack")).meta.training
    (parts,) = recorded_splits(shipped_training, SHIPPED_SOURCES["crack"], data_dir).values()
    pairs = dict(sorted(parts["select"].items())[:3])
    photo = read_photo(next(iter(pairs.values()))[0])
    faint = fainter(photo, 0.5).astype(np.float64)
    assert abs(faint.mean() - photo.mean()) < 0.5 and faint.std() == pytest.approx(photo.std() / 2, rel=0.01)
    bundle = load_bundle(resolve_model("crack"))
    # with the statistics of the training photos, not each photo's own: a per-image normalised model
    # reads a half-contrast copy almost as the photo (the shipped model's is): with them, the copies
    # move the threshold down on these three photos (0.40 alone, 0.32 pooled)
    bundle.meta.norm = replace(bundle.meta.norm, per_image=False)
    alone, alone_f1, alone_pooled_f1 = choose_threshold(bundle, pairs)
    pooled, pooled_f1, with_copies_f1 = choose_threshold(bundle, pairs, contrast=0.5)
    assert pooled < alone
    scorers = {threshold: PixelScorer(threshold) for threshold in (alone, pooled)}
    with_copies, sweep = PixelScorer(pooled), PixelScorer()
    for image_path, mask_path in pairs.values():
        photo = read_photo(image_path)
        probability, truth = foreground_probability(bundle, photo), read_mask(mask_path) > 0
        for scorer in scorers.values():
            scorer.add(probability, truth)
        copy_probability = foreground_probability(bundle, fainter(photo, 0.5))
        for scorer in (with_copies, sweep):
            scorer.add(probability, truth)
            scorer.add(copy_probability, truth)
    # the threshold is the best of the photos and their copies together, not of the photos alone
    assert sweep.scores().ods_threshold == pooled
    # each reported F1 is the select photos' own at its threshold (not the pooled copies')
    assert (alone_f1, pooled_f1) == pytest.approx((scorers[alone].scores().f1, scorers[pooled].scores().f1), abs=1e-9)
    # and the pooled F1, what models of one recipe are compared by, is the F1 over photos and copies
    assert alone_pooled_f1 == alone_f1
    assert with_copies_f1 == pytest.approx(with_copies.scores().f1, abs=1e-9) and with_copies_f1 != pooled_f1
    with pytest.raises(ValueError, match="contrast must lie in"):
        choose_threshold(bundle, pairs, contrast=1.5)

    recipes = _load_script("train_default_models")
    assert recipes.RECIPES["crack"].threshold_contrast == 0.5
    shutil.copytree(resolve_model("crack"), tmp_path / "crack")
    record = json.loads((tmp_path / "crack" / "bundle.json").read_text())
    # re-choosing the threshold takes the held-out photos the model records, refusing a record that cannot hold
    for change, message in (("trained", "was trained on 1 of the deepcrack images it records as held out"),
                            ("missing", "names no held-out images of deepcrack"),
                            ("absent", "held-out image.s. the model records are not in")):
        edited = json.loads(json.dumps(record))
        if change == "trained":
            edited["training"]["data"]["labeled"][0] = next(iter(pairs))  # a select photo
        elif change == "missing":
            del edited["training"]["held_out"]
        else:
            edited["training"]["held_out"]["deepcrack"]["test"].append("no-such-photo")
        (tmp_path / "crack" / "bundle.json").write_text(json.dumps(edited))
        with pytest.raises(GeoccsegError, match=message):
            recipes.rethreshold("crack", data_dir, tmp_path, tmp_path / "work")


def test_scoring_scripts_refuse_a_model_without_its_held_out_record_in_one_line(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The scripts that score a model on its own held-out images say in one line when its record
    cannot tell them (none, or not lists of stems), instead of a traceback."""
    from geoccseg.io.bundle import resolve_model

    diagnose = _load_script("diagnose_crack_transfer")
    shutil.copytree(resolve_model("crack"), tmp_path / "crack")
    record = json.loads((tmp_path / "crack" / "bundle.json").read_text())
    for held_out, message in ((None, "names no held-out images of deepcrack .a model trained before they were recorded"),
                              ({"deepcrack": {"select": "11130", "test": []}}, "names no held-out images of deepcrack")):
        edited = json.loads(json.dumps(record))
        edited["training"].pop("held_out")
        if held_out is not None:
            edited["training"]["held_out"] = held_out
        (tmp_path / "crack" / "bundle.json").write_text(json.dumps(edited))
        assert diagnose.main(["--model", str(tmp_path / "crack"), "--out", str(tmp_path / "report.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("diagnose_crack_transfer: error: the model's training record") and "Traceback" not in err
        assert re.search(message, err) and not (tmp_path / "report.json").exists()


def test_shipped_model_training_minutes_count_every_session(tmp_path: Path) -> None:
    """train_minutes was the wall time of the last session only: a resumed run recorded minutes."""
    recipes = _load_script("train_default_models")
    assert recipes.train_minutes(tmp_path) is None
    (tmp_path / "metrics.csv").write_text("step,seconds,loss,val_f1\n1,1.0,0.9,\n600,1500.0,0.3,\n1200,3012.0,0.2,\n1200,,,0.6\n")
    assert recipes.train_minutes(tmp_path) == 50.2  # the last timed row, not the validation row after it


def test_own_scene_benchmark_trains_again_a_run_a_signal_stopped(data_dir: Path, tmp_path: Path) -> None:
    """benchmark_own_scene skipped training whenever bundle.json existed: after Ctrl-C (which
    saves the bundle, marked interrupted) --resume scored the half-trained model as finished."""
    from geoccseg.train.callbacks import run_finished
    from geoccseg.io.catalog import sample_scene

    own = _load_script("benchmark_own_scene")
    truth = data_dir / "spacenet-vegas" / "vegas_img0_roads.geojson"
    own.run_one("scratch_sup", 0.4, 0, 2, sample_scene(), truth, tmp_path, 5.0)
    model = tmp_path / "runs" / "scratch_sup_0.4_s0" / "model"
    raw = json.loads((model / "bundle.json").read_text())
    raw["training"].update(interrupted=True, stopped_step=1)
    (model / "bundle.json").write_text(json.dumps(raw))
    assert not run_finished(model)
    record = own.run_one("scratch_sup", 0.4, 0, 2, sample_scene(), truth, tmp_path, 5.0)
    assert run_finished(model) and record["steps"] == record["max_steps"] == 2
    with pytest.raises(GeoccsegError, match="holds a run of other settings"):
        own.run_one("scratch_sup", 0.4, 0, 3, sample_scene(), truth, tmp_path, 5.0)


def test_own_scene_benchmark_never_mixes_records_of_other_settings() -> None:
    """--resume appended runs of another --steps, --buffer-m or shipped road model to the old
    records, and results.md averaged them together."""
    from geoccseg.io.bundle import bundle_stamp, resolve_model

    own = _load_script("benchmark_own_scene")
    road = bundle_stamp(resolve_model("road"))
    where = (Path("scene.tif").resolve(), Path("roads.geojson").resolve())
    scene = {"scene": str(where[0]), "truth": str(where[1])}
    records = [{"run": "scratch_sup_0.4_s0", "arm": "scratch_sup", "steps": 300, "buffer_m": 5.0, **scene},
               {"run": "tuned_sup_0.4_s0", "arm": "tuned_sup", "max_steps": 300, "steps": 300, "buffer_m": 5.0, "road_model": road, **scene}]
    own.check_resume(records, ["scratch_full", "tuned_full"], 300, 5.0, *where)
    with pytest.raises(GeoccsegError, match="trained 300 steps, not 600"):
        own.check_resume(records, ["scratch_full"], 600, 5.0, *where)
    with pytest.raises(GeoccsegError, match="5.0 m buffer, not 3.0"):
        own.check_resume(records, ["scratch_full"], 300, 3.0, *where)
    older = [*records, {"run": "shipped_0.4_s0", "arm": "shipped", "steps": 0, "buffer_m": 5.0, **scene}]  # the model of 2026-11
    own.check_resume(older, ["scratch_full"], 300, 5.0, *where)  # arms that do not start from the road model may join
    with pytest.raises(GeoccsegError, match="another shipped road model"):
        own.check_resume(older, ["tuned_full"], 300, 5.0, *where)


def test_own_scene_benchmark_resumes_only_its_scene_and_keeps_one_shipped_row() -> None:
    """--resume with another --scene or --truth added its runs to the other scene's records; resumed
    with other --seeds, it added a second row of the shipped model (not trained: the same run),
    which results.md counted as another seed."""
    own = _load_script("benchmark_own_scene")
    scene, truth = Path("scene.tif").resolve(), Path("roads.geojson").resolve()
    records = [{"run": "scratch_sup_0.4_s0", "arm": "scratch_sup", "labeled_fraction": 0.4, "seed": 0, "steps": 300, "buffer_m": 5.0,
                "scene": str(scene), "truth": str(truth)}]
    own.check_resume(records, ["scratch_sup"], 300, 5.0, scene, truth)
    for other in ((Path("other.tif"), truth), (scene, Path("other.geojson"))):
        with pytest.raises(GeoccsegError, match=re.escape(f"was run on scene {scene} with truth {truth}, not {other[0].resolve()} with")):
            own.check_resume(records, ["scratch_sup"], 300, 5.0, *other)
    unrecorded = [{k: v for k, v in records[0].items() if k not in ("scene", "truth")}]  # before the scene was recorded
    with pytest.raises(GeoccsegError, match="was recorded before records named their scene and truth"):
        own.check_resume(unrecorded, ["scratch_sup"], 300, 5.0, scene, truth)
    shipped = [*records, {"run": "shipped_0.4_s0", "arm": "shipped", "labeled_fraction": 0.4, "seed": 0}]
    assert own.has_run(shipped, "shipped", 0.4, 1) and not own.has_run(shipped, "shipped", 0.2, 1)  # one shipped row per strip
    assert own.has_run(shipped, "scratch_sup", 0.4, 0) and not own.has_run(shipped, "scratch_sup", 0.4, 1)


def test_own_scene_plot_shows_a_one_band_scene_in_grey(tmp_path: Path) -> None:
    """plot_lines read bands 1 to 3 of every scene: a panchromatic (one-band) scene crashed it."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import LineString

    own = _load_script("benchmark_own_scene")
    scene = tmp_path / "pan.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32611",
                       transform=from_origin(500000, 4000064, 1, 1)) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (1, 64, 64), dtype=np.uint8))
    road = gpd.GeoDataFrame(geometry=[LineString([(500005, 4000032), (500060, 4000032)])], crs="EPSG:32611")
    road.to_file(tmp_path / "roads.geojson")
    (tmp_path / "runs" / "shipped_0.4_s0").mkdir(parents=True)
    road.to_file(tmp_path / "runs" / "shipped_0.4_s0" / "lines.gpkg", layer="road")
    record = {"run": "shipped_0.4_s0", "arm": "shipped", "labeled_fraction": 0.4, "seed": 0, "completeness": 1.0, "correctness": 1.0}
    own.plot_lines([record], scene, tmp_path / "roads.geojson", tmp_path)
    assert (tmp_path / "lines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggest_scene_plot_draws_a_one_band_uint16_scene(data_dir: Path, tmp_path: Path) -> None:
    """plot_squares read bands 1 to 3 of every scene: a panchromatic (one-band) scene crashed it."""
    import geopandas as gpd
    from shapely.geometry import box

    bench = _load_script("benchmark_suggest")
    scene = data_dir / "spacenet-vegas" / "vegas_pan.tif"
    left, bottom, top = -115.2338076, 36.1388277, 36.1423377
    records = []
    for k, east in enumerate((left + 0.0012, left + 0.0020)):
        folder = tmp_path / f"coverage_s0_round{k}"
        folder.mkdir()
        gpd.GeoDataFrame(geometry=[box(left, bottom, east, top)], crs="EPSG:4326").to_file(folder / "aoi.gpkg")
        records.append({"run": "coverage_s0", "round": k, "folder": str(folder), "quality": 0.5 + k / 10})
    bench.plot_squares(records, scene, data_dir / "spacenet-vegas" / "vegas_pan_roads.geojson", tmp_path / "squares.jpg")
    assert (tmp_path / "squares.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


def test_every_arm_trains_under_every_profile(tmp_path: Path) -> None:
    """The quick profile sets the contrastive term's sizes for every arm; refused as without effect
    for the arms without that term, the quick benchmark stopped at its first arm."""
    from geoccseg.benchmark.design import ARMS, DATASETS, PROFILES, RunSpec, train_config

    folders = {part: tmp_path / part for part in ("train", "select")}
    for profile in PROFILES.values():
        for arm in ARMS:
            config = train_config(RunSpec(arm=arm, labeled_fraction=0.035, seed=0), next(iter(DATASETS)), profile, folders,
                                  ["a"], [], tmp_path / "run").validate()  # what train() checks first
            assert (config.pseudo, config.contrastive) == (ARMS[arm].pseudo, ARMS[arm].contrastive)
            if config.contrastive:
                assert config.queue_size == profile.train.get("queue_size", 256)


def test_plan_runs_shares_the_fully_supervised_run_and_dedupes() -> None:
    runs = benchmark.plan_runs(["sup_imbalance", "full", "fully_supervised"], 0.035, [0, 1], sweep=True, fractions=[0.035, 0.1, 1.0])
    seed0 = [(r.arm, r.labeled_fraction) for r in runs if r.seed == 0]
    # 0.035 arms come once from the ablation; the sweep adds 0.1 for both arms; 1.0 is the fully supervised run
    assert seed0 == [("sup_imbalance", 0.035), ("full", 0.035), ("fully_supervised", 1.0), ("sup_imbalance", 0.1), ("full", 0.1)]
    assert len(runs) == 10
    assert runs[0].name("deepcrack") == "deepcrack_sup_imbalance_0.035_s0"
    with pytest.raises(GeoccsegError, match="unknown arm"):
        benchmark.plan_runs(["nope"], 0.035, [0])
    with pytest.raises(GeoccsegError, match="must be in"):
        benchmark.plan_runs(["full"], 1.5, [0])


def test_deepcrack_is_split_by_photo_and_old_benchmarks_keep_their_split(data_dir: Path, tmp_path: Path) -> None:
    """DeepCrack holds up to 20 crops of one photo: split by stem, 37 of the 45 held-out crops had a
    crop of the same photo in training. Split by photo, none has; benchmark folders begun with the
    split by stem (the recorded results) keep it on --resume."""
    import re

    from geoccseg.benchmark.split import SHIPPED_SOURCES, check_split, read_pairs, recorded_splits

    stems = list(read_pairs(data_dir / "deepcrack" / "train"))
    photo = lambda s: re.sub(benchmark.PHOTO_OF["deepcrack"], "", s)  # noqa: E731
    by_photo = benchmark.split_stems(stems, photo_of=benchmark.PHOTO_OF["deepcrack"])
    held = set(by_photo["test"]) | set(by_photo["select"])
    assert not {photo(s) for s in held} & {photo(s) for s in by_photo["train"]}
    assert not {photo(s) for s in by_photo["test"]} & {photo(s) for s in by_photo["select"]}
    assert len(by_photo["test"]) >= 30 and len(by_photo["select"]) >= 15 and len(by_photo["train"]) >= 230
    by_stem = benchmark.split_stems(stems)  # the first protocol, unchanged: the recorded runs' training photos
    recorded = json.loads((ROOT / "pipelines" / "results" / "deepcrack-cpu" / "results.json").read_text())
    (full,) = [r for r in recorded if r["arm"] == "fully_supervised"]
    assert by_stem["train"] == sorted(full["labeled"])
    assert sum(photo(s) in {photo(t) for t in by_stem["train"]} for s in by_stem["test"] + by_stem["select"]) == 37

    old = tmp_path / "old"
    old.mkdir()
    (old / "split.json").write_text(json.dumps({"holdout_seed": benchmark.HOLDOUT_SEED, "test_dir": None, **by_stem}))
    assert benchmark.kept_photo_of(old, "deepcrack") is None
    assert benchmark.kept_photo_of(tmp_path / "new", "deepcrack") == benchmark.PHOTO_OF["deepcrack"]
    assert benchmark.make_split(data_dir / "deepcrack" / "train", None, None)[1] == json.loads((old / "split.json").read_text())
    recorded_folder = tmp_path / "recorded"  # the committed result folders: results.json, no split.json
    recorded_folder.mkdir()
    (recorded_folder / "results.json").write_text("[]")
    assert benchmark.kept_photo_of(recorded_folder, "deepcrack") is None
    with pytest.raises(GeoccsegError, match="the data differs from the split in"):
        check_split(old, benchmark.make_split(data_dir / "deepcrack" / "train", None, benchmark.PHOTO_OF["deepcrack"])[1])
    # the shipped crack model (since 2026-12-06) was trained on the split by photo, which it records:
    # the scripts that score it take that split, as a new training run does
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    (shipped,) = recorded_splits(load_bundle(resolve_model("crack")).meta.training, SHIPPED_SOURCES["crack"], data_dir).values()
    assert {part: sorted(stems) for part, stems in shipped.items()} == by_photo
    assert {part: sorted(stems) for part, stems in SHIPPED_SOURCES["crack"][0].split(data_dir).items()} == by_photo


def test_split_stems_is_fixed_and_disjoint() -> None:
    stems = [f"{i:03d}" for i in range(40)]
    split = benchmark.split_stems(stems)
    assert (len(split["test"]), len(split["select"]), len(split["train"])) == (4, 2, 34)  # floor(4.0), floor(2.0)
    assert split == benchmark.split_stems(list(reversed(stems)))  # order of the input does not matter
    assert sorted(split["test"] + split["select"] + split["train"]) == stems
    with pytest.raises(GeoccsegError, match="too few"):
        benchmark.split_stems(["a", "b"], test_fraction=0.5)
    # review B3: 9 images held out no test image: every run trained its whole budget, then failed
    # scoring ("check the test folder") and failed again on every --resume
    with pytest.raises(GeoccsegError, match=r"9 images are too few to hold out a test image \(10% of them\); .*--test-dir"):
        benchmark.split_stems(stems[:9])
    assert benchmark.split_stems(stems[:9], test_fraction=0.0)["test"] == []  # a --test-dir split asks for none


def _record(arm: str, fraction: float, seed: int, f1: float) -> dict:
    return {"run": f"x_{arm}_{fraction}_s{seed}", "dataset": "x", "profile": "quick", "arm": arm, "labeled_fraction": fraction,
            "seed": seed, "n_labeled": 3, "n_test": 5, "device": "cpu", "encoder": "light", "tile_px": 128, "max_steps": 10, "steps": 10,
            "train_seconds": 60.0 * (seed + 1), "precision": f1, "recall": f1, "f1": f1, "iou": f1, "ods_f1": f1, "ois_f1": f1,
            "relaxed_f1": None}


def test_summarise_gives_mean_and_sample_std() -> None:
    records = [_record("full", 0.1, 0, 0.5), _record("full", 0.1, 1, 0.7), _record("sup_ce", 0.1, 0, 0.25),
               _record("fully_supervised", 1.0, 0, 0.9)]
    assert "F1 by labeled fraction" not in benchmark.summarise(records[:3])  # one point only: no sweep table
    records.append(_record("full", 0.01, 0, 0.125))
    table = benchmark.summarise(records)
    # mean (0.5 + 0.7) / 2 = 0.6, sample std sqrt(2 * 0.1² / 1) = 0.1414; minutes (1 + 2) / 2 = 1.5
    assert "| full | 0.1 | 3 | 2 | 0.600 ± 0.141 | 0.600 ± 0.141 | 0.600 ± 0.141 |" in table
    # rows by fraction, then in the order of ARMS
    assert table.index("| full | 0.01 |") < table.index("| sup_ce | 0.1 |") < table.index("| full | 0.1 |") < table.index("| fully_supervised | 1 |")
    assert table.split("| full | 0.1 |")[1].split("\n")[0].endswith("| 10 | 1.5 |")
    # gap closed at 0.1: (0.6 - 0.25) / (0.9 - 0.25) = 0.538...; no sup_imbalance run, no line for it
    assert "- `full` at fraction 0.1 closes 54% of the F1 gap between `sup_ce` and `fully_supervised`." in table
    assert "`sup_imbalance` and" not in table
    # paired by seed: only seed 0 ran both full (0.5) and sup_ce (0.25) at 0.1
    assert "- `full` − `sup_ce` at fraction 0.1, paired by seed (same labeled images): F1 +0.250 on average (+0.250)." in table
    # no run was cut short by the time cap (steps == max_steps)
    assert "time cap" not in table
    # the sweep table: full at 0.01 and 0.1 and, through the fully supervised run, at 1.0
    assert "| 0.01 | 0.125 |\n| 0.1 | 0.600 ± 0.141 |\n| 1 | 0.900 |" in table
    # a method below its baseline is said so, not as a negative share of the gap
    records.append(_record("sup_imbalance", 0.1, 0, 0.7))
    assert "- `full` at fraction 0.1 scores *below* `sup_imbalance`: it closes none of the F1 gap to `fully_supervised`." in benchmark.summarise(records)
    # full at 0.1 averages (0.5 + 0.7 + 1 + 1 + 1) / 5 = 0.84, the fully supervised run (0.9 + 0.7) / 2 = 0.8
    records += [_record("full", 0.1, seed, 1.0) for seed in (2, 3, 4)] + [_record("fully_supervised", 1.0, 1, 0.7)]
    assert "- `full` at fraction 0.1 scores *above* `fully_supervised` (and `sup_ce`) at this budget." in benchmark.summarise(records)


@pytest.mark.parametrize("folder", ["deepcrack-cpu", "massachusetts-cpu", "deepcrack-cpu-efficientnet-lite0", "massachusetts-cpu-efficientnet-lite0",
                                    "deepcrack-cpu-efficientnet-lite0-600steps", "massachusetts-cpu-efficientnet-lite0-600steps",
                                    "deepcrack-cpu-efficientnet-lite0-1000steps", "massachusetts-cpu-efficientnet-lite0-epyc",
                                    "deepcrack-cpu-efficientnet-lite0-epyc"])
def test_shipped_reports_regenerate_byte_identically(folder: str) -> None:
    """The README's tables come from these records: the report functions must still write them unchanged."""
    results = ROOT / "pipelines" / "results" / folder
    records = benchmark.load_records(results / "results.json")
    assert all(set(benchmark.RECORD_FIELDS) <= set(r) for r in records)
    assert benchmark.summarise(records) == (results / "results.md").read_text()


def test_pipeline_scripts_import_the_package_not_each_other() -> None:
    for script in sorted((ROOT / "pipelines").glob("*.py")):
        text = script.read_text()
        assert "sys.path" not in text and "import benchmark_quality" not in text, script.name


def test_pipeline_scripts_write_their_outputs_atomically() -> None:
    """Results written straight to their final name were left half-written by a crash or Ctrl-C:
    every write_text / write_bytes / savefig of a script writes a name that an atomic_path(...)
    of that script yields (a text check: the scripts write no file any other way today)."""
    for script in sorted((ROOT / "pipelines").glob("*.py")):
        text = script.read_text()
        staged = set(re.findall(r"atomic_path\(.*\) as (\w+):", text))
        written = re.findall(r"([\w.]+|\))\.write_(?:text|bytes)\(", text) + re.findall(r"\.savefig\(([^,)]+)", text)
        assert set(written) <= staged, (script.name, set(written) - staged)


def test_train_speed_refuses_a_skip_that_leaves_no_step_to_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --skip at or past the last step that metrics.csv times divided by zero, after the variant had trained."""
    speed = _load_script("benchmark_train_speed")
    assert [speed.max_skip(n) for n in (5, 10, 40, 45)] == [None, 1, 30, 30]
    for steps, skip in (("40", "40"), ("40", "35"), ("5", "0")):
        with pytest.raises(SystemExit) as exc:
            speed.main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--steps", steps, "--skip", skip])
        assert exc.value.code == 2 and "leaves no steps to measure" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any training
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,seconds,loss\n1,2.0,0.9\n10,11.0,0.8\n20,20.0,0.7\n30,29.0,0.6\n40,38.0,0.5\n")
    assert speed.speed(metrics, 30, 16) == {"steps": 10, "seconds": 9.0, "steps_per_s": 1.111, "chips_per_s": 17.78}


def test_loss_ablation_variants_are_valid_and_match_the_defaults() -> None:
    ablation = _load_script("ablate_loss")
    from geoccseg.train import TrainConfig

    folders = {"train": Path("train"), "select": Path("select")}
    for name, settings in ablation.VARIANTS.items():
        # each variant is the benchmark's run with its settings on top, whatever the arm says
        config = benchmark.train_config(benchmark.RunSpec("full", 0.035, 0), "deepcrack", benchmark.PROFILES["cpu"], folders, ["a"], [], Path("out"), **settings)
        config.validate()
        assert {k: getattr(config, k) for k in settings} == settings, name
    # the trainer's defaults are the variant the ablation chose: change both together
    defaults = TrainConfig(out="unused", images="unused", masks="unused")
    for key, value in {**ablation.NEW_LOSS, "lambda_con": ablation.CHOSEN_LAMBDA_CON}.items():
        assert getattr(defaults, key) == value, key


def test_pseudo_label_diagnosis_partitions_every_pixel(data_dir: Path, tmp_path: Path) -> None:
    diag = _load_script("diagnose_pseudo_labels")
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    crack = load_bundle(resolve_model("crack"))
    cfd = data_dir / "cfd"
    pairs = [(cfd / "images" / f"{n}.jpg", cfd / "masks" / f"{n}.png") for n in ("001", "002")]
    report = diag.diagnose(crack, pairs, 0.95, 0.8, 0.6)
    levels = report["levels"]
    assert sum(r["pixel_share"] for r in levels.values()) == pytest.approx(1.0)
    for true_class in ("0", "1"):  # every true pixel lands in exactly one (level, pseudo-label) cell
        total = sum(sum(r["share_of_true_class"][true_class].values()) for r in levels.values())
        assert total == pytest.approx(1.0)
    # stricter thresholds move pixels from high to low confidence, never the other way
    strict = diag.diagnose(crack, pairs, 0.999, 0.99, 0.6)
    assert strict["levels"]["high"]["pixel_share"] <= levels["high"]["pixel_share"]
    # every wrong confident crack pixel lies at some distance from the truth; a shape filter keeps part of them
    assert sum(report["wrong_foreground_by_distance_px"].values()) == pytest.approx(1.0)
    shaped = diag.diagnose(crack, pairs, 0.95, 0.8, 0.6, shape=(3.0, 20))["shape_filter"]
    assert 0 < shaped["kept_share"] < 1 and shaped["true_foreground_kept"] <= levels["high"]["share_of_true_class"]["1"]["1"] + 1e-9
    assert set(report["most_far_mistakes"]) <= {"001.jpg", "002.jpg"}
    diag.draw_far_mistakes(crack, pairs[:1], 0.8, tmp_path / "far.png")
    assert (tmp_path / "far.png").stat().st_size > 10_000
    # a wrong folder is a one-line error, not a traceback
    for args in (["--bundle", str(tmp_path / "nothing"), "--data", str(cfd)], ["--bundle", "crack", "--data", str(tmp_path)]):
        proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "diagnose_pseudo_labels.py"), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr, proc.stderr


def test_pseudo_label_diagnosis_leaves_out_the_held_out_images(data_dir: Path, tmp_path: Path) -> None:
    """--exclude-labeled left the benchmark's test and select images among the "unlabeled" ones
    (about 15 % of the README's 60), which the teacher never saw as unlabeled data."""
    diag = _load_script("diagnose_pseudo_labels")
    split = {"train": ["001", "002", "003"], "select": ["004"], "test": ["005"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    code = diag.main(["--bundle", "crack", "--data", str(data_dir / "cfd"), "--split", str(tmp_path / "split.json"),
                      "--json", str(tmp_path / "report.json")])
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and report["images"] == 3 and report["stems"] == ["001", "002", "003"]
    assert report["args"]["split"] == str(tmp_path / "split.json")


def test_pseudo_label_diagnosis_figure_with_no_wrong_pixels_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--figure crashed (plt.subplots with 0 rows) when no confident foreground label was wrong."""
    from PIL import Image

    diag = _load_script("diagnose_pseudo_labels")
    for part in ("images", "masks"):
        (tmp_path / "data" / part).mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "data" / "images" / "a.png")
    Image.fromarray(np.ones((96, 96), dtype=np.uint8)).save(tmp_path / "data" / "masks" / "a.png")  # all foreground: nothing is wrong
    code = diag.main(["--bundle", "crack", "--data", str(tmp_path / "data"), "--figure", str(tmp_path / "far.png"),
                      "--json", str(tmp_path / "report.json")])
    assert code == 0 and "no figure written" in capsys.readouterr().out and not (tmp_path / "far.png").exists()
    assert json.loads((tmp_path / "report.json").read_text())["most_far_mistakes"] == []


def test_pseudo_label_diagnosis_refuses_an_unwritable_output_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --figure or --json in a missing folder failed only after every image was diagnosed."""
    diag = _load_script("diagnose_pseudo_labels")
    for flag, name in (("--figure", "far.png"), ("--json", "report.json")):
        code = diag.main(["--bundle", "crack", "--data", str(tmp_path / "no-data-read"), flag, str(tmp_path / "missing" / name)])
        err = capsys.readouterr().err
        assert code == 2 and str(tmp_path / "missing") in err and "no-data-read" not in err and len(err.strip().splitlines()) == 1


def test_shape_filter_keeps_thin_lines_and_leaves_out_blobs_and_specks() -> None:
    thin_parts = _load_script("diagnose_pseudo_labels").thin_parts
    mask = np.zeros((96, 96), dtype=bool)
    mask[10:15, 5:90] = True  # a road 5 px wide
    mask[40:70, 40:70] = True  # a parking lot 30 x 30
    mask[85:88, 85:88] = True  # a speck of 9 px
    rr = np.arange(96)
    diagonal = (np.abs(rr[:, None] - rr[None, :] - 10) <= 2) & (rr[:, None] > 70)  # a thin diagonal
    mask |= diagonal
    thin = thin_parts(mask, 4, 20)
    assert thin[10:15, 5:90].all() and thin[diagonal].all()
    assert not thin[40:70, 40:70].any() and not thin[85:88, 85:88].any() and not (thin & ~mask).any()
    edge = np.zeros((32, 32), dtype=bool)
    edge[:4] = True  # a line along the border is thin: the border is not foreground beyond it
    assert (thin_parts(edge, 3, 0) == edge).all()


def test_own_scene_benchmark_scores_the_unlabeled_part(tmp_path: Path) -> None:
    own = _load_script("benchmark_own_scene")
    out = tmp_path / "own"
    assert own.main(["--steps", "2", "--arms", "scratch_sup", "shipped", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in records] == ["scratch_sup", "shipped"]
    for r in records:
        assert r["labeled_lines"] == 19 and r["scored_lines"] == 23  # the sample's centrelines west and east of the 40 % cut
        assert all(0 <= r[k] <= 1 for k in ("completeness", "correctness", "quality"))
    assert records[0]["steps"] == 2 and records[1]["steps"] == 0
    # (that only the part east of the strip is scored is tested on hand-drawn lines in tests/test_strip.py)
    assert (out / "lines.png").stat().st_size > 10_000 and "| 40% | 19 | scratch_sup | 1 |" in (out / "results.md").read_text()
    assert own.main(["--steps", "2", "--arms", "scratch_sup", "--out", str(out)]) == 2  # no silent overwrite


def test_encoder_and_unlabeled_term_defaults_follow_the_recorded_benchmark() -> None:
    """The trainer's default encoder and the switches of the unlabeled terms are what the recorded runs
    chose on their *select* images (never on the test images): change the defaults and the records together."""
    from geoccseg.train import TrainConfig

    defaults = TrainConfig(out="unused", images="unused", masks="unused")
    results = ROOT / "pipelines" / "results"

    def select_f1(folder: str) -> dict[tuple[str, str, int], float]:
        records = benchmark.load_records(results / folder / "results.json")
        return {(r["dataset"], r["arm"], r["seed"]): r["select_f1"] for r in records if r["labeled_fraction"] == 0.035}

    # the pretrained encoder beats the light one on each dataset, over the (arm, seed) runs both made
    light, pretrained, wins = {}, {}, []
    for dataset in ("deepcrack", "massachusetts"):
        light |= select_f1(f"{dataset}-cpu")
        pretrained |= select_f1(f"{dataset}-cpu-efficientnet-lite0")
        shared = [k for k in set(light) & set(pretrained) if k[0] == dataset]
        assert len(shared) >= 4, dataset
        wins.append(sum(pretrained[k] - light[k] for k in shared) > 0)
    assert all(wins) == (defaults.encoder == "efficientnet-lite0")
    # each remedy of the unlabeled terms is the default only if its arm beat full on the select
    # images of the same seeds and machine (summed over the seeds of each dataset) on both datasets:
    # one measured on one dataset only is not the default yet. Identical runs differ by 0.01-0.02
    # between machines, so each folder's remedies pair with that folder's own full runs.
    machines = [pretrained, select_f1("massachusetts-cpu-efficientnet-lite0-epyc") | select_f1("deepcrack-cpu-efficientnet-lite0-epyc")]
    remedies = {
        "full_da": defaults.distribution_alignment,
        "full_late": (defaults.unlabeled_start_steps, defaults.lambda_pl) == (100, 0.5),
        "full_plce": defaults.pseudo_loss == "ce",
        "full_tbg99": defaults.tau_high == 0.99,
        "full_tfg95": defaults.tau_high_fg == 0.95,
        "full_enc01": defaults.encoder_lr_scale == 0.1,
        "full_fp": defaults.feature_perturbation > 0,
        "full_centreline": defaults.pseudo_centreline_px > 0,
    }
    for arm, is_default in remedies.items():
        gains = {}
        for runs in machines:
            for d, a, s in runs:
                if a == arm:
                    gains[d] = gains.get(d, 0.0) + runs[(d, a, s)] - runs[(d, "full", s)]
        assert gains, arm
        assert (set(gains) == {"deepcrack", "massachusetts"} and min(gains.values()) > 0) == is_default, (arm, gains)


def test_suggest_photos_benchmark_runs_both_strategies_from_one_seed_set(data_dir: Path, tmp_path: Path) -> None:
    bench = _load_script("benchmark_suggest_photos")
    from geoccseg.benchmark import link_pairs, make_split
    from geoccseg.benchmark.split import read_pairs

    pairs = dict(list(read_pairs(data_dir / "cfd").items())[:20])
    data = link_pairs(tmp_path / "data", pairs)
    out = tmp_path / "out"
    argv = ["--dataset", "cfd", "--data", str(data), "--out", str(out), "--profile", "quick", "--max-steps", "2",
            "--start-fraction", "0.12", "--per-round", "2", "--rounds", "1", "--seeds", "0",
            "--encoder", "light", "--strategy", "acquisition"]
    assert bench.main(argv) == 0
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert sorted(records) == ["cfd_acquisition_r1_s0", "cfd_random_r1_s0", "cfd_start_r0_s0"]
    start = records["cfd_start_r0_s0"]["labeled"]
    assert len(start) == 2  # 12 % of the 17 training photos (20 minus 2 test and 1 select)
    for strategy in ("acquisition", "random"):
        r = records[f"cfd_{strategy}_r1_s0"]
        assert len(r["added"]) == 2 and not set(r["added"]) & set(start) and sorted(start + r["added"]) == r["labeled"]
        assert 0 <= r["f1"] <= 1 and r["n_labeled"] == 4
    # the suggestions come from the seed-set model's ranking of the unlabeled photos
    train_photos = link_pairs(tmp_path / "train", {s: pairs[s] for s in make_split(data, None)[1]["train"]}) / "images"
    ranked = bench.suggest_photos(train_photos, model=str(out / "runs" / "cfd_start_r0_s0"), n=2, progress=False, strategy="acquisition",
                                  labels=link_pairs(tmp_path / "labels", {s: pairs[s] for s in start}) / "masks")
    assert sorted(Path(n).stem for n in ranked.suggested) == records["cfd_acquisition_r1_s0"]["added"]
    assert "| 1 | acquisition | 1 | 4 |" in (out / "results.md").read_text() and (out / "f1_vs_labeled.png").stat().st_size > 5_000
    assert bench.main(argv) == 2  # no silent overwrite
    assert bench.main([*argv, "--resume"]) == 0  # nothing left to train
    # resumed with other settings (the run names do not hold them): refused, nothing trained or rewritten
    before = (out / "results.json").read_text()
    for flag, value in (("--start-fraction", "0.2"), ("--per-round", "3"), ("--max-steps", "3")):
        other = list(argv)
        other[other.index(flag) + 1] = value
        assert bench.main([*other, "--resume"]) == 2, flag
    assert (out / "results.json").read_text() == before
    # another novelty weight: its own suggestions beside the default's, the same seed set and random runs
    assert bench.main([*argv, "--resume", "--novelty-weight", "1"]) == 0
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert sorted(records) == ["cfd_acquisition_novelty1_r1_s0", "cfd_acquisition_r1_s0", "cfd_random_r1_s0", "cfd_start_r0_s0"]
    assert records["cfd_acquisition_novelty1_r1_s0"]["strategy"] == "acquisition_novelty1"
    report = (out / "results.md").read_text()
    assert "| 1 | acquisition_novelty1 | 1 | 4 |" in report and "- Round 1: acquisition_novelty1 − random test F1" in report
    assert bench.main([*argv, "--resume", "--novelty-weight", "2"]) == 2  # outside [0, 1], refused before any training
    # both weights: the name records each one that differs from suggest's default
    assert bench.main([*argv, "--resume", "--novelty-weight", "1", "--typicality-weight", "1"]) == 0
    record = {r["run"]: r for r in json.loads((out / "results.json").read_text())}["cfd_acquisition_novelty1_typicality1_r1_s0"]
    assert (record["novelty_weight"], record["typicality_weight"], len(record["added"])) == (1.0, 1.0, 2)
    # coverage: chosen by the seed-set model's embedding clusters (seeded by seed and round), beside the same random runs
    default = argv[:-2]  # without --strategy: coverage, as geoccseg suggest for photos
    assert bench.main([*default, "--resume"]) == 0
    assert bench.main([*default, "--resume", "--coverage-acquisition", "1"]) == 0
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    coverage = bench.suggest_photos(train_photos, model=str(out / "runs" / "cfd_start_r0_s0"), n=2, progress=False, strategy="coverage",
                                    seed=1, labels=link_pairs(tmp_path / "labels-c", {s: pairs[s] for s in start}) / "masks")
    assert sorted(Path(n).stem for n in coverage.suggested) == records["cfd_coverage_r1_s0"]["added"]
    assert records["cfd_coverage_r1_s0"]["coverage_acquisition"] == 0.0 and records["cfd_coverage_r1_s0"]["novelty_weight"] is None
    assert records["cfd_coverage_acquisition1_r1_s0"]["coverage_acquisition"] == 1.0
    assert "| 1 | coverage | 1 | 4 |" in (out / "results.md").read_text()
    assert bench.main([*default, "--resume", "--novelty-weight", "1"]) == 2  # a setting of the other strategy: refused


def test_suggest_photos_benchmark_trains_only_the_last_round_where_picks_ignore_the_model(data_dir: Path, tmp_path: Path,
                                                                                           capsys: pytest.CaptureFixture) -> None:
    """Coverage on ImageNet embeddings and random picks do not depend on the round's model, so
    ``--final-round-only`` gives each strategy's last labeled set without training the earlier
    rounds (or the seed set): the same sets the full protocol labels, at a third of the trainings."""
    bench = _load_script("benchmark_suggest_photos")
    from geoccseg.benchmark import link_pairs, make_split
    from geoccseg.benchmark.split import read_pairs
    from geoccseg.suggest.select import SuggestParams

    pairs = dict(list(read_pairs(data_dir / "cfd").items())[:20])
    data = link_pairs(tmp_path / "data", pairs)
    argv = ["--dataset", "cfd", "--data", str(data), "--profile", "quick", "--max-steps", "2", "--start-fraction", "0.12",
            "--per-round", "2", "--rounds", "2", "--seeds", "0", "--encoder", "light", "--embedding", "imagenet"]
    assert bench.main([*argv, "--out", str(tmp_path / "model-picks"), "--final-round-only", "--embedding", "model"]) == 2
    out = tmp_path / "out"
    assert bench.main([*argv, "--out", str(out), "--final-round-only"]) == 0
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert sorted(records) == ["cfd_coverage_imagenet_r2_s0", "cfd_random_r2_s0"]
    assert not (out / "runs" / "cfd_start_r0_s0").exists()
    start = bench.split_labeled(make_split(data, None)[1]["train"], 0.12, 0)[0]
    train_photos = link_pairs(tmp_path / "train", {s: pairs[s] for s in make_split(data, None)[1]["train"]}) / "images"
    labeled = list(start)
    for round_ in (1, 2):  # the picks of each round, by the crack model (the rounds' models are not trained)
        masks = link_pairs(tmp_path / f"labels{round_}", {s: pairs[s] for s in labeled}) / "masks"
        picked = bench.suggest_photos(train_photos, model="crack", n=2, progress=False, labels=masks, seed=round_,
                                      params=SuggestParams(embedding="imagenet")).suggested
        labeled = sorted([*labeled, *(Path(n).stem for n in picked)])
    assert records["cfd_coverage_imagenet_r2_s0"]["labeled"] == labeled and records["cfd_coverage_imagenet_r2_s0"]["embedding"] == "imagenet"
    assert records["cfd_random_r2_s0"]["n_labeled"] == len(start) + 4
    capsys.readouterr()
    assert bench.main([*argv, "--out", str(out), "--final-round-only", "--resume"]) == 0  # nothing left: no picks made again
    resumed = capsys.readouterr().out
    assert "cfd_coverage_imagenet_r2_s0: already in results.json, skipped" in resumed and "picks without it" not in resumed
    report = (out / "results.md").read_text()
    assert "- Round 2: coverage_imagenet − random test F1, paired by seed" in report
    assert "- coverage_imagenet: only round 2 was trained, so how many fewer labeled photos reach random's final F1 is not measured" in report
    # a round recorded by a run of the whole protocol with other settings is refused, not built on
    # (the final round left out: its own check would refuse anyway)
    recorded = [r for r in json.loads((out / "results.json").read_text()) if r["run"] != "cfd_coverage_imagenet_r2_s0"]
    other = dict(recorded[0], run="cfd_coverage_imagenet_r1_s0", round=1, labeled=sorted(pairs)[:4], added=sorted(pairs)[2:4])
    (out / "results.json").write_text(json.dumps([*recorded, other]))
    capsys.readouterr()
    assert bench.main([*argv, "--out", str(out), "--final-round-only", "--resume"]) == 2
    assert f"{out} holds cfd_coverage_imagenet_r1_s0 of other settings" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["suggest-photos-deepcrack-coverage", "suggest-photos-massachusetts", "suggest-photos-deepcrack-1pct",
                                    "suggest-photos-deepcrack-photo", "suggest-photos-massachusetts-photo",
                                    "suggest-photos-massachusetts-photo-6seeds", "suggest-photos-massachusetts-imagenet"])
def test_suggest_photos_reports_regenerate_from_their_records(folder: str) -> None:
    """The README's photo tables (the script's current format) are what its report writes from the
    recorded runs."""
    bench = _load_script("benchmark_suggest_photos")
    results = ROOT / "pipelines" / "results" / folder
    records = json.loads((results / "results.json").read_text())
    expected = f"# Suggested against random photos: {records[0]['dataset']}\n\n{bench.summarise(records)}"
    assert (results / "results.md").read_text() == expected


def test_suggest_photos_report_says_how_many_fewer_labels_reach_randoms_final_f1() -> None:
    bench = _load_script("benchmark_suggest_photos")

    def record(strategy: str, round_: int, seed: int, f1: float) -> dict:
        return {"strategy": strategy, "round": round_, "seed": seed, "f1": f1, "n_labeled": 5 + 4 * round_, "ods_f1": f1, "iou": f1}

    records = [record("start", 0, s, 0.70) for s in (0, 1)]
    records += [record("random", k, s, f1) for k, s, f1 in [(1, 0, 0.72), (1, 1, 0.74), (2, 0, 0.76), (2, 1, 0.78), (3, 0, 0.76), (3, 1, 0.76)]]
    # coverage reaches random's final mean (0.76) in round 1 on average, but round 1 of seed 1 is missing until the end
    records += [record("coverage", 1, 0, 0.80), record("coverage", 2, 0, 0.79), record("coverage", 2, 1, 0.74)]
    report = bench.summarise(records)
    assert ("- coverage reaches random's final test F1 (0.760 with 17 photos, round 3, 2 seeds) in round 2 with 13 photos (0.765): "
            "24% fewer labeled photos (random itself first reaches it in round 2, with 13).") in report
    records.append(record("coverage", 1, 1, 0.72))
    assert "in round 1 with 9 photos (0.760): 47% fewer" in bench.summarise(records)
    records = [r for r in records if r["strategy"] != "coverage"] + [record("coverage", 1, s, 0.7) for s in (0, 1)]
    assert "- coverage does not reach random's final test F1 (0.760 with 17 photos, round 3, 2 seeds)." in bench.summarise(records)


def test_suggest_photos_benchmark_resumes_after_the_unlabeled_photos_run_out(data_dir: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A round that found fewer than --per-round unlabeled photos was refused on --resume (it "added 3
    photos, not --per-round 4"), and the round after it had none to choose from. The rounds are
    planned here without training: each run's training and the suggestions are stand-ins."""
    bench = _load_script("benchmark_suggest_photos")
    from geoccseg.benchmark import link_pairs
    from geoccseg.benchmark.split import read_pairs

    trained = []

    def train_and_score(spec, dataset, profile, folders, train_stems, unlabeled, test_pairs, out, labeled, name) -> dict:
        trained.append(name)
        return {"run": name, "dataset": dataset, "seed": spec.seed, "profile": profile.name, "labeled": sorted(labeled),
                "n_labeled": len(labeled), "f1": 0.5, "ods_f1": 0.5, "iou": 0.4, "train_seconds": 1.0}

    monkeypatch.setattr(bench, "train_and_score", train_and_score)
    monkeypatch.setattr(bench, "choose", lambda strategy, model_dir, pairs, labeled, pool, k, *rest: sorted(pool)[:k])
    data = link_pairs(tmp_path / "data", dict(list(read_pairs(data_dir / "cfd").items())[:20]))
    argv = ["--dataset", "cfd", "--data", str(data), "--out", str(tmp_path / "out"), "--profile", "quick",
            "--start-fraction", "0.12", "--per-round", "4", "--rounds", "5", "--seeds", "0"]
    assert bench.main(argv) == 0
    records = {r["run"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    for strategy in ("coverage", "random"):  # 17 training photos: 2 in the seed set, then 4, 4, 4 and the 3 left; no round 5
        assert [len(records[f"cfd_{strategy}_r{k}_s0"]["added"]) for k in (1, 2, 3, 4)] == [4, 4, 4, 3]
        assert f"cfd_{strategy}_r5_s0" not in records
    trained.clear()
    assert bench.main([*argv, "--resume"]) == 0 and trained == []


def test_suggest_photos_plot_gives_every_strategy_a_colour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot's colours ran out past 7 strategies: later strategies (random among them) were left out."""
    from matplotlib.colors import to_hex

    bench = _load_script("benchmark_suggest_photos")
    figures = []
    monkeypatch.setattr(bench.plt, "close", figures.append)
    start = {"strategy": "start", "round": 0, "seed": 0, "dataset": "cfd", "n_labeled": 2, "f1": 0.5, "ods_f1": 0.5, "iou": 0.4}
    suggested = [f"coverage_acquisition{w / 10:g}" for w in range(1, 9)]
    records = [start, *({**start, "strategy": s, "round": 1, "n_labeled": 6} for s in [*suggested, "random"])]
    bench.write_reports(records, tmp_path)
    colours = {c.get_label(): to_hex(c.lines[0].get_color()) for c in figures[0].axes[0].containers}
    assert sorted(colours) == sorted(map(bench.legend, [*suggested, "random"])) and colours["random"] == to_hex("tab:grey")
    assert len({colours[bench.legend(s)] for s in suggested}) == 8 and to_hex("tab:grey") not in {colours[bench.legend(s)] for s in suggested}
    monkeypatch.undo()
    bench.plt.close(figures[0])


def test_suggest_scene_plot_labels_the_buffer_it_scored_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot's axis said "score within 5 m" whatever --buffer-m was."""
    bench = _load_script("benchmark_suggest")
    figures = []
    monkeypatch.setattr(bench.plt, "close", figures.append)
    records = [dict(run=run, round=k, labeled_share=0.3 + 0.1 * k, quality=0.5, completeness=0.6, common_quality=0.5,
                    common_completeness=0.6, per_round=2, size_m=96.0, scene="sample", buffer_m=3.0)
               for run in ("coverage_s0", "random_s0") for k in (0, 1)]
    bench.plot(records, tmp_path / "quality.png")
    assert figures[0].axes[0].get_ylabel() == "score within 3 m" and (tmp_path / "quality.png").stat().st_size > 5_000
    monkeypatch.undo()
    bench.plt.close(figures[0])


def test_suggest_scene_report_groups_runs_by_strategy() -> None:
    bench = _load_script("benchmark_suggest")
    # each seed runs every strategy (its first run trains the strip the others share)
    assert bench.run_names(["coverage"], [0, 1]) == [("coverage_s0", "coverage", 0), ("random_s0", "random", 0),
                                                     ("coverage_s1", "coverage", 1), ("random_s1", "random", 1)]
    assert [n for n, _, _ in bench.run_names(["acquisition", "coverage"], [3])] == ["acquisition_s3", "coverage_s3", "random_s3"]
    # the first measurement's records (its acquisition run was named "suggested") still make the README's table
    results = ROOT / "pipelines" / "results" / "suggest"
    records = json.loads((results / "before-coverage" / "results.json").read_text())
    table = bench.summarise(records)
    assert "| 0 | first strip | 1 | 30% | 0.870 | 0.901 | 0.794 |" in table
    assert "| 2 | acquisition | 1 | 60% | 0.813 | 0.956 | 0.777 |" in table and "| 2 | random | 2 | 60% | 0.804 ± 0.159 |" in table
    assert len(table.splitlines()) == 2 + 1 + 2 * 2  # no paired table: those runs shared one training seed
    # the README's table is the one the script writes from today's records
    assert bench.summarise(json.loads((results / "results.json").read_text())) == (results / "results.md").read_text()
    dubai = ROOT / "pipelines" / "results" / "suggest-dubai"
    assert bench.summarise(json.loads((dubai / "results.json").read_text())) == (dubai / "results.md").read_text()


def test_suggest_scene_report_pairs_each_strategy_with_random_of_the_same_seed() -> None:
    bench = _load_script("benchmark_suggest")

    def record(run: str, seed: int, k: int, quality: float, common: float) -> dict:
        return dict(round=k, run=run, train_seed=seed, folder=f"s{seed}/{run}/round{k}" if k else f"s{seed}/strip", labeled_share=0.1 + 0.02 * k,
                    completeness=0.8, correctness=0.8, quality=quality, common_completeness=0.8, common_correctness=0.8,
                    common_quality=common, common_truth_km=20.0)

    records = [record(f"{strategy}_s{seed}", seed, 0, 0.70, 0.70) for seed in (0, 1) for strategy in ("acquisition", "random")]
    records += [record("acquisition_s0", 0, 1, 0.75, 0.74), record("random_s0", 0, 1, 0.70, 0.71),
                record("acquisition_s1", 1, 1, 0.68, 0.70), record("random_s1", 1, 1, 0.72, 0.72)]
    table = bench.summarise(records)
    assert "| 0 | first strip | 2 | 10% |" in table  # one first strip per seed
    assert "| 1 | acquisition | +0.005 | +0.030, -0.020 | +0.005 | +0.050, -0.040 |" in table


def test_precision_benchmark_reports_against_the_variant_it_measured_as_reference() -> None:
    """tables() and verdicts() took "onnx fp32" as the reference whatever --variants said: with
    another first variant the report crashed at its end (KeyError) or judged the first against itself."""
    bp = _load_script("benchmark_precision")
    row = {"model": "crack", "set": "deepcrack", "f1": 0.86, "max_255": 0, "mean_255": 0.0}
    result = {"reference": "torch fp32",
              "held_out": [{**row, "variant": "torch fp32", "f1_change": 0.0}, {**row, "variant": "torch bf16", "f1_change": -0.002}],
              "sample": {"torch fp32": {"max_255": 0, "mean_255": 0.0}, "torch bf16": {"max_255": 1, "mean_255": 0.1}},
              "forward": {"torch fp32": {"median": 2.0}, "torch bf16": {"median": 3.0}}}
    result["verdicts"] = bp.verdicts(result)
    assert result["verdicts"] == {"torch fp32": "reference", "torch bf16": "yes"}
    table = bp.tables(result)
    assert "| torch bf16 | 1 | 0.100 | 3.00 | 1.50 | yes |" in table and "vs torch fp32" in table and "onnx" not in table


def test_loss_ablation_continues_its_folder_and_never_mixes_settings() -> None:
    """A second run of ablate_loss crashed on its own first run folder ("already holds a trained
    model"), and records of other budgets joined one table."""
    ablate = _load_script("ablate_loss")
    records = [{"variant": "sup_ce", "dataset": "deepcrack", "seed": 0, "max_steps": 300, "labeled_fraction": 0.035}]
    ablate.check_records(records, "deepcrack", 0, 300, 0.035, ["a", "b"])
    with pytest.raises(GeoccsegError, match=r"sup_ce in results.json was run with \{'max_steps': 300\}"):
        ablate.check_records(records, "deepcrack", 0, 600, 0.035, ["a", "b"])
    older = [{"variant": "sup_ce", "dataset": "deepcrack", "seed": 0, "steps": 300}]  # before budgets were recorded
    with pytest.raises(GeoccsegError, match="choose another --out"):
        ablate.check_records(older, "deepcrack", 0, 300, 0.035, ["a", "b"])
    # review B2: kept records of another split (split.json lost, the split guessed) joined the table
    records[0]["labeled"] = ["a", "b"]
    ablate.check_records(records, "deepcrack", 0, 300, 0.035, ["b", "a"])
    with pytest.raises(GeoccsegError, match="sup_ce in results.json was trained on other labeled images than this split's"):
        ablate.check_records(records, "deepcrack", 0, 300, 0.035, ["a", "c"])



def test_loss_ablation_refuses_a_damaged_results_file_in_one_line(data_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """ablate_loss read its results.json with json.loads alone: a file cut short by a full disk, or
    another benchmark's records, gave a traceback (JSONDecodeError, KeyError 'variant')."""
    ablate = _load_script("ablate_loss")
    out = tmp_path / "out"
    out.mkdir()
    for text in ('[{"variant": "sup_ce", "dataset": "deep', '[{"run": "cfd_full_0.035_s0"}]'):
        (out / "results.json").write_text(text)
        assert ablate.main(["--dataset", "cfd", "--data", str(data_dir / "cfd"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ablate_loss: error: ") and err.count("\n") == 1 and "choose another --out" in err
    assert not (out / "runs").exists()  # refused before any training


def test_benchmark_scores_leave_out_unlabeled_mask_pixels(data_dir: Path, tmp_path: Path) -> None:
    """Masks of 0/1 with 255 for unlabeled pixels read the 255 as unlabeled (read_mask, since the
    photo masks follow the label rasters' rule); the benchmark's scorer counted every pixel > 0 as
    foreground, so unlabeled pixels were cracks the model missed."""
    from PIL import Image

    from geoccseg.benchmark.score import foreground_probability, read_truth_mask, score_bundle
    from geoccseg.data.photos import read_mask, read_photo
    from geoccseg.evaluate import PixelScorer
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    image = data_dir / "cfd" / "images" / "001.jpg"
    mask = read_mask(data_dir / "cfd" / "masks" / "001.png")
    marked = mask.copy()
    marked[:, :240] = 255  # the left half, across a crack
    Image.fromarray(marked).save(tmp_path / "001.png")
    truth, labeled = read_truth_mask(tmp_path / "001.png")
    assert mask[:, :240].any() and not truth[:, :240].any() and not labeled[:, :240].any() and labeled[:, 240:].all()
    assert np.array_equal(truth[:, 240:], mask[:, 240:] > 0) and read_truth_mask(data_dir / "cfd" / "masks" / "001.png")[1] is None
    bundle = load_bundle(resolve_model("crack"))
    expected = PixelScorer(0.5)
    expected.add(foreground_probability(bundle, read_photo(image), "cpu"), mask > 0, labeled)
    assert score_bundle(bundle, {"001": (image, tmp_path / "001.png")}, device="cpu").pixels == expected.scores()


def test_benchmark_scores_read_a_crack_free_mask_of_a_0_1_255_set_as_training_does(data_dir: Path, tmp_path: Path) -> None:
    """In a set of 0/1 masks with 255 for unlabeled pixels, a crack-free photo's mask holds only 0
    and 255: training and ``evaluate`` decide over the folder that its 255 is unlabeled; the
    benchmark's scores read each mask alone, as a 0/255 mask, and counted the unlabeled block as
    crack the model missed (and the threshold was chosen against it)."""
    from PIL import Image

    from geoccseg.benchmark.score import pairs_mark_unlabeled_255, score_thresholds
    from geoccseg.data.photos import read_mask

    cfd = data_dir / "cfd"
    pairs = {}
    for stem in ("001", "002"):
        marked = read_mask(cfd / "masks" / f"{stem}.png")  # 0/1
        marked[:40, :40] = 255  # a corner unlabeled
        if stem == "002":
            marked[marked == 1] = 0  # no crack: only 0 and 255
        Image.fromarray(marked).save(tmp_path / f"{stem}.png")
        pairs[stem] = (cfd / "images" / f"{stem}.jpg", tmp_path / f"{stem}.png")
    assert pairs_mark_unlabeled_255(pairs) and not pairs_mark_unlabeled_255({"002": pairs["002"]})
    everywhere = lambda stem, image, valid: np.ones(image.shape[1:], np.float32)  # noqa: E731 (every pixel predicted crack)
    (score,) = score_thresholds(pairs, (0.5,), everywhere)
    crack = int(np.count_nonzero(read_mask(cfd / "masks" / "001.png")[40:, :] == 1)
                + np.count_nonzero(read_mask(cfd / "masks" / "001.png")[:40, 40:] == 1))
    labeled = 2 * (320 * 480 - 40 * 40)
    assert score.pixels.precision == pytest.approx(crack / labeled, rel=1e-9) and score.pixels.recall == 1.0


def test_paired_differences_refuse_two_runs_of_one_seed() -> None:
    """Records of two benchmark folders pooled (notebook 03 did) paired one folder's arm with the
    other's base, the last record of a seed winning silently."""
    from geoccseg.benchmark.report import paired_differences

    run = {"labeled_fraction": 0.035, "seed": 0}
    records = [{**run, "arm": "full", "f1": 0.8}, {**run, "arm": "sup_ce", "f1": 0.7}]
    assert paired_differences(records, "sup_ce") == {0.035: [pytest.approx(0.1)]}
    with pytest.raises(ValueError, match="several runs of one seed"):
        paired_differences([*records, {**run, "arm": "full", "f1": 0.75}], "sup_ce")


def test_scoring_reads_photos_as_training_does(data_dir: Path, tmp_path: Path) -> None:
    """Scoring read each photo with its own bands and counted its transparent pixels: a grey test
    photo beside a colour model's photos stopped the benchmark after its training ("image has 1
    band(s) but the normalisation statistics have 3"), and a cut-out photo was scored on the
    stored colour of its transparent part."""
    from PIL import Image

    from geoccseg.benchmark.score import score_bundle
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    bundle = load_bundle(resolve_model("crack"))
    photo = np.asarray(Image.open(data_dir / "cfd" / "images" / "001.jpg").convert("RGB"))
    mask = np.asarray(Image.open(data_dir / "cfd" / "masks" / "001.png").convert("L"))
    for name in ("grey", "cut", "half"):
        (tmp_path / name).mkdir()
    Image.fromarray(photo).convert("L").save(tmp_path / "grey" / "001.png")
    Image.fromarray(mask).save(tmp_path / "grey" / "001_mask.png")
    grey = benchmark.score_bundle(bundle, {"001": (tmp_path / "grey" / "001.png", tmp_path / "grey" / "001_mask.png")}, device="cpu")
    assert grey.pixels.f1 > 0.2  # scored, as the colour photo replicated from grey
    # the left half cut out (alpha 0, stored black) and marked as crack in the mask: left out, as training leaves it
    half = photo.shape[1] // 2
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :half] = 0
    Image.fromarray(np.dstack([np.where(alpha[..., None] > 0, photo, 0), alpha]).astype(np.uint8), "RGBA").save(tmp_path / "cut" / "001.png")
    marked = mask.copy()
    marked[:, :half] = 255
    Image.fromarray(marked).save(tmp_path / "cut" / "001_mask.png")
    cut = score_bundle(bundle, {"001": (tmp_path / "cut" / "001.png", tmp_path / "cut" / "001_mask.png")}, device="cpu")
    Image.fromarray(photo[:, half:]).save(tmp_path / "half" / "001.png")
    Image.fromarray(mask[:, half:]).save(tmp_path / "half" / "001_mask.png")
    alone = score_bundle(bundle, {"001": (tmp_path / "half" / "001.png", tmp_path / "half" / "001_mask.png")}, device="cpu")
    # measured 0.666 against 0.677 for the half alone (the cut-out next to it changes a few chips); counted,
    # the all-crack truth under the cut-out would hold most of the crack pixels and bring recall under a
    # tenth of the half's own; and a per-image normalised model (the shipped crack model) that stretched the
    # photo by percentiles taken over its black cut-out too scored 0.213 (geoccseg predict leaves it out)
    assert alone.pixels.recall > 0.5 and cut.pixels.recall > 0.8 * alone.pixels.recall


def test_a_run_written_before_an_option_existed_is_the_same_run(tmp_path: Path) -> None:
    """A benchmark's interrupted run whose config.yaml predates an option (foreground_share) was
    taken for a run of other settings: deleted with its checkpoint and trained again, or refused by
    the scripts that continue their own runs. A missing option reads as its default."""
    import yaml

    from geoccseg.benchmark.runs import same_config
    from geoccseg.train import TrainConfig

    config = TrainConfig(out=str(tmp_path), images=str(tmp_path / "images"), masks=str(tmp_path / "masks"), max_steps=300)
    old = yaml.safe_load(config.to_yaml())
    del old["foreground_share"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert same_config(tmp_path, config)
    assert not same_config(tmp_path, replace(config, foreground_share=0.33))  # a run of other settings stays one
    assert not same_config(tmp_path, replace(config, max_steps=450))


def test_benchmark_records_the_f1_at_the_models_own_threshold(data_dir: Path) -> None:
    """A bundle's own threshold (the shipped crack model's 0.44, or one set by hand off the
    evaluation's grid) is scored as a scorer at that threshold scores it; a threshold of the grid
    is read from the sweep of the 0.5 pass, without a second pass over the test images."""
    import dataclasses

    from geoccseg.benchmark.score import foreground_probability, score_bundle
    from geoccseg.data.photos import read_mask, read_photo
    from geoccseg.evaluate import PixelScorer
    from geoccseg.io.bundle import resolve_model
    from geoccseg.models import load_bundle

    cfd = data_dir / "cfd"
    pairs = {s: (cfd / "images" / f"{s}.jpg", cfd / "masks" / f"{s}.png") for s in ("001", "002")}
    bundle = load_bundle(resolve_model("crack"))
    probs = {s: foreground_probability(bundle, read_photo(image), "cpu") for s, (image, _) in pairs.items()}
    for threshold in (0.44, 0.437):
        expected = PixelScorer(threshold)
        for s, (_, mask) in pairs.items():
            expected.add(probs[s], read_mask(mask) > 0)
        own = dataclasses.replace(bundle, meta=dataclasses.replace(bundle.meta, threshold=threshold))
        score = score_bundle(own, pairs, device="cpu")
        assert score.model_threshold == threshold and score.model_threshold_f1 == expected.scores().f1
        assert score.metrics()["model_threshold_f1"] == expected.scores().f1 != score.pixels.f1  # not the F1 at 0.5


@pytest.mark.parametrize("script, args", [
    ("benchmark_tiles", []), ("benchmark_precision", []), ("benchmark_suggest", []), ("benchmark_predict", ["--no-naive"]),
    ("benchmark_evaluate", []), ("benchmark_train_speed", ["--data", "."]),
])
def test_a_benchmark_refuses_to_replace_an_earlier_runs_results_without_overwrite(script, args, tmp_path, capsys):
    """Review B9: these benchmarks wrote over the results.json and results.md of an earlier run in
    the same --out without asking (and rewrote results.json row by row, so a stopped run left a
    partial one beside the older results.md)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("the earlier run's table\n")
    assert _load_script(script).main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out} already holds results.md of an earlier run; pass --overwrite" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["results.md"] and (out / "results.md").read_text() == "the earlier run's table\n"


def test_benchmark_rows_are_kept_apart_until_the_results_are_written(tmp_path):
    from geoccseg.benchmark.runs import PARTIAL, claim_results, save_partial, save_results

    out = tmp_path / "out"
    claim_results(out, overwrite=False)
    (out / "results.md").write_text("old\n")
    (out / "results.json").write_text("[]\n")
    with pytest.raises(GeoccsegError, match="already holds results.json and results.md"):
        claim_results(out, overwrite=False)
    claim_results(out, overwrite=True)
    save_partial(out, [{"row": 1}])  # a run stopped here leaves the earlier results whole and its rows apart
    assert json.loads((out / PARTIAL).read_text()) == [{"row": 1}] and (out / "results.md").read_text() == "old\n"
    stopped = tmp_path / "stopped"  # and the rows of a stopped run are not written over by the next either
    claim_results(stopped, overwrite=False)
    save_partial(stopped, [{"row": 1}])
    with pytest.raises(GeoccsegError, match=f"already holds {PARTIAL} of an earlier run"):
        claim_results(stopped, overwrite=False)
    save_results(out, [{"row": 1}, {"row": 2}], "new\n")
    assert not (out / PARTIAL).exists() and (out / "results.md").read_text() == "new\n"
    assert json.loads((out / "results.json").read_text()) == [{"row": 1}, {"row": 2}]


def test_the_road_transfer_diagnosis_splits_the_samples_truth_into_streets_and_car_parks() -> None:
    import geopandas as gpd

    from geoccseg.io.catalog import sample_roads

    diagnose = _load_script("diagnose_road_transfer")
    truth = gpd.read_file(sample_roads())
    assert diagnose.STREETS <= set(truth["road_id"].astype(int))  # every street named is one of the sample's lines
    scores = diagnose.scores(truth[truth["road_id"].astype(int).isin(diagnose.STREETS)], truth)  # the streets drawn exactly
    assert scores["streets"]["completeness"] == 1.0 and scores["streets"]["centrelines"] == 10
    assert scores["car parks"]["centrelines"] == 28 and scores["car parks"]["completeness"] < 0.1
    assert 0.3 < scores["all"]["completeness"] < 0.45 and scores["all"]["correctness"] == 1.0


def test_a_refused_folder_of_another_split_gets_no_guessed_split_json(data_dir: Path, tmp_path: Path, capsys) -> None:
    """Review of B2: the benchmark and the loss ablation wrote the split they guessed for a folder
    whose split.json was lost before refusing its records as another split's, leaving a split.json
    that contradicts them."""
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.json").write_text(json.dumps([{"run": "r", "profile": "quick", "labeled": ["no-such-photo"], "n_test": 1}]))
    with pytest.raises(GeoccsegError, match="of another split than this one"):
        benchmark.run_benchmark("cfd", data_dir / "cfd", out, profile="quick", seeds=[0], arms=["sup_imbalance"], resume=True)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    ablation = tmp_path / "ablation"
    ablation.mkdir()
    (ablation / "results.json").write_text(json.dumps([{"variant": "sup_ce", "dataset": "cfd", "seed": 0, "max_steps": 300,
                                                        "labeled_fraction": 0.035, "labeled": ["no-such-photo"]}]))
    assert _load_script("ablate_loss").main(["--dataset", "cfd", "--data", str(data_dir / "cfd"), "--out", str(ablation)]) == 2
    assert "trained on other labeled images than this split's" in capsys.readouterr().err
    assert sorted(p.name for p in ablation.iterdir()) == ["results.json"]
