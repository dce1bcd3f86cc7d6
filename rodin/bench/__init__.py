"""Benchmarks: each returns a table for people and a dict of figures for machines.

`rodin bench NAME` prints the table, then the figures as one JSON object on its last line.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# name -> "module:function"; the function takes keyword options and returns a BenchResult.
BENCHMARKS: dict[str, str] = {
    "synth": "rodin.bench.synth:run",
    "decode": "rodin.bench.decode:run",
    "fit": "rodin.bench.fit:run",
    "unet": "rodin.bench.unet:run",
    "render-meshes": "rodin.bench.render_meshes:run",
    "generate": "rodin.bench.generate:run",
    "upsampler": "rodin.bench.hierarchy:upsampler",
    "refiner": "rodin.bench.hierarchy:refiner",
    "paper": "rodin.bench.paper:run",
}


@dataclass
class BenchResult:
    title: str
    rows: list[tuple[str, str]]            # (what, value) lines for the readable table
    figures: dict[str, Any] = field(default_factory=dict)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def run_benchmark(name: str, **options: Any) -> BenchResult:
    from rodin.errors import ConfigError

    target = BENCHMARKS.get(name)
    if target is None:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    module_name, func_name = target.split(":")
    func: Callable[..., BenchResult] = getattr(importlib.import_module(module_name), func_name)
    result = func(**options)
    result.figures.setdefault("benchmark", name)
    result.figures.setdefault("machine", machine_description())
    result.figures.setdefault("date", _dt.date.today().isoformat())
    return result
