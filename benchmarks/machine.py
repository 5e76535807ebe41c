"""What a benchmark figure was measured on: CPU model, threads, load (printed with every figure).

Example
-------
>>> info = machine_info()
>>> sorted(info) == ["cpu_count", "cpu_model", "load_average", "torch_threads"]
True
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list:
    """The 1, 5 and 15-minute load averages, rounded to 0.01."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> dict:
    """CPU model, CPU count, torch threads and the 1/5/15-minute load averages."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
    }
