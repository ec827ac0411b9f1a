"""Inference engines: a batch of normalised chips in, class probabilities out.

The one forward pass of prediction. Scene blocks (in this process or on Dask workers), photos, the
in-memory API and :func:`geoccseg.inference.array.predict_array` all call an :class:`Engine`
through :func:`geoccseg.inference.predict.blend_chips`:

- ``torch`` (:class:`TorchEngine`): the PyTorch network, on the CPU or CUDA (bf16 autocast there);
- ``onnx`` (:class:`OnnxEngine`): the same network exported to ONNX once per set of weights
  (:mod:`geoccseg.inference.export`), run by ONNX Runtime's CPU execution provider with as many
  intra-op threads as PyTorch has in the process (``torch.get_num_threads()``: all cores in a
  single process, one in each single-threaded Dask worker, whose nanny sets ``OMP_NUM_THREADS=1``).

``auto`` (:func:`resolve_engine`) is ``torch`` on CUDA and :data:`AUTO_CPU_ENGINE` on the CPU
(``torch`` where ONNX Runtime is not installed).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from geoccseg.errors import GeoccsegError

ENGINES = ("auto", "torch", "onnx")
"""Names of the engines ``--engine`` accepts."""

AUTO_CPU_ENGINE = "onnx"
"""The engine ``auto`` runs on the CPU; change it here alone. Provisional measurement of the forward
pass (one thread of 2 busy shared cores, the shipped road model, ONNX Runtime 1.32 against PyTorch
2.14, same run): ONNX Runtime 1.5x PyTorch's speed at tile 256 batch 1, 1.6x at batch 2, 1.8x at
batch 4, 2.5x at tile 1024 batch 1 and 3.0x at batch 2; to be confirmed on an idle machine."""

ONNX_PACKAGES = ("onnxruntime", "onnx")
"""Packages the ``onnx`` engine needs (ONNX Runtime runs the model, onnx is needed to export it)."""


def autocast(device: str) -> contextlib.AbstractContextManager:
    """Mixed precision of prediction on ``device``: bfloat16 autocast on CUDA (float16 where bf16 is
    not supported), nothing on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
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
    """The PyTorch network (inference mode; bf16 autocast on CUDA).

    Args:
        model: the network, on ``device``, in eval mode.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        forward: ``(model, chips, device) -> (B, n, H, W)`` values; :func:`forward_probabilities`
            by default (acquisition scores run another forward of the same network,
            :func:`geoccseg.suggest.terms.scoring_forward`).
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        forward: Callable[[torch.nn.Module, torch.Tensor, str], torch.Tensor] = forward_probabilities,
    ) -> None:
        self.model, self.device, self.forward = model, device, forward

    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.forward(self.model, torch.as_tensor(chips), self.device)


class OnnxEngine(Engine):
    """The network's ONNX export (:func:`geoccseg.inference.export.exported_model`) in ONNX Runtime
    on the CPU. Chips are padded to a multiple of the network's output stride as the network pads
    them (:func:`geoccseg.models.network.pad_to_multiple`) and the probabilities are cropped back.

    Args:
        model_bytes: the ONNX model.
        threads: ONNX Runtime intra-op threads (inter-op: 1).
    """

    name = "onnx"

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        import onnxruntime as ort

        from geoccseg.inference.export import INPUT, OUTPUT

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.device, self.threads = "cpu", max(1, threads)
        self._input, self._output = INPUT, OUTPUT

    def __call__(self, chips: torch.Tensor | np.ndarray) -> torch.Tensor:
        from geoccseg.models.network import pad_to_multiple

        with torch.inference_mode():
            x = torch.as_tensor(chips).to("cpu", torch.float32)
            height, width = x.shape[-2:]
            padded = pad_to_multiple(x).contiguous().numpy()
        probs = self.session.run([self._output], {self._input: padded})[0]
        return torch.from_numpy(np.ascontiguousarray(probs[..., :height, :width]))


def onnx_available() -> bool:
    """Whether the packages of the ``onnx`` engine (:data:`ONNX_PACKAGES`) are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def check_engine(engine: str) -> None:
    """Refuse an engine name that is not one of :data:`ENGINES`.

    Raises:
        GeoccsegError: an unknown engine.
    """
    if engine not in ENGINES:
        raise GeoccsegError(f"unknown engine {engine!r}; use {', '.join(ENGINES[:-1])} or {ENGINES[-1]}")


def resolve_engine(engine: str, device: str) -> str:
    """The engine that runs: ``auto`` -> ``torch`` on CUDA, else :data:`AUTO_CPU_ENGINE` when installed.

    Args:
        engine: one of :data:`ENGINES`.
        device: the resolved torch device (``cpu``, ``cuda``, ...).

    Raises:
        GeoccsegError: an unknown engine, ``onnx`` on CUDA, or ``onnx`` without its packages.
    """
    check_engine(engine)
    cuda = torch.device(device).type == "cuda"
    if engine == "auto":
        return "torch" if cuda or (AUTO_CPU_ENGINE == "onnx" and not onnx_available()) else AUTO_CPU_ENGINE
    if engine == "onnx":
        if cuda:
            raise GeoccsegError("--engine onnx runs on the CPU; use --device cpu, or --engine torch (or auto) on CUDA")
        if not onnx_available():
            raise GeoccsegError("--engine onnx needs ONNX Runtime and onnx: pip install onnxruntime onnx (or use --engine torch)")
    return engine


_ONNX: dict[tuple[str, int], OnnxEngine] = {}
_ONNX_LOCK = threading.Lock()


def clear_sessions() -> None:
    """Drop the ONNX Runtime session this process keeps (its memory); the next ``onnx`` engine reads
    the export from the cache folder again (:func:`geoccseg.inference.export.exported_model`)."""
    with _ONNX_LOCK:
        _ONNX.clear()


def build_engine(engine: str, model: torch.nn.Module, device: str, in_channels: int) -> Engine:
    """The engine ``engine`` (a name :func:`resolve_engine` returned) running ``model`` on ``device``
    for chips of ``in_channels`` bands (the bundle's bands).

    ``torch`` moves the model to ``device``. ``onnx`` exports the model once per set of weights
    (:func:`geoccseg.inference.export.exported_model`, cached on disk) and keeps the last ONNX
    Runtime session of this process, so that calls for the same weights and thread count reuse it.

    Raises:
        GeoccsegError: the network cannot be exported (``onnx``).
    """
    check_engine(engine)
    if engine == "torch":
        return TorchEngine(model.to(device).eval(), device)
    if engine == "auto":
        raise GeoccsegError("build_engine needs a resolved engine (torch or onnx); see resolve_engine")
    from geoccseg.inference.export import export_key, exported_model

    model = model.to("cpu").eval()
    key, threads = export_key(model, in_channels), torch.get_num_threads()
    with _ONNX_LOCK:
        if (key, threads) not in _ONNX:
            built = OnnxEngine(exported_model(model, in_channels, key), threads)
            _ONNX.clear()
            _ONNX[(key, threads)] = built
        return _ONNX[(key, threads)]
