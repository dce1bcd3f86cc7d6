"""`rodin fit`: a dataset in, a shared decoder and a tri-plane store out, resumable.

RUN/
  decoder/            config.json, model.safetensors, template.safetensors (mean joint tri-plane)
  triplanes/          the TriplaneStore (planes.npy, subjects.json, stats.safetensors)
  checkpoint/         joint-stage state while it runs (decoder, planes, optimiser, progress)
  subject_metrics.json, metrics.json, fit_config.json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from rodin.config import FitConfig, Preset
from rodin.errors import DataError, FitError, RodinError
from rodin.eval.metrics import psnr, ssim
from rodin.fit.fitter import SubjectPlanes, cosine_factor, fit_frozen, fit_step
from rodin.fit.shards import (
    JOINT_SUBJECTS,
    Shard,
    frozen_batches,
    joint_subjects,
    mark_shard_done,
    shard_root,
    try_merge,
)
from rodin.fit.store import TriplaneStore
from rodin.fit.subject import FitSubject, prepare_subject
from rodin.io import write_atomic, write_json
from rodin.modeling import load_component, save_component
from rodin.render.volume import occupancy_from_density, render_views
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.triplane import init_planes

DECODER_KIND = "triplane-decoder"


@dataclass
class SubjectSource:
    id: str
    path: Path
    split: str


@dataclass
class LoadOptions:
    up: str = "auto"
    bound: float | None = None
    resolution: int | None = None


def list_sources(data: Path) -> list[SubjectSource]:
    """Subjects of a dataset folder (with index.json), of a folder of subject folders, or one subject."""
    from rodin.data.nerf import list_subjects

    data = Path(data)
    splits: dict[str, str] = {}
    index = data / "index.json"
    if index.is_file():
        try:
            for entry in json.loads(index.read_text()).get("subjects", []):
                splits[str(entry["id"])] = str(entry.get("split", "train"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{index}: malformed dataset index ({err})") from None
    return [SubjectSource(p.name, p, splits.get(p.name, "train")) for p in list_subjects(data)]


def load_fit_subject(source: SubjectSource, *, config: FitConfig, options: LoadOptions) -> FitSubject:
    from rodin.data.nerf import load_subject

    views = load_subject(source.path, up=options.up, bound=options.bound, resolution=options.resolution)
    return prepare_subject(source.id, views.images, views.c2w, views.fov_x, heldout=config.heldout_views,
                           hull_resolution=config.hull_resolution)


@torch.no_grad()
def heldout_metrics(subject: FitSubject, planes: torch.Tensor, decoder: TriplaneDecoder,
                    preset: Preset) -> dict[str, float]:
    """Render the views kept out of fitting exactly as `rodin render` would, and score them."""
    if len(subject.heldout_views) == 0:
        return {}
    r = preset.render
    occupancy = occupancy_from_density(planes, decoder, resolution=r.occupancy_resolution,
                                       threshold=r.occupancy_threshold)
    rgb, _, _ = render_views(planes, decoder, subject.c2w[subject.heldout_views], subject.fov_x,
                             subject.resolution, samples=r.samples, importance=r.importance,
                             occupancy=occupancy, background=r.background)
    target = subject.rgb[subject.heldout_views]
    p = psnr(rgb, target)
    s = ssim(rgb, target)
    return {"psnr": float(p.mean()), "psnr_min": float(p.min()), "ssim": float(s.mean())}


class TrainingLog:
    """A CSV of training figures, appended line by line (a crash loses at most the last line)."""

    FIELDS = ("time", "stage", "round", "step", "subjects", "train_psnr")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.time()

    def append(self, **values) -> None:
        values["time"] = round(time.time() - self.start, 2)
        if isinstance(values.get("train_psnr"), float):
            values["train_psnr"] = round(values["train_psnr"], 3)
        new = not self.path.exists()
        with open(self.path, "a") as handle:
            if new:
                handle.write(",".join(self.FIELDS) + "\n")
            handle.write(",".join(str(values.get(f, "")) for f in self.FIELDS) + "\n")


class JointCheckpoint:
    """Decoder, planes and both optimisers of the joint stage, plus where it stopped.

    Everything lives in one file (the progress in its metadata), replaced atomically, so that a kill
    cannot pair the tensors of one round with the progress of another; joint.json repeats the progress
    for people to read.
    """

    def __init__(self, root: Path) -> None:
        self.tensors = root / "joint.safetensors"
        self.state = root / "joint.json"

    def exists(self) -> bool:
        return self.tensors.is_file()

    def remove(self) -> None:
        self.tensors.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)

    def save(self, decoder, planes, optimizers, progress: dict) -> None:
        tensors = {f"decoder.{k}": v.detach().clone() for k, v in decoder.state_dict().items()}
        for i, subject in enumerate(planes):
            for k, level in enumerate(subject.levels):
                tensors[f"planes.{i}.{k}"] = level.detach().clone()
        groups = []
        for name, opt in optimizers.items():
            state = opt.state_dict()
            for pid, entry in state["state"].items():
                for key, value in entry.items():
                    tensors[f"opt.{name}.{pid}.{key}"] = torch.as_tensor(value).clone()
            groups.append({"name": name, "param_groups": state["param_groups"]})
        self.tensors.parent.mkdir(parents=True, exist_ok=True)
        info = {"progress": progress, "optimizers": groups}
        write_atomic(self.tensors, save(tensors, metadata={"joint": json.dumps(info)}))
        write_json(self.state, info)

    def load(self, decoder, planes, optimizers) -> dict:
        from safetensors import safe_open

        with safe_open(str(self.tensors), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("joint")
        tensors = load_file(str(self.tensors))
        info = json.loads(stored) if stored else json.loads(self.state.read_text())
        decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
        with torch.no_grad():
            for i, subject in enumerate(planes):
                for k, level in enumerate(subject.levels):
                    level.copy_(tensors[f"planes.{i}.{k}"])
        for entry in info["optimizers"]:
            name = entry["name"]
            state: dict = {}
            prefix = f"opt.{name}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    pid, field = key[len(prefix):].split(".", 1)
                    state.setdefault(int(pid), {})[field] = value
            optimizers[name].load_state_dict({"state": state, "param_groups": entry["param_groups"]})
        return info["progress"]


def fit_dataset(
    data: Path,
    out: Path,
    *,
    preset: Preset,
    decoder_path: Path | None = None,
    max_subjects: int | None = None,
    options: LoadOptions | None = None,
    shard: Shard | None = None,
    joint_only: bool = False,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Fit every subject of `data` into the store under `out`; returns the metrics dict.

    `joint_only` stops after the decoder stage (the step before sharded fitting); `shard` fits only
    that shard's batches of the frozen stage into OUT/shards/I-of-N (rodin.fit.shards), merging them
    into OUT/triplanes when the last shard finishes.
    """

    options = options or LoadOptions()
    sharded = shard is not None and shard.count > 1
    config, tri = preset.fit, preset.triplane
    out = Path(out)
    sources = list_sources(data)
    if max_subjects is not None:
        sources = sources[:max_subjects]
    if not sources:
        raise DataError(f"{data}: no subjects found")
    out.mkdir(parents=True, exist_ok=True)
    if sharded:
        return _fit_shard(sources, out, preset=preset, shard=shard, decoder_path=decoder_path, options=options,
                          log=log, show_progress=show_progress)
    write_json(out / "fit_config.json", {"data": str(data), "preset": preset.name,
                                         "fit": asdict(config), "triplane": asdict(tri),
                                         "decoder": asdict(preset.decoder), "render": asdict(preset.render),
                                         "load": asdict(options), "pretrained_decoder": str(decoder_path or "")})
    store = TriplaneStore.create(out / "triplanes", [s.id for s in sources], [s.split for s in sources],
                                 (3, tri.channels, tri.resolution, tri.resolution))
    metrics_path = out / "subject_metrics.json"
    subject_metrics: dict[str, dict] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    timings: dict[str, float] = {}

    timings["eval_s"] = 0.0

    def record(batch: list[int], subjects: list[FitSubject], planes: torch.Tensor, decoder) -> None:
        began = time.perf_counter()
        for k, row in enumerate(batch):
            subject_metrics[store.ids[row]] = heldout_metrics(subjects[k], planes[k:k + 1], decoder, preset)
        timings["eval_s"] += time.perf_counter() - began
        store.put(batch, planes)
        write_json(metrics_path, subject_metrics)

    def load_rows(rows: list[int]) -> tuple[list[int], list[FitSubject]]:
        kept, subjects = [], []
        for row in rows:
            try:
                subjects.append(load_fit_subject(sources[row], config=config, options=options))
                kept.append(row)
            except RodinError as err:
                log(f"skipping {sources[row].id}: {err}")
                store.mark_failed(row, str(err))
        return kept, subjects

    # Stage A: the shared decoder, fitted jointly with a first group of subjects.
    decoder_dir = Path(decoder_path) if decoder_path else out / "decoder"
    start = time.perf_counter()
    # config.json is written after the weights: with both present the decoder was saved whole.
    if (decoder_dir / "model.safetensors").is_file() and (decoder_dir / "config.json").is_file():
        decoder = load_component(TriplaneDecoder, type(preset.decoder), decoder_dir, kind=DECODER_KIND)
        if decoder.config.features != tri.channels:
            raise DataError(f"{decoder_dir}: decoder reads {decoder.config.features} channels, "
                            f"preset {preset.name} fits {tri.channels}")
        if decoder_dir.resolve() != (out / "decoder").resolve():
            # The run keeps a copy of the decoder it was fitted with, so that it renders on its own.
            for item in sorted(decoder_dir.glob("*.*")):
                if item.suffix in (".json", ".safetensors"):
                    write_atomic(out / "decoder" / item.name, item.read_bytes())
    elif decoder_path:
        raise DataError(f"{decoder_path}: no decoder here (expected config.json and model.safetensors)")
    else:
        decoder = _joint_stage(sources, store, out, preset, options, log, record, load_rows, show_progress)
        write_json(out / JOINT_SUBJECTS, [store.ids[i] for i, done in enumerate(store.done) if done])
        save_component(decoder, decoder_dir, kind=DECODER_KIND)
        JointCheckpoint(out / "checkpoint").remove()      # the decoder and planes are saved for good
    timings["joint_s"] = time.perf_counter() - start
    template_path = decoder_dir / "template.safetensors"
    template = load_file(str(template_path))["planes"] if template_path.is_file() else None

    if joint_only:
        write_json(out / "metrics.json", summarise(subject_metrics, store, timings))
        return summarise(subject_metrics, store, timings)

    # Stage B: everyone else, many at once, decoder frozen. Batches are fixed by the subject list (not
    # by what is left), so a subject's planes do not depend on restarts or on sharding.
    start = time.perf_counter()
    batches = frozen_batches(store.ids, joint_subjects(out), config.batch_subjects)
    timings["frozen_subjects"] = _frozen_stage(batches, list(range(len(sources))), store, decoder, template, preset,
                                               record, load_rows, log, show_progress)
    timings["frozen_s"] = time.perf_counter() - start

    stats = store.compute_stats()
    metrics = summarise(subject_metrics, store, timings)
    metrics["stats_channels"] = int(stats.mean.numel())
    write_json(out / "metrics.json", metrics)
    return metrics


def _frozen_stage(batches, origin, store, decoder, template, preset, record, load_rows, log, show_progress) -> int:
    """Fit the given batches of store rows (skipping finished subjects); `origin` maps a store row to
    its row in the whole dataset, which seeds the batch. Returns the number of subjects fitted."""
    from tqdm import tqdm

    fitted = 0
    bar = tqdm(batches, desc="fit (frozen decoder)", unit="batch", disable=not show_progress, leave=False)
    for batch in bar:
        todo = [r for r in batch if not store.done[r] and store.ids[r] not in store.failed]
        if not todo:
            continue
        rows, subjects = load_rows(todo)
        if rows:
            fitted += _fit_frozen_rows(rows, subjects, decoder, template, preset, store, record, log, bar,
                                       origin=origin)
    return fitted


def _fit_shard(sources, out, *, preset, shard, decoder_path, options, log, show_progress) -> dict:
    """The frozen stage for one shard's batches, into OUT/shards/I-of-N; merges when all shards are done."""
    config, tri = preset.fit, preset.triplane
    decoder_dir = Path(decoder_path) if decoder_path else out / "decoder"
    if not ((decoder_dir / "config.json").is_file() and (out / "triplanes").is_dir()):
        raise FitError(f"{out}: sharded fitting starts from a fitted decoder; run "
                       f"`rodin fit DATA --out {out} --joint-only` (with --decoder to reuse one) first")
    decoder = load_component(TriplaneDecoder, type(preset.decoder), decoder_dir, kind=DECODER_KIND)
    template_path = decoder_dir / "template.safetensors"
    template = load_file(str(template_path))["planes"] if template_path.is_file() else None
    batches = frozen_batches([s.id for s in sources], joint_subjects(out), config.batch_subjects)
    mine = batches[shard.index::shard.count]
    origin = [r for batch in mine for r in batch]
    local, first = [], 0
    for batch in mine:                  # the same batches, numbered as rows of the shard's own store
        local.append(list(range(first, first + len(batch))))
        first += len(batch)
    root = shard_root(out, shard)
    mine_sources = [sources[r] for r in origin]
    store = TriplaneStore.create(root / "triplanes", [s.id for s in mine_sources], [s.split for s in mine_sources],
                                 (3, tri.channels, tri.resolution, tri.resolution))
    metrics_path = root / "subject_metrics.json"
    subject_metrics: dict[str, dict] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    timings = {"eval_s": 0.0}

    def record(batch, subjects, planes, decoder) -> None:
        began = time.perf_counter()
        for k, row in enumerate(batch):
            subject_metrics[store.ids[row]] = heldout_metrics(subjects[k], planes[k:k + 1], decoder, preset)
        timings["eval_s"] += time.perf_counter() - began
        store.put(batch, planes)
        write_json(metrics_path, subject_metrics)

    def load_rows(rows):
        kept, subjects = [], []
        for row in rows:
            try:
                subjects.append(load_fit_subject(mine_sources[row], config=config, options=options))
                kept.append(row)
            except RodinError as err:
                log(f"skipping {mine_sources[row].id}: {err}")
                store.mark_failed(row, str(err))
        return kept, subjects

    start = time.perf_counter()
    timings["frozen_subjects"] = _frozen_stage(local, origin, store, decoder, template, preset, record, load_rows,
                                               log, show_progress)
    timings["frozen_s"] = time.perf_counter() - start
    mark_shard_done(out, shard, timings)
    merged = try_merge(out, shard.count, log=log)
    if merged is not None:
        log(f"all {shard.count} shards done: merged into {out / 'triplanes'}")
        return merged
    log(f"shard {shard.name} done; the last shard to finish merges (or run `rodin fit-merge {out}`)")
    return {"shard": shard.name, "subjects": len(origin), **summarise(subject_metrics, store, timings)}


def _fit_frozen_rows(rows, subjects, decoder, template, preset, store, record, log, bar, *, origin) -> int:
    config, tri = preset.fit, preset.triplane
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + origin[rows[0]])
    # A template (the mean tri-plane of the joint stage) already breaks symmetry: start near it.
    noise = config.template_noise if template is not None else config.init_noise
    init = init_planes(len(rows), tri.channels, tri.resolution, generator=gen, scale=noise)
    if template is not None:
        init = init + template
    planes = [SubjectPlanes(p, config.plane_levels) for p in init]

    recent: list[float] = []

    def show(step, stats):
        recent.append(stats.psnr)
        if step % 10 == 0:
            bar.set_postfix(psnr=f"{stats.psnr:.1f}")

    try:
        fit_frozen(subjects, planes, decoder, config=config, triplane=tri, generator=gen, on_step=show)
    except FitError:
        if len(rows) == 1:
            log(f"{store.ids[rows[0]]}: loss became NaN or infinite; subject skipped")
            store.mark_failed(rows[0], "loss became NaN or infinite")
            return 0
        # Find the culprit: fit each subject alone; the others go on.
        return sum(_fit_frozen_rows([r], [s], decoder, template, preset, store, record, log, bar,
                                    origin=origin) for r, s in zip(rows, subjects))
    with torch.no_grad():
        record(rows, subjects, torch.stack([p() for p in planes]), decoder)
    TrainingLog(store.root.parent / "fit_log.csv").append(
        stage="frozen", step=config.steps, subjects=" ".join(store.ids[r] for r in rows),
        train_psnr=sum(recent[-10:]) / max(1, len(recent[-10:])))
    return len(rows)


def _joint_stage(sources, store, out, preset, options, log, record, load_rows, show_progress):
    from tqdm import tqdm

    config, tri = preset.fit, preset.triplane
    candidates = [i for i, s in enumerate(sources) if s.split == "train"] or list(range(len(sources)))
    rows, subjects = load_rows(candidates[:config.joint_subjects])
    if not rows:
        first = store.failed.get(sources[candidates[0]].id, "") if candidates else ""
        raise FitError(f"no subject could be loaded for the joint decoder stage ({first})")
    torch.manual_seed(config.seed)
    decoder = TriplaneDecoder(preset.decoder)
    gen = torch.Generator().manual_seed(config.seed)
    init = init_planes(len(rows), tri.channels, tri.resolution, generator=gen, scale=config.init_noise)
    planes = [SubjectPlanes(p, config.plane_levels) for p in init]
    optimizers = {"planes": torch.optim.Adam([q for p in planes for q in p.parameters()], lr=config.plane_lr),
                  "decoder": torch.optim.Adam(decoder.parameters(), lr=config.decoder_lr)}
    checkpoint = JointCheckpoint(out / "checkpoint")
    first_round = 0
    if checkpoint.exists():
        progress = checkpoint.load(decoder, planes, optimizers)
        first_round = int(progress["round"])
        gen.set_state(torch.tensor(progress["rng"], dtype=torch.uint8))
        log(f"resuming the joint stage at round {first_round + 1}/{config.joint_rounds}")
    chunk = max(1, min(config.batch_subjects, len(rows)))
    total_steps = config.joint_rounds * config.joint_steps_per_turn * -(-len(rows) // chunk)
    bar = tqdm(total=total_steps, desc="fit (joint decoder)", unit="step", disable=not show_progress, leave=False)
    bar.update(first_round * total_steps // config.joint_rounds)
    step_count = first_round * total_steps // config.joint_rounds
    log_file = TrainingLog(out / "fit_log.csv")
    for round_ in range(first_round, config.joint_rounds):
        order = torch.randperm(len(rows), generator=gen).tolist()
        for start in range(0, len(order), chunk):
            members = order[start:start + chunk]
            turn_psnr = []
            for _ in range(config.joint_steps_per_turn):
                factor = cosine_factor(step_count, total_steps)
                for group in optimizers["decoder"].param_groups:
                    group["lr"] = config.decoder_lr * factor
                stats = fit_step([subjects[m] for m in members], [planes[m] for m in members], decoder,
                                 list(optimizers.values()), config=config, triplane=tri, generator=gen)
                step_count += 1
                turn_psnr.append(stats.psnr)
                bar.update(1)
                bar.set_postfix(psnr=f"{stats.psnr:.1f}", round=round_ + 1)
            log_file.append(stage="joint", round=round_ + 1, step=step_count,
                            subjects=" ".join(sources[rows[m]].id for m in members),
                            train_psnr=sum(turn_psnr) / len(turn_psnr))
        checkpoint.save(decoder, planes, optimizers,
                        {"round": round_ + 1, "rng": gen.get_state().tolist()})
    bar.close()
    decoder.requires_grad_(False)
    with torch.no_grad():
        stacked = torch.stack([p() for p in planes])
    record(rows, subjects, stacked, decoder)
    template_path = out / "decoder" / "template.safetensors"
    write_atomic(template_path, save({"planes": stacked.mean(0).contiguous()}))
    return decoder


def summarise(subject_metrics: dict[str, dict], store: TriplaneStore, timings: dict) -> dict:
    scored = {k: v for k, v in subject_metrics.items() if v}
    psnrs = torch.tensor([v["psnr"] for v in scored.values()]) if scored else torch.zeros(0)
    ssims = torch.tensor([v["ssim"] for v in scored.values()]) if scored else torch.zeros(0)
    return {
        "subjects": len(store.ids),
        "subjects_fitted": int(sum(store.done)),
        "subjects_failed": dict(store.failed),
        "heldout_subjects": len(scored),
        "heldout_psnr_mean": float(psnrs.mean()) if len(psnrs) else None,
        "heldout_psnr_min": float(psnrs.min()) if len(psnrs) else None,
        "heldout_ssim_mean": float(ssims.mean()) if len(ssims) else None,
        "heldout_view_psnr_min": min((v["psnr_min"] for v in scored.values()), default=None),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in timings.items()},
    }
