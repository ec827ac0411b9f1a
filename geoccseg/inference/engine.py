"""Inference engines: a batch of normalised chips in, class probabilities out.

The one forward pass of prediction. Scene blocks (in this process or on Dask workers), photos, the
in-memory API and :func:`geoccseg.inference.array.predict_array` all call an :class:`Engine`
through :func:`geoccseg.inference.predict.blend_chips`:

- ``torch`` (:class:`TorchEngine`): the PyTorch network, on the CPU or CUDA (bf16 autocast there);
- ``onnx`` (:class:`OnnxEngine`): the same network exported to ONNX once per set of weights
  (:mod:`geoccseg.inference.export`), run by ONNX Runtime's CPU execution provider with as many
  intra-op threads as PyTorch has in the process (``torch.get_num_threads()``: all cores in a
  single process, one in each single-threaded Dask worker, whose nanny sets ``OMP_NUM_THREADS=1``);
- ``openvino`` (:class:`OpenVinoEngine`, optional: ``pip install geoccseg[openvino]``): the same
  ONNX export compiled by OpenVINO's CPU plugin, with the same thread count.

Both runtimes are imported with their usage telemetry off (:mod:`geoccseg.inference.runtimes`).

``auto`` (:func:`resolve_engine`) is ``torch`` on CUDA and :data:`AUTO_CPU_ENGINE` on the CPU
(``torch`` where ONNX Runtime is not installed). Every prediction path settles its engine with
:func:`settle_engine`, which also turns ``auto`` to ``torch``, with a warning, when the network
cannot be exported to ONNX.

Reduced precision on the CPU (``--precision``, experimental, :data:`PRECISIONS`): ``bf16`` runs
the network in bfloat16, on ``openvino`` (:data:`AUTO_BF16_ENGINE`, where installed and the CPU
has bf16 instructions) or the ``torch`` engine under bfloat16 autocast (ONNX Runtime's CPU
provider has no bf16 convolutions); ``int8`` runs a statically quantised export (the ``onnx``
engine, :mod:`geoccseg.inference.quantize`). CUDA always runs under bf16 autocast, whatever
``--precision``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from geoccseg.errors import GeoccsegError, first_line
from geoccseg.inference.choices import ENGINES, PRECISIONS
from geoccseg.io.bundle import BundleMeta

log = logging.getLogger(__name__)

AUTO_CPU_ENGINE = "onnx"
"""The engine ``auto`` runs on the CPU; change it here alone. Measured on 2 idle cores at predict's
defaults (512-px chips, the shipped road model, ONNX Runtime 1.32 against PyTorch 2.14;
``pipelines/benchmark_predict.py``, README "Scene-scale prediction"): end to end 1.7-1.8x the torch
engine's speed from 2k to 8k pixels, forward pass 1.6-1.9x."""

AUTO_BF16_ENGINE = "openvino"
"""The engine ``auto`` runs at ``--precision bf16`` on the CPU where it is installed and the CPU has
bf16 instructions (else ``torch``). Measured on 2 idle cores of an AMD EPYC (AVX-512 BF16), one
512-px chip of the shipped road model: OpenVINO 2026.4 in bf16 7.3-8.6 Mpx/s against 2.4 for the
torch engine's bf16 autocast and 3.1-4.2 for ONNX Runtime in fp32 (at fp32 OpenVINO ties with ONNX
Runtime: 3.5-4.3 Mpx/s; ``pipelines/benchmark_precision.py``, README "Engines and reduced precision")."""

ONNX_PACKAGES = ("onnxruntime", "onnx")
"""Packages the ``onnx`` engine needs (ONNX Runtime runs the model, onnx is needed to export it)."""

OPENVINO_PACKAGES = ("openvino", "onnxruntime", "onnx")
"""Packages the ``openvino`` engine needs (OpenVINO runs the model; the export is made and checked
with onnx and ONNX Runtime, as for the ``onnx`` engine)."""

EXPORTED_ENGINES = ("onnx", "openvino")
"""Engines that run the network's ONNX export (:mod:`geoccseg.inference.export`) rather than PyTorch."""

BF16_ON_ONNX = "--precision bf16 runs on --engine openvino or torch, or auto (ONNX Runtime's CPU provider has no bf16 convolutions)"
"""The error of ``--engine onnx --precision bf16``."""


def autocast(device: str) -> contextlib.AbstractContextManager:
    """Mixed precision of prediction on ``device``: bfloat16 autocast on CUDA GPUs that compute in it
    (compute capability 8.0 and later: Ampere), float16 on older ones (torch's
    ``is_bf16_supported()`` says yes there too, emulated, and asks the current GPU rather than
    ``device``), nothing on the CPU."""
    if torch.device(device).type == "cuda":
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        return torch.autocast("cuda", dtype=torch.bfloat16 if major >= 8 else torch.float16)
    return contextlib.nullcontext()


def forward_probabilities(model: torch.nn.Module, chips: torch.Tensor, device: str) -> torch.Tensor:
    """Softmax probabilities of the foreground classes (the forward of :class:`TorchEngine`).

    Args:
        model: a network with ``forward_logits`` ((B, C, H, W) -> (B, K, H, W) logits).
        chips: normalised images (B, C, H, W), float32, on the CPU or on ``device``.
        device: where to run; CUDA runs under autocast (bfloat16 where supported, else float16).

    Returns:
        float32 (B, K - 1, H, W) on ``device``: probabilities of classes 1..K-1.
    """
    with torch.inference_mode():
        x = chips.to(device, non_blocking=True)
        with autocast(device):
            logits = model.forward_logits(x)
        return logits.float().softmax(dim=1)[:, 1:]


class Engine(ABC):
    """Runs a network on batches of normalised chips.

    Attributes:
        name: the engine's name (one of :data:`ENGINES` but ``auto``).
        device: where its outputs are (a torch device string); chips may be anywhere.
    """

    name: ClassVar[str]
    device: str

    @abstractmethod
    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Per-pixel values of a batch of chips.

        Args:
            chips: float32 (B, C, H, W) chips normalised with the bundle's statistics, any H and W
                in pixels (numpy, or a torch tensor on any device).

        Returns:
            float32 (B, K - 1, H, W) on :attr:`device`: softmax probabilities of the foreground classes.
        """


class TorchEngine(Engine):
    """The PyTorch network (inference mode; bf16 autocast on CUDA, and on the CPU with ``bf16``).

    Args:
        model: the network, on ``device``, in eval mode.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        forward: ``(model, chips, device) -> (B, n, H, W)`` values; :func:`forward_probabilities`
            by default (acquisition scores run another forward of the same network,
            :func:`geoccseg.suggest.terms.scoring_forward`).
        precision: ``fp32`` or ``bf16`` (bfloat16 autocast on the CPU).
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        forward: Callable[[torch.nn.Module, torch.Tensor, str], torch.Tensor] = forward_probabilities,
        precision: str = "fp32",
    ) -> None:
        self.model, self.device, self.forward, self.precision = model, device, forward, precision

    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        cpu_bf16 = self.precision == "bf16" and torch.device(self.device).type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else contextlib.nullcontext():
            return self.forward(self.model, torch.as_tensor(chips), self.device)


class ExportedEngine(Engine):
    """An engine that runs the network's ONNX export (:data:`EXPORTED_ENGINES`) on the CPU. Chips
    are padded to a multiple of the network's output stride as the network pads them
    (:func:`geoccseg.models.network.pad_to_multiple`), and the probabilities are cropped back."""

    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        from geoccseg.models.network import pad_to_multiple

        with torch.inference_mode():
            x = torch.as_tensor(chips).to("cpu", torch.float32)
            height, width = x.shape[-2:]
            padded = pad_to_multiple(x).contiguous().numpy()
        return torch.from_numpy(np.ascontiguousarray(self.run(padded)[..., :height, :width]))

    @abstractmethod
    def run(self, padded: np.ndarray) -> np.ndarray:
        """The export's output (B, K - 1, H, W) for float32 chips (B, C, H, W), H and W multiples of the stride."""


class OnnxEngine(ExportedEngine):
    """The network's ONNX export (:func:`geoccseg.inference.export.exported_model`) in ONNX Runtime
    on the CPU.

    Args:
        model_bytes: the ONNX model.
        threads: ONNX Runtime intra-op threads (inter-op: 1).
        precision: ``fp32`` (the export) or ``int8`` (its quantised model), for the record.
    """

    name = "onnx"

    def __init__(self, model_bytes: bytes, threads: int, precision: str = "fp32") -> None:
        from geoccseg.inference.export import INPUT, OUTPUT

        self.session = onnx_session(model_bytes, threads)
        self.device, self.threads, self.precision = "cpu", max(1, threads), precision
        self._input, self._output = INPUT, OUTPUT

    def run(self, padded: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: padded})[0]


def onnx_session(model_bytes: bytes, threads: int):  # -> onnxruntime.InferenceSession (imported on use)
    """An ONNX Runtime session of an ONNX model on the CPU: ``threads`` intra-op threads, one inter-op
    thread, errors only in its log; ONNX Runtime is imported with its telemetry off."""
    from geoccseg.inference.runtimes import import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors (a graph it cannot load), one line
        raise GeoccsegError(f"ONNX Runtime cannot load the network's export ({first_line(exc)}); use --engine torch") from None


class OpenVinoEngine(ExportedEngine):
    """The network's ONNX export (:func:`geoccseg.inference.export.exported_model`) compiled by
    OpenVINO for the CPU, once, for chips of any shape (dynamic batch, height and width). Each call
    runs its own inference request (cheap: the compiled model holds the weights), so threads may
    share the engine.

    Args:
        model_bytes: the ONNX model (fp32).
        threads: OpenVINO inference threads.
        precision: ``fp32`` or ``bf16`` (OpenVINO's inference precision hint: bf16 weights and
            activations with fp32 accumulation; needs a CPU with bf16 instructions, :func:`cpu_has_bf16`).
    """

    name = "openvino"

    def __init__(self, model_bytes: bytes, threads: int, precision: str = "fp32") -> None:
        from geoccseg.inference.export import INPUT, OUTPUT
        from geoccseg.inference.runtimes import import_openvino

        ov = import_openvino()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": max(1, threads),
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(model_bytes), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's own errors, one line
            raise GeoccsegError(f"OpenVINO cannot compile the network's export ({first_line(exc)}); use --engine torch") from None
        self.device, self.threads, self.precision = "cpu", max(1, threads), precision
        self._input, self._output = INPUT, OUTPUT

    def run(self, padded: np.ndarray) -> np.ndarray:
        return self.compiled.create_infer_request().infer({self._input: padded})[self._output]


def _runs_bf16() -> bool:
    """:func:`cpu_has_bf16`, for ``auto``: an OpenVINO that cannot be imported is one that is not
    there (torch runs bf16 then, with a warning)."""
    try:
        return cpu_has_bf16()
    except GeoccsegError as exc:
        log.warning("geoccseg: warning: the openvino engine cannot run (%s); predicting with the torch engine",
                    str(exc).removesuffix("; use --engine torch"))
        return False


def onnx_available() -> bool:
    """Whether the packages of the ``onnx`` engine (:data:`ONNX_PACKAGES`) are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def openvino_available() -> bool:
    """Whether the packages of the ``openvino`` engine (:data:`OPENVINO_PACKAGES`) are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in OPENVINO_PACKAGES)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 on this CPU (AVX-512 BF16 or AMX; its
    ``OPTIMIZATION_CAPABILITIES``). Elsewhere it would silently run fp32 at ``bf16``. Needs the
    ``openvino`` package (:func:`openvino_available`)."""
    from geoccseg.inference.runtimes import import_openvino

    return "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_engine(engine: str) -> None:
    """Refuse an engine name that is not one of :data:`ENGINES`.

    Raises:
        GeoccsegError: an unknown engine.
    """
    if engine not in ENGINES:
        raise GeoccsegError(f"unknown engine {engine!r}; use {', '.join(ENGINES[:-1])} or {ENGINES[-1]}")


def check_precision(precision: str) -> None:
    """Refuse a precision that is not one of :data:`PRECISIONS`.

    Raises:
        GeoccsegError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise GeoccsegError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")


def resolve_engine(engine: str, device: str, precision: str = "fp32") -> str:
    """The engine that runs: ``auto`` -> ``torch`` on CUDA, else :data:`AUTO_CPU_ENGINE` when installed
    (with ``precision`` bf16: :data:`AUTO_BF16_ENGINE` where installed and the CPU runs bf16, else
    ``torch``; int8: ``onnx``).

    Args:
        engine: one of :data:`ENGINES`.
        device: the resolved torch device (``cpu``, ``cuda``, ...).
        precision: one of :data:`PRECISIONS`.

    Raises:
        GeoccsegError: an unknown engine or precision, ``onnx`` or ``openvino`` on CUDA or without
            their packages, a precision the engine (or the CPU) does not run.
    """
    check_engine(engine)
    check_precision(precision)
    cuda = torch.device(device).type == "cuda"
    if engine == "auto":
        if cuda:
            engine = "torch"
        elif precision == "bf16":
            engine = AUTO_BF16_ENGINE if openvino_available() and _runs_bf16() else "torch"
        else:
            engine = "onnx" if precision == "int8" else AUTO_CPU_ENGINE
            if engine == "onnx" and precision == "fp32" and not onnx_available():
                engine = "torch"
    if engine in EXPORTED_ENGINES and cuda:
        raise GeoccsegError(f"--engine {engine} runs on the CPU; use --device cpu, or --engine torch (or auto) on CUDA")
    if precision == "int8" and engine != "onnx":
        if cuda:
            raise GeoccsegError("--precision int8 runs on the CPU with the onnx engine (a quantised export); use --device cpu "
                                "with --engine onnx or auto, or --precision fp32 on CUDA")
        raise GeoccsegError("--precision int8 runs on the CPU with --engine onnx (a quantised export); use --engine onnx or auto")
    if engine == "openvino":
        if not openvino_available():
            raise GeoccsegError("--engine openvino needs OpenVINO: pip install 'geoccseg[openvino]' (or use --engine onnx or auto)")
        if precision == "bf16" and not cpu_has_bf16():
            raise GeoccsegError("this CPU has no bfloat16 instructions for OpenVINO; use --precision fp32, or --engine torch for bf16")
    if engine == "onnx":
        if not onnx_available():
            instead = "--precision fp32" if precision == "int8" else "--engine torch"
            raise GeoccsegError(f"--engine onnx needs ONNX Runtime and onnx: pip install onnxruntime onnx (or use {instead})")
        if precision == "bf16":
            raise GeoccsegError(BF16_ON_ONNX)
    return engine


def engine_label(engine: str, precision: str = "fp32") -> str:
    """How outputs record the engine: its name, with the precision unless fp32 (``onnx``, ``onnx-int8``, ``torch-bf16``)."""
    return engine if precision == "fp32" else f"{engine}-{precision}"


_ONNX: dict[tuple, Engine] = {}
_ONNX_LOCK = threading.Lock()


def clear_sessions() -> None:
    """Drop the ONNX Runtime session this process keeps (its memory); the next ``onnx`` engine reads
    the export from the cache folder again (:func:`geoccseg.inference.export.exported_model`)."""
    with _ONNX_LOCK:
        _ONNX.clear()


def for_inference(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode, the caller's model left as it was: itself where it is
    so already (a loaded bundle), else a copy. A notebook that fine-tunes a model and predicts
    between epochs had its model set to eval mode (and moved to the CPU for an exported engine):
    its next epochs trained with frozen batch-norm statistics and no dropout, without a word."""
    target = torch.empty(0, device=device).device  # "cuda" as the device it means, cuda:0
    tensors = [*model.parameters(), *model.buffers()]
    if not any(m.training for m in model.modules()) and all(t.device == target for t in tensors):
        return model
    return copy.deepcopy(model).to(target).eval()


def build_engine(engine: str, model: torch.nn.Module, device: str, meta: BundleMeta, precision: str = "fp32") -> Engine:
    """The engine ``engine`` (a name :func:`resolve_engine` returned) running ``model`` on ``device``
    at ``precision``, for chips of the bundle's bands (``meta``).

    ``torch`` runs the model on ``device`` (:func:`for_inference`: the caller's model stays as it was). ``onnx`` and ``openvino`` export the model once per
    set of weights (:func:`geoccseg.inference.export.exported_model`, or its int8 model,
    :func:`geoccseg.inference.quantize.quantized_model`; cached on disk) and keep the last ONNX
    Runtime session or OpenVINO compiled model of this process, so that calls for the same model,
    engine, precision and thread count reuse it.

    Raises:
        GeoccsegError: the network cannot be exported or quantised (``onnx``, ``openvino``).
    """
    check_engine(engine)
    check_precision(precision)
    if engine == "torch":
        return TorchEngine(for_inference(model, device), device, precision=precision)
    if engine == "auto":
        raise GeoccsegError("build_engine needs a resolved engine (torch, onnx or openvino); see resolve_engine")
    if precision == "bf16" and engine == "onnx":
        raise GeoccsegError(BF16_ON_ONNX)
    from geoccseg.inference.export import export_key, exported_model
    from geoccseg.inference.quantize import int8_key, quantized_model

    model, in_channels = for_inference(model, "cpu"), len(meta.bands)
    key = int8_key(model, meta) if precision == "int8" else export_key(model, in_channels)
    threads = torch.get_num_threads()

    def make() -> Engine:
        data = quantized_model(model, meta, key) if precision == "int8" else exported_model(model, in_channels, key)
        return (OnnxEngine if engine == "onnx" else OpenVinoEngine)(data, threads, precision)

    return keep_engine((engine, precision, key, threads), make)


def keep_engine(runs: tuple, make: Callable[[], Engine]) -> Engine:
    """The engine this process keeps for ``runs`` (what it runs: engine, precision, export key,
    threads), else ``make()``, kept instead of the previous one: one exported engine per process,
    so that repeated calls for the same model reuse its session (and memory) without exporting,
    hashing or loading it again."""
    with _ONNX_LOCK:
        if runs not in _ONNX:
            built = make()
            _ONNX.clear()
            _ONNX[runs] = built
        return _ONNX[runs]


def settle_engine(requested: str, device: str, model: torch.nn.Module, meta: BundleMeta, precision: str = "fp32") -> str:
    """The engine that runs ``model``: :func:`resolve_engine`, and for ``onnx`` and ``openvino`` the
    export made (or found in the cache) and loaded now, once, so that a run fails or falls back
    before any block or photo.

    Where ``auto`` chose ``onnx`` (fp32) or ``openvino`` (bf16) and the network cannot be exported
    (or its export does not match PyTorch), the run falls back to ``torch`` with a one-line warning;
    an explicit ``onnx`` or ``openvino`` (or ``int8``, which has no torch engine) raises instead.
    Record :func:`engine_label` of the returned name, the engine that actually runs.

    Args:
        requested: one of :data:`ENGINES`, as the user gave it.
        device: the resolved torch device (``cpu``, ``cuda``, ...).
        model: the network (``onnx`` and ``openvino`` move it to the CPU).
        meta: the bundle's metadata (its bands).
        precision: one of :data:`PRECISIONS`.

    Returns:
        ``torch``, ``onnx`` or ``openvino``, for :func:`build_engine`.

    Raises:
        GeoccsegError: see :func:`resolve_engine` and :func:`build_engine` (not for ``auto`` at fp32 or bf16).
    """
    return _settle(requested, device, model, meta, precision)[0]


def ready_engine(requested: str, device: str, model: torch.nn.Module, meta: BundleMeta, precision: str = "fp32") -> Engine:
    """:func:`settle_engine` and :func:`build_engine` in one, for a single image or photo: the
    network's weights are hashed once (the export's cache key) instead of once per step.

    Raises:
        GeoccsegError: as :func:`settle_engine`.
    """
    name, built = _settle(requested, device, model, meta, precision)
    return built if built is not None else build_engine(name, model, device, meta, precision)


def _settle(requested: str, device: str, model: torch.nn.Module, meta: BundleMeta, precision: str) -> tuple[str, Engine | None]:
    """The settled engine name, and the exported engine when one was built to settle it (else None)."""
    engine = resolve_engine(requested, device, precision)
    if engine not in EXPORTED_ENGINES:
        return engine, None
    try:
        built = build_engine(engine, model, device, meta, precision)  # this process keeps the session for the run
    except GeoccsegError as exc:
        if requested != "auto" or precision == "int8":
            raise
        reason = str(exc).removesuffix("; use --engine torch")
        log.warning("geoccseg: warning: the %s engine cannot run (%s); predicting with the torch engine", engine, reason)
        return "torch", None
    return engine, built
