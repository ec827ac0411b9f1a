"""The inference runtimes send nothing and write nothing in the user's home folder
(:mod:`geoccseg.inference.runtimes`): each run here is a fresh Python with an empty home folder,
no CI markers in its environment (both runtimes keep quiet on CI machines by themselves) and every
Python-level name lookup or connection recorded and refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CI_MARKERS = ("CI", "CONTINUOUS_INTEGRATION", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "JENKINS_URL", "BUILDKITE", "CIRCLECI",
              "TRAVIS", "APPVEYOR", "TEAMCITY_VERSION", "BUILD_BUILDID", "CODEBUILD_BUILD_ID", "ORT_DISABLE_TELEMETRY")
"""Environment variables by which the runtimes (or their telemetry) tell a CI machine, removed: the runs look like a user's."""

AUDIT = """
import json, os, socket, sys, time
record = os.environ["NETWORK_RECORD"]

def audit(event, args):
    # every name lookup and every connection to a network address is recorded, then refused
    if event == "socket.getaddrinfo" or (event == "socket.connect" and args[0].family != socket.AF_UNIX):
        with open(record, "a") as out:
            out.write(json.dumps([event, str(args[0] if event == "socket.getaddrinfo" else args[1])]) + "\\n")
        raise OSError("network refused by the test")

sys.addaudithook(audit)  # inherited by processes forked from this one
"""

PREDICT = """
import numpy as np
from geoccseg.inference.array import predict_array
from geoccseg.io.bundle import resolve_model
from geoccseg.models import load_bundle
image = np.random.default_rng(0).integers(0, 256, (3, 96, 80), dtype=np.uint8)
assert predict_array(load_bundle(resolve_model("road")), image, device="cpu", engine="{engine}").shape == (2, 96, 80)
"""


def run_isolated(tmp_path: Path, code: str) -> tuple[list, list[str]]:
    """Run ``code`` (then wait 2 s for background senders) in a fresh Python with an empty home
    folder; return the network attempts it made and the files it left in its home folder."""
    home, record = tmp_path / "home", tmp_path / "network.jsonl"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in (*CI_MARKERS, "XDG_CACHE_HOME")}  # caches go under home
    env |= {"HOME": str(home), "NETWORK_RECORD": str(record), "GEOCCSEG_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", AUDIT + code + "\ntime.sleep(2)\n"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    attempts = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return attempts, sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_onnx_runtime_writes_no_device_id_and_queues_no_events(tmp_path: Path) -> None:
    """ONNX Runtime's telemetry writes ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``
    and a database of events to upload as soon as a session runs, unless it is turned off before
    ONNX Runtime is imported (measured with ONNX Runtime 1.32: both files are there otherwise)."""
    attempts, files = run_isolated(tmp_path, PREDICT.format(engine="onnx"))
    assert files == [] and attempts == []


def test_openvino_sends_nothing_and_writes_nothing(tmp_path: Path) -> None:
    """``import openvino`` alone sends a usage event to Google Analytics and writes ``~/intel``
    (the control: the audit sees it); geoccseg's openvino engine does neither, and OpenVINO's
    converter is still there for the user, with its no-op telemetry."""
    control, control_files = run_isolated(tmp_path / "control", "import openvino")
    assert any("google-analytics" in target for _, target in control), control
    assert "intel" in control_files
    code = PREDICT.format(engine="openvino") + "import openvino\nassert callable(openvino.convert_model)\n"
    attempts, files = run_isolated(tmp_path / "engine", code)
    assert files == [] and attempts == []
