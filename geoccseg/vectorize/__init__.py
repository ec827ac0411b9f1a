"""Vectorise probability maps into polylines that GIS analysts use directly.

The data flow, one module per step:

- :mod:`~geoccseg.vectorize.mask`: threshold or hysteresis, small blobs out, small holes in;
- :mod:`~geoccseg.vectorize.skeleton`: skeleton and width per pixel, as sparse pixels;
- :mod:`~geoccseg.vectorize.graph`: skeleton pixels → nodes and branches;
- :mod:`~geoccseg.vectorize.prune` and :mod:`~geoccseg.vectorize.bridge`: spurs out, gaps closed;
- :mod:`~geoccseg.vectorize.lines`: the one vectoriser, sparse pixels → attributed LineStrings;
- :mod:`~geoccseg.vectorize.array` and :mod:`~geoccseg.vectorize.blocks`: entry points for an
  in-memory array and for a GeoTIFF of any size, read block by block;
- :mod:`~geoccseg.vectorize.network`: lines → the topological road graph (networkx), written
  to and read from a GeoPackage.

All lengths and areas are in metres, whatever the CRS.
"""

from geoccseg.vectorize.array import vectorize_array
from geoccseg.vectorize.blocks import vectorize_raster
from geoccseg.vectorize.network import read_graph, road_graph, write_graph
from geoccseg.vectorize.params import VectorizeParams

__all__ = ["VectorizeParams", "read_graph", "road_graph", "vectorize_array", "vectorize_raster", "write_graph"]
