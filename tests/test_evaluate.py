"""Tests of geoccseg.evaluate: every expected value below is worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin
from shapely.geometry import LineString, MultiLineString

from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import (
    Counts,
    PixelScorer,
    PixelScores,
    RelaxedCounts,
    ThresholdSweep,
    confusion_counts,
    evaluate,
    line_counts,
    pixel_counts,
    relaxed_counts,
    score_arrays,
    skeleton_counts,
)
from geoccseg.evaluate import files
from geoccseg.evaluate.files import match_files, prediction_scores, read_raster, truth_masks


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _write_tif(path: Path, array: np.ndarray, nodata: float | None = None) -> Path:
    """A GeoTIFF in UTM zone 11N with 1 m pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype,
        crs="EPSG:32611", transform=from_origin(500000, 4000000, 1.0, 1.0), nodata=nodata,
    ) as ds:
        ds.write(array, 1)
    return path


# --- pixel metrics ---------------------------------------------------------------------------------

def test_identical_masks_score_one() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3:8] = True
    counts = pixel_counts(mask, mask)
    assert counts == Counts(tp=15, fp=0, fn=0, tn=85)
    assert (counts.precision, counts.recall, counts.f1, counts.iou) == (1.0, 1.0, 1.0, 1.0)
    relaxed = relaxed_counts(mask, mask, 3)
    assert (relaxed.precision, relaxed.recall, relaxed.f1) == (1.0, 1.0, 1.0)


def test_counts_by_hand_with_valid_mask() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], dtype=bool)
    truth = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    # tp: (0,0), (1,0); fp: (0,1), (1,3); fn: (0,2); tn: (0,3), (1,1), (1,2)
    counts = pixel_counts(pred, truth)
    assert counts == Counts(tp=2, fp=2, fn=1, tn=3)
    assert counts.precision == 0.5
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(4 / 7)  # 2*2 / (2*2 + 2 + 1)
    assert counts.iou == pytest.approx(2 / 5)
    valid = np.ones_like(pred)
    valid[1, 3] = False  # drops one false positive
    assert pixel_counts(pred, truth, valid) == Counts(tp=2, fp=1, fn=1, tn=3)
    assert counts + Counts(1, 0, 0, 0) == Counts(3, 2, 1, 3)


def test_empty_convention() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    some = empty.copy()
    some[1, 1] = True
    both_empty = pixel_counts(empty, empty)
    assert (both_empty.precision, both_empty.recall, both_empty.f1, both_empty.iou) == (1.0, 1.0, 1.0, 1.0)
    missed = pixel_counts(empty, some)  # nothing predicted, something true
    assert (missed.precision, missed.recall, missed.f1, missed.iou) == (0.0, 0.0, 0.0, 0.0)
    invented = pixel_counts(some, empty)  # something predicted, nothing true
    assert (invented.precision, invented.recall, invented.f1) == (0.0, 0.0, 0.0)
    assert RelaxedCounts().f1 == 1.0
    assert relaxed_counts(empty, some, 3).f1 == 0.0


def test_line_shifted_by_two_pixels_strict_and_relaxed() -> None:
    truth = np.zeros((20, 20), dtype=bool)
    truth[:, 5] = True
    pred = np.zeros_like(truth)
    pred[:, 7] = True  # the same straight line, 2 pixels to the right
    assert pixel_counts(pred, truth).f1 == 0.0
    assert relaxed_counts(pred, truth, 3) == RelaxedCounts(20, 20, 20, 20)
    assert relaxed_counts(pred, truth, 3).f1 == 1.0
    assert relaxed_counts(pred, truth, 2).f1 == 1.0  # "within rho" includes rho itself
    assert relaxed_counts(pred, truth, 1).f1 == 0.0


def test_relaxed_counts_partial_and_accumulated() -> None:
    truth = np.zeros((10, 10), dtype=bool)
    truth[5, :] = True  # 10 true pixels in row 5
    pred = np.zeros_like(truth)
    pred[6, :4] = True  # 4 pixels 1 px below the truth: matched
    pred[0, 9] = True  # 5 px away from row 5: unmatched
    one = relaxed_counts(pred, truth, 1)
    # true pixels within 1 px of a predicted one: columns 0..3 (column 4 is sqrt(2) from (6, 3)): 4
    assert one == RelaxedCounts(pred_matched=4, pred_total=5, truth_matched=4, truth_total=10)
    assert one.precision == 0.8 and one.recall == 0.4
    assert one.f1 == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    # rho = 1.5 also reaches (5, 4) at sqrt(2) px
    assert relaxed_counts(pred, truth, 1.5).truth_matched == 5
    total = one + relaxed_counts(truth, truth, 1)
    assert total == RelaxedCounts(14, 15, 14, 20)


# --- best threshold --------------------------------------------------------------------------------

def test_ods_and_ois_by_hand() -> None:
    # image A: scores 0.8, 0.4, 0.2 for truth 1, 1, 0 -> F1 = 1 for thresholds in (0.2, 0.4]
    # image B: scores 0.7, 0.6, 0.3 for truth 1, 0, 0 -> F1 = 1 for thresholds in (0.6, 0.7]
    # pooled (positive when score >= t):
    #   t in 0.01..0.20: tp 3 fp 3 fn 0 -> 6/9;   0.21..0.30: tp 3 fp 2 -> 6/8;
    #   0.31..0.40: tp 3 fp 1 -> 6/7 (best);     0.41..0.60: tp 2 fp 1 fn 1 -> 4/6;
    #   0.61..0.70: tp 2 fn 1 -> 4/5;            0.71..0.80: tp 1 fn 2 -> 2/4;  above: 0
    sweep = ThresholdSweep()
    sweep.update(np.array([[0.8, 0.4, 0.2]], dtype=np.float32), np.array([[1, 1, 0]], dtype=bool))
    sweep.update(np.array([[0.7, 0.6, 0.3]], dtype=np.float32), np.array([[1, 0, 0]], dtype=bool))
    assert sweep.ods_f1 == pytest.approx(6 / 7)
    assert sweep.ods_threshold == pytest.approx(0.31)
    assert sweep.image_f1 == [1.0, 1.0]
    assert sweep.ois_f1 == 1.0
    at = {round(t, 2): i for i, t in enumerate(sweep.thresholds)}
    assert (sweep.tp[at[0.2]], sweep.fp[at[0.2]], sweep.fn[at[0.2]]) == (3, 3, 0)
    assert (sweep.tp[at[0.21]], sweep.fp[at[0.21]]) == (3, 2)
    assert (sweep.tp[at[0.5]], sweep.fp[at[0.5]], sweep.fn[at[0.5]]) == (2, 1, 1)
    assert (sweep.tp[at[0.99]], sweep.fp[at[0.99]], sweep.fn[at[0.99]]) == (0, 0, 3)


def test_sweep_matches_strict_counts_and_uint8_levels() -> None:
    rng = np.random.default_rng(0)
    score = (rng.integers(0, 256, (30, 30)).astype(np.float32) / np.float32(255))
    score[0, 0] = np.float32(51) / np.float32(255)  # exactly 0.2: positive at t = 0.20, not at 0.21
    truth = rng.random((30, 30)) < 0.3
    valid = rng.random((30, 30)) < 0.9
    sweep = ThresholdSweep()
    sweep.update(score, truth, valid)
    for t in (0.2, 0.5, 0.73):
        i = int(np.argmin(np.abs(sweep.thresholds - t)))
        counts = pixel_counts(score >= t, truth, valid)
        assert (sweep.tp[i], sweep.fp[i], sweep.fn[i]) == (counts.tp, counts.fp, counts.fn)
    one = ThresholdSweep([0.2, 0.21])
    one.update(score[:1, :1], np.ones((1, 1), dtype=bool))
    assert list(one.tp) == [1, 0]


# --- the in-memory scorer --------------------------------------------------------------------------

# image A: at 0.5 predicts (0,0), (0,1), (1,1) against truth on the top row: tp 2, fp 1, fn 1
SCORE_A = np.array([[0.9, 0.6, 0.4], [0.2, 0.7, 0.1]])
TRUTH_A = np.array([[1, 1, 1], [0, 0, 0]], dtype=bool)
# image B: at 0.5 predicts the left column against truth on all but (0,1): tp 2, fp 0, fn 1
SCORE_B = np.array([[0.8, 0.3], [0.55, 0.05]])
TRUTH_B = np.array([[1, 0], [1, 1]], dtype=bool)


def test_score_arrays_by_hand() -> None:
    scores = score_arrays([SCORE_A, SCORE_B], [TRUTH_A, TRUTH_B], tolerance_px=1)
    # summed: tp 4, fp 1, fn 2
    assert scores.n_images == 2
    assert scores.precision == pytest.approx(4 / 5) and scores.recall == pytest.approx(4 / 6)
    assert scores.f1 == pytest.approx(8 / 11) and scores.iou == pytest.approx(4 / 7)
    # pooled true scores 0.9 0.8 0.6 0.55 0.4 0.05, false ones 0.7 0.3 0.2 0.1: at t in 0.31..0.40
    # tp 5, fp 1 (0.7), fn 1 (0.05) -> 10/12, the best of the grid (0.21..0.30: 10/13, 0.41..: 8/11)
    assert scores.ods_f1 == pytest.approx(10 / 12) and scores.ods_threshold == pytest.approx(0.31)
    # A at t in 0.21..0.40: tp 3, fp 1 -> 6/7; B at t <= 0.05: tp 3, fp 1 -> 6/7 (above 0.3: 4/5)
    assert scores.ois_f1 == pytest.approx(6 / 7)
    # every predicted pixel touches a true one and vice versa (1 px): relaxed scores are perfect
    assert (scores.relaxed_precision, scores.relaxed_recall, scores.relaxed_f1) == (1.0, 1.0, 1.0)
    assert list(scores.to_dict()) == ["n_images", "precision", "recall", "f1", "iou", "ods_f1", "ods_threshold",
                                      "ois_f1", "relaxed_precision", "relaxed_recall", "relaxed_f1"]
    # without a tolerance there are no relaxed metrics; another threshold moves the strict counts
    plain = score_arrays(iter([SCORE_A, SCORE_B]), iter([TRUTH_A, TRUTH_B]), threshold=0.35)
    assert plain.relaxed_f1 is None and plain.ods_f1 == scores.ods_f1
    assert plain.precision == pytest.approx(5 / 6) and plain.recall == pytest.approx(5 / 6)  # tp 5, fp 1 (0.7), fn 1


def test_scorer_accumulates_with_a_valid_mask_like_the_counters() -> None:
    scorer = PixelScorer(threshold=0.5, tolerance_px=1)
    valid = np.ones_like(TRUTH_A)
    valid[1, 1] = False  # drops A's one false positive
    scorer.add(SCORE_A, TRUTH_A, valid)
    assert scorer.counts == Counts(tp=2, fp=0, fn=1, tn=2)
    scorer.add(SCORE_B, TRUTH_B)
    assert scorer.counts == Counts(tp=4, fp=0, fn=2, tn=3)
    assert scorer.counts == pixel_counts(SCORE_A >= 0.5, TRUTH_A, valid) + pixel_counts(SCORE_B >= 0.5, TRUTH_B)
    assert scorer.relaxed == relaxed_counts(SCORE_A >= 0.5, TRUTH_A, 1, valid) + relaxed_counts(SCORE_B >= 0.5, TRUTH_B, 1)
    result = scorer.scores()
    assert isinstance(result, PixelScores) and result.precision == 1.0 and result.recall == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="no image"):
        PixelScorer().scores()
    with pytest.raises(ValueError, match="more scores than truths"):
        score_arrays([SCORE_A, SCORE_B], [TRUTH_A])
    with pytest.raises(ValueError, match="more truths than scores"):
        score_arrays([SCORE_A], [TRUTH_A, TRUTH_B])
    # NaN scores (a diverged run) are negative in the sweep as in the strict counts: they were
    # positive at every threshold, so ODS and OIS scored "everything is road"
    diverged = score_arrays([np.full(TRUTH_A.shape, np.nan, np.float32)], [TRUTH_A])
    assert diverged.f1 == 0.0 and diverged.ods_f1 == 0.0 and diverged.ois_f1 == 0.0


def test_confusion_counts_on_tensors_match_numpy() -> None:
    import torch

    pred, truth = SCORE_A >= 0.5, TRUTH_A
    valid = np.array([[1, 1, 1], [0, 1, 1]], dtype=bool)
    expected = (2, 1, 1)
    assert tuple(int(v) for v in confusion_counts(pred, truth, valid)) == expected
    tp, fp, fn = confusion_counts(torch.from_numpy(pred), torch.from_numpy(truth), torch.from_numpy(valid))
    assert all(isinstance(v, torch.Tensor) for v in (tp, fp, fn))
    assert (int(tp), int(fp), int(fn)) == expected
    # a batch of label maps (B, H, W), as the trainer counts class k
    labels = torch.tensor([[[0, 1], [1, 2]], [[1, 1], [0, 0]]])
    truth_labels = torch.tensor([[[0, 1], [2, 2]], [[1, 0], [0, 1]]])
    assert [int(v) for v in confusion_counts(labels == 1, truth_labels == 1)] == [2, 2, 1]


# --- centrelines -----------------------------------------------------------------------------------

def test_line_counts_partial_match_projected_and_geographic() -> None:
    # truth: 100 m; prediction: 60 m along it plus 20 m 50 m away
    truth = gpd.GeoSeries([LineString([(500000, 4000000), (500100, 4000000)])], crs="EPSG:32611")
    pred = gpd.GeoSeries(
        [MultiLineString([[(500000, 4000001), (500060, 4000001)], [(500000, 4000050), (500020, 4000050)]])],
        crs="EPSG:32611",
    )
    counts = line_counts(pred, truth, buffer_m=5.0)
    # truth within 5 m of the prediction (1 m off it, round buffer ends): x in [0, 60 + sqrt(5^2 - 1^2)]
    assert counts.truth_matched_m == pytest.approx(60 + 24**0.5, abs=0.01)  # shapely's polygonal circle
    assert counts.pred_matched_m == pytest.approx(60.0)
    assert counts.pred_total_m == pytest.approx(80.0)
    assert counts.correctness == pytest.approx(0.75)
    # on the line itself, the buffer end does not overhang: exactly 60 m of 100
    on_line = gpd.GeoSeries(
        [MultiLineString([[(500000, 4000000), (500060, 4000000)], [(500000, 4000050), (500020, 4000050)]])],
        crs="EPSG:32611",
    )
    exact = line_counts(on_line, truth, buffer_m=0.5)
    assert exact.completeness == pytest.approx(0.6 + 0.005)  # 60 m + the 0.5 m round end
    assert exact.correctness == pytest.approx(0.75)
    exact = line_counts(on_line, truth, buffer_m=1e-6)
    assert exact.completeness == pytest.approx(0.6)
    # quality = 60 / (80 + 40) = 0.5 = compl*corr / (compl - compl*corr + corr)
    assert exact.quality == pytest.approx(0.5)
    # the same in WGS84 is measured in the local UTM zone
    geo = line_counts(on_line.to_crs(4326), truth.to_crs(4326), buffer_m=1e-3)
    assert geo.completeness == pytest.approx(0.6, abs=1e-4)
    assert geo.correctness == pytest.approx(0.75, abs=1e-4)
    assert geo.truth_total_m == pytest.approx(100.0, abs=1e-3)


def test_line_counts_need_crs() -> None:
    line = gpd.GeoSeries([LineString([(0, 0), (1, 0)])])
    with pytest.raises(GeoccsegError, match="no CRS"):
        line_counts(line, line.set_crs("EPSG:32611"), 5.0)


def test_skeleton_counts_by_hand() -> None:
    truth = np.zeros((40, 40), dtype=bool)
    truth[10, :40] = True  # 40 px
    pred = np.zeros_like(truth)
    pred[11, :24] = True  # 24 px, 1 px below the truth
    pred[30, :8] = True  # 8 px, 20 px away
    counts = skeleton_counts(pred, truth, buffer_px=2, pixel_m=0.5)
    # a run of n pixels measures n - 1 steps (each pixel half of its links, the ends half a step):
    # truth column c is matched when (c - 23)^2 + 1 <= 4, i.e. c <= 24: half a step at c = 0, a step at 1..24
    assert counts.truth_matched_m == 24.5 * 0.5 and counts.truth_total_m == 39 * 0.5
    assert counts.pred_matched_m == 23 * 0.5 and counts.pred_total_m == (23 + 7) * 0.5
    # a 5 px wide bar reduces to its 1 px skeleton before matching
    bar = np.zeros_like(truth)
    bar[8:13, 2:38] = True
    assert skeleton_counts(bar, truth, buffer_px=2).correctness == 1.0


# --- files -----------------------------------------------------------------------------------------

def test_folders_matched_by_stem_and_mismatch(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    for stem in ("img-1", "img-2"):
        _write_tif(tmp_path / "pred" / f"{stem}.tif", mask)
        _write_png(tmp_path / "truth" / f"{stem}.png", mask)
    (tmp_path / "truth" / "notes.txt").write_text("ignored")
    pairs = match_files(tmp_path / "pred", tmp_path / "truth")
    assert [(p.name, t.name) for p, t in pairs] == [("img-1.tif", "img-1.png"), ("img-2.tif", "img-2.png")]
    _write_png(tmp_path / "truth" / "img-3.png", mask)
    with pytest.raises(GeoccsegError, match=r"1 TRUTH file\(s\) have no PRED .*img-3"):
        match_files(tmp_path / "pred", tmp_path / "truth")
    with pytest.raises(GeoccsegError, match="does not exist"):
        match_files(tmp_path / "nope", tmp_path / "truth")
    with pytest.raises(GeoccsegError, match="both be files or both be folders"):
        match_files(tmp_path / "pred" / "img-1.tif", tmp_path / "truth")


def test_value_interpretation(tmp_path: Path) -> None:
    probs = read_raster(_write_png(tmp_path / "p.png", np.array([[0, 51, 255]])))
    assert prediction_scores(probs)[1] == pytest.approx(np.array([[0, 0.2, 1]], dtype=np.float32))
    mask = read_raster(_write_png(tmp_path / "t.png", np.array([[0, 255, 255]])))
    assert truth_masks(mask)[1].tolist() == [[False, True, True]]
    class_map = read_raster(_write_png(tmp_path / "c.png", np.array([[0, 1, 2]])))
    with pytest.raises(GeoccsegError, match="class values 0, 1, 2"):
        truth_masks(class_map)
    by_class = truth_masks(class_map, [1, 2])
    assert by_class[1].tolist() == [[False, True, False]] and by_class[2].tolist() == [[False, False, True]]
    assert prediction_scores(class_map, [2])[2].tolist() == [[False, False, True]]


def test_truth_masks_read_as_training_reads_them(data_dir: Path, tmp_path: Path) -> None:
    """A 0/255 mask resized smoothly (values between 0 and 255) and an RGB mask of off-grey strokes
    train and benchmark as masks, but evaluate refused them, advising --classes 1,2 (which would
    score the values 1 and 2 of a 0..255 mask)."""
    from geoccseg.data.photos import read_mask

    crisp = np.asarray(Image.open(data_dir / "cfd" / "masks" / "001.png").convert("L"))
    h, w = crisp.shape
    smooth = np.asarray(Image.fromarray(crisp).resize((w // 2, h // 2), Image.BILINEAR).resize((w, h), Image.BILINEAR))
    assert len(np.unique(smooth)) > 10
    off_grey = np.stack([smooth, np.clip(smooth.astype(int) - 20, 0, 255), np.clip(smooth.astype(int) + 20, 0, 255)], axis=-1)
    for name, array in (("smooth.png", smooth), ("off_grey.png", off_grey)):
        path = _write_png(tmp_path / name, array)
        truth = truth_masks(read_raster(path))[1]
        assert np.array_equal(truth, read_mask(path) == 1), name
        assert 0 < truth.sum() < truth.size
    red = np.zeros((h, w, 3), np.uint8)
    red[..., 0] = crisp
    with pytest.raises(GeoccsegError, match="is a colour image"):
        read_raster(_write_png(tmp_path / "red.png", red))


def test_a_tagged_probability_raster_is_refused_as_a_class_map(tmp_path: Path) -> None:
    """``--classes 1`` on predict's uint8 probability COG read it as a class map: only pixels of
    probability 1/255 were class 1, every metric near 0 and no message."""
    from geoccseg.io.probability import PROBABILITY_TAG

    path = _write_tif(tmp_path / "p.tif", np.array([[0, 1, 200, 255]], np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**{PROBABILITY_TAG: "uint8"})
    with pytest.raises(GeoccsegError, match=r"holds probabilities; a class-map evaluation \(--classes\) needs an integer class map "
                                            r"\(drop --classes to score the probabilities\)"):
        prediction_scores(read_raster(path), [1])
    assert prediction_scores(read_raster(path))[1] == pytest.approx(np.array([[0, 1 / 255, 200 / 255, 1]], np.float32), abs=1e-3)


def test_probabilities_are_scored_at_the_threshold_they_record_unless_one_is_given(tmp_path: Path) -> None:
    """predict draws lines at the model's threshold (kept in the COG); evaluate scored at 0.5 whatever
    it was, so a model with threshold 0.3 was scored on other pixels than the lines it drew."""
    from geoccseg.io.probability import PROBABILITY_TAG, THRESHOLD_TAG

    prob = _write_tif(tmp_path / "p.tif", np.array([[0, 100, 200, 255]], np.uint8))  # p 0, 0.39, 0.78, 1
    with rasterio.open(prob, "r+") as ds:
        ds.update_tags(**{PROBABILITY_TAG: "uint8", THRESHOLD_TAG: "0.3"})
    truth = _write_tif(tmp_path / "t.tif", np.array([[0, 255, 255, 255]], np.uint8))
    recorded = evaluate(prob, truth, graph_metrics=False)
    assert (recorded.threshold, recorded.threshold_recorded, recorded.classes[0].recall) == (0.3, True, 1.0)
    assert "threshold 0.3 (recorded in PRED)" in recorded.format_table()
    given = evaluate(prob, truth, threshold=0.5, graph_metrics=False)
    assert (given.threshold, given.threshold_recorded, given.classes[0].recall) == (0.5, False, pytest.approx(2 / 3))
    untagged = evaluate(_write_tif(tmp_path / "q.tif", np.array([[0, 100, 200, 255]], np.uint8)), truth, graph_metrics=False)
    assert (untagged.threshold, untagged.threshold_recorded) == (0.5, False)
    # predict and vectorize take thresholds in (0, 1]: a recorded 1 (only p = 1 is a line) is scored at
    # 1, as --threshold 1 is (evaluate refused 1 and read a recorded 1 as none: 0.5, without a word)
    with rasterio.open(prob, "r+") as ds:
        ds.update_tags(**{THRESHOLD_TAG: "1"})
    top = evaluate(prob, truth, graph_metrics=False)
    assert (top.threshold, top.threshold_recorded, top.classes[0].recall) == (1.0, True, pytest.approx(1 / 3))
    assert evaluate(prob, truth, threshold=1, graph_metrics=False).classes[0].recall == pytest.approx(1 / 3)
    with pytest.raises(GeoccsegError, match=r"threshold 1.5 must be in \(0, 1\]"):
        evaluate(prob, truth, threshold=1.5, graph_metrics=False)


def test_class_map_evaluation(tmp_path: Path) -> None:
    truth = np.array([[0, 1, 1, 2], [0, 2, 2, 2]])
    pred = np.array([[1, 1, 0, 2], [0, 2, 2, 0]])
    _write_png(tmp_path / "t.png", truth)
    _write_png(tmp_path / "p.png", pred)
    result = evaluate(tmp_path / "p.png", tmp_path / "t.png", classes=[1, 2], tolerance_px=0)
    one, two = result.classes
    # class 1: tp (0,1), fp (0,0), fn (0,2) -> P = R = 1/2; class 2: tp 3, fp 0, fn (1,3) -> R = 3/4
    assert (one.class_value, one.precision, one.recall) == (1, 0.5, 0.5)
    assert (two.class_value, two.precision, two.recall) == (2, 1.0, 0.75)
    assert result.classes[0].completeness is None  # PNG: no geometry
    # 255 beside the classes marks unlabeled pixels, not background: a prediction there is no false positive
    truth_void = np.array([[0, 1, 1, 2], [255, 2, 2, 2]])
    pred_void = np.array([[1, 1, 0, 2], [1, 2, 2, 0]])
    _write_png(tmp_path / "tv.png", truth_void)
    _write_png(tmp_path / "pv.png", pred_void)
    one, two = evaluate(tmp_path / "pv.png", tmp_path / "tv.png", classes=[1, 2], tolerance_px=0).classes
    assert (one.precision, one.recall, two.recall) == (0.5, 0.5, 0.75)  # as above: the pixel under 255 is not scored
    truth_void[0, 0] = 3  # a class not scored beside them: 255 is still unlabeled
    _write_png(tmp_path / "tv3.png", truth_void)
    one, two = evaluate(tmp_path / "pv.png", tmp_path / "tv3.png", classes=[1, 2], tolerance_px=0).classes
    assert (one.precision, one.recall, two.recall) == (0.5, 0.5, 0.75)


def test_truth_with_255_for_unlabeled_is_scored_where_labeled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0/1 truth with 255 for "no label" trains as such (io.labels) but was refused here as a
    class map; with --classes 1 its unlabeled pixels were background: a prediction there was a
    false positive. They are now scored nowhere."""
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[10, :] = 1
    truth[:5, :] = 255
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[10, :] = pred[:5, :10] = 1  # the road, and road pixels in the unlabeled strip
    _write_tif(tmp_path / "truth.tif", truth)
    _write_tif(tmp_path / "pred.tif", pred)
    result = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", tolerance_px=0).classes[0]
    assert (result.precision, result.recall) == (1.0, 1.0)
    assert evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", classes=[1], tolerance_px=0).classes[0].precision == 1.0
    # a folder of such tiles: one without road holds only 0 and 255 and reads as its neighbours do;
    # a tile with no labeled pixel is not scored (it counted as a perfect image)
    for name, values in {"a": truth, "b": np.where(truth == 1, 0, truth), "c": np.full_like(truth, 255)}.items():
        _write_tif(tmp_path / "t" / f"{name}.tif", values)
        _write_tif(tmp_path / "p" / f"{name}.tif", pred)
    reads: list[str] = []
    monkeypatch.setattr(files, "read_raster", lambda path: reads.append(Path(path).name) or read_raster(path))
    folder = evaluate(tmp_path / "p", tmp_path / "t", tolerance_px=0).classes[0]
    assert folder.precision == pytest.approx(20 / 40) and folder.recall == 1.0
    # every TRUTH tile was read twice (a scan of the folder, then scoring); only those that
    # cannot say how 255 reads are now, in a folder that marks unlabeled pixels with it
    assert sorted(reads) == ["a.tif", "b.tif", "b.tif", "c.tif", "c.tif"]
    assert evaluate(tmp_path / "p", tmp_path / "t", tolerance_px=0).n_images == 2
    _write_tif(tmp_path / "nodata.tif", np.full_like(truth, 255), nodata=255)
    with pytest.raises(GeoccsegError, match=r"nothing to score: no pixel is valid in both PRED and TRUTH \(nodata"):
        evaluate(tmp_path / "pred.tif", tmp_path / "nodata.tif")
    # a folder of 0/1 and 0/255 masks shows no 255-for-unlabeled tile: each reads as it is
    road = np.where(truth == 1, 1, 0).astype(np.uint8)
    _write_tif(tmp_path / "m" / "a.tif", road)
    _write_tif(tmp_path / "m" / "b.tif", road * 255)
    _write_tif(tmp_path / "q" / "a.tif", road)
    _write_tif(tmp_path / "q" / "b.tif", road * 0)  # misses b's road, which counts
    reads.clear()
    assert evaluate(tmp_path / "q", tmp_path / "m", tolerance_px=0).classes[0].recall == 0.5
    assert sorted(reads) == ["a.tif", "b.tif"]  # each read once
    # the same rule for a float raster of 0/1/255
    _write_tif(tmp_path / "float.tif", truth.astype(np.float32))
    assert evaluate(tmp_path / "pred.tif", tmp_path / "float.tif", classes=[1], tolerance_px=0).classes[0].precision == 1.0
    truth[:5, :] = 2  # a class map: every value is scored
    _write_tif(tmp_path / "classes.tif", truth)
    assert evaluate(tmp_path / "pred.tif", tmp_path / "classes.tif", classes=[1], tolerance_px=0).classes[0].precision == pytest.approx(20 / 70)


def test_size_mismatch_and_nodata(tmp_path: Path) -> None:
    _write_png(tmp_path / "small.png", np.zeros((4, 4)))
    _write_png(tmp_path / "big.png", np.zeros((4, 5)))
    with pytest.raises(GeoccsegError, match="5x4 pixels but TRUTH .* is 4x4"):
        evaluate(tmp_path / "big.png", tmp_path / "small.png")
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[10, :] = 255
    pred = np.zeros((20, 20), dtype=np.float32)
    pred[12, :] = 0.9  # the line 2 m (2 px) off
    pred[0, :5] = -1  # nodata
    _write_tif(tmp_path / "truth.tif", truth)
    _write_tif(tmp_path / "pred.tif", pred, nodata=-1)
    result = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", buffer_m=3.0).classes[0]
    assert (result.f1, result.relaxed_f1) == (0.0, 1.0)
    assert (result.completeness, result.correctness, result.quality) == (1.0, 1.0, 1.0)
    assert evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", buffer_m=1.0).classes[0].completeness == 0.0
    raster = read_raster(tmp_path / "pred.tif")
    assert int((~raster.valid).sum()) == 5  # nodata honoured (a -1 probability would otherwise be an error)


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_on_png_folders(tmp_path: Path) -> None:
    truth = np.zeros((8, 8), dtype=np.uint8)
    truth[:, 2] = 255
    _write_png(tmp_path / "truth" / "img-1.png", truth)
    _write_png(tmp_path / "pred" / "img-1.png", truth)  # perfect
    truth2 = np.zeros((8, 8), dtype=np.uint8)
    truth2[:, 5] = 255
    pred2 = np.zeros((8, 8), dtype=np.uint8)
    pred2[:4, 5] = 200  # 0.784: positive at 0.5
    pred2[4:, 5] = 100  # 0.392: negative at 0.5
    pred2[:2, 0] = 255  # two false positives, 5 px from the truth
    _write_png(tmp_path / "truth" / "img-2.png", truth2)
    _write_png(tmp_path / "pred" / "img-2.png", pred2)
    out = tmp_path / "metrics.json"
    out.write_text("old")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--json", str(out)])
    assert result.exit_code == 2 and "metrics.json already exists; pass --overwrite" in result.stderr
    assert out.read_text() == "old"  # nothing is replaced without --overwrite
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--json", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "relaxed F1" in result.stdout and "2 image(s)" in result.stdout
    metrics = json.loads(out.read_text())
    row = metrics["classes"][0]
    assert metrics["n_images"] == 2 and row["class_value"] == 1
    # at 0.5: tp 8 + 4, fp 2, fn 4
    assert row["precision"] == pytest.approx(12 / 14)
    assert row["recall"] == pytest.approx(12 / 16)
    assert row["f1"] == pytest.approx(0.8)
    assert row["iou"] == pytest.approx(12 / 18)
    # relaxed (3 px): truth rows 4..6 of img-2 are within 3 px of row 3, row 7 is not; the two FPs are 5 px off
    assert row["relaxed_precision"] == pytest.approx(12 / 14)
    assert row["relaxed_recall"] == pytest.approx(15 / 16)
    # ODS: below 0.39 all of img-2's line is found: tp 16, fp 2 -> 32/34; OIS: (1 + 16/18) / 2
    assert row["ods_f1"] == pytest.approx(32 / 34) and row["ods_threshold"] == 0.01
    assert row["ois_f1"] == pytest.approx((1 + 16 / 18) / 2)
    assert row["completeness"] is None


def test_cli_missing_path_exits_2(tmp_path: Path) -> None:
    _write_png(tmp_path / "t.png", np.zeros((2, 2)))
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "missing.tif"), str(tmp_path / "t.png")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoccseg: error: PRED") and "does not exist" in lines[0]


@pytest.mark.parametrize("option", ["--buffer-m", "--tolerance-px", "--line-width-m"])
def test_cli_nan_settings_are_refused(option: str, tmp_path: Path) -> None:
    """NaN passed every ``< 0`` check and turned the scores silently to 0."""
    _write_png(tmp_path / "t.png", np.zeros((2, 2)))
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "t.png"), str(tmp_path / "t.png"), option, "nan"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("geoccseg: error: ") and "nan" in lines[0]


# --- real data -------------------------------------------------------------------------------------

def test_vegas_mask_against_its_lines(vegas: Path) -> None:
    mask, lines = vegas / "vegas_pan_roadmask.tif", vegas / "vegas_pan_roads.geojson"
    result = evaluate(mask, lines, buffer_m=5.0).classes[0]
    # the mask is the lines buffered by 2 m (round ends); burnt back at 4 m (flat ends) it matches to IoU 0.994
    assert result.iou > 0.99 and result.recall == 1.0
    # measured: completeness 1.0, correctness 1.0 at 5 m; 0.993 and 0.998 at 0.5 m
    assert result.completeness > 0.98 and result.correctness > 0.98
    tight = evaluate(mask, lines, buffer_m=0.5).classes[0]
    assert 0.95 < tight.completeness <= result.completeness and 0.95 < tight.correctness <= result.correctness
    # the reverse direction swaps precision and recall and completeness and correctness
    reverse = evaluate(lines, mask, buffer_m=0.5).classes[0]
    assert reverse.precision == result.recall and reverse.recall == pytest.approx(result.precision)
    assert reverse.completeness == pytest.approx(tight.correctness) and reverse.correctness == pytest.approx(tight.completeness)



def test_lines_are_burnt_onto_a_turned_raster_where_they_lie(vegas: Path, tmp_path: Path) -> None:
    """A raster stored turned (columns running north: a rotation in its transform) holds the same
    mask: vector truth burnt for the pixel metrics must land on the same ground."""
    mask = vegas / "vegas_pan_roadmask.tif"
    turned = tmp_path / "turned.tif"
    with rasterio.open(mask) as src:
        t = src.transform  # x = c + a col, y = f + e row; stored transposed: x = c + a row', y = f + e col'
        profile = src.profile | {"transform": rasterio.Affine(0.0, t.a, t.c, t.e, 0.0, t.f), "width": src.height, "height": src.width}
        with rasterio.open(turned, "w", **profile) as dst:
            dst.write(src.read().transpose(0, 2, 1))
    truth = vegas / "vegas_pan_roads.geojson"
    plain, rotated = (evaluate(p, truth, graph_metrics=False).classes[0] for p in (mask, turned))
    assert plain.f1 > 0.3
    assert rotated.f1 == pytest.approx(plain.f1, abs=0.005)
    assert rotated.completeness == pytest.approx(plain.completeness, abs=0.02)
    assert rotated.correctness == pytest.approx(plain.correctness, abs=0.02)


def test_raster_centreline_lengths_are_lengths_in_every_direction() -> None:
    """Review V1: every skeleton pixel counted one mean pixel size whatever its direction, so a
    diagonal road measured 29 % short and, on a raster in degrees, an east-west road as long as a
    north-south one of as many pixels. Completeness is a ratio of lengths."""
    truth = np.zeros((200, 200), dtype=bool)
    truth[180, 20:121] = True  # east-west, 100 steps, apart from the diagonal
    diagonal = np.eye(200, dtype=bool)
    diagonal[:50] = diagonal[151:] = False  # 100 diagonal steps: 141 px long
    both = truth | diagonal
    counts = skeleton_counts(diagonal, both, buffer_px=1.5)
    assert counts.completeness == pytest.approx(100 * 2**0.5 / (100 + 100 * 2**0.5), abs=0.01)  # 0.586; 0.50 before
    # at 60 deg N a pixel of 1e-5 deg is 0.556 m wide and 1.111 m tall: the north-south road is twice as long
    ew, ns = np.zeros((100, 100), dtype=bool), np.zeros((100, 100), dtype=bool)
    ew[80, 10:71] = True
    ns[10:71, 90] = True
    counts = skeleton_counts(ns, ew | ns, buffer_px=1.0, pixel_m=(0.556 * 1.111) ** 0.5, pixel_xy_m=(0.556, 1.111))
    assert counts.completeness == pytest.approx(1.111 / (1.111 + 0.556), abs=0.01)  # 0.67; 0.50 before
    assert counts.truth_total_m == pytest.approx(60 * (0.556 + 1.111))


def test_the_centreline_buffer_is_metres_in_every_direction_on_a_raster_in_degrees(tmp_path: Path) -> None:
    """At 60 deg N a pixel of 1e-5 deg is 0.56 m wide and 1.11 m tall; the buffer used their mean
    in pixels, so 5 m reached 3.9 m east-west and 7.9 m north-south."""
    truth = np.zeros((200, 200), dtype=np.uint8)
    pred = np.zeros((200, 200), dtype=np.float32)
    truth[100, 20:80] = 255  # an east-west road
    pred[96, 20:80] = 1.0  # 4 rows north: 4.5 m
    truth[20:80, 150] = 255  # a north-south road
    pred[20:80, 158] = 1.0  # 8 columns east: 4.5 m
    transform = from_origin(10.0, 60.001, 1e-5, 1e-5)
    for name, values, dtype in (("truth.tif", truth, "uint8"), ("pred.tif", pred, "float32")):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=200, height=200, count=1, dtype=dtype, crs="EPSG:4326",
                           transform=transform) as dst:
            dst.write(values[None])
    row = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", buffer_m=5.0, graph_metrics=False).classes[0]
    assert row.completeness > 0.95 and row.correctness > 0.95
    row = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", buffer_m=4.0, graph_metrics=False).classes[0]
    assert row.completeness < 0.05  # neither is within 4 m


def test_aoi_scores_only_inside_its_polygons(vegas: Path, tmp_path: Path) -> None:
    """--aoi (e.g. the part a user did not label): the pixels outside are left out as nodata would
    be, for every metric, and vector lines are cut at its edge. The AOI is given in another CRS."""
    from dataclasses import asdict

    import shapely.affinity
    from shapely.geometry import box

    mask, lines = vegas / "vegas_pan_roadmask.tif", vegas / "vegas_pan_roads.geojson"
    with rasterio.open(mask) as src:
        profile, pixels, transform, crs = src.profile, src.read(1), src.transform, src.crs
    height, width = pixels.shape
    west, east = (box(*(transform * (c0, height)), *(transform * (c1, 0))) for c0, c1 in ((0, width // 2), (width // 2, width)))
    gpd.GeoDataFrame(geometry=[east], crs=crs).to_crs(3857).to_file(tmp_path / "east.geojson")
    gpd.GeoDataFrame(geometry=[west], crs=crs).to_file(tmp_path / "west.geojson")
    halved = pixels.copy()
    halved[:, : width // 2] = 7  # the west half as nodata
    with rasterio.open(tmp_path / "halved.tif", "w", **{**profile, "nodata": 7}) as dst:
        dst.write(halved, 1)
    inside = evaluate(mask, lines, aoi=tmp_path / "east.geojson")
    as_nodata = evaluate(tmp_path / "halved.tif", lines)
    assert inside.aoi == str(tmp_path / "east.geojson") and "inside" in inside.format_table().splitlines()[0]
    assert asdict(inside.classes[0]) == asdict(as_nodata.classes[0])
    assert inside.classes[0].recall == 1.0 and inside.classes[0].apls > 0.9
    # vector lines: only their parts inside count; the west half of the truth as prediction
    truth = gpd.read_file(lines)
    truth.clip(west).to_file(tmp_path / "west_lines.geojson")
    everywhere = evaluate(tmp_path / "west_lines.geojson", lines, graph_metrics=False).classes[0]
    in_west = evaluate(tmp_path / "west_lines.geojson", lines, graph_metrics=False, aoi=tmp_path / "west.geojson").classes[0]
    in_east = evaluate(tmp_path / "west_lines.geojson", lines, graph_metrics=False, aoi=tmp_path / "east.geojson").classes[0]
    assert 0.2 < everywhere.completeness < 0.8 and everywhere.correctness == 1.0
    assert in_west.completeness == pytest.approx(1.0) and in_west.correctness == 1.0
    assert in_east.completeness == 0.0
    # folders of tiles: a tile beside the AOI is left out (it was refused: "does not overlap the
    # scene"), and an AOI beside every tile is refused in one line
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for name, c0 in (("w", 0), ("e", width // 2)):
        window = rasterio.windows.Window(c0, 0, width // 2, height)
        with rasterio.open(tiles / f"{name}.tif", "w", **{**profile, "width": width // 2,
                                                          "transform": rasterio.windows.transform(window, transform)}) as dst:
            dst.write(pixels[:, c0:c0 + width // 2], 1)
    shifted = gpd.GeoDataFrame(geometry=[shapely.affinity.scale(west, 0.9, 0.9)], crs=crs)
    shifted.to_file(tmp_path / "west_inner.geojson")
    by_tile = evaluate(tiles, tiles, graph_metrics=False, aoi=tmp_path / "west_inner.geojson")
    alone = evaluate(tiles / "w.tif", tiles / "w.tif", graph_metrics=False, aoi=tmp_path / "west_inner.geojson")
    assert by_tile.n_images == 1 and asdict(by_tile.classes[0]) == asdict(alone.classes[0])
    shifted.translate(5 * (west.bounds[2] - west.bounds[0]), 0).to_file(tmp_path / "far.geojson")
    with pytest.raises(GeoccsegError, match="nothing to score inside AOI .* overlaps none of the 2 images"):
        evaluate(tiles, tiles, graph_metrics=False, aoi=tmp_path / "far.geojson")
    # a raster without a CRS cannot be placed in the AOI: one line
    _write_png(tmp_path / "p.png", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "t.png", np.zeros((8, 8), np.uint8))
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "p.png"), str(tmp_path / "t.png"), "--aoi", str(tmp_path / "east.geojson")])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"geoccseg: error: --aoi needs georeferenced rasters, and {tmp_path / 'p.png'} has no CRS; score it without --aoi"]


def test_vector_pairs_with_no_line_inside_the_aoi_are_scored_not_skipped(vegas: Path, tmp_path: Path) -> None:
    """A pair of line files was skipped when neither had a line inside the AOI: in a folder, tiles the
    model rightly left empty dropped out (their APLS 1 uncounted) while false roads stayed; a pair
    alone was refused with a message about pixels and nodata. Only lines that do not reach the AOI
    at all (a tile beside it) are skipped now."""
    from shapely.geometry import Point

    lines = vegas / "vegas_pan_roads.geojson"
    truth = gpd.read_file(lines)
    metric = truth.to_crs(truth.estimate_utm_crs())
    union = metric.union_all()
    x0, y0, x1, y1 = metric.total_bounds
    far = max((Point(x, y) for x in np.linspace(x0, x1, 25)[1:-1] for y in np.linspace(y0, y1, 25)[1:-1]),
              key=union.distance)  # the point of the scene farthest from any road
    assert union.distance(far) > 20
    gpd.GeoDataFrame(geometry=[far.buffer(10, cap_style="square")], crs=metric.crs).to_file(tmp_path / "roadless.gpkg")
    result = evaluate(lines, lines, aoi=tmp_path / "roadless.gpkg")
    assert result.n_images == 1 and result.classes[0].apls == 1.0  # nothing to find, nothing drawn: right
    gpd.GeoDataFrame(geometry=[Point(x1 + 5000, y1).buffer(10, cap_style="square")], crs=metric.crs).to_file(tmp_path / "beside.gpkg")
    with pytest.raises(GeoccsegError, match=r"nothing to score inside AOI .*beside.gpkg: no line of PRED or TRUTH reaches it; "
                                            r"check its location and CRS$"):
        evaluate(lines, lines, aoi=tmp_path / "beside.gpkg")


def test_polygon_truth_is_one_line_that_says_how_to_score_it(vegas, tmp_path):
    """The README promised polygons among the vectors evaluate reads; they are refused (centreline
    metrics need lines), and the one line says how to score road surfaces: as a burnt mask."""
    roads = gpd.read_file(vegas / "vegas_img0_roads.geojson")
    surfaces = tmp_path / "surfaces.gpkg"
    roads.to_crs(roads.estimate_utm_crs()).buffer(3.0).to_frame("geometry").to_file(surfaces)
    result = CliRunner().invoke(cli, ["evaluate", str(vegas / "vegas_img0_roads.geojson"), str(surfaces)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "holds Polygon geometries; evaluation compares (multi)line strings: burn polygons into a mask" in result.output
    assert "gdal_rasterize -burn 255 -ot Byte with its CRS, -te and -ts" in result.output


def test_a_raster_too_large_to_score_whole_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """evaluate reads each raster of a pair whole: a scene larger than the free memory filled it
    until the process was killed. A sparse GeoTIFF (header only) of 9 x 10^10 pixels stands for one
    (about 4.7 TB to score: more than any machine has free)."""
    from rasterio.windows import Window

    big = tmp_path / "big.tif"
    with rasterio.open(big, "w", driver="GTiff", width=300_000, height=300_000, count=1, dtype="uint8", crs="EPSG:32611",
                       transform=from_origin(500000, 4000000, 0.3, 0.3), tiled=True, blockxsize=1024, blockysize=1024,
                       SPARSE_OK=True, BIGTIFF="YES") as dst:
        dst.write(np.full((1, 256, 256), 255, np.uint8), window=Window(0, 0, 256, 256))
    assert big.stat().st_size < 10_000_000
    result = CliRunner().invoke(cli, ["evaluate", str(big), str(big)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "is 300000x300000 px: scoring it whole takes about" in result.output and "gdal_retile.py -ps" in result.output
    assert "GEOCCSEG_NO_MEMORY_CHECK=1" in result.output


def test_the_room_under_a_control_group_limit_counts_droppable_cache_free(tmp_path: Path) -> None:
    """In a container the machine's available memory is not what the process may take: the
    control group's limit is, less what the group uses, its page cache that can be dropped aside."""
    from geoccseg.io.memory import _room

    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("536870912\n")
    (tmp_path / "memory.stat").write_text("anon 400000000\ninactive_file 104857600\nactive_file 3000\n")
    assert _room(tmp_path, "memory.max", "memory.current", "inactive_file") == 1073741824 - 536870912 + 104857600
    (tmp_path / "memory.max").write_text("max\n")
    assert _room(tmp_path, "memory.max", "memory.current", "inactive_file") is None
    assert _room(tmp_path / "absent", "memory.max", "memory.current", "inactive_file") is None


def test_the_scores_json_never_replaces_the_aoi_it_reads(vegas: Path, tmp_path: Path) -> None:
    """Review V7: --json was checked against PRED and TRUTH only: `--aoi area.geojson --json
    area.geojson --overwrite` read the AOI, then replaced it with the scores."""
    from click.testing import CliRunner
    from shapely.geometry import box

    from geoccseg.cli import cli

    truth = vegas / "vegas_img0_roads.geojson"
    area = tmp_path / "area.geojson"
    gpd.GeoDataFrame(geometry=[box(*gpd.read_file(truth).total_bounds)], crs="EPSG:4326").to_file(area)
    before = area.read_bytes()
    result = CliRunner().invoke(cli, ["evaluate", str(truth), str(truth), "--aoi", str(area), "--json", str(area), "--overwrite"])
    assert result.exit_code == 2 and "is also an input" in result.output and result.output.count("\n") == 1, result.output
    assert area.read_bytes() == before


def test_a_raster_with_a_crs_but_no_geotransform_is_refused_in_one_line(vegas: Path, tmp_path: Path) -> None:
    """Review V4: a GeoTIFF written with a CRS and no transform (rasterio writes the identity) was
    taken as georeferenced: vectorised in EPSG:4326 it ended in a NaN pixel size traceback, in a
    projected CRS its lines were written at (0, 0) upside down, and evaluate scored 0 silently."""
    from click.testing import CliRunner

    from geoccseg.cli import cli

    probability = np.zeros((200, 200), dtype=np.uint8)
    probability[100, 20:180] = 255
    for crs in ("EPSG:4326", "EPSG:32611"):
        path = tmp_path / f"prob_{crs[5:]}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8", crs=crs) as dst:
            dst.write(probability[None])
        for args in (["vectorize", str(path), "-o", str(tmp_path / "lines.gpkg")],
                     ["evaluate", str(path), str(vegas / "vegas_img0_roads.geojson")]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
            assert "has a CRS but no georeferencing (identity transform); georeference it first" in result.output
    assert not (tmp_path / "lines.gpkg").exists()


def test_a_uint8_class_map_is_not_read_as_probabilities_in_silence(vegas: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review V3: an untagged uint8 raster was always read as value / 255: a class map (0
    background, 1 road, 2 building) drew "road: 0 lines" into an empty file, and as PRED scored 0
    on every metric, without a word. A percent map (0-100) drew nothing either. They are warned
    about (not refused: another tool's probabilities of a scene without roads look the same)."""
    from click.testing import CliRunner

    from geoccseg.cli import cli

    with rasterio.open(vegas / "vegas_img0_rgb.tif") as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8", "crs": src.crs,
                   "transform": src.transform}
    classes = np.zeros((profile["height"], profile["width"]), dtype=np.uint8)
    classes[600:640, 100:1200] = 1
    classes[200:300, 200:300] = 2
    with rasterio.open(tmp_path / "classes.tif", "w", **profile) as dst:
        dst.write(classes[None])
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "classes.tif"), "-o", str(tmp_path / "lines.gpkg")])
    assert result.exit_code == 0 and "holds values up to 2, probabilities of at most 0.01" in caplog.text, result.output
    assert "if it holds a class map (0 background, 1 road, ...): make the class to draw 255" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "classes.tif"), str(vegas / "vegas_img0_roads.geojson"),
                                          "--no-graph-metrics"])
    assert result.exit_code == 0 and "holds only the values 0, 1, 2, read as probabilities" in caplog.text, result.output
    with rasterio.open(tmp_path / "percent.tif", "w", **profile) as dst:
        dst.write((classes == 1).astype(np.uint8)[None] * 100)
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "percent.tif"), "-o", str(tmp_path / "lines2.gpkg")])
    assert result.exit_code == 0 and "holds values up to 100, probabilities of at most 0.39" in caplog.text, result.output
    assert "if it holds percentages (0-100): rescale them to 0-255 first" in caplog.text


def test_truth_lines_narrower_than_a_pixel_are_burnt_along_their_path(tmp_path):
    """--line-width-m narrower than the grid's pixels burnt dashes (a buffer covers a pixel centre in
    some columns only), unlike training, which burns a line label's path too."""
    from geoccseg.evaluate.files import Raster, burn_lines

    line = LineString([(500000.3, 4000050.2), (500090.7, 4000061.9)])  # slanted, 91 m
    gpd.GeoDataFrame(geometry=[line], crs="EPSG:32611").to_file(tmp_path / "crack.gpkg")
    grid = Raster(path=tmp_path / "grid.tif", values=np.zeros((100, 100), np.uint8), valid=np.ones((100, 100), bool),
                  crs=rasterio.crs.CRS.from_epsg(32611), transform=from_origin(500000.0, 4000100.0, 1.0, 1.0))
    burnt = burn_lines(tmp_path / "crack.gpkg", grid, 0.1, "TRUTH")
    columns = np.flatnonzero(burnt.any(axis=0))
    assert columns[0] == 0 and columns[-1] == 90 and len(columns) == 91
