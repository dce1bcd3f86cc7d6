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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from rodin.config import FitConfig, Preset
from rodin.errors import ConfigError, DataError, FitError, RodinError
from rodin.eval.heldout import render_heldout
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
from rodin.fit.world import World
from rodin.io import write_atomic, write_json
from rodin.modeling import load_component, save_component
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
    views = render_heldout(subject, planes, decoder, preset=preset)
    if views is None:
        return {}
    p = psnr(views.rendered, views.target)
    s = ssim(views.rendered, views.target)
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
    for people to read. Planes and their optimiser state are keyed by store row, so a run resumes on
    any number of processes (each loads the rows it owns).
    """

    FORMAT = 2

    def __init__(self, root: Path) -> None:
        self.tensors = root / "joint.safetensors"
        self.state = root / "joint.json"

    def exists(self) -> bool:
        return self.tensors.is_file()

    def remove(self) -> None:
        self.tensors.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)

    @staticmethod
    def subject_tensors(row: int, planes: SubjectPlanes, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One subject's share of the file: its plane levels and their Adam state."""
        tensors = {}
        for k, level in enumerate(planes.levels):
            tensors[f"planes.{row}.{k}"] = level.detach().cpu().clone()
            for field, value in optimizer.state.get(level, {}).items():
                tensors[f"opt.planes.{row}.{k}.{field}"] = torch.as_tensor(value).cpu().clone()
        return tensors

    def save(self, decoder, decoder_optimizer, subjects: dict[str, torch.Tensor], progress: dict) -> None:
        """`subjects`: every joint subject's `subject_tensors`, gathered from the processes that own them."""
        tensors = {f"decoder.{k}": v.detach().cpu().clone() for k, v in decoder.state_dict().items()}
        state = decoder_optimizer.state_dict()
        for pid, entry in state["state"].items():
            for key, value in entry.items():
                tensors[f"opt.decoder.{pid}.{key}"] = torch.as_tensor(value).cpu().clone()
        tensors.update(subjects)
        self.tensors.parent.mkdir(parents=True, exist_ok=True)
        info = {"format": self.FORMAT, "progress": progress, "decoder_param_groups": state["param_groups"]}
        write_atomic(self.tensors, save(tensors, metadata={"joint": json.dumps(info)}))
        write_json(self.state, info)

    def load(self, decoder, decoder_optimizer, planes: dict[int, SubjectPlanes],
             plane_optimizer: torch.optim.Optimizer) -> dict:
        """Restore the decoder and the given rows' planes; returns the progress."""
        from safetensors import safe_open

        with safe_open(str(self.tensors), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("joint")
        info = json.loads(stored) if stored else {}
        if info.get("format") != self.FORMAT:
            raise FitError(f"{self.tensors}: a joint-stage checkpoint of an older layout; delete "
                           f"{self.tensors.parent} to restart the joint stage")
        tensors = load_file(str(self.tensors))
        decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("opt.decoder."):
                pid, field = key[len("opt.decoder."):].split(".", 1)
                state.setdefault(int(pid), {})[field] = value
        decoder_optimizer.load_state_dict({"state": state, "param_groups": info["decoder_param_groups"]})
        with torch.no_grad():
            for row, subject in planes.items():
                for k, level in enumerate(subject.levels):
                    level.copy_(tensors[f"planes.{row}.{k}"])
                    prefix = f"opt.planes.{row}.{k}."
                    # Adam keeps its step count on the CPU and its moments beside the parameter.
                    fields = {key[len(prefix):]: v if key.endswith(".step") else v.to(level.device)
                              for key, v in tensors.items() if key.startswith(prefix)}
                    if fields:
                        plane_optimizer.state[level] = fields
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
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict:
    """Fit every subject of `data` into the store under `out`; returns the metrics dict.

    `device` runs both stages (rendering, losses and the held-out scores) there, e.g. "cuda". Every
    random draw comes from CPU generators, so a subject sees the same rays, samples and initial planes
    on any device; files (store, checkpoint, decoder) always hold CPU tensors.

    `joint_only` stops after the decoder stage (the step before sharded fitting); `shard` fits only
    that shard's batches of the frozen stage into OUT/shards/I-of-N (rodin.fit.shards), merging them
    into OUT/triplanes when the last shard finishes.
    """

    options = options or LoadOptions()
    sharded = shard is not None and shard.count > 1
    config, tri = preset.fit, preset.triplane
    if config.plane_lr <= 0 or config.plane_eps < 0:
        raise ConfigError(f"FitConfig: plane_lr must be above 0 and plane_eps at least 0 (got {config.plane_lr} "
                          f"and {config.plane_eps})")
    out = Path(out)
    sources = list_sources(data)
    if max_subjects is not None:
        sources = sources[:max_subjects]
    if not sources:
        raise DataError(f"{data}: no subjects found")
    out.mkdir(parents=True, exist_ok=True)
    if sharded:
        return _fit_shard(sources, out, preset=preset, shard=shard, decoder_path=decoder_path, options=options,
                          device=device, log=log, show_progress=show_progress)
    # Launched on several processes without a shard: the joint stage, data-parallel. The main process
    # owns the run folder's files; the others wait for the store it creates.
    world = World.from_environment()
    if world.size > 1 and not joint_only:
        raise ConfigError(f"{world.size} processes without a shard fit only the joint stage: pass joint_only "
                          "(`rodin fit --joint-only`), then fit the frozen stage in shards")
    if world.main:
        run_config = {"data": str(data), "preset": preset.name, "fit": asdict(config), "triplane": asdict(tri),
                      "decoder": asdict(preset.decoder), "render": asdict(preset.render), "load": asdict(options),
                      "pretrained_decoder": str(decoder_path or "")}
        write_json(out / "fit_config.json", _with_history(out, run_config))
        store = TriplaneStore.create(out / "triplanes", [s.id for s in sources], [s.split for s in sources],
                                     (3, tri.channels, tri.resolution, tri.resolution))
    world.barrier()
    if not world.main:
        store = TriplaneStore.open(out / "triplanes")
        log = _silent
    metrics_path = out / "subject_metrics.json"
    subject_metrics: dict[str, dict] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    timings: dict[str, float] = {}

    timings["eval_s"] = 0.0

    def score(subjects: list[FitSubject], planes: torch.Tensor, decoder) -> list[dict]:
        began = time.perf_counter()
        scores = [heldout_metrics(s, planes[k:k + 1], decoder, preset) for k, s in enumerate(subjects)]
        timings["eval_s"] += time.perf_counter() - began
        return scores

    def keep(batch: list[int], planes: torch.Tensor, scores: list[dict]) -> None:
        for row, figures in zip(batch, scores):
            subject_metrics[store.ids[row]] = figures
        store.put(batch, planes)
        write_json(metrics_path, subject_metrics)

    def record(batch: list[int], subjects: list[FitSubject], planes: torch.Tensor, decoder) -> None:
        keep(batch, planes, score(subjects, planes, decoder))

    def try_load(rows: list[int]) -> tuple[list[int], list[FitSubject], dict[int, str]]:
        kept, subjects, failed = [], [], {}
        for row in rows:
            try:
                subjects.append(load_fit_subject(sources[row], config=config, options=options))
                kept.append(row)
            except RodinError as err:
                failed[row] = str(err)
        return kept, subjects, failed

    def load_rows(rows: list[int]) -> tuple[list[int], list[FitSubject]]:
        kept, subjects, failed = try_load(rows)
        for row, message in failed.items():
            log(f"skipping {sources[row].id}: {message}")
            store.mark_failed(row, message)
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
        if world.main and decoder_dir.resolve() != (out / "decoder").resolve():
            # The run keeps a copy of the decoder it was fitted with, so that it renders on its own.
            for item in sorted(decoder_dir.glob("*.*")):
                if item.suffix in (".json", ".safetensors"):
                    write_atomic(out / "decoder" / item.name, item.read_bytes())
    elif decoder_path:
        raise DataError(f"{decoder_path}: no decoder here (expected config.json and model.safetensors)")
    else:
        decoder = _joint_stage(sources, store, out, preset, log, score, keep, try_load, show_progress, world,
                               torch.device(device))
        if world.main:
            write_json(out / JOINT_SUBJECTS, [store.ids[i] for i, done in enumerate(store.done) if done])
            save_component(decoder, decoder_dir, kind=DECODER_KIND)
            JointCheckpoint(out / "checkpoint").remove()      # the decoder and planes are saved for good
    timings["joint_s"] = time.perf_counter() - start
    template_path = decoder_dir / "template.safetensors"
    template = load_file(str(template_path))["planes"] if template_path.is_file() else None

    if joint_only:
        if world.main:
            write_json(out / "metrics.json", summarise(subject_metrics, store, timings))
        world.barrier()                 # the others report what the main process wrote
        return json.loads((out / "metrics.json").read_text())

    # Stage B: everyone else, many at once, decoder frozen. Batches are fixed by the subject list (not
    # by what is left), so a subject's planes do not depend on restarts or on sharding.
    start = time.perf_counter()
    batches = frozen_batches(store.ids, joint_subjects(out), config.batch_subjects)
    decoder = decoder.to(device)
    timings["frozen_subjects"] = _frozen_stage(batches, list(range(len(sources))), store, decoder, template, preset,
                                               record, load_rows, log, show_progress)
    timings["frozen_s"] = time.perf_counter() - start

    stats = store.compute_stats()
    metrics = summarise(subject_metrics, store, timings)
    metrics["stats_channels"] = int(stats.mean.numel())
    write_json(out / "metrics.json", metrics)
    return metrics


def _with_history(out: Path, run_config: dict) -> dict:
    """The run's config, keeping the fit settings an interrupted run used before it was resumed with
    others (`rodin fit --set`), and how many subjects were finished under each, so that the folder
    says how every subject was fitted."""
    path = out / "fit_config.json"
    try:
        earlier = json.loads(path.read_text())
        done = sum(map(bool, json.loads((out / "triplanes" / "subjects.json").read_text())["done"]))
    except (OSError, ValueError, KeyError, TypeError):
        return run_config
    history = list(earlier.get("fit_history", []))
    if earlier.get("fit") != run_config["fit"] and done:
        history.append({"fit": earlier.get("fit"), "subjects_done_before_change": done})
    return {**run_config, "fit_history": history} if history else run_config


def _frozen_stage(batches, origin, store, decoder, template, preset, record, load_rows, log, show_progress) -> int:
    """Fit the given batches of store rows (skipping finished subjects); `origin` maps a store row to
    its row in the whole dataset, which seeds the batch. Returns the number of subjects fitted."""
    from tqdm import tqdm

    fitted = 0
    fit_log = TrainingLog(store.root.parent / "fit_log.csv")      # time: seconds since this stage began
    bar = tqdm(batches, desc="fit (frozen decoder)", unit="batch", disable=not show_progress, leave=False)
    for batch in bar:
        todo = [r for r in batch if not store.done[r] and store.ids[r] not in store.failed]
        if not todo:
            continue
        rows, subjects = load_rows(todo)
        if rows:
            fitted += _fit_frozen_rows(rows, subjects, decoder, template, preset, store, record, log, bar,
                                       origin=origin, fit_log=fit_log)
    return fitted


def _fit_shard(sources, out, *, preset, shard, decoder_path, options, device, log, show_progress) -> dict:
    """The frozen stage for one shard's batches, into OUT/shards/I-of-N; merges when all shards are done."""
    config, tri = preset.fit, preset.triplane
    decoder_dir = Path(decoder_path) if decoder_path else out / "decoder"
    if not ((decoder_dir / "config.json").is_file() and (out / "triplanes").is_dir()):
        raise FitError(f"{out}: sharded fitting starts from a fitted decoder; run "
                       f"`rodin fit DATA --out {out} --joint-only` (launched on the same processes, or on one; "
                       "with --decoder to reuse one) first")
    decoder = load_component(TriplaneDecoder, type(preset.decoder), decoder_dir, kind=DECODER_KIND).to(device)
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


def _fit_frozen_rows(rows, subjects, decoder, template, preset, store, record, log, bar, *, origin,
                     fit_log: TrainingLog) -> int:
    config, tri = preset.fit, preset.triplane
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + origin[rows[0]])
    # A template (the mean tri-plane of the joint stage) already breaks symmetry: start near it.
    noise = config.template_noise if template is not None else config.init_noise
    init = init_planes(len(rows), tri.channels, tri.resolution, generator=gen, scale=noise)
    if template is not None:
        init = init + template
    device = next(decoder.parameters()).device         # the frozen stage runs where the decoder is
    planes = [SubjectPlanes(p, config.plane_levels) for p in init.to(device)]
    subjects = [s.to(device) for s in subjects]

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
                                    origin=origin, fit_log=fit_log) for r, s in zip(rows, subjects))
    with torch.no_grad():
        record(rows, subjects, torch.stack([p() for p in planes]), decoder)
    fit_log.append(
        stage="frozen", step=config.steps, subjects=" ".join(store.ids[r] for r in rows),
        train_psnr=sum(recent[-10:]) / max(1, len(recent[-10:])))
    return len(rows)


def _draws(seed: int, key: int, index: int) -> torch.Generator:
    """A generator of the joint stage named by (key, index), e.g. (subject row, step): the same draws
    whichever process makes them, and after a restart."""
    return torch.Generator().manual_seed((((seed * 1_000_003 + key) << 32) + index) % (1 << 63))


ROUND_ORDER, STEP_SHARED = -2, -1     # draw keys that are not subject rows


def _collect(world: World, rows: list[int], owner: dict[int, int], payload: Callable[[int], object]) -> dict:
    """Per-row payloads from the processes that own the rows, on the main process (empty elsewhere).

    Sent one row per process at a time, so no process holds more than `world.size` subjects' tensors
    beyond its own."""
    mine = [r for r in rows if owner[r] == world.rank]
    turns = max(sum(1 for r in rows if owner[r] == k) for k in range(world.size))
    kept = {}
    for j in range(turns):
        for row, value in world.gather([(mine[j], payload(mine[j]))] if j < len(mine) else []):
            if world.main:
                kept[row] = value
    return kept


def _joint_stage(sources, store, out, preset, log, score, keep, try_load, show_progress, world: World,
                 device: torch.device):
    """The decoder and the planes of the first subjects, in turns; data-parallel over `world`.

    Each process owns every world.size-th joint subject (it loads it and keeps its planes and their
    optimiser state) and, in each step, fits those of the turn's subjects it owns; fit_step sums the
    decoder gradients over processes, so N processes make the update of one. All draws are named by
    (seed, subject row, step), so the result does not depend on the number of processes.
    """
    from tqdm import tqdm

    config, tri = preset.fit, preset.triplane
    candidates = ([i for i, s in enumerate(sources) if s.split == "train"]
                  or list(range(len(sources))))[:config.joint_subjects]
    owner = {row: world.owner(k) for k, row in enumerate(candidates)}
    kept, loaded, failed = try_load([r for r in candidates if owner[r] == world.rank])
    failures = dict(world.gather(sorted(failed.items())))
    if world.main:
        for row, message in sorted(failures.items()):
            log(f"skipping {sources[row].id}: {message}")
            store.mark_failed(row, message)
    rows = [r for r in candidates if r not in failures]
    if not rows:
        first = failures.get(candidates[0], "") if candidates else ""
        raise FitError(f"no subject could be loaded for the joint decoder stage ({first})")
    subjects = {r: s.to(device) for r, s in zip(kept, loaded)}
    torch.manual_seed(config.seed)
    decoder = TriplaneDecoder(preset.decoder).to(device)
    planes = {r: SubjectPlanes(init_planes(1, tri.channels, tri.resolution, generator=_draws(config.seed, r, -1),
                                           scale=config.init_noise)[0].to(device), config.plane_levels) for r in kept}
    decoder_opt = torch.optim.Adam(decoder.parameters(), lr=config.decoder_lr)
    # A process may own no subject (more processes than joint subjects): it still sums the gradients.
    plane_opt = torch.optim.Adam([q for p in planes.values() for q in p.parameters()] or
                                 [torch.nn.Parameter(torch.zeros((), device=device))], lr=config.plane_lr)
    checkpoint = JointCheckpoint(out / "checkpoint")
    first_round = 0
    if checkpoint.exists():
        first_round = int(checkpoint.load(decoder, decoder_opt, planes, plane_opt)["round"])
        if world.main:
            log(f"resuming the joint stage at round {first_round + 1}/{config.joint_rounds}")
    chunk = max(1, min(config.batch_subjects, len(rows)))
    steps_per_round = config.joint_steps_per_turn * -(-len(rows) // chunk)
    total_steps = config.joint_rounds * steps_per_round
    step_count = first_round * steps_per_round
    bar = tqdm(total=total_steps, desc="fit (joint decoder)", unit="step",
               disable=not (show_progress and world.main), leave=False)
    bar.update(step_count)
    log_file = TrainingLog(out / "fit_log.csv")
    joint_config = replace(config, samples=config.joint_samples)   # the decoder learns with denser rays
    for round_ in range(first_round, config.joint_rounds):
        order = torch.randperm(len(rows), generator=_draws(config.seed, ROUND_ORDER, round_)).tolist()
        for start in range(0, len(order), chunk):
            members = [rows[m] for m in order[start:start + chunk]]
            mine = [r for r in members if owner[r] == world.rank]
            turn_psnr = []
            for _ in range(config.joint_steps_per_turn):
                factor = cosine_factor(step_count, total_steps)
                for group in decoder_opt.param_groups:
                    group["lr"] = config.decoder_lr * factor
                stats = fit_step([subjects[r] for r in mine], [planes[r] for r in mine], decoder,
                                 [plane_opt, decoder_opt], config=joint_config, triplane=tri,
                                 generator=_draws(config.seed, STEP_SHARED, step_count),
                                 subject_generators=[_draws(config.seed, r, step_count) for r in mine],
                                 step_subjects=len(members), sum_processes=world.sum if world.size > 1 else None)
                step_count += 1
                turn_psnr.append(stats.psnr)
                bar.update(1)
                bar.set_postfix(psnr=f"{stats.psnr:.1f}", round=round_ + 1)
            if world.main:
                log_file.append(stage="joint", round=round_ + 1, step=step_count,
                                subjects=" ".join(sources[r].id for r in members),
                                train_psnr=sum(turn_psnr) / len(turn_psnr))
        state = _collect(world, rows, owner, lambda r: JointCheckpoint.subject_tensors(r, planes[r], plane_opt))
        if world.main:
            checkpoint.save(decoder, decoder_opt, {k: v for part in state.values() for k, v in part.items()},
                            {"round": round_ + 1})
    bar.close()
    decoder.requires_grad_(False)
    with torch.no_grad():
        # Each process scores the subjects it fitted; the main one writes the rows and the template.
        results = _collect(world, rows, owner,
                           lambda r: (planes[r]().detach().cpu(), score([subjects[r]], planes[r]()[None], decoder)[0]))
    if world.main:
        stacked = torch.stack([results[r][0] for r in rows])
        keep(rows, stacked, [results[r][1] for r in rows])
        write_atomic(out / "decoder" / "template.safetensors", save({"planes": stacked.mean(0).contiguous().cpu()}))
    return decoder


def _silent(message: str) -> None:
    """The log of a process other than the main one: the main process speaks for the run."""


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
