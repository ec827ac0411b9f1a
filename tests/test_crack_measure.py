"""Crack measurements (geoccseg.vectorize.measure) on cracks drawn by hand in blank probability maps,
where the true length, width and direction are known."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from skimage.draw import line

from geoccseg.io.probability import decode_uint8
from geoccseg.vectorize.measure import COLUMNS, CrackParams, measure_cracks


def band(shape: tuple[int, int], rows: slice, cols: slice, value: int = 230) -> np.ndarray:
    """A uint8 probability map (p x 255) holding one axis-aligned band."""
    prob = np.zeros(shape, dtype=np.uint8)
    prob[rows, cols] = value
    return prob


@pytest.mark.parametrize("width_px", [3, 5, 6, 9, 20])
def test_straight_band_of_known_length_and_width(width_px: int) -> None:
    length_px, top, left = 200, 100, 50
    prob = band((300, 400), slice(top, top + width_px), slice(left, left + length_px))
    measured = measure_cracks(prob, image="band.png", pixel_size_mm=0.5)
    assert len(measured.branches) == 1 and measured.crack_count == 1
    crack = measured.branches.iloc[0]
    assert list(measured.branches.columns) == [*COLUMNS, "geometry"]
    assert crack["image"] == "band.png"
    assert crack["length_px"] == pytest.approx(length_px, rel=0.05)
    assert crack["mean_width_px"] == pytest.approx(width_px, abs=1.0)
    assert crack["max_width_px"] == pytest.approx(width_px, abs=1.0)
    assert crack["orientation_deg"] == pytest.approx(0, abs=1) or crack["orientation_deg"] == pytest.approx(180, abs=1)
    assert crack["probability"] == pytest.approx(230 / 255, abs=1e-6)
    assert (crack["length_mm"], crack["max_width_mm"]) == pytest.approx((crack["length_px"] * 0.5, crack["max_width_px"] * 0.5))
    # Pixel coordinates as QGIS shows a photo: x = column + 0.5, y = -(row + 0.5).
    xy = shapely.get_coordinates(crack.geometry)
    assert np.all((-xy[:, 1] - 0.5 >= top) & (-xy[:, 1] - 0.5 <= top + width_px - 1))
    assert xy[:, 0].min() >= left + 0.5 and xy[:, 0].max() <= left + length_px - 0.5
    assert measured.cracked_area_share == pytest.approx(length_px * width_px / (300 * 400), rel=0.2)
    assert measured.total_length_px == crack["length_px"] and measured.max_width_px == crack["max_width_px"]


def test_uint8_map_measures_as_the_probabilities_every_reader_decodes_from_it() -> None:
    """The probability PNG of a photo holds uint8 p x 255: measuring it gives what evaluate and the
    vectoriser read from it (value / 255), up to the last bit (it once multiplied by float32(1/255),
    one bit higher for 230)."""
    prob = band((120, 240), slice(40, 46), slice(20, 220), value=230)
    as_stored, decoded = measure_cracks(prob).branches, measure_cracks(decode_uint8(prob)).branches
    assert len(as_stored) == 1
    assert as_stored.drop(columns="geometry").equals(decoded.drop(columns="geometry"))
    assert as_stored.iloc[0]["probability"] == np.float32(230) / np.float32(255)


def test_diagonal_and_vertical_bands_have_their_direction() -> None:
    prob = np.zeros((400, 400), dtype=np.uint8)
    rows, cols = line(50, 50, 350, 350)  # down to the right: 135 deg counter-clockwise from +x with y up
    for shift in range(-2, 3):
        prob[np.clip(rows + shift, 0, 399), cols] = 255  # 5 px tall, 5 / sqrt(2) = 3.5 px across
    prob[60:340, 20:24] = 255  # vertical, 4 px wide
    measured = measure_cracks(prob)
    by_direction = measured.branches.sort_values("orientation_deg")
    vertical, diagonal = by_direction.iloc[0], by_direction.iloc[1]
    assert vertical["orientation_deg"] == pytest.approx(90, abs=1)
    assert diagonal["orientation_deg"] == pytest.approx(135, abs=1)
    assert diagonal["length_px"] == pytest.approx(300 * np.sqrt(2), rel=0.05)
    assert diagonal["mean_width_px"] == pytest.approx(5 / np.sqrt(2), abs=1.0)
    assert measured.crack_count == 2


def test_junction_pixels_are_left_out_of_the_width() -> None:
    """Where two 5 px cracks cross, the inscribed circle is about 7.5 px wide; that is not a crack width."""
    prob = band((300, 300), slice(148, 153), slice(20, 280))
    prob[20:280, 148:153] = 230
    measured = measure_cracks(prob)
    assert len(measured.branches) == 4 and measured.crack_count == 1
    assert measured.branches["max_width_px"].max() <= 5 + 1.0
    assert measured.branches["length_px"].sum() == pytest.approx(2 * 260, rel=0.05)


def test_blocks_give_the_whole_photo_result() -> None:
    prob = band((600, 700), slice(300, 305), slice(20, 680))
    prob[20:300, 400:404] = 200
    whole = measure_cracks(prob)
    blocks = measure_cracks(prob, params=CrackParams(block_px=128, halo_px=32))
    assert len(whole.branches) == 3
    assert whole.branches.drop(columns="geometry").equals(blocks.branches.drop(columns="geometry"))
    assert all(a.equals(b) for a, b in zip(whole.branches.geometry, blocks.branches.geometry))


def test_blank_photo_and_unknown_pixel_size() -> None:
    measured = measure_cracks(np.zeros((50, 60), dtype=np.uint8))
    assert len(measured.branches) == 0 and list(measured.branches.columns) == [*COLUMNS, "geometry"]
    assert (measured.crack_count, measured.total_length_px, measured.max_width_px, measured.cracked_area_share) == (0, 0.0, 0.0, 0.0)
    crack = measure_cracks(band((100, 100), slice(50, 53), slice(10, 90))).branches.iloc[0]
    assert np.isnan(crack["length_mm"]) and np.isnan(crack["max_width_mm"])
