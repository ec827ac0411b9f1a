"""Remote scenes: anything rasterio opens (URLs, GDAL virtual file systems), tested on a COG served
over HTTP with range requests by a server on 127.0.0.1 that the test starts and stops."""

from __future__ import annotations

import json
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
from geoccseg.io.catalog import sample_scene
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


def _roadmask_cog(vegas: Path, dest: Path, threshold: str) -> Path:
    """The sample's 0/255 road mask as a COG tagged like predict's probability raster, with ``threshold``."""
    tagged = dest.parent.parent / "tagged.tif"
    rasterio.shutil.copy(vegas / "vegas_pan_roadmask.tif", tagged)
    with rasterio.open(tagged, "r+") as ds:
        ds.update_tags(GEOCCSEG_PROBABILITY="uint8", GEOCCSEG_THRESHOLD=threshold)
    rasterio.shutil.copy(tagged, dest, driver="COG", BLOCKSIZE=256)
    return dest


def test_info_reads_a_scene_served_over_http(server, tmp_path: Path) -> None:
    base, statuses = server
    local = CliRunner().invoke(cli, ["info", str(tmp_path / "www" / "scene.tif"), "--json"])
    assert local.exit_code == 0, local.output
    for url in (f"{base}/scene.tif", f"/vsicurl/{base}/scene.tif"):
        result = CliRunner().invoke(cli, ["info", url, "--json"])
        assert result.exit_code == 0, result.output
        facts, expected = json.loads(result.output), json.loads(local.output)
        assert facts["path"] == url  # the URL as given, its "//" kept
        assert {k: facts[k] for k in ("width", "height", "crs", "nodata_share")} == {k: expected[k] for k in ("width", "height", "crs", "nodata_share")}
    assert 206 in statuses


def test_vectorize_reads_a_probability_raster_served_over_http(server, vegas: Path, tmp_path: Path) -> None:
    base, statuses = server
    prob = _roadmask_cog(vegas, tmp_path / "www" / "prob.tif", threshold="0.7")
    local = tmp_path / "local.gpkg"
    assert CliRunner().invoke(cli, ["vectorize", str(prob), "-o", str(local)]).exit_code == 0
    expected = gpd.read_file(local)
    for url in (f"{base}/prob.tif", f"/vsicurl/{base}/prob.tif"):
        out = tmp_path / f"remote{len(statuses)}.gpkg"
        result = CliRunner().invoke(cli, ["vectorize", url, "-o", str(out), "-v"])
        assert result.exit_code == 0, result.output
        assert "threshold=0.7" in result.output  # the threshold recorded in the remote file
        lines = gpd.read_file(out)
        assert len(lines) == len(expected) > 0
        assert lines["length_m"].sum() == pytest.approx(expected["length_m"].sum())
    assert 206 in statuses
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("remote")]) == 2  # written here, locally


@pytest.mark.parametrize("command", ["info", "vectorize"])
def test_a_missing_remote_input_of_info_and_vectorize_is_a_one_line_error(command: str, server, tmp_path: Path) -> None:
    base, _ = server
    out = tmp_path / "x.gpkg"
    for url in (f"{base}/missing.tif", f"/vsicurl/{base}/missing.tif"):
        args = [command, url] + (["-o", str(out)] if command == "vectorize" else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("geoccseg: error: ") and result.output.count("\n") == 1, result.output
        assert "cannot be opened" in result.output and url in result.output
    assert not out.exists()


def test_suggest_keeps_a_presigned_urls_signature_out_of_its_areas(server, tmp_path: Path) -> None:
    """suggest named each area's scene by ``Path(url).name``: for a presigned URL that is
    ``scene.tif?X-Amz-Signature=...``, a credential written into a file made to be passed on."""
    base, _ = server
    out = tmp_path / "areas.gpkg"
    result = CliRunner().invoke(cli, ["suggest", f"{base}/scene.tif?X-Amz-Signature=s3cr3t&X-Amz-Expires=600", "-n", "2", "--size-m", "100", "-o",
                                      str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    areas = gpd.read_file(out)
    assert len(areas) == 2 and set(areas["scene"]) == {"scene.tif"}
    assert b"s3cr3t" not in out.read_bytes()
