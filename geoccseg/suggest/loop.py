"""The active-labeling loop on a scene with known truth: label, train, map, ask where next, repeat.

A user labels a first strip of the scene, trains, and asks ``geoccseg suggest`` where to label
next; labeling those squares and training again should map the rest better than labeling the same
area chosen at random. :func:`active_labeling` runs this loop with the scene's true centrelines
standing in for the user (:func:`label_from_truth`: the truth clipped to the labeled area, as a
labeler would draw it), so that the choice of areas can be measured:

* round 0: the western ``first_fraction`` of the scene is labeled (:func:`geoccseg.evaluate.strips`);
* each round: write the labeled AOI and its labels, train (:func:`geoccseg.train.train`), map the
  scene (:func:`geoccseg.inference.run_predict`), score the lines on the unlabeled rest
  (:func:`geoccseg.evaluate.score_rest`: completeness, correctness, quality within ``buffer_m``),
  then add ``per_round`` squares from :func:`geoccseg.suggest.suggest_areas` (``strategy``
  ``"acquisition"``, ``"coverage"`` or ``"random"``) to the labeled AOI.

Runs share their round 0 through ``start`` (the same first model for every strategy), and every
round trains with the same seed, so the strategies differ only by the areas they label.
``notebooks/04_active_labeling.ipynb`` and ``pipelines/benchmark_suggest.py`` run it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import LineCounts, Strips, score_rest, strips
from geoccseg.evaluate.files import read_lines
from geoccseg.inference import PredictOptions, run_predict
from geoccseg.io.atomic import atomic_path
from geoccseg.io.units import metric_crs
from geoccseg.io.vector_write import write_vectors
from geoccseg.suggest.areas import check_request, suggest_areas
from geoccseg.suggest.select import SuggestParams


@dataclass
class LoopRound:
    """One round of the loop: what was labeled, and how well the rest was mapped.

    Attributes:
        round: 0 for the first strip, then 1, 2, ...
        strategy: how the squares were chosen (a :data:`geoccseg.suggest.STRATEGIES` name; round 0: ``"strip"``).
        seed: seed of the random choice (and name of the run).
        folder: the round's folder (``aoi.gpkg``, ``labels.gpkg``, ``model/``, ``lines.gpkg``, and
            ``suggested.gpkg``: the squares the next round adds, suggested with this round's model;
            round 0's are ``round0-<strategy>-s<seed>.gpkg`` beside the rounds, as round 0 is shared
            by the strategies).
        labeled_m2: labeled area, square metres.
        labeled_share: labeled share of the scene's area.
        squares: squares labeled so far.
        completeness: of the lines on the unlabeled rest (buffer ``buffer_m``).
        correctness: of the lines on the unlabeled rest.
        quality: of the lines on the unlabeled rest.
        truth_rest_km: length of the true centrelines in the rest, km.
        train_seconds: training time, seconds.
    """

    round: int
    strategy: str
    seed: int
    folder: str
    labeled_m2: float
    labeled_share: float
    squares: int
    completeness: float
    correctness: float
    quality: float
    truth_rest_km: float
    train_seconds: float

    @property
    def aoi(self) -> Path:
        return Path(self.folder) / "aoi.gpkg"

    @property
    def model(self) -> Path:
        return Path(self.folder) / "model"

    @property
    def lines(self) -> Path:
        return Path(self.folder) / "lines.gpkg"

    @property
    def suggested(self) -> Path:
        return Path(self.folder) / "suggested.gpkg"

    def labeled_area(self, crs: CRS | str) -> BaseGeometry:
        """The area labeled by this round (its AOI), in ``crs``."""
        return gpd.read_file(self.aoi).to_crs(crs).union_all()


def label_from_truth(truth: gpd.GeoDataFrame | gpd.GeoSeries, area: BaseGeometry, margin_m: float = 5.0) -> gpd.GeoDataFrame:
    """The true lines a labeler would draw for ``area``: the truth clipped to the area grown by
    ``margin_m`` (roads just outside still mark their width inside), lines only.

    Args:
        truth: true centrelines with a CRS.
        area: the labeled area, in the truth's CRS.
        margin_m: margin around the area, metres.
    """
    truth = truth if isinstance(truth, gpd.GeoDataFrame) else gpd.GeoDataFrame(geometry=truth)
    metric = metric_crs(truth.geometry)
    grown = gpd.GeoSeries([area], crs=truth.crs).to_crs(metric).buffer(margin_m).to_crs(truth.crs).iloc[0]
    clipped = truth[["geometry"]].clip(grown).explode(index_parts=False)
    return clipped[clipped.geom_type == "LineString"].reset_index(drop=True)


def active_labeling(
    scene: str | os.PathLike,
    truth: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_settings: dict,
    rounds: int = 2,
    per_round: int = 2,
    size_m: float | None = None,
    first_fraction: float = 0.3,
    strategy: str = "acquisition",
    seed: int = 0,
    start: LoopRound | None = None,
    train_seed: int = 0,
    buffer_m: float = 5.0,
    margin_m: float = 5.0,
    options: PredictOptions | None = None,
    params: SuggestParams | None = None,
) -> list[LoopRound]:
    """Run the loop: round 0 on the first strip (or ``start``), then ``rounds`` rounds of ``per_round`` squares.

    Args:
        scene: the GeoTIFF scene.
        truth: its true centrelines (any vector file with a CRS).
        out: folder of the run (created); round ``k`` in ``out/round<k>``. A round whose folder
            already holds ``round.json`` is read back instead of run again.
        train_settings: :class:`geoccseg.train.TrainConfig` fields for every round (steps, tile,
            pixel size, label width, ...), without ``out``, ``scenes``, ``labels``, ``aoi``, ``seed``.
        rounds: rounds after round 0.
        per_round: squares added per round.
        size_m: square edge, metres; None: :func:`geoccseg.suggest.default_size_m` of each model.
        first_fraction: labeled western strip of round 0, a share of the scene width.
        strategy: ``"acquisition"`` (``geoccseg suggest``), ``"coverage"`` or ``"random"``.
        seed: seed of the coverage clustering or random choice (round ``k`` draws with ``seed * 1000 + k``).
        start: a round 0 already run (shared by several strategies); None: run it here.
        train_seed: seed of every training run.
        buffer_m: buffer of the completeness and correctness, metres.
        margin_m: margin of :func:`label_from_truth`, metres.
        options: prediction and scoring settings (device, tiles, Dask).
        params: acquisition and selection settings.

    Returns:
        Round 0 (``start`` when given) and the rounds run, in order.

    Raises:
        GeoccsegError: bad scene, truth or settings.
    """
    from geoccseg.train import TrainConfig, train  # Lightning is slow to import; only the loop needs it
    from geoccseg.train.callbacks import run_finished

    if rounds < 0 or per_round < 1:
        raise GeoccsegError(f"rounds must be >= 0 and per_round >= 1, got {rounds} and {per_round}")
    options, params = options or PredictOptions(), params or SuggestParams()
    check_request([scene], per_round, size_m, strategy, seed, options, params)  # before round 0 trains, not at round 1
    out = Path(out)
    settings = {"scene": str(Path(scene).resolve()), "truth": str(Path(truth).resolve()), "train_settings": train_settings,
                "per_round": per_round, "size_m": size_m, "first_fraction": first_fraction, "strategy": strategy, "seed": seed,
                "start": start.folder if start is not None and Path(start.folder) != out / "round0" else None,  # another run's round 0
                "train_seed": train_seed, "buffer_m": buffer_m,
                "margin_m": margin_m, "params": asdict(params)}
    check_loop_settings(out, settings)
    truth_lines = read_lines(truth, "truth")
    split = strips(scene, first_fraction)
    truth_lines = truth_lines.to_crs(split.crs)
    footprint = shapely.union_all([split.labeled, split.rest])
    metric = metric_crs(gpd.GeoSeries([footprint], crs=split.crs))
    area_m2 = lambda geom: float(gpd.GeoSeries([geom], crs=split.crs).to_crs(metric).area.iloc[0])  # noqa: E731

    def finished(k: int) -> LoopRound | None:
        """Round ``k`` as saved when it ended; None if it has not."""
        path = out / f"round{k}" / "round.json"
        return LoopRound(**json.loads(path.read_text())) if path.is_file() else None

    def run_round(k: int, labeled: BaseGeometry, squares: int, name: str) -> LoopRound:
        folder = out / f"round{k}"
        folder.mkdir(parents=True, exist_ok=True)
        # an unfinished round (no round.json) writes its AOI and labels again
        write_vectors({"aoi": gpd.GeoDataFrame(geometry=[labeled], crs=split.crs)}, folder / "aoi.gpkg", overwrite=True)
        labels = label_from_truth(gpd.GeoDataFrame(geometry=truth_lines), labeled, margin_m)
        write_vectors({"labels": labels}, folder / "labels.gpkg", overwrite=True, crs=split.crs)
        began = time.perf_counter()
        if not run_finished(folder / "model"):  # a killed or stopped round's training goes on from its checkpoint
            train(TrainConfig(out=str(folder / "model"), scenes=[str(scene)], labels=str(folder / "labels.gpkg"), aoi=str(folder / "aoi.gpkg"),
                              seed=train_seed, resume=(folder / "model" / "checkpoints" / "last.ckpt").is_file(),
                              **{"progress": False, **train_settings}))
        seconds = time.perf_counter() - began
        run_predict(scene, folder / "lines.gpkg", model=folder / "model", options=options, overwrite=True, progress=False)
        rest = footprint.difference(labeled)
        scores = score_rest(read_lines(folder / "lines.gpkg", "PRED"), truth_lines, Strips(split.crs, labeled, rest), buffer_m)
        return LoopRound(
            round=k, strategy=name, seed=seed, folder=str(folder), labeled_m2=area_m2(labeled), labeled_share=area_m2(labeled) / area_m2(footprint),
            squares=squares, completeness=scores.completeness, correctness=scores.correctness, quality=scores.quality,
            truth_rest_km=scores.truth_total_m / 1000, train_seconds=round(seconds, 1),
        )

    def save(r: LoopRound) -> LoopRound:
        with atomic_path(Path(r.folder) / "round.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(asdict(r), indent=1))
        return r

    first = start or finished(0) or save(run_round(0, split.labeled, 0, "strip"))
    done = [first]
    labeled = first.labeled_area(split.crs)
    for k in range(1, rounds + 1):
        previous = done[-1]
        if (ended := finished(k)) is not None:  # read back with its AOI; its squares are not suggested again
            done.append(ended)
            labeled = ended.labeled_area(split.crs)
            continue
        suggested = previous.suggested if previous is not first else out / f"round0-{strategy}-s{seed}.gpkg"
        if previous is not first or not suggested.is_file():
            suggest_areas(scene, suggested, model=previous.model, n=per_round, size_m=size_m, aoi=previous.aoi, options=options,
                          params=params, strategy=strategy, seed=seed * 1000 + k, overwrite=True, progress=False)
        squares = gpd.read_file(suggested).to_crs(split.crs)
        labeled = shapely.union_all([labeled, *squares.geometry])
        done.append(save(run_round(k, labeled, previous.squares + len(squares), strategy)))
    return done


SETTINGS = "loop.json"
"""The file of a loop's folder that records the settings its rounds were run with."""


def check_loop_settings(out: Path, settings: dict) -> None:
    """Record a loop's settings in ``out/loop.json`` (creating ``out``), or refuse a folder whose
    rounds were run with others: they would be read back as if run with these (more rounds are
    not another setting). A folder of rounds from before settings were recorded is kept.

    Raises:
        GeoccsegError: ``out`` records other settings.
    """
    now = json.loads(json.dumps(settings, default=str))
    path = out / SETTINGS
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(key for key in now.keys() | before.keys() if before.get(key) != now.get(key))
        if changed:
            raise GeoccsegError(f"{out} holds a loop run with other settings ({', '.join(changed)}); "
                                "choose another folder, or remove it to start again")
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(now, indent=1) + "\n")


def unlabeled_by_all(scene: str | os.PathLike, runs: list[LoopRound]) -> BaseGeometry:
    """The part of the scene that none of ``runs`` labeled (their AOIs removed), in the scene's CRS:
    a region on which rounds of different strategies are scored on equal terms."""
    split = strips(scene, 0.5)
    labeled = shapely.union_all([r.labeled_area(split.crs) for r in runs])
    return shapely.union_all([split.labeled, split.rest]).difference(labeled)


def score_round_on(scene: str | os.PathLike, truth: str | os.PathLike, run: LoopRound, region: BaseGeometry, buffer_m: float = 5.0) -> LineCounts:
    """Completeness, correctness and quality of a round's lines against the truth inside ``region``
    (the scene's CRS), e.g. :func:`unlabeled_by_all`."""
    split = strips(scene, 0.5)
    return score_rest(read_lines(run.lines, "PRED"), read_lines(truth, "truth"), Strips(split.crs, split.labeled, region), buffer_m)
