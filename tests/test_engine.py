"""Inference engines (issue 18): ONNX Runtime and OpenVINO give PyTorch's probabilities, and their
export cache is rebuilt, never used, when it is stale or tampered with."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from PIL import Image

import geoccseg
from geoccseg.cores import usable_cores
from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.inference import export
from geoccseg.inference.array import predict_array
from geoccseg.inference.blend import ChipGrid
from geoccseg.inference.engine import build_engine, clear_sessions, cpu_has_bf16, resolve_engine, settle_engine
from geoccseg.inference.export import export_key, exported_model
from geoccseg.inference.predict import PredictOptions, predict_scene
from geoccseg.io.bundle import resolve_model
from geoccseg.models import Bundle, load_bundle

TOLERANCE = 2
"""Largest difference of uint8 probabilities (p x 255) between the engines: 2/255."""

# 390 x 390 model pixels (the 0.3 m sample at the road model's 1 m): 4 chips, two of them cut at
# the edge to 198 px, so the padding to a multiple of 32 px is exercised
OPTIONS = PredictOptions(tile_px=256, overlap_px=64, block_px=512, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def road() -> Bundle:
    return load_bundle(resolve_model("road"))


@pytest.fixture(scope="module")
def crack() -> Bundle:
    return load_bundle(resolve_model("crack"))


@pytest.fixture(scope="module")
def scene(vegas: Path) -> Path:
    return vegas / "vegas_img0_rgb.tif"


@pytest.fixture(scope="module")
def torch_probability(scene: Path, road: Bundle, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The road model's uint8 probabilities of the sample through PyTorch (masked where nodata)."""
    out = predict_scene(scene, road, tmp_path_factory.mktemp("torch") / "p.tif", _with(engine="torch"), progress=False)
    return _read(out)


def _with(**changes) -> PredictOptions:
    return PredictOptions(**{**vars(OPTIONS), **changes})


def _read(path: Path) -> np.ma.MaskedArray:
    with rasterio.open(path) as src:
        return src.read(masked=True).astype(np.int64)


def _largest_difference(a: np.ma.MaskedArray, b: np.ma.MaskedArray) -> int:
    assert (a.mask == b.mask).all()
    return int(np.abs(a - b).max())


def _cached_pair(cache: Path) -> tuple[Path, Path]:
    (onnx,) = sorted((cache / "onnx").glob("*.onnx"))
    return onnx, onnx.with_suffix(".json")


def test_onnx_and_torch_give_the_same_scene_probabilities(scene: Path, road: Bundle, torch_probability: np.ndarray, tmp_path: Path) -> None:
    out = predict_scene(scene, road, tmp_path / "onnx.tif", _with(engine="onnx"), progress=False)
    onnx = _read(out)
    assert onnx.shape == torch_probability.shape and onnx.max() > 200  # the scene's roads are there
    assert _largest_difference(onnx, torch_probability) <= TOLERANCE
    with rasterio.open(out) as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == "onnx"
    auto = predict_scene(scene, road, tmp_path / "auto.tif", OPTIONS, progress=False)
    with rasterio.open(auto) as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == resolve_engine("auto", "cpu") == "onnx"


def test_openvino_and_torch_give_the_same_scene_probabilities(scene: Path, road: Bundle, torch_probability: np.ndarray,
                                                              tmp_path: Path) -> None:
    out = predict_scene(scene, road, tmp_path / "openvino.tif", _with(engine="openvino"), progress=False)
    openvino = _read(out)
    assert openvino.shape == torch_probability.shape and openvino.max() > 200
    assert _largest_difference(openvino, torch_probability) <= TOLERANCE
    with rasterio.open(out) as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == "openvino"


def test_cli_engine_choice_runs_and_is_recorded(scene: Path, torch_probability: np.ndarray, tmp_path: Path) -> None:
    prob = tmp_path / "p.tif"
    result = CliRunner().invoke(cli, [
        "predict", str(scene), "-o", str(tmp_path / "roads.gpkg"), "--prob-out", str(prob), "--engine", "torch",
        "--tile-px", "256", "--overlap-px", "64", "--block-px", "512", "--batch-size", "2", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    with rasterio.open(prob) as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == "torch"
    assert _largest_difference(_read(prob), torch_probability) == 0


def test_onnx_and_torch_give_the_same_crack_photo_probabilities(data_dir: Path, tmp_path: Path) -> None:
    photo = data_dir / "cfd" / "images" / "002.jpg"  # 480 x 320 px: chips of 256 px, edge chips cut
    pngs = {}
    for engine in ("torch", "onnx", "openvino"):
        out = tmp_path / engine
        result = CliRunner().invoke(cli, ["predict", str(photo), "-o", str(out), "--engine", engine, "--no-overlay", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "summary.json").read_text())["run"]["engine"] == engine
        pngs[engine] = np.asarray(Image.open(out / "probability" / "002.png"), dtype=np.int64)
    assert pngs["onnx"].shape == pngs["openvino"].shape == (320, 480) and pngs["torch"].max() > 200
    assert np.abs(pngs["onnx"] - pngs["torch"]).max() <= TOLERANCE
    assert np.abs(pngs["openvino"] - pngs["torch"]).max() <= TOLERANCE


@pytest.mark.parametrize(("engine", "damage"), [("onnx", "tampered"), ("onnx", "stale"), ("openvino", "tampered")])
def test_a_tampered_or_stale_cached_export_is_rebuilt_not_used(
    engine: str, damage: str, scene: Path, road: Bundle, crack: Bundle, torch_probability: np.ndarray, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The cached road export is replaced by the crack model's (a valid ONNX model of other weights):
    with the road sidecar kept (the file's SHA-256 differs from the record) or with the crack
    model's sidecar too (the record is of another key). Used, it would give crack probabilities."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    clear_sessions()
    predict_scene(scene, road, tmp_path / "first.tif", _with(engine=engine), progress=False)
    road_onnx, road_sidecar = _cached_pair(cache)
    good, record = road_onnx.read_bytes(), json.loads(road_sidecar.read_text())
    assert record["key"] == road_onnx.stem == export_key(road.model, 3)
    assert record["geoccseg_version"] == geoccseg.__version__

    other = tmp_path / "other"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(other))
    exported_model(crack.model, 3)
    crack_onnx, crack_sidecar = _cached_pair(other)
    shutil.copyfile(crack_onnx, road_onnx)
    if damage == "stale":
        shutil.copyfile(crack_sidecar, road_sidecar)  # consistent with its bytes, but of another key
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    clear_sessions()  # a new process, as far as the engine is concerned
    with caplog.at_level(logging.WARNING, logger="geoccseg.inference.export"):
        out = predict_scene(scene, road, tmp_path / "again.tif", _with(engine=engine), progress=False)
    assert _largest_difference(_read(out), torch_probability) <= TOLERANCE
    assert road_onnx.read_bytes() == good and json.loads(road_sidecar.read_text())["key"] == road_onnx.stem
    assert "does not match its record" in caplog.text


@pytest.mark.parametrize("where", ["files others may write", "a folder others may write", "a linked folder", "another user's files"])
def test_a_forged_export_in_a_cache_others_can_write_is_not_used(
    where: str, road: Bundle, crack: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A record is only as good as who may write it: the crack model's export under the road
    model's key, with a record that matches its bytes, planted where someone else could have
    (a cache folder shared through a link, files others may write, files of another user)."""
    if where == "another user's files" and os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    good = exported_model(road.model, 3)
    road_onnx, road_sidecar = _cached_pair(cache)
    assert road_onnx.stat().st_mode & 0o777 == road_sidecar.stat().st_mode & 0o777 == 0o600
    assert (cache / "onnx").stat().st_mode & 0o777 == 0o700
    forged = exported_model(crack.model, 3)
    record = json.loads(road_sidecar.read_text()) | {"onnx_sha256": hashlib.sha256(forged).hexdigest()}
    if where == "a linked folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        (cache / "onnx").rename(tmp_path / "mine")
        (cache / "onnx").symlink_to(shared)
        road_onnx, road_sidecar = shared / road_onnx.name, shared / road_sidecar.name
    road_onnx.write_bytes(forged)
    road_sidecar.write_text(json.dumps(record))
    if where == "files others may write":
        road_onnx.chmod(0o666)
        road_sidecar.chmod(0o666)
    elif where == "a folder others may write":
        (cache / "onnx").chmod(0o777)
    elif where == "another user's files":
        os.chown(road_onnx, 12345, 12345)
        os.chown(road_sidecar, 12345, 12345)
    with caplog.at_level(logging.WARNING, logger="geoccseg.inference.export"):
        assert exported_model(road.model, 3) == good
    reason = {"files others may write": "writable by other users", "a folder others may write": "writable by other users",
              "a linked folder": "a symbolic link", "another user's files": "owned by another user"}[where]
    assert reason in caplog.text
    if where in ("a linked folder", "a folder others may write"):
        assert road_onnx.read_bytes() == forged  # neither read nor written
    else:
        assert road_onnx.read_bytes() == good and road_onnx.stat().st_uid == os.geteuid()


def test_an_unwritable_cache_exports_for_the_run_only(scene: Path, road: Bundle, torch_probability: np.ndarray, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GEOCCSEG_CACHE", str(blocker))
    clear_sessions()
    with caplog.at_level(logging.WARNING, logger="geoccseg.inference.export"):
        out = predict_scene(scene, road, tmp_path / "p.tif", _with(engine="onnx"), progress=False)
    (warning,) = [r.getMessage() for r in caplog.records if "cannot write the ONNX cache" in r.getMessage()]
    assert "\n" not in warning and "for this run only" in warning
    assert blocker.read_text() == "a file where the cache folder should be"
    assert _largest_difference(_read(out), torch_probability) <= TOLERANCE


def test_blocks_reuse_the_engine_instead_of_hashing_the_weights_again(scene: Path, road: Bundle, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The onnx engine's cache key hashes every weight: once for the run and once for the process's
    engine, not again for each block (4 blocks here)."""
    hashed = []
    original = export.state_sha256
    monkeypatch.setattr(export, "state_sha256", lambda model: hashed.append(model) or original(model))
    options = _with(engine="onnx", tile_px=128, overlap_px=32, block_px=256)
    assert len(ChipGrid.create(390, 390, 128, 32, 256).blocks()) == 4
    out = predict_scene(scene, road, tmp_path / "p.tif", options, progress=False)
    assert _read(out).count() > 0
    assert len(hashed) == 2


def test_changed_weights_get_a_new_engine(scene: Path, road: Bundle, tmp_path: Path) -> None:
    """The engine a process keeps for its blocks belongs to the weights of that run: weights changed
    in memory between two runs are exported again, as PyTorch runs them."""
    bundle = Bundle(model=copy.deepcopy(road.model), meta=road.meta, path=road.path)
    before = _read(predict_scene(scene, bundle, tmp_path / "before.tif", _with(engine="onnx"), progress=False))
    with torch.no_grad():
        bundle.model.seg_head[1].bias += torch.tensor([0.0, 3.0])  # more road everywhere
    after = _read(predict_scene(scene, bundle, tmp_path / "after.tif", _with(engine="onnx"), progress=False))
    expected = _read(predict_scene(scene, bundle, tmp_path / "torch.tif", _with(engine="torch"), progress=False))
    assert _largest_difference(after, expected) <= TOLERANCE
    assert _largest_difference(after, before) > 100


class _Unexportable(torch.nn.Module):
    """A tiny network ONNX cannot export: ``aten::cummax`` has no ONNX opset 17 form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward_logits(self, chips: torch.Tensor) -> torch.Tensor:
        return torch.cummax(self.conv(chips), dim=-1).values


def test_auto_falls_back_to_torch_where_the_network_cannot_be_exported(scene: Path, road: Bundle, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The exporter really fails (nothing patched): ``auto`` predicts with torch, says so in one
    line and records it; an explicit ``onnx`` (or int8, which has no torch engine) is an error."""
    torch.manual_seed(0)
    bundle = Bundle(model=_Unexportable().eval(), meta=road.meta, path=road.path)
    image = np.random.default_rng(0).integers(0, 256, (3, 96, 80), dtype=np.uint8)
    expected = predict_array(bundle, image, device="cpu", engine="torch")
    with caplog.at_level(logging.WARNING, logger="geoccseg.inference.engine"):
        auto = predict_array(bundle, image, device="cpu", engine="auto")
    np.testing.assert_array_equal(auto, expected)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "geoccseg.inference.engine"]
    assert "\n" not in warning and "the onnx engine cannot run (cannot export the network to ONNX (" in warning
    assert "aten::cummax" in warning and warning.endswith("; predicting with the torch engine")
    with pytest.raises(GeoccsegError, match=r"^cannot export the network to ONNX \(.*cummax.*\); use --engine torch$"):
        predict_array(bundle, image, device="cpu", engine="onnx")
    with pytest.raises(GeoccsegError, match="cannot export the network to ONNX"):
        settle_engine("auto", "cpu", bundle.model, bundle.meta, "int8")
    out = predict_scene(scene, bundle, tmp_path / "p.tif", _with(engine="auto"), progress=False)
    with rasterio.open(out) as src:
        assert src.tags()["GEOCCSEG_ENGINE"] == "torch"  # the engine that ran


def test_a_failing_export_prints_nothing_but_keeps_its_first_line(capfd: pytest.CaptureFixture[str]) -> None:
    """The exporter's C++ code prints the whole TorchScript graph to fd 1 when it fails: that is
    silenced, the error keeps the failure's first line, and the descriptors work again afterwards."""
    with pytest.raises(GeoccsegError, match=r"^cannot export the network to ONNX \(.*aten::cummax.*\); use --engine torch$"):
        export.export_onnx(_Unexportable().eval(), 3)
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err and len(out + err) < 300, (out + err)[:300]
    print("after", flush=True)
    os.write(2, b"after\n")
    assert capfd.readouterr() == ("after\n", "after\n")


def test_quiet_output_silences_the_descriptors_and_restores_them_when_the_block_raises(capfd: pytest.CaptureFixture[str]) -> None:
    """What C++ code writes to fds 1 and 2 (``os.write`` here) is dropped; capfd's own ``sys.stdout``
    bypasses fd 1, so Python's prints are not what this checks."""
    os.write(1, b"before\n")
    with pytest.raises(RuntimeError), export.quiet_output():
        os.write(1, b"C++ out\n")
        os.write(2, b"C++ err\n")
        raise RuntimeError
    os.write(1, b"after\n")
    os.write(2, b"after\n")
    assert capfd.readouterr() == ("before\nafter\n", "after\n")


def test_onnx_and_openvino_run_with_the_threads_torch_has(road: Bundle, torch_threads) -> None:
    torch_threads(3)  # neither 1 nor this machine's cores: the count comes from torch, not from a default
    engine = build_engine("onnx", road.model, "cpu", road.meta)
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    engine = build_engine("openvino", road.model, "cpu", road.meta)  # OpenVINO takes no more threads than the process has cores
    cores = usable_cores()
    assert engine.compiled.get_property("INFERENCE_NUM_THREADS") == min(3, cores)
    assert str(engine.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_unknown_engine_is_one_line_error(scene: Path, road: Bundle, tmp_path: Path) -> None:
    with pytest.raises(GeoccsegError, match=r"^unknown engine 'tensorrt'; use auto, torch, onnx or openvino$"):
        geoccseg.predict(scene, road, engine="tensorrt")
    with pytest.raises(GeoccsegError, match="unknown engine"):
        predict_scene(scene, road, tmp_path / "p.tif", _with(engine="OpenVINO"), progress=False)
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "roads.gpkg"), "--engine", "tensorrt"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["geoccseg: error: unknown engine 'tensorrt'; use auto, torch, onnx or openvino"]
    assert not list(tmp_path.iterdir())


def test_onnx_without_onnxruntime_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(GeoccsegError, match=r"needs ONNX Runtime and onnx: pip install onnxruntime onnx"):
        resolve_engine("onnx", "cpu")
    assert resolve_engine("auto", "cpu") == "torch"


def test_openvino_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with pytest.raises(GeoccsegError, match=r"^--engine openvino needs OpenVINO: pip install 'geoccseg\[openvino\]'"):
        resolve_engine("openvino", "cpu")
    assert resolve_engine("auto", "cpu", "bf16") == "torch"  # bf16 falls back to the torch engine
    assert resolve_engine("auto", "cpu") == "onnx"


def test_onnx_and_openvino_are_refused_on_cuda() -> None:
    with pytest.raises(GeoccsegError, match="--engine onnx runs on the CPU"):
        resolve_engine("onnx", "cuda")
    with pytest.raises(GeoccsegError, match="--engine openvino runs on the CPU"):
        resolve_engine("openvino", "cuda")
    assert resolve_engine("auto", "cuda") == "torch" == resolve_engine("auto", "cuda", "bf16")
    with pytest.raises(GeoccsegError, match="--precision int8 runs on the CPU with the onnx engine .*; use --device cpu"):
        resolve_engine("auto", "cuda", "int8")  # auto means torch on CUDA: the fix is the device, not the engine


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_an_export_the_runtime_cannot_load_is_a_one_line_error(runtime: str) -> None:
    from geoccseg.inference.engine import OnnxEngine, OpenVinoEngine

    engine = {"onnx": OnnxEngine, "openvino": OpenVinoEngine}[runtime]
    with pytest.raises(GeoccsegError, match="cannot (load|compile) the network's export .*; use --engine torch") as info:
        engine(b"not an ONNX model", threads=1)
    assert "\n" not in str(info.value)


def test_reduced_precisions_are_wired_in_and_recorded(scene: Path, road: Bundle, torch_probability: np.ndarray, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 (a quantised export on the onnx engine, cached under its own key) and bf16 (the torch
    engine under bfloat16 autocast; OpenVINO in bf16 where the CPU has bf16 instructions) predict
    the scene and say so; whether they are kept is for the benchmark to measure, so the bound here
    is loose."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    clear_sessions()
    runs = [("onnx", "int8"), ("torch", "bf16")] + [("openvino", "bf16")] * cpu_has_bf16()
    for engine, precision in runs:
        out = predict_scene(scene, road, tmp_path / f"{engine}-{precision}.tif", _with(engine=engine, precision=precision), progress=False)
        with rasterio.open(out) as src:
            assert src.tags()["GEOCCSEG_ENGINE"] == f"{engine}-{precision}"
        probability = _read(out)
        assert (probability.mask == torch_probability.mask).all() and probability.max() > 200
        assert np.abs(probability - torch_probability).mean() < 4  # mean difference, in 1/255
    records = [json.loads(p.read_text()) for p in (cache / "onnx").glob("*.json")]
    assert len(records) == 2  # the fp32 export (quantised to int8, run by OpenVINO in bf16), and the int8 model
    assert resolve_engine("auto", "cpu", "int8") == "onnx"
    assert resolve_engine("auto", "cpu", "bf16") == ("openvino" if cpu_has_bf16() else "torch")
    with pytest.raises(GeoccsegError, match="bf16 runs on --engine openvino or torch, or auto"):
        resolve_engine("onnx", "cpu", "bf16")
    with pytest.raises(GeoccsegError, match="int8 runs on the CPU with --engine onnx"):
        resolve_engine("openvino", "cpu", "int8")
    with pytest.raises(GeoccsegError, match="int8 runs on the CPU with --engine onnx"):
        resolve_engine("torch", "cpu", "int8")
    with pytest.raises(GeoccsegError, match=r"^unknown precision 'fp16'; use fp32, bf16 or int8$"):
        PredictOptions(precision="fp16").check()


def test_concurrent_exports_of_one_bundle_leave_a_valid_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes export the same bundle into one empty cache at once: both get the model, and
    what is left is one valid pair (whole files, matching their record) and no temporary file."""
    import subprocess

    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    code = (
        "import hashlib, sys\n"
        "from geoccseg.inference.export import exported_model\n"
        "from geoccseg.io.bundle import resolve_model\n"
        "from geoccseg.models import load_bundle\n"
        "sys.stdin.read()\n"  # both start exporting when the test closes their stdin
        "print(hashlib.sha256(exported_model(load_bundle(resolve_model('road')).model, 3)).hexdigest())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        proc.stdin.close()
    results = [(proc.stdout.read(), proc.stderr.read(), proc.wait(timeout=300)) for proc in procs]
    assert [code for _, _, code in results] == [0, 0], [err for _, err, _ in results]
    assert not [err for _, err, _ in results if "warning" in err]  # neither found the other's file half-written or in its way
    onnx, sidecar = _cached_pair(cache)
    assert sorted(p.name for p in (cache / "onnx").iterdir()) == sorted([onnx.name, sidecar.name])
    record = json.loads(sidecar.read_text())
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert record["onnx_sha256"] == digest == results[0][0].strip() == results[1][0].strip()


def test_the_cache_warns_when_it_grows_and_clear_removes_only_the_exports(
    road: Bundle, crack: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEOCCSEG_CACHE", str(cache))
    monkeypatch.setattr(export, "CACHE_WARN_BYTES", 20_000_000)  # more than one export (12.7 MB), less than two
    with caplog.at_level(logging.WARNING, logger="geoccseg.inference.export"):
        exported_model(road.model, 3)
        assert "geoccseg cache --clear" not in caplog.text
        exported_model(crack.model, 3)
    assert "holds 2 exports" in caplog.text and "`geoccseg cache --clear` empties it" in caplog.text
    own = [cache / "onnx" / "notes.txt", cache / "onnx" / ("0" * 63 + ".onnx"), cache / "elsewhere.onnx",
           cache / "onnx" / ("a" * 64 + ".json")]  # not exports (the last is named like a record but records no key): kept
    for path in own:
        path.write_text("the user's")
    listed = CliRunner().invoke(cli, ["cache", "-q"])  # the listing is the command's result: shown under -q too
    assert listed.exit_code == 0 and f"{cache / 'onnx'}: 2 export(s)" in listed.output, listed.output
    cleared = CliRunner().invoke(cli, ["cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.output.startswith("removed 2 export(s)"), cleared.output
    assert sorted((cache / "onnx").iterdir()) == sorted([*own[:2], own[3]]) and all(p.read_text() == "the user's" for p in own)
    assert exported_model(road.model, 3)  # exported again on demand



@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtime_that_fails_to_import_is_one_line_and_auto_falls_back(runtime: str, scene: Path, tmp_path: Path) -> None:
    """Review E7: a runtime whose import fails (a wheel built for another NumPy, a missing system
    library) was found installed, chosen, then its ImportError was a traceback; ``auto`` did not
    fall back to torch. Real processes, with a package of that name that fails to import first on
    the path."""
    broken = tmp_path / "site" / runtime
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libbroken.so: cannot open shared object file')\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    engine = "onnx" if runtime == "onnxruntime" else "openvino"
    name = "ONNX Runtime" if runtime == "onnxruntime" else "OpenVINO"

    def predict(*options: str) -> subprocess.CompletedProcess:
        out = tmp_path / f"roads{len(list(tmp_path.glob('roads*')))}.gpkg"
        return subprocess.run([sys.executable, "-m", "geoccseg.cli", "predict", str(scene), "-o", str(out), "--device", "cpu", *options],
                              capture_output=True, text=True, env=env, timeout=300)

    failed = predict("--engine", engine)
    assert failed.returncode in (1, 2) and "Traceback" not in failed.stderr, failed.stderr  # 2: refused with the options
    assert (f"geoccseg: error: {name} is installed but cannot be imported (libbroken.so: cannot open shared object file; "
            f"pip install --force-reinstall {runtime} may mend it); use --engine torch") in failed.stderr
    # auto at fp32 runs ONNX Runtime on the CPU; at bf16 OpenVINO where it runs bf16 (review S6: its
    # broken import was an error there, not the fallback)
    auto = predict() if runtime == "onnxruntime" else predict("--precision", "bf16")
    assert auto.returncode == 0, auto.stderr
    assert f"warning: the {engine} engine cannot run ({name} is installed but cannot be imported" in auto.stderr
    assert "predicting with the torch engine" in auto.stderr


def test_cuda_autocast_computes_in_bf16_only_where_the_gpu_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review E5: torch's ``is_bf16_supported()`` says yes on GPUs before Ampere (emulated, slow)
    and asks the current GPU, not the one predicting. The dtype follows the compute capability of
    the device asked for (the capability is patched: CI has no GPU)."""
    import warnings

    from geoccseg.inference.engine import autocast

    asked = []

    def capability(device):
        asked.append(str(device))
        return {"cuda:0": (7, 5), "cuda:1": (8, 0), "cuda:2": (9, 0)}[str(device)]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available, disabling autocast" on a machine without a GPU
        dtypes = [autocast(device).fast_dtype for device in ("cuda:0", "cuda:1", "cuda:2")]
    assert dtypes == [torch.float16, torch.bfloat16, torch.bfloat16] and asked == ["cuda:0", "cuda:1", "cuda:2"]
    assert not hasattr(autocast("cpu"), "fast_dtype")  # the CPU computes in float32: no autocast
