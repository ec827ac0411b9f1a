"""Which machine a benchmark ran on, in one line a reader can pair runs by.

Identical runs (same code, data and seed) differ by 0.01-0.02 F1 between processors (README,
Results), so arms are compared only when their records name the same machine. :func:`machine`
names the processor model (``/proc/cpuinfo`` on Linux), the cores the process may use and, when
CUDA is available, the GPU.
"""

from __future__ import annotations

import platform
from pathlib import Path

from geoccseg.cores import usable_cores


def cpu_model() -> str:
    """The processor's model name, e.g. ``AMD EPYC`` or ``Intel(R) Xeon(R) Platinum 8488C``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown processor"


def machine() -> str:
    """``<cpu model>, <n> cores`` plus ``, <GPU name>`` when CUDA is available."""
    described = f"{cpu_model()}, {usable_cores()} cores"
    import torch  # only here: describing a CPU needs no torch

    if torch.cuda.is_available():
        described += f", {torch.cuda.get_device_name()}"
    return described
