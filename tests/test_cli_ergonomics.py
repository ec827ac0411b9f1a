"""CLI ergonomics (issue 17, item 8): -v/-q on every command, progress bars only on a terminal,
``geoccseg models``, the vectoriser's options on predict, ``train --help`` in sections, completion."""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyogrio
import click
import pytest
from click.testing import CliRunner

from geoccseg.cli import COMMANDS, cli
from geoccseg.io.catalog import SHIPPED_MODELS
from geoccseg.train import TrainConfig
from geoccseg.vectorize import VectorizeParams

BAR = re.compile(r"\d+%\|")  # a tqdm bar: "100%|██████████| 1/1"


def _command(name: str):
    return importlib.import_module(COMMANDS[name][0]).command


def _run_with_terminal_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run ``geoccseg ARGS`` in a fresh process whose stderr is a pseudo-terminal; (status, stdout, stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new terminal has 0 columns
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "geoccseg.cli", *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=300), stdout, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def scene(vegas: Path) -> Path:
    return vegas / "vegas_img0_rgb.tif"


# -- -v / -q on every command ------------------------------------------------------------------


def test_every_command_has_verbose_quiet_and_help_for_every_option() -> None:
    for name in COMMANDS:
        command = _command(name)
        flags = {opt for param in command.params for opt in param.opts}
        assert {"-v", "--verbose", "-q", "--quiet"} <= flags, name
        for param in command.params:
            if not isinstance(param, click.Option):  # arguments are named in the usage line
                continue
            assert param.help and param.help.strip(), f"{name} {param.opts} has no help"
            assert "None" not in param.help, f"{name} {param.opts}: {param.help}"


def test_verbose_and_quiet_exclude_each_other() -> None:
    result = CliRunner().invoke(cli, ["models", "-v", "-q"])
    assert result.exit_code == 2
    assert result.stderr == "geoccseg: error: -v/--verbose and -q/--quiet exclude each other; give one of them\n"


def test_verbose_prints_each_resolved_option_and_its_source() -> None:
    result = CliRunner().invoke(cli, ["models", "-v"])
    assert result.exit_code == 0, result.output
    assert "geoccseg models: --json = False (default)" in result.stderr
    quiet = CliRunner().invoke(cli, ["models"])
    assert "--json" not in quiet.stderr


def test_predict_on_a_terminal_draws_bars_unless_quiet(scene: Path, tmp_path: Path) -> None:
    status, stdout, stderr = _run_with_terminal_stderr(["predict", str(scene), "-o", str(tmp_path / "a.gpkg")])
    assert status == 0, stderr
    assert BAR.search(stderr), stderr  # predict and vectorise bars on the terminal
    assert stdout.splitlines()[0].startswith("road: ")
    status, stdout, stderr = _run_with_terminal_stderr(["predict", str(scene), "-o", str(tmp_path / "b.gpkg"), "-q"])
    assert status == 0, stderr
    assert stderr == ""
    assert len(stdout.splitlines()) == 1 and stdout.startswith(f"wrote {tmp_path / 'b.gpkg'} in "), stdout


# -- the vectoriser's options on predict, defined once ------------------------------------------


def test_predict_and_vectorize_share_one_definition_of_the_vectoriser_options() -> None:
    fields = {f.name for f in dataclasses.fields(VectorizeParams)}
    helps = {}
    for name in ("predict", "vectorize"):
        options = {param.name: param for param in _command(name).params if param.name in fields}
        assert set(options) == fields, name
        helps[name] = {key: re.sub(r"^Scene: ", "", option.help).lower() for key, option in options.items()}
    assert helps["predict"] == helps["vectorize"]


def test_predict_passes_the_vectoriser_options_and_keeps_the_models_threshold(scene: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    default, pruned = tmp_path / "default.gpkg", tmp_path / "spur0.gpkg"
    result = runner.invoke(cli, ["predict", str(scene), "-o", str(default)])
    assert result.exit_code == 0, result.output
    assert not BAR.search(result.stderr)  # stderr is not a terminal: no progress bar, without -q
    result = runner.invoke(cli, ["predict", str(scene), "-o", str(pruned), "--spur-m", "0", "-v"])
    assert result.exit_code == 0, result.output
    model_threshold = json.loads((SHIPPED_MODELS / "road" / "bundle.json").read_text())["threshold"]
    assert f"VectorizeParams(threshold={model_threshold}," in result.stderr and "spur_m=0.0" in result.stderr
    lines = {path: pyogrio.read_dataframe(path, layer="road") for path in (default, pruned)}
    assert len(lines[pruned]) > len(lines[default])  # the short end branches the default 10 m prunes
    assert lines[pruned]["length_m"].sum() > lines[default]["length_m"].sum()
    for path in (default, pruned):  # --spur-m does not swap the model's threshold for the default 0.5
        assert float(pyogrio.read_info(path, layer="road")["layer_metadata"]["GEOCCSEG_THRESHOLD"]) == model_threshold


def test_vectoriser_options_refused_for_photos(data_dir: Path, tmp_path: Path) -> None:
    photo = next((data_dir / "deepcrack" / "train").rglob("*.jpg"))
    result = CliRunner().invoke(cli, ["predict", str(photo), "-o", str(tmp_path / "out"), "--gap-m", "3"])
    assert result.exit_code == 2
    assert "--gap-m only applies to georeferenced scenes" in result.stderr
    assert not (tmp_path / "out").exists()


# -- geoccseg models ---------------------------------------------------------------------------


def test_models_json_lists_road_and_crack_without_importing_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom geoccseg.cli import main\nsys.argv = ['geoccseg', 'models', '--json']\n"
         "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NO TORCH")
    cards = {card["name"]: card for card in json.loads(done.stdout)}
    assert set(cards) == {"road", "crack"}
    for name, card in cards.items():
        meta = json.loads((SHIPPED_MODELS / name / "bundle.json").read_text())
        assert card["threshold"] == meta["threshold"] and card["classes"] == [name]
        assert card["encoder"] == meta["model"]["encoder"] and card["weights_sha256"] == meta["weights_sha256"]
        assert card["licence"] == meta["training"]["licence"]
        assert card["test_scores"] and all(0 < scores["f1"] <= 1 for scores in card["test_scores"].values())
    assert cards["road"]["pixel_size_m"] == 1.0 and cards["crack"]["pixel_size_m"] is None
    assert cards["road"]["training_data"]["massachusetts"]["train"] > 0 and "dubai" in cards["road"]["training_data"]


def test_models_text_names_each_model_and_its_threshold() -> None:
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    blocks = {block.split("\n", 1)[0]: block for block in result.stdout.strip().split("\n\n")}
    assert set(blocks) == {"road", "crack"}
    assert "threshold:      0.53" in blocks["road"] and "non-commercial" in blocks["crack"]
    assert "pixel size:     1 m" in blocks["road"]


def test_a_folder_named_like_a_shipped_model_hides_it_only_when_it_is_a_bundle(tmp_path: Path, monkeypatch) -> None:
    from geoccseg.io.bundle import resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "crack").mkdir()
    (tmp_path / "crack" / "photo.jpg").write_bytes(b"not a bundle")
    shutil.copytree(SHIPPED_MODELS / "road", tmp_path / "road")
    assert resolve_model("crack") == SHIPPED_MODELS / "crack"
    assert resolve_model("./crack") == Path("./crack")
    assert resolve_model("road") == Path("road") and (Path("road") / "bundle.json").is_file()


# -- train --help in sections --------------------------------------------------------------------


def _sections(help_text: str) -> dict[str, str]:
    parts = re.split(r"^(\S[^\n]*):\n", help_text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_train_help_is_grouped_with_real_defaults() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    sections = _sections(result.output)
    expected = {"--scene": "Data: GeoTIFF scenes", "--images": "Data: photo folders", "--tile-px": "Data: both kinds",
                "--encoder": "Model", "--tau-low": "Method", "--lr": "Optimisation", "--max-steps": "Budget",
                "--accelerator": "Hardware", "--out": "Output", "--quiet": "Other options"}
    for flag, title in expected.items():
        assert re.search(rf"^\s+(-\w, )?{flag} ", sections[title], flags=re.MULTILINE), (flag, title)
    assert "None" not in result.output
    width = next(line for line in sections["Data: GeoTIFF scenes"].splitlines() if "--width-m" in line)
    assert "metres" in width and "road 6 m" in width
    assert "--progress" not in result.output  # progress bars follow -q and the terminal, one setting


def test_every_train_option_is_in_one_section() -> None:
    from geoccseg.cli.train import NOT_FLAGS, SECTIONS

    listed = [name for fields in SECTIONS.values() for name in fields]
    assert len(listed) == len(set(listed))
    assert set(listed) == {f.name for f in dataclasses.fields(TrainConfig)} - NOT_FLAGS


# -- shell completion ------------------------------------------------------------------------------


def test_bash_completion_script_completes_commands() -> None:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert shutil.which("geoccseg", path=env["PATH"]), "the geoccseg console script is not installed"
    script = subprocess.run(["geoccseg"], env={**env, "_GEOCCSEG_COMPLETE": "bash_source"}, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _geoccseg_completion geoccseg" in script.stdout
    bash = shutil.which("bash")
    assert bash
    done = subprocess.run(
        [bash, "-c", 'source <(_GEOCCSEG_COMPLETE=bash_source geoccseg); COMP_WORDS=(geoccseg mo); COMP_CWORD=1; '
                     '_geoccseg_completion geoccseg; echo "${COMPREPLY[@]}"'],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["models"]
