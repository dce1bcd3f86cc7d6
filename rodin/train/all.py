"""`rodin train all`: every stage in order, from nothing to a model folder with its card; resumable.

WORK/                 (not shipped)
  data/               the generated dataset (`rodin data synth`)
  fit/                the fit run: shared decoder and tri-plane store (`rodin fit`)
  identities/         identities generated apart, a few views each, for the encoder, the prior, the edit
                      directions and the judge (they learn from portraits and views, not tri-planes)
MODEL/
  semantic/ base/ decoder/ prior/ reader/ upsampler/ refiner/    the components model_index.json names
  judge/              the attribute judge the evaluation reads (not a pipeline component)
  train_all.json      the progress record: per finished stage its wall time, machine, command, figures
  MODEL_CARD.md       written from train_all.json after every stage
  (and each stage's own records and logs: encoder_metrics.json, train_base.json, eval_samples.json, ...)

A rerun skips the stages train_all.json records as finished; a stage cut short resumes from its own
checkpoint (the stage functions resume by themselves; the judge and the evaluation, short, start over).
`until` stops after a stage, so that a model too big for one session is trained stage by stage. Time
spent on an unfinished stage is saved every `HEARTBEAT_S` seconds, so a stage's wall time adds up over
the sessions that trained it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rodin.config import Preset
from rodin.errors import ConfigError, DataError

STAGES = ("data", "fit", "encoder", "base", "prior", "upsampler", "refiner", "judge", "eval")
RECORD = "train_all.json"
CARD = "MODEL_CARD.md"
FORMAT = 1
HEARTBEAT_S = 30.0
DATA_SEED = 0


def check_stage(name: str) -> str:
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r} for --until; choose one of {', '.join(STAGES)}")
    return name


def default_work(out: Path) -> Path:
    """runs/<model folder name>-work, beside the other runs."""
    return Path("runs") / f"{Path(out).resolve().name}-work"


@dataclass(frozen=True)
class Plan:
    """What a `rodin train all` run makes: its identity, fixed by its first session."""

    preset: Preset
    out: Path
    work: Path
    subjects: int
    supersample: int | None = None    # the generator's rays per pixel side (None: its default, SUPERSAMPLE)

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def fit(self) -> Path:
        return self.work / "fit"

    @property
    def identities(self) -> Path:
        """Where the stages that learn from images alone learn from (IdentitiesConfig)."""
        return self.work / "identities" if self.preset.identities.subjects else self.data

    def dataset(self) -> dict[str, Any]:
        from rodin.data.synth import SUPERSAMPLE

        d = self.preset.data
        return {"subjects": self.subjects, "views": d.views, "resolution": d.resolution,
                "portrait_resolution": d.portrait_resolution, "seed": DATA_SEED,
                "supersample": SUPERSAMPLE if self.supersample is None else self.supersample}


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _machine(cpu: bool) -> dict[str, Any]:
    """The machine a stage ran on (rodin.bench.record), and the accelerator it trained on."""
    import torch

    from rodin.bench.record import machine_info

    device = "cpu"
    if not cpu and torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return {**machine_info(), "device": device}


class Progress:
    """MODEL/train_all.json, written whole after every change, and the card beside it."""

    def __init__(self, plan: Plan, command: str) -> None:
        self.path = plan.out / RECORD
        self.plan = plan
        self.lock = threading.Lock()
        self.record = self._load()
        self._check_identity()
        # A run keeps the pixels it started with: one begun before the generator averaged rays (2026-12-05)
        # recorded none, and its data, half made or whole, has one ray per pixel.
        self.plan = replace(plan, supersample=int((self.record.get("data") or {}).get("supersample", 1)))
        if command not in self.record["commands"]:
            self.record["commands"].append(command)
        self.command = command

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format": FORMAT, "preset": self.plan.preset.name, "work": str(self.plan.work),
                    "data": self.plan.dataset(), "commands": [], "stages": {}, "unfinished": {}}
        try:
            record = json.loads(self.path.read_text())
            if not isinstance(record.get("stages"), dict):
                raise ValueError("no stages")
        except (OSError, ValueError, AttributeError) as err:
            raise DataError(f"{self.path}: not a readable progress record ({err}); move it aside to start over") \
                from None
        record.setdefault("commands", [])
        record.setdefault("unfinished", {})
        return record

    def _check_identity(self) -> None:
        r, plan = self.record, self.plan
        given = {"--preset": plan.preset.name, "--subjects": plan.subjects}
        kept = {"--preset": r.get("preset"), "--subjects": (r.get("data") or {}).get("subjects")}
        for flag in given:
            if given[flag] != kept[flag]:
                raise ConfigError(f"{plan.out} is being trained with {flag} {kept[flag]}, not {given[flag]}; "
                                  f"rerun with {flag} {kept[flag]} or choose another --out")
        if Path(r.get("work", "")).resolve() != plan.work.resolve():
            raise ConfigError(f"{plan.out} is being trained with --work {r.get('work')}, not {plan.work}; "
                              f"rerun with --work {r.get('work')} or choose another --out")

    def finished(self, stage: str) -> bool:
        return stage in self.record["stages"]

    def write(self) -> None:
        from rodin.io import write_atomic, write_json
        from rodin.train.card import model_card

        with self.lock:
            write_json(self.path, self.record)
            write_atomic(self.plan.out / CARD, model_card(self.record, self.plan.out).encode())

    def run(self, stage: str, work: Callable[[], dict], *, cpu: bool) -> dict:
        """Run one stage, keeping the clock: earlier sessions' time on it plus this one's."""
        earlier = self.record["unfinished"].get(stage, {"seconds": 0.0, "sessions": 0})
        machine = _machine(cpu)
        began = time.perf_counter()
        stop = threading.Event()

        def note_time() -> None:
            self.record["unfinished"][stage] = {"seconds": round(earlier["seconds"] + time.perf_counter() - began, 2),
                                                "sessions": earlier["sessions"] + 1, "machine": machine}

        def heartbeat() -> None:
            while not stop.wait(HEARTBEAT_S):
                note_time()
                self.write()

        ticker = threading.Thread(target=heartbeat, name=f"train-all-{stage}-clock", daemon=True)
        ticker.start()
        try:
            figures = work()
        finally:
            stop.set()
            ticker.join()
            note_time()              # a failure or an interruption keeps the time spent so far
            self.write()
        spent = self.record["unfinished"].pop(stage)
        self.record["stages"][stage] = {"wall_s": spent["seconds"], "sessions": spent["sessions"],
                                        "finished": _now(), "machine": machine, "command": self.command,
                                        "figures": figures}
        self.write()
        return figures


# --- the stages ----------------------------------------------------------------------------------------
# Each takes the plan and returns the figures it reports; the work itself is the stage's own function.

def _data(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.data.synth import synth_dataset

    d = plan.dataset()
    synth_dataset(plan.data, subjects=d["subjects"], views=d["views"], resolution=d["resolution"], seed=d["seed"],
                  portrait_resolution=d["portrait_resolution"], supersample=d["supersample"], progress=show_progress)
    entries = json.loads((plan.data / "index.json").read_text())["subjects"]
    splits = [e.get("split", "train") for e in entries]
    figures = {**d, "train": splits.count("train"), "heldout": len(splits) - splits.count("train")}
    i = plan.preset.identities
    if i.subjects:
        synth_dataset(plan.identities, subjects=i.subjects, views=i.views, resolution=d["resolution"], seed=i.seed,
                      portrait_resolution=d["portrait_resolution"], supersample=d["supersample"],
                      progress=show_progress, workers=max(1, min(4, os.cpu_count() or 1, i.subjects // 100)))
        figures["identities"] = {"folder": str(plan.identities), "subjects": i.subjects, "views": i.views,
                                 "seed": i.seed}
    return figures


def _fit(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.fit.run import fit_dataset

    return fit_dataset(plan.data, plan.fit, preset=plan.preset, max_subjects=plan.subjects, log=log,
                       show_progress=show_progress)


def _encoder(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.train.edits import measure_edits
    from rodin.train.encoder import train_encoder

    p = plan.preset
    figures = train_encoder(plan.identities, plan.out, config=p.encoder, train=p.train_encoder, cpu=cpu, log=log,
                            show_progress=show_progress)
    return {**figures, "edits": measure_edits(plan.identities, plan.out, strict=False, log=log)}


def _base(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.train.base import train_base
    from rodin.train.edits import EDITS, add_plane_edits
    from rodin.train.encoder import SEMANTIC

    figures = train_base(plan.fit, plan.out, preset=plan.preset, semantic=plan.out / SEMANTIC, cpu=cpu, log=log,
                         show_progress=show_progress)
    if (plan.out / EDITS / "config.json").is_file():     # the edits' plane directions need the base model
        figures = {**figures, "edits": add_plane_edits(plan.out, plan.fit, log=log)}
    return figures


def _prior(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.pipeline import write_model_index
    from rodin.semantic.loading import load_semantic
    from rodin.train.encoder import SEMANTIC
    from rodin.train.prior import PRIOR, train_prior
    from rodin.train.reader import READER, add_value_planes, train_reader

    p = plan.preset
    semantic = load_semantic(plan.out / SEMANTIC)
    figures = train_prior(plan.identities, plan.out, encoder=semantic, config=replace(p.prior, dim=semantic.dim),
                          train=p.train_prior, portraits=p.train_encoder, cpu=cpu, log=log, show_progress=show_progress)
    write_model_index(plan.out, render=p.render, preset=p.name, components={PRIOR: PRIOR})
    # The prompt reader draws prompts' z from the same identities' portraits (its figures beside the prior's).
    reader = train_reader(plan.identities, plan.out, train=p.train_reader, log=log)
    if (plan.out / "base" / "config.json").is_file():    # prompts are steered at the base model's side
        reader["steering"] = add_value_planes(plan.out, plan.fit, log=log)
    write_model_index(plan.out, render=p.render, preset=p.name, components={READER: READER})
    return {**figures, "reader": reader}


def _upsampler(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.pipeline import write_model_index
    from rodin.train.encoder import SEMANTIC
    from rodin.train.upsampler import UPSAMPLER, train_upsampler

    p = plan.preset
    figures = train_upsampler(plan.fit, plan.out, preset=p, semantic=plan.out / SEMANTIC, cpu=cpu, log=log,
                              show_progress=show_progress)
    write_model_index(plan.out, render=p.render, preset=p.name, components={UPSAMPLER: UPSAMPLER})
    return figures


def _refiner(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.pipeline import write_model_index
    from rodin.train.refiner import REFINER, train_refiner

    p = plan.preset
    figures = train_refiner(plan.fit, plan.out, preset=p, cpu=cpu, log=log, show_progress=show_progress)
    write_model_index(plan.out, render=p.render, preset=p.name, components={REFINER: REFINER})
    return figures


def _mean(values: dict[str, float]) -> float | None:
    return round(sum(values.values()) / len(values), 4) if values else None


def _judge(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    from rodin.semantic.judge import train_judge

    t = plan.preset.train_judge
    metrics = train_judge(plan.identities, plan.out / "judge", steps=t.steps, batch=t.batch, seed=t.seed, log=log)
    return {**metrics, "accuracy_mean": _mean(metrics["accuracy"]), "majority_mean": _mean(metrics["majority"]),
            "train_accuracy_mean": _mean(metrics["train_accuracy"])}


def eval_command(plan: Plan) -> str:
    """The `rodin eval samples` line whose figures the eval stage records."""
    import shlex

    e = plan.preset.eval
    return shlex.join(["rodin", "eval", "samples", str(plan.out), "--data", str(plan.data), "--samples",
                       str(e.samples), "--views", str(e.views), "--resolution", str(e.resolution), "--features",
                       "judge", "--seed", str(e.seed)])


def _eval(plan: Plan, *, log, show_progress: bool, cpu: bool) -> dict:
    """`rodin eval samples` on the finished model: FID/KID and attribute distances of unconditional
    samples against the held-out subjects, beside the real-against-real floor."""
    from rodin.bench.record import provenance
    from rodin.eval.features import load_extractor
    from rodin.eval.samples import evaluate_samples, held_out_subjects
    from rodin.io import write_json
    from rodin.pipeline import RodinPipeline
    from rodin.semantic.judge import load_judge

    e = plan.preset.eval
    held = len(held_out_subjects(plan.data))
    if held < 4:
        log(f"eval: {held} held-out subjects; FID/KID need at least 4, skipped")
        return {"skipped": f"{held} held-out (val/test) subjects in the dataset; FID/KID need at least 4"}
    command = eval_command(plan)
    record = provenance(command)
    began = time.perf_counter()
    judge = load_judge(plan.out / "judge").eval()
    figures, _ = evaluate_samples(RodinPipeline.from_pretrained(plan.out), plan.data,
                                  extractor=load_extractor("judge", judge=judge), judge=judge, samples=e.samples,
                                  views=e.views, resolution=e.resolution, seed=e.seed, log=log,
                                  progress=show_progress)
    figures = {"model": str(plan.out), "data": str(plan.data), "judge": str(plan.out / "judge"), **figures,
               "seconds": round(time.perf_counter() - began, 1)}
    write_json(plan.out / "eval_samples.json", {**record, "figures": figures})
    return {**figures, "command": command}


RUNNERS: dict[str, Callable[..., dict]] = {
    "data": _data, "fit": _fit, "encoder": _encoder, "base": _base, "prior": _prior, "upsampler": _upsampler,
    "refiner": _refiner, "judge": _judge, "eval": _eval,
}


def train_all(out: Path, *, preset: Preset, work: Path | None = None, subjects: int | None = None,
              until: str | None = None, cpu: bool = False, command: str = "rodin train all",
              log: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """Run the stages not yet finished, in order, up to `until` (all of them by default); returns the
    progress record (as in MODEL/train_all.json)."""
    last = check_stage(until) if until is not None else STAGES[-1]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:       # launched by accelerate or torchrun
        raise ConfigError("`rodin train all` runs as one process; launch the one-stage verbs (`rodin fit`, "
                          "`rodin train base`, ...) for several processes")
    out = Path(out)
    work = Path(work) if work is not None else default_work(out)
    subjects = preset.data.subjects if subjects is None else subjects
    if subjects < 2:
        raise ConfigError(f"--subjects must be at least 2 (the base model trains on 2 or more), got {subjects}")
    o, w = out.resolve(), work.resolve()
    if o == w or o in w.parents or w in o.parents:
        raise ConfigError(f"--out {out} and --work {work} overlap; the work folder holds the dataset and the fit "
                          "run, which the model folder does not ship: keep them apart")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if not (out / RECORD).is_file() and any((out / name).exists() for name in ("model_index.json", CARD)):
        raise ConfigError(f"{out} holds a model that `rodin train all` did not start (no {RECORD}); choose "
                          "another --out, or move that model aside")
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(preset=preset, out=out, work=work, subjects=subjects)
    progress = Progress(plan, command)
    plan = progress.plan                      # the plan as the run began it (its pixels)
    progress.write()
    for k, stage in enumerate(STAGES[:STAGES.index(last) + 1], start=1):
        if progress.finished(stage):
            log(f"[{k}/{len(STAGES)}] {stage}: finished earlier, skipped")
            continue
        log(f"[{k}/{len(STAGES)}] {stage}")
        progress.run(stage, lambda s=stage: RUNNERS[s](plan, log=log, show_progress=show_progress, cpu=cpu),
                     cpu=cpu)
    return progress.record


__all__ = ["CARD", "RECORD", "STAGES", "Plan", "check_stage", "default_work", "eval_command", "train_all"]
