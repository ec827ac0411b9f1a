"""Remote scenes: anything rasterio opens (URLs, GDAL virtual file systems), tested on a COG served
over HTTP with range requests by a server on 127.0.0.1 that the test starts and stops."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import rasterio.shutil
from click.testing import CliRunner

import geoccseg
from geoccseg.cli import cli
from geoccseg.demo import sample_scene
from geoccseg.errors import GeoccsegError
from geoccseg.io.scene import open_scene


class RangeHandler(BaseHTTPRequestHandler):
    """Serves the files of ``root`` with HTTP range requests (which GDAL's /vsicurl/ needs and Python's
    SimpleHTTPRequestHandler lacks); records the status of every response."""

    root: Path
    statuses: list[int]

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.root / self.path.split("?")[0].lstrip("/")
        if not path.is_file():
            self.statuses.append(404)
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start, end = int(match[1]), min(int(match[2]) if match[2] else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.statuses.append(206 if match else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """``(base URL, statuses)`` of an HTTP server on 127.0.0.1 serving ``tmp_path/www`` (the sample as a COG)."""
    www = tmp_path / "www"
    www.mkdir()
    rasterio.shutil.copy(sample_scene(), www / "scene.tif", driver="COG", BLOCKSIZE=256)
    statuses: list[int] = []
    handler = type("Handler", (RangeHandler,), {"root": www, "statuses": statuses})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            yield f"http://127.0.0.1:{httpd.server_address[1]}", statuses
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_predict_a_cog_served_over_http(server, tmp_path: Path) -> None:
    base, statuses = server
    local = tmp_path / "local.gpkg"
    assert CliRunner().invoke(cli, ["predict", str(tmp_path / "www" / "scene.tif"), "-o", str(local), "--device", "cpu"]).exit_code == 0
    for url in (f"/vsicurl/{base}/scene.tif", f"{base}/scene.tif"):
        out = tmp_path / f"remote{len(statuses)}.gpkg"
        result = CliRunner().invoke(cli, ["predict", url, "-o", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        remote, expected = gpd.read_file(out, layer="road"), gpd.read_file(local, layer="road")
        assert len(remote) == len(expected) > 0
        assert remote["length_m"].sum() == pytest.approx(expected["length_m"].sum())
    assert 206 in statuses  # read by ranges, not downloaded whole
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("remote")]) == 2


def test_api_and_scene_reader_open_urls(server) -> None:
    base, _ = server
    scene = open_scene(f"{base}/scene.tif")
    assert (scene.width, scene.height) == (1300, 1300) and scene.source == f"{base}/scene.tif"
    prob = geoccseg.predict(f"{base}/scene.tif", device="cpu")
    assert prob.rio.crs == "EPSG:4326" and float(prob.max()) > 0.5


def test_a_missing_remote_scene_is_a_one_line_error(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(GeoccsegError, match="cannot be opened"):
        open_scene(f"{base}/missing.tif")
    result = CliRunner().invoke(cli, ["predict", f"/vsicurl/{base}/missing.tif", "-o", str(tmp_path / "x.gpkg")])
    assert result.exit_code == 2
    assert result.output.startswith("geoccseg: error: ") and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "x.gpkg").exists()
