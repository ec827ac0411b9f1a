"""A road photo and its mask made into a scene with true centrelines (geoccseg.benchmark.truth_scene),
on real Dubai images."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from scipy import ndimage

from geoccseg.benchmark.truth_scene import NOMINAL_CRS, photo_scene
from geoccseg.data.photos import read_mask, read_photo
from geoccseg.errors import GeoccsegError


def test_photo_scene_is_georeferenced_and_its_centrelines_follow_the_mask(data_dir: Path, tmp_path: Path) -> None:
    image, mask = data_dir / "dubai-roads" / "images" / "dubai_t2_003.jpg", data_dir / "dubai-roads" / "masks" / "dubai_t2_003.png"
    scene, truth = photo_scene(image, mask, tmp_path / "scene", pixel_size_m=0.5)
    pixels, road = read_photo(image, bands=3), read_mask(mask).astype(bool)
    with rasterio.open(scene) as src:
        assert src.crs == rasterio.crs.CRS.from_string(NOMINAL_CRS)
        assert (src.width, src.height, src.count) == (pixels.shape[2], pixels.shape[1], 3)
        assert src.res == (0.5, 0.5)
        np.testing.assert_array_equal(src.read(), pixels)
        transform, shape = src.transform, (src.height, src.width)
    lines = gpd.read_file(truth)
    assert lines.crs == rasterio.crs.CRS.from_string(NOMINAL_CRS) and len(lines) > 10
    drawn = rasterio.features.rasterize(lines.geometry, out_shape=shape, transform=transform, all_touched=True).astype(bool)
    # the lines run on the road: nearly every pixel they cross is road, or next to it (simplified by 1 m)
    assert (drawn & ndimage.binary_dilation(road, iterations=3)).sum() >= 0.98 * drawn.sum()
    # and along all of it: nearly every road pixel is within a wide road's half-width of a line
    near_line = ndimage.distance_transform_edt(~drawn) * 0.5 <= 20.0
    assert (road & near_line).sum() >= 0.95 * road.sum()
    # called again, it keeps what it wrote
    before = scene.stat().st_mtime_ns, truth.stat().st_mtime_ns
    assert photo_scene(image, mask, tmp_path / "scene", pixel_size_m=0.5) == (scene, truth)
    assert (scene.stat().st_mtime_ns, truth.stat().st_mtime_ns) == before
    # another photo or pixel size in that folder is refused (the first photo's scene was read back);
    # the default settings and the same written out are one
    with pytest.raises(GeoccsegError, match="holds the scene of another photo, mask or setting"):
        photo_scene(image, mask, tmp_path / "scene", pixel_size_m=1.0)
    from geoccseg.vectorize import VectorizeParams

    assert photo_scene(image, mask, tmp_path / "scene", pixel_size_m=0.5, params=VectorizeParams(threshold=0.5)) == (scene, truth)
    # a folder without its record (older, or stopped before it) is made again, not refused
    (tmp_path / "scene" / "source.json").unlink()
    assert photo_scene(image, mask, tmp_path / "scene", pixel_size_m=0.5) == (scene, truth)
    assert (tmp_path / "scene" / "source.json").is_file()


def test_photo_scene_refuses_a_mask_of_another_size_or_without_road(data_dir: Path, tmp_path: Path) -> None:
    images, masks = data_dir / "dubai-roads" / "images", data_dir / "dubai-roads" / "masks"
    with pytest.raises(GeoccsegError, match="must match"):
        photo_scene(images / "dubai_t2_003.jpg", masks / "dubai_t3_002.png", tmp_path / "a")
    with pytest.raises(GeoccsegError, match="holds no road pixel"):
        photo_scene(images / "dubai_t7_008.jpg", masks / "dubai_t7_008.png", tmp_path / "b")
    with pytest.raises(GeoccsegError, match="pixel_size_m"):
        photo_scene(images / "dubai_t2_003.jpg", masks / "dubai_t2_003.png", tmp_path / "c", pixel_size_m=0)
    assert not any((tmp_path / "a").iterdir()) and not any((tmp_path / "b").iterdir())
