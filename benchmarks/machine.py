"""What a benchmark figure was measured on, and its JSON report (shared by every benchmark).

Every script in ``benchmarks/`` prints the CPU model, its thread settings and
the load average before and after its measurements, and writes the figures
it prints to ``--output_json PATH`` (atomically) through ``BenchmarkRun``:

>>> import argparse, json
>>> parser = argparse.ArgumentParser()
>>> add_output_json(parser)
>>> args = parser.parse_args(["--output_json", str(getfixture("tmp_path") / "r.json")])
>>> run = BenchmarkRun("demo", args, threads=1, out=lambda *a: None)
>>> run.finish({"rate": 2.0})["results"]
{'rate': 2.0}
>>> report = json.loads(open(args.output_json).read())
>>> sorted(report)
['args', 'benchmark', 'command', 'machine_after', 'machine_before', 'results', 'threads']
>>> sorted(machine_info()) == ["cpu_count", "cpu_model", "load_average", "torch_threads"]
True
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from custom_modules.audio.files import atomic_write_json


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


def describe_machine(info: dict) -> str:
    """One line for the console: CPU, CPU count, torch threads, load.

    Example
    -------
    >>> describe_machine({"cpu_model": "X", "cpu_count": 2, "torch_threads": 1,
    ...                   "load_average": [0.5, 0.4, 0.3]})
    'CPU: X (2 CPUs), torch threads 1, load average 0.5/0.4/0.3 (1/5/15 min)'
    """
    load = "/".join(str(value) for value in info["load_average"])
    return (
        f"CPU: {info['cpu_model']} ({info['cpu_count']} CPUs), torch threads "
        f"{info['torch_threads']}, load average {load} (1/5/15 min)"
    )


def add_output_json(parser) -> None:
    """The ``--output_json`` option every benchmark has."""
    parser.add_argument(
        "--output_json", default=None, help="also write the printed figures to this JSON (atomic)"
    )


class BenchmarkRun:
    """Machine before and after one benchmark run, and its atomic JSON report.

    Arguments
    ---------
    name : str
        The benchmark (``"mixing"``, ...), recorded in the report.
    args : argparse.Namespace
        Parsed options (recorded; ``args.output_json`` is where the report goes).
    threads : int or None
        Threads the measurement uses; sets ``torch.set_num_threads`` when given.
    out : callable
        Where the machine lines are printed (``print``).
    """

    def __init__(self, name: str, args, threads=None, out=print):
        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))
        self.name = name
        self.args = args
        self.threads = threads
        self.out = out
        self.before = machine_info()
        self.out(f"{name}: before: {describe_machine(self.before)}")

    def finish(self, results) -> dict:
        """Print the machine after, write the report to ``--output_json``; return it."""
        after = machine_info()
        self.out(f"{self.name}: after: {describe_machine(after)}")
        report = {
            "benchmark": self.name,
            "command": _command(self.name),
            "args": {key: _jsonable(value) for key, value in vars(self.args).items()},
            "threads": self.threads,
            "machine_before": self.before,
            "machine_after": after,
            "results": results,
        }
        path = getattr(self.args, "output_json", None)
        if path:
            atomic_write_json(path, report)
            self.out(f"written: {path}")
        return report


def _command(name: str) -> list:
    """The command line as ``python -m benchmarks.NAME ...`` when run that way, else ``sys.argv``."""
    if sys.argv and Path(sys.argv[0]).name == f"{name}.py":
        return ["python", "-m", f"benchmarks.{name}", *sys.argv[1:]]
    return ["python", *sys.argv]


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value)
