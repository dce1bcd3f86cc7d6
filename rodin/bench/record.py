"""Recorded results: every figure in BENCHMARKS.md comes from one of these JSON files.

A record holds the command that made it, the date, the machine (CPU model, cores, memory, load average at
the start, torch version) and the figures. `rodin bench NAME` writes benchmarks/results/NAME.json (a
variant such as `--steps 300` writes NAME--steps-300.json); `rodin eval` commands put the same provenance
into the JSON they write beside the model. `rodin bench report` renders BENCHMARKS.md from them.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

RESULTS_ENV = "RODIN_BENCH_RESULTS"      # where `rodin bench` records (default: benchmarks/results of the repo)


def repository_root() -> Path:
    """The checkout this package runs from (editable install), else the current folder."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def results_folder() -> Path:
    value = os.environ.get(RESULTS_ENV)
    return Path(value) if value else repository_root() / "benchmarks" / "results"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was when the measurement began."""
    import torch

    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": cores, "memory_gib": _memory_gib(), "load_average": load,
            "system": f"{platform.system()} {platform.machine()}", "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def provenance(command: str) -> dict[str, Any]:
    """The command, today's date and the machine, to store beside figures."""
    return {"command": command, "date": _dt.date.today().isoformat(), "machine": machine_info()}


def record_name(name: str, options: dict[str, Any]) -> str:
    """The result file's stem: the benchmark, then any option that is not its default (`fit--steps-300`)."""
    extra = "".join(f"--{key}-{value}" for key, value in sorted(options.items()) if value is not None)
    return f"{name}{extra}"


def write_record(name: str, record: dict[str, Any], *, folder: Path | None = None) -> Path:
    """benchmarks/results/NAME.json, written whole."""
    from rodin.io import write_json

    folder = folder or results_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    write_json(path, record)
    return path


__all__ = ["RESULTS_ENV", "machine_info", "provenance", "record_name", "repository_root", "results_folder",
           "write_record"]
