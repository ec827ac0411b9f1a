"""The ``geoccseg`` command starts at once: its group imports no sub-command, torch or GIS stack."""

from __future__ import annotations

import importlib
import json
import importlib.util
import subprocess
import sys

import pytest
from click.testing import CliRunner

from geoccseg.cli import COMMANDS, cli

HEAVY = ("torch", "torchgeo", "torchvision", "lightning", "rasterio", "geopandas", "pyogrio", "xarray", "dask", "scipy")


def _run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (``sys.modules`` of this one already holds everything)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_cli_does_not_import_torch() -> None:
    done = _run_python("import geoccseg.cli, sys; assert 'torch' not in sys.modules")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_group_help_and_version_import_no_heavy_module(flag: str) -> None:
    done = _run_python(
        "import sys\n"
        "from geoccseg.cli import main\n"
        f"sys.argv = ['geoccseg', '{flag}']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "loaded += sorted(m for m in sys.modules if m.startswith('geoccseg.') and m not in ('geoccseg.cli', 'geoccseg.errors'))\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr
    if flag == "--help":
        for name in ("info", "train", "predict", "vectorize", "evaluate", "demo"):
            assert f"  {name} " in done.stdout, done.stdout
    else:
        assert done.stdout.startswith("geoccseg, version ")


def test_each_commands_help_loads_no_pytorch() -> None:
    """``geoccseg train --help`` took 10 s and ``info``, ``cache`` or ``predict --help`` 6-9 s on 2
    cores: their modules imported PyTorch, Lightning or TorchGeo to declare their options (and each
    package's ``__init__`` imported its heavy submodules), ``demo --help`` 11 s (its defaults came from
    the module that trains). Now a command imports them when it runs."""
    names = sorted(COMMANDS)
    done = _run_python(
        "import sys\n"
        "from geoccseg.cli import cli\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        cli.main([name, '--help'], prog_name='geoccseg')\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (name, exc.code)\n"
        "loaded = sorted(m for m in ('torch', 'torchgeo', 'torchvision', 'lightning', 'onnxruntime') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Usage: geoccseg ") == len(names)


def test_packages_list_their_names_and_import_them_on_first_use() -> None:
    done = _run_python(
        "import sys\n"
        "import geoccseg.demo, geoccseg.inference, geoccseg.models, geoccseg.suggest, geoccseg.train\n"
        "assert 'torch' not in sys.modules\n"
        "assert {'load_bundle', 'ModelConfig'} <= set(dir(geoccseg.models)) and 'run_predict' in dir(geoccseg.inference)\n"
        "assert 'run_demo' in dir(geoccseg.demo) and geoccseg.demo.STEPS == 200\n"
        "from geoccseg.train import TrainConfig\n"
        "assert 'torch' not in sys.modules, 'TrainConfig loaded PyTorch'\n"
        "from geoccseg.models import load_bundle\n"
        "assert 'torch' in sys.modules and geoccseg.models.load_bundle is load_bundle\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_registered_short_help_is_the_commands_own() -> None:
    for name, (module, short_help) in COMMANDS.items():
        if importlib.util.find_spec(module) is None:  # a command not written yet is not listed either
            continue
        command = importlib.import_module(module).command
        assert command.name == name
        assert command.get_short_help_str(limit=10_000) == short_help, name


def test_commands_still_run_and_unknown_ones_are_refused() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["vectorize", "--help"])
    assert result.exit_code == 0, result.output
    assert "--min-length-m" in result.output
    result = runner.invoke(cli, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


def test_predicting_a_photo_imports_no_training_stack(data_dir, tmp_path) -> None:
    """`geoccseg predict` with the shipped crack model never imports timm, torchvision (and its
    torch._dynamo), TorchGeo, Lightning or pyplot: together they took about 4 s of a 9 s prediction."""
    photo = data_dir / "cfd" / "images" / "004.jpg"
    done = _run_python(
        "import sys\n"
        "from geoccseg.cli import main\n"
        f"sys.argv = ['geoccseg', 'predict', {str(photo)!r}, '-o', {str(tmp_path / 'out')!r}, '--quiet']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('timm', 'torchvision', 'torch._dynamo', 'torchgeo', 'lightning', 'matplotlib.pyplot')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "summary.csv").is_file()


def test_describing_a_scene_without_labels_imports_no_pytorch() -> None:
    """`geoccseg info scene.tif` took 8 s on 2 cores, 7 of them importing PyTorch and TorchGeo to read a
    header; only counting labeled chips (``--labels``) needs them."""
    from geoccseg.io.catalog import sample_scene

    done = _run_python(
        "import sys\n"
        "from geoccseg.cli import main\n"
        f"sys.argv = ['geoccseg', 'info', {str(sample_scene())!r}, '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = sorted(m for m in ('torch', 'torchgeo', 'lightning') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout)
    assert (facts["width"], facts["height"], facts["mask"]) == (1300, 1300, "alpha")
