"""What `rodin bench NAME` does: run, print a table and a last-line JSON object, record the result.

Full runs record benchmarks/results/NAME.json (see `rodin.bench.record`); `--quick` runs are smoke tests
and record nothing. `rodin bench report` renders BENCHMARKS.md from the records (`rodin.bench.report`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

REPORT = "report"
FITTING = ("fit", "upsampler", "refiner")          # benchmarks that fit subjects first (--steps, --subjects)
WITH_MODEL = ("generate", "upsampler", "refiner")  # benchmarks of a model folder (--model)
WITH_DEVICE = ("fit", "paper")                     # benchmarks that run on a chosen device (--device)


def run_command(name: str, *, quick: bool = False, steps: int | None = None, subjects: int | None = None,
                settings: list[str] | None = None, record: bool = True, model: Path | None = None,
                device: str = "cpu", precision: str = "fp32", batch: int = 1, stages: str | None = None,
                fsdp: int = 1, supersample: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from rodin.bench import run_benchmark
    from rodin.bench.record import provenance, record_name, write_record
    from rodin.config import parse_settings
    from rodin.errors import ConfigError

    if name == REPORT:
        from rodin.bench.report import write_report

        written = write_report()
        print(json.dumps({"report": str(written.path), "records": written.records}), flush=True)
        return
    options: dict = {"quick": quick}
    overrides = parse_settings(settings or [])
    if name != "fit" and overrides:
        raise ConfigError("--set applies to `rodin bench fit` only")
    if name != "fit" and supersample is not None:
        raise ConfigError("--supersample applies to `rodin bench fit` only")
    if name not in FITTING and (steps is not None or subjects is not None):
        raise ConfigError(f"--steps and --subjects apply to `rodin bench {'|'.join(FITTING)}` only")
    if model is not None:
        if name not in WITH_MODEL:
            raise ConfigError(f"--model applies to `rodin bench {'|'.join(WITH_MODEL)}` only")
        options["model"] = model
    if device != "cpu":
        if name not in WITH_DEVICE:
            raise ConfigError(f"--device applies to `rodin bench {'|'.join(WITH_DEVICE)}` only")
        from rodin.devices import parse_device

        options["device"] = str(parse_device(device))
    if (precision != "fp32" or batch != 1 or stages is not None or fsdp != 1) and name != "paper":
        raise ConfigError("--precision, --batch, --stages and --fsdp apply to `rodin bench paper` only")
    if name == "paper":
        options.update(precision=precision, batch=batch, fsdp=fsdp)
        if stages is not None:
            options["stages"] = tuple(s.strip() for s in stages.split(",") if s.strip())
    if steps is not None:
        options["steps"] = steps
    if subjects is not None:
        options["subjects"] = subjects
    if overrides:
        options["overrides"] = overrides
    if supersample is not None:
        options["supersample"] = supersample
    words = ["rodin", "bench", name] + (["--steps", str(steps)] if steps is not None else [])
    words += (["--subjects", str(subjects)] if subjects is not None else [])
    words += (["--model", str(model)] if model is not None else [])
    extras = {"device": device if device != "cpu" else None, "precision": precision if precision != "fp32" else None,
              "batch": batch if batch != 1 else None, "stages": stages or None, "fsdp": fsdp if fsdp != 1 else None,
              "supersample": supersample}
    for key, value in extras.items():
        words += [f"--{key}", str(value)] if value is not None else []
    for word in settings or []:
        words += ["--set", word]
    started = provenance(shlex.join(words + (["--quick"] if quick else [])))   # the load before the run
    result = run_benchmark(name, **options)
    table = Table(title=result.title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for what, value in result.rows:
        table.add_row(what, value)
    Console(stderr=False).print(table)
    if record and not quick:
        named = {k: str(v).replace(":", "").replace(",", "-") for k, v in extras.items() if v is not None}
        path = write_record(record_name(name, {"steps": steps, "subjects": subjects, **overrides, **named}),
                            {"benchmark": name, **started, "title": result.title, "figures": result.figures,
                             "rows": [list(row) for row in result.rows]})
        Console(stderr=True).print(f"recorded {path}")
    print(json.dumps(result.figures), flush=True)


__all__ = ["REPORT", "run_command"]
