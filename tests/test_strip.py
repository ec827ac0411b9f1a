"""``geoccseg.evaluate.strip``: the labeled western strip, and scores of the unlabeled rest only."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import LineString

from geoccseg.io.catalog import sample_scene
from geoccseg.errors import GeoccsegError
from geoccseg.evaluate import strips, score_rest

UTM = "EPSG:32611"  # Las Vegas


def test_strips_cut_the_sample_at_40_percent_of_its_width() -> None:
    split = strips(sample_scene(), 0.4)
    assert split.crs.to_epsg() == 4326
    xmin, ymin, cut, ymax = split.labeled.bounds
    assert split.rest.bounds == (cut, ymin, -115.1671176, ymax)
    assert (xmin, ymin, ymax) == pytest.approx((-115.1706276, 36.2371077, 36.2406177))
    assert (cut - xmin) / (-115.1671176 - xmin) == pytest.approx(0.4)
    crs, labeled, rest = split  # unpacks as the benchmark uses it
    assert labeled.intersection(rest).area == 0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_strips_refuse_a_share_outside_0_1(fraction: float) -> None:
    with pytest.raises(GeoccsegError, match="between 0 and 1"):
        strips(sample_scene(), fraction)


def test_score_rest_counts_only_the_unlabeled_rest() -> None:
    """Truth: one north-south road in the rest and one in the strip. Prediction: the southern half of
    the first, and a false road in the strip. Only the rest counts, so correctness is 1 and
    completeness is half the road plus the 5 m the buffer reaches past the prediction's end."""
    split = strips(sample_scene(), 0.4)
    xmin, ymin, xmax, ymax = split.rest.bounds
    x, y0, y1 = (xmin + xmax) / 2, ymin + 0.1 * (ymax - ymin), ymin + 0.9 * (ymax - ymin)
    east = LineString([(x, y0), (x, y1)])
    west = LineString([(split.labeled.bounds[0] + 0.0005, y0), (split.labeled.bounds[0] + 0.0005, y1)])
    truth = gpd.GeoSeries([east, west], crs="EPSG:4326")
    pred = gpd.GeoSeries([LineString([(x, y0), (x, (y0 + y1) / 2)]), LineString([(west.coords[0][0] + 0.0002, y0),
                                                                                  (west.coords[0][0] + 0.0002, y1)])],
                         crs="EPSG:4326").to_crs(UTM)  # any CRS: both are brought to the scene's
    length_m = float(gpd.GeoSeries([east], crs="EPSG:4326").to_crs(UTM).length.iloc[0])
    scores = score_rest(pred, truth, split, buffer_m=5.0)
    assert scores.truth_total_m == pytest.approx(length_m, rel=1e-3)
    assert scores.pred_total_m == pytest.approx(length_m / 2, rel=1e-3)
    assert scores.correctness == pytest.approx(1.0)
    assert scores.completeness == pytest.approx((length_m / 2 + 5.0) / length_m, rel=1e-3)


def test_score_rest_of_no_lines_is_zero_and_lines_need_a_crs() -> None:
    split = strips(sample_scene(), 0.4)
    truth = gpd.GeoSeries([LineString([split.rest.centroid, split.rest.exterior.coords[0]])], crs="EPSG:4326")
    scores = score_rest(gpd.GeoSeries([], crs="EPSG:4326"), truth, split)
    assert (scores.completeness, scores.correctness, scores.quality) == (0.0, 0.0, 0.0)
    with pytest.raises(GeoccsegError, match="no CRS"):
        score_rest(gpd.GeoSeries([LineString([(0, 0), (1, 1)])]), truth, split)
