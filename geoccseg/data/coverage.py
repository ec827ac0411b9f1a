"""Label coverage: why a class has no labeled pixel inside the labeled area, in one line.

Training on labels that put no pixel of a class inside the labeled area (an empty layer, null
geometries, lines outside the scene or the AOI, a class missing from the class column) learns
nothing of that class. :func:`missing_class_message` says what the labels hold and how to fix it.
"""

from __future__ import annotations

import os

from shapely.geometry.base import BaseGeometry

from geoccseg.io.labels import Labels, RasterLabels


def missing_class_message(
    path: str | os.PathLike,
    class_name: str,
    class_index: int,
    per_scene: list[tuple[Labels, BaseGeometry, BaseGeometry | None]],
    aoi: str | os.PathLike | None,
    pixel_size_m: float,
) -> str:
    """One-line explanation of why ``class_name`` has 0 labeled pixels, with a fix.

    Args:
        path: the labels file.
        class_name: the class without pixels.
        class_index: its index (1 = first foreground class).
        per_scene: for each scene, its opened labels (scene CRS), footprint and labeled region
            (None where the scene has none).
        aoi: the AOI file, if any.
        pixel_size_m: training pixel size in metres.
    """
    head = f"labels {path}: 0 {class_name} pixels inside the labeled area"
    first = per_scene[0][0]
    if isinstance(first, RasterLabels):
        return (f"{head} (the label raster has no pixel of class {class_name} there); check its values (0/255, 0/1 "
                f"or class indices), its location and CRS" + (", and the AOI" if aoi else ""))
    if first.features == 0:
        return f"{head} (the file holds no feature); draw the {class_name} lines or polygons in it"
    if first.empty == first.features:
        return f"{head} ({first.features} feature(s), all with a null or empty geometry); export the labels again with their geometries"
    n_class = first.class_shapes.get(class_index, 0)  # in the whole file, not one scene's share
    if n_class == 0:
        return (f"{head} (none of its {first.features - first.empty} feature(s) is of class {class_name}); "
                "check --class-column and --classes")
    in_scene: set[int] = set()
    in_area: set[int] = set()
    for labels, footprint, labeled in per_scene:
        shapes = labels.shapes[labels.shapes["class_index"] == class_index]
        in_scene |= set(shapes.loc[shapes.intersects(footprint), "feature"].tolist())
        if labeled is not None:
            in_area |= set(shapes.loc[shapes.intersects(labeled), "feature"].tolist())
    scenes = "scene" if len(per_scene) == 1 else "scenes"
    found = f"{n_class} {class_name} feature(s)"
    if not in_scene:
        return f"{head} ({found}, all outside the {scenes}); check the labels' location and CRS"
    if not in_area:
        where = "the AOI" if aoi else "the labeled area (the scene less the validation AOI)"
        return (f"{head} ({found}, {len(in_scene)} in the {scenes} but none inside {where}); "
                f"draw the AOI where the labels are, or label the {class_name} features inside it")
    return (f"{head} ({found}, {len(in_area)} inside it but none on a valid pixel at {pixel_size_m:.2f} m/pixel); "
            "check the scene's nodata mask, or widen the lines with --width-m")
