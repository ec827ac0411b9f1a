"""Tests of the segmentation network: config, shapes at any size, fusion modes, init and gradients."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from geoccseg.errors import GeoccsegError
from geoccseg.models import FusionSegNet, ModelConfig, build_model, count_parameters
from geoccseg.models.network import pad_to_multiple


def first_conv(model: FusionSegNet) -> nn.Conv2d:
    """The encoder's first convolution (the one that sees the input bands)."""
    return next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("bands", "classes"), [(1, 2), (3, 3), (4, 2)])
def test_output_shapes_for_bands_and_classes(bands: int, classes: int) -> None:
    model = build_model({"in_channels": bands, "num_classes": classes, "embed_dim": 16})
    out = model(torch.rand(2, bands, 64, 96))
    assert out["logits"].shape == (2, classes, 64, 96)
    assert out["embed"].shape == (2, 16, 16, 24)
    assert first_conv(model).in_channels == bands


@pytest.mark.parametrize(("height", "width", "embed_hw"), [(250, 333, (63, 84)), (5, 7, (2, 2)), (33, 32, (9, 8))])
def test_any_size_gives_input_size_logits_and_unit_embed(height: int, width: int, embed_hw: tuple[int, int]) -> None:
    model = build_model(ModelConfig()).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, height, width))
        logits_only = model.forward_logits(torch.rand(1, 3, height, width))
    assert out["logits"].shape == (1, 2, height, width)
    assert logits_only.shape == (1, 2, height, width)
    assert out["embed"].shape == (1, 64, *embed_hw)
    torch.testing.assert_close(out["embed"].norm(dim=1), torch.ones(1, *embed_hw))


def test_forward_logits_matches_forward() -> None:
    model = build_model({}).eval()
    x = torch.rand(1, 3, 40, 70)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_logits(x), model(x)["logits"])


def test_pad_reflects_and_replicates_tiny_inputs() -> None:
    x = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 1, 3, 1)
    # Height 3 -> 4 reflects row 1; width 1 -> 4 needs 3 columns, more than the side, so replicate.
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 4)
    assert padded[0, 0, :, 0].tolist() == [0.0, 1.0, 2.0, 2.0]
    assert padded[0, 0, 1].tolist() == [1.0] * 4
    square = torch.arange(9.0).reshape(1, 1, 3, 3)
    reflected = pad_to_multiple(square, 4)
    assert reflected[0, 0].tolist() == [[0, 1, 2, 1], [3, 4, 5, 4], [6, 7, 8, 7], [3, 4, 5, 4]]
    assert pad_to_multiple(torch.zeros(1, 1, 32, 64)).shape == (1, 1, 32, 64)


def test_multi_and_single_fusion_run_and_differ_by_the_shallow_projections() -> None:
    multi = build_model({"fusion": "multi"})
    single = build_model({"fusion": "single"})
    x = torch.rand(2, 3, 64, 64)
    assert multi(x)["logits"].shape == single(x)["logits"].shape == (2, 2, 64, 64)
    # multi adds 1x1 conv + BN for stages of 32, 64, 128 channels to 64, and its 3x3 fuse conv
    # reads 4*64 instead of 64 channels: 64*(32+64+128) + 3*2*64 + 9*64*(256-64) = 125312.
    assert count_parameters(multi) - count_parameters(single) == 125312


def test_default_parameter_count_is_in_the_cpu_budget() -> None:
    assert 1_500_000 <= count_parameters(build_model({})) <= 4_000_000


def test_config_round_trip_through_json() -> None:
    config = ModelConfig(in_channels=4, num_classes=3, fusion="single", widths=(8, 16, 32, 64), embed_dim=32)
    d = json.loads(json.dumps(config.to_dict()))
    assert d["widths"] == [8, 16, 32, 64]
    back = ModelConfig.from_dict(d)
    assert back == config
    assert back.widths == (8, 16, 32, 64)


@pytest.mark.parametrize(
    ("d", "words"),
    [
        ({"encodr": "light"}, ["encodr", "encoder"]),
        ({"encoder": "vgg16"}, ["encoder", "vgg16", "resnet18"]),
        ({"fusion": "both"}, ["fusion", "both", "single"]),
        ({"num_classes": 1}, ["num_classes", "1", ">= 2"]),
        ({"in_channels": 0}, ["in_channels", ">= 1"]),
        ({"widths": [32, 64, 128]}, ["widths"]),
    ],
)
def test_bad_config_raises_one_line_error(d: dict, words: list[str]) -> None:
    with pytest.raises(GeoccsegError) as info:
        ModelConfig.from_dict(d)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_the_tensorflow_build_is_recorded_and_only_for_efficientnet_lite0() -> None:
    config = ModelConfig(encoder="efficientnet-lite0", tf_same=True)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = config.to_dict()
    del old["tf_same"]  # bundles written before the option keep timm's build
    assert ModelConfig.from_dict(old).tf_same is False
    assert "tf_same" not in ModelConfig(encoder="efficientnet-lite0").to_dict()  # what earlier releases read
    with pytest.raises(GeoccsegError, match="tf_same is a build of the efficientnet-lite0 encoder, not of light"):
        ModelConfig(tf_same=True)
    model = build_model(config).eval()
    x = torch.randn(1, 3, 64, 96)
    eps = {m.eps for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {1e-3}
    twin = build_model(ModelConfig(encoder="efficientnet-lite0")).eval()
    twin.load_state_dict(model.state_dict())  # the same weights, timm's build: other outputs
    with torch.no_grad():
        assert not torch.allclose(model.forward_logits(x), twin.forward_logits(x))


def test_wrong_band_count_is_a_user_error() -> None:
    model = build_model({"in_channels": 4})
    with pytest.raises(GeoccsegError, match="expected \\(batch, 4, height, width\\)"):
        model(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("classes", [2, 3])
def test_initial_foreground_probability_is_the_prior(classes: int) -> None:
    model = build_model({"num_classes": classes}).eval()
    with torch.no_grad():
        probs = model.forward_logits(torch.rand(2, 3, 64, 64)).softmax(dim=1)
    for k in range(1, classes):
        assert probs[:, k].mean().item() == pytest.approx(0.05, abs=0.005)
    assert probs[:, 0].mean().item() == pytest.approx(1 - 0.05 * (classes - 1), abs=0.01)


def test_resnet18_builds_without_weights_and_runs() -> None:
    model = build_model({"encoder": "resnet18", "in_channels": 4})
    assert model.encoder.out_channels == [64, 128, 256, 512]
    assert first_conv(model).in_channels == 4
    out = model(torch.rand(2, 4, 48, 40))
    assert out["logits"].shape == (2, 2, 48, 40)
    assert out["embed"].shape == (2, 64, 12, 10)


@pytest.mark.parametrize("output", ["logits", "embed"])
def test_gradients_reach_the_first_conv(output: str) -> None:
    model = build_model({})
    out = model(torch.rand(2, 3, 64, 64))
    weights = torch.randn_like(out[output])
    (out[output] * weights).sum().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None
    assert grad.abs().sum().item() > 0
    if output == "logits":
        assert all(p.grad is None for p in model.proj_head.parameters())
    else:
        assert all(p.grad is None for p in model.seg_head.parameters())


@pytest.mark.parametrize(("timm_name", "tf_same"), [("efficientnet_lite0", False), ("tf_efficientnet_lite0", True)])
def test_efficientnet_lite0_is_timms_network_module_for_module(timm_name: str, tf_same: bool) -> None:
    """The in-house EfficientNet-Lite0 (no timm import at prediction) has timm's keys and arithmetic:
    shipped bundles load into it, and with the same weights both give the same features and gradients.
    The TensorFlow build (BatchNorm eps 1e-3, 'SAME' padding) is timm's tf_ model of the same name."""
    import timm
    from geoccseg.models.efficientnet_lite import EfficientNetLite0Features

    reference = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4), in_chans=4)
    ours = EfficientNetLite0Features(4, tf_same=tf_same)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.out_channels == reference.feature_info.channels() == [24, 40, 112, 320]
    # timm's initialisation (normal, std sqrt(2 / fan-out)), up to sampling noise
    drawn = {name: p.std().item() for name, p in ours.named_parameters() if p.ndim == 4}
    for name, p in reference.named_parameters():
        if p.ndim == 4 and p.numel() > 1000:
            assert drawn[name] == pytest.approx(p.std().item(), rel=0.1), name
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 96, 64)
    for training in (False, True):
        reference.train(training)
        ours.train(training)
        expected, got = reference(x), ours(x)
        assert [t.shape for t in got] == [t.shape for t in expected]
        assert all(torch.equal(a, b) for a, b in zip(got, expected)), training
    sum(t.square().sum() for t in expected).backward()
    sum(t.square().sum() for t in got).backward()
    assert all(torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6) for a, b in zip(ours.parameters(), reference.parameters()))
