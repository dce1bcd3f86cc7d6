"""`rodin train STAGE`: one verb per training stage, each resumable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

app = typer.Typer(help="Train the diffusion stages (each resumes where it stopped).", no_args_is_help=True)


def _main_process() -> bool:
    """Under `accelerate launch` only the main process reports (and writes what is left)."""
    from accelerate import PartialState

    return PartialState().is_main_process


@app.command("base")
def base(
    triplanes: Path = typer.Option(..., "--triplanes", help="A fit run folder (rodin fit output)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (resumes if it holds a checkpoint)."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
    semantic: Path | None = typer.Option(None, "--semantic", help="An encoder folder for z (default: OUT/semantic "
                                         "if `rodin train encoder` wrote one, else a pixel-PCA encoder)."),
    clip: Path | None = typer.Option(None, "--clip", help="A local CLIP folder (Hugging Face layout) whose image "
                                     "embeddings become z, as in the paper; stored by reference in OUT/semantic."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Batch size (default: the preset's)."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Peak learning rate."),
    conv: str | None = typer.Option(None, "--conv", help="aware (3D-aware, default) or plain, for the ablation."),
    prediction: str | None = typer.Option(None, "--prediction", help="sample (x0), v_prediction or epsilon "
                                          "(default: the preset's)."),
    width: int | None = typer.Option(None, "--width", min=8, help="UNet channels at full resolution (default: the "
                                     "preset's)."),
    render_weight: float | None = typer.Option(None, "--render-weight", min=0.0, help="Weight of the photometric "
                                               "loss on renders of the predicted planes (0 turns it off; default: "
                                               "the preset's)."),
    position_channels: int | None = typer.Option(None, "--position-channels", min=0, help="Learned position "
                                                 "planes given to the UNet's input (default: the preset's)."),
    latent_channels: int | None = typer.Option(None, "--latent-channels", min=0, help="Planes of z (a linear map "
                                               "at the lowest resolution, enlarged) given to the UNet's input "
                                               "(default: the preset's)."),
    channel_weighting: str | None = typer.Option(None, "--channel-weighting", help="uniform, or decoder: weigh "
                                                 "each tri-plane channel in the loss by what it changes in the "
                                                 "decoded image (default: the preset's)."),
    mean_planes: bool | None = typer.Option(None, "--mean-planes/--no-mean-planes", help="A head that regresses "
                                            "the planes from z, read by the UNet, which adds its output to it "
                                            "(default: the preset's)."),
    mean_weight: float | None = typer.Option(None, "--mean-weight", min=0.0, help="Weight of the mean-planes "
                                             "head's own loss (default: the preset's)."),
    mean_head: str | None = typer.Option(None, "--mean-head", help="The mean-planes head: mlp (trained with the "
                                         "UNet) or linear (a ridge regression from z, fitted before training "
                                         "and frozen; default: the preset's)."),
    text_head: bool | None = typer.Option(None, "--text-head/--no-text-head", help="A ridge regression from a "
                                          "prompt's text embedding to the planes, which prompts start from "
                                          "instead of the mean-planes head's (default: the preset's)."),
    sample_every: int | None = typer.Option(None, "--sample-every", min=0, help="Steps between sample renders."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=1, help="Steps between "
                                                "resumable checkpoints (default: the preset's)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (GPUs; default: "
                                               "the accelerate config's)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Accumulate each process's share of a batch "
                                   "over this many micro-batches (same effective batch, less memory)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard the weights, EMA and optimiser state across the "
                              "launched processes (torch FSDP2), for models too large to copy onto each GPU; "
                              "checkpoints and the saved model stay whole."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute UNet activations "
                                                "in the backward pass: less memory, more compute (paper preset)."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader processes reading batches ahead from the "
                                "tri-plane store (pinned memory on CUDA); 0 reads in the training process. "
                                "Same result either way."),
) -> None:
    """Train the base diffusion model on fitted tri-planes (stage 2)."""
    from rodin.config import get_preset
    from rodin.train.base import train_base

    chosen = get_preset(preset)
    tcfg = chosen.train_base
    overrides = {k: v for k, v in dict(steps=steps, batch=batch, lr=lr, sample_every=sample_every, seed=seed,
                                      checkpoint_every=checkpoint_every).items()
                 if v is not None}
    tcfg = replace(tcfg, **overrides)
    mcfg = chosen.base
    if conv is not None:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, conv=conv))
    if prediction is not None:
        mcfg = replace(mcfg, diffusion=replace(mcfg.diffusion, prediction=prediction))
    if width is not None:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, width=width))
    if render_weight is not None:
        mcfg = replace(mcfg, render_weight=render_weight)
    if channel_weighting is not None:
        mcfg = replace(mcfg, channel_weighting=channel_weighting)
    if mean_planes is not None:
        mcfg = replace(mcfg, mean_planes=mean_planes)
    if mean_weight is not None:
        mcfg = replace(mcfg, mean_weight=mean_weight)
    if mean_head is not None:
        mcfg = replace(mcfg, mean_head=mean_head)
    if text_head is not None:
        mcfg = replace(mcfg, text_head=text_head)
    spatial = {k: v for k, v in dict(position_channels=position_channels, latent_channels=latent_channels).items()
               if v is not None}
    if spatial:
        mcfg = replace(mcfg, unet=replace(mcfg.unet, **spatial))
    from rodin.diffusion.unet import check_unet_config

    check_unet_config(mcfg.unet)
    if clip is not None:
        from rodin.errors import ConfigError
        from rodin.semantic.clip_adapter import ClipEncoder, save_clip_reference

        if semantic is not None:
            raise ConfigError("give --semantic or --clip, not both")
        semantic = out / "semantic"
        save_clip_reference(ClipEncoder.from_path(clip), semantic)
    figures = train_base(triplanes, out, preset=chosen, data=data, semantic=semantic, model_config=mcfg,
                         train_config=tcfg, cpu=cpu, mixed_precision=mixed_precision, grad_accum=grad_accum, fsdp=fsdp,
                         gradient_checkpointing=gradient_checkpointing, workers=workers,
                         log=lambda m: typer.echo(m, err=True))
    if not _main_process():
        return
    typer.echo(f"wrote {out / 'base'}")
    print(json.dumps(figures), flush=True)


@app.command("text-head")
def text_head(
    out: Path = typer.Option(..., "--out", help="A model folder whose base has the mean-planes head; its base "
                             "gets the text head."),
    triplanes: Path = typer.Option(..., "--triplanes", help="The fit run the base model was trained on."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
) -> None:
    """Give a trained base model a text head: prompts start from a ridge regression of the planes on their
    text embedding (fitted on the run's training subjects and their captions) instead of the prior's z."""
    from rodin.fit.store import TriplaneStore
    from rodin.train.base import data_folder
    from rodin.train.text_head import add_text_head

    TriplaneStore.open(triplanes / "triplanes")          # a wrong run is named as such, before its dataset
    figures = add_text_head(out, triplanes, dataset=data_folder(triplanes, data), log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out / 'base'}")
    print(json.dumps(figures), flush=True)


@app.command("steering")
def steering(
    out: Path = typer.Option(..., "--out", help="A model folder with a prompt reader (OUT/reader) and a base "
                             "model; the reader gets the value planes."),
    triplanes: Path = typer.Option(..., "--triplanes", help="The fit run the base model was trained on."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
) -> None:
    """Give a model's prompt reader value planes (the mean planes of the run's training subjects with each
    attribute value): prompts' avatars then start from planes steered toward the values they name."""
    from rodin.fit.store import TriplaneStore
    from rodin.train.reader import READER, add_value_planes

    TriplaneStore.open(triplanes / "triplanes")          # a wrong run is named as such, before its dataset
    figures = add_value_planes(out, triplanes, data=data, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out / READER}")
    print(json.dumps(figures), flush=True)


@app.command("upsampler")
def upsampler(
    triplanes: Path = typer.Option(..., "--triplanes", help="A fit run folder (rodin fit output)."),
    out: Path = typer.Option(..., "--out", help="Model folder; the upsampler goes to OUT/upsampler (resumes if it "
                             "holds a checkpoint). Shares OUT/latent or OUT/semantic with `rodin train base`."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
    semantic: Path | None = typer.Option(None, "--semantic", help="An encoder folder for z (default: OUT/semantic "
                                         "or OUT/latent if there, else a pixel-PCA encoder fitted here)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Batch size (default: the preset's)."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Peak learning rate."),
    augment_noise: float | None = typer.Option(None, "--augment-noise", min=0.0, help="Largest noise std on the "
                                               "condition while training (default: the preset's)."),
    base_resolution: int | None = typer.Option(None, "--base-resolution", min=1, help="Side of the base planes "
                                               "it enlarges (default: the preset's base side; another side "
                                               "serves a base model that draws planes of that side)."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=1, help="Steps between "
                                                "resumable checkpoints (default: the preset's)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (GPUs; default: "
                                               "the accelerate config's)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Accumulate each process's share of a batch "
                                   "over this many micro-batches (same effective batch, less memory)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard the weights, EMA and optimiser state across the "
                              "launched processes (torch FSDP2), for models too large to copy onto each GPU; "
                              "checkpoints and the saved model stay whole."),
) -> None:
    """Train the upsampler diffusion: full-resolution tri-planes from base ones and z (stage 3)."""
    from rodin.config import get_preset
    from rodin.train.upsampler import UPSAMPLER, train_upsampler

    chosen = get_preset(preset)
    if base_resolution is not None:
        chosen = replace(chosen, triplane=replace(chosen.triplane, base_resolution=base_resolution))
    overrides = {k: v for k, v in dict(steps=steps, batch=batch, lr=lr, seed=seed,
                                      checkpoint_every=checkpoint_every).items() if v is not None}
    mcfg = chosen.upsampler if augment_noise is None else replace(chosen.upsampler, augment_noise=augment_noise)
    figures = train_upsampler(triplanes, out, preset=chosen, data=data, semantic=semantic, model_config=mcfg,
                              train_config=replace(chosen.train_upsampler, **overrides), cpu=cpu,
                              mixed_precision=mixed_precision, grad_accum=grad_accum, fsdp=fsdp,
                              log=lambda m: typer.echo(m, err=True))
    if not _main_process():
        return
    typer.echo(f"wrote {out / UPSAMPLER}")
    print(json.dumps(figures), flush=True)


@app.command("refiner")
def refiner(
    triplanes: Path = typer.Option(..., "--triplanes", help="A fit run folder (rodin fit output)."),
    out: Path = typer.Option(..., "--out", help="Model folder; the refiner goes to OUT/refiner (resumes if it "
                             "holds a checkpoint)."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    data: Path | None = typer.Option(None, "--data", help="The run's dataset, if not where the run recorded it."),
    lpips: Path | None = typer.Option(None, "--lpips", help="A local LPIPS folder (`rodin convert lpips`): adds "
                                      "a perceptual term to L1 + SSIM."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    batch: int | None = typer.Option(None, "--batch", min=1, help="Crops per step (default: the preset's)."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Peak learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=1, help="Steps between "
                                                "resumable checkpoints (default: the preset's)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (GPUs; default: "
                                               "the accelerate config's)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Accumulate each process's share of a batch "
                                   "over this many micro-batches (same effective batch, less memory)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard the weights, EMA and optimiser state across the "
                              "launched processes (torch FSDP2), for models too large to copy onto each GPU; "
                              "checkpoints and the saved model stay whole."),
) -> None:
    """Train the convolutional refiner: renders to images scale times larger (stage 4)."""
    from rodin.config import get_preset
    from rodin.train.refiner import REFINER, train_refiner

    chosen = get_preset(preset)
    overrides = {k: v for k, v in dict(steps=steps, batch=batch, lr=lr, seed=seed,
                                      checkpoint_every=checkpoint_every).items() if v is not None}
    figures = train_refiner(triplanes, out, preset=chosen, data=data, lpips=lpips,
                            train_config=replace(chosen.train_refiner, **overrides), cpu=cpu,
                            mixed_precision=mixed_precision, grad_accum=grad_accum, fsdp=fsdp,
                            log=lambda m: typer.echo(m, err=True))
    if not _main_process():
        return
    typer.echo(f"wrote {out / REFINER}")
    print(json.dumps(figures), flush=True)


@app.command("encoder")
def encoder(
    data: Path = typer.Option(..., "--data", help="A generated dataset (rodin data synth output)."),
    out: Path = typer.Option(..., "--out", help="Model folder; the encoder goes to OUT/semantic."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    batch: int | None = typer.Option(None, "--batch", min=2, help="Subjects per step (in-batch negatives)."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (GPUs; default: "
                                               "the accelerate config's)."),
) -> None:
    """Train the image-text encoder that z lives in, contrastively on portraits and captions (stage 5)."""
    from rodin.config import get_preset
    from rodin.train.edits import EDITS, measure_edits
    from rodin.train.encoder import SEMANTIC, train_encoder

    chosen = get_preset(preset)
    overrides = {k: v for k, v in dict(steps=steps, batch=batch, seed=seed).items() if v is not None}
    figures = train_encoder(data, out, config=chosen.encoder, train=replace(chosen.train_encoder, **overrides),
                            cpu=cpu, mixed_precision=mixed_precision, log=lambda m: typer.echo(m, err=True))
    if not _main_process():
        return
    measured = measure_edits(data, out, strict=False, log=lambda m: typer.echo(m, err=True))["measured"]
    typer.echo(f"wrote {out / SEMANTIC}" + (f" and {out / EDITS}" if measured else ""))
    print(json.dumps(figures), flush=True)


@app.command("edits")
def edits(
    data: Path = typer.Option(..., "--data", help="A generated dataset with attributes.json per subject "
                              "(the encoder's training data)."),
    out: Path = typer.Option(..., "--out", help="Model folder holding OUT/semantic; the directions go to OUT/edits."),
    triplanes: Path | None = typer.Option(None, "--triplanes", help="The fit run OUT's base model was trained on: "
                                          "also measure each edit's change of the planes on its training "
                                          "subjects, which edits add to the planes the base model starts from."),
) -> None:
    """Measure text edits' directions from labelled portraits (no training; seconds). Without them, edits
    follow raw text directions, which move other attributes too (BENCHMARKS.md)."""
    from rodin.train.edits import EDITS, measure_edits

    figures = measure_edits(data, out, triplanes=triplanes, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out / EDITS}")
    print(json.dumps(figures), flush=True)


@app.command("reader")
def reader(
    data: Path = typer.Option(..., "--data", help="A generated dataset with attributes.json per subject: its "
                              "training portraits make the bank prompts draw z from."),
    out: Path = typer.Option(..., "--out", help="Model folder holding OUT/semantic; the reader goes to OUT/reader."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps of the reader."),
    captions: int | None = typer.Option(None, "--captions", min=1, help="Generated captions to learn from."),
    draws: int | None = typer.Option(None, "--draws", min=1, help="Bank portraits averaged into a prompt's z."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
) -> None:
    """Train the prompt reader (a prompt's words to attribute values) and fill its bank of portraits' z: prompts
    then draw z from the portraits that have what they name, instead of through the latent prior."""
    from rodin.train.reader import READER, ReaderTrainConfig, train_reader

    overrides = {k: v for k, v in dict(steps=steps, captions=captions, seed=seed).items() if v is not None}
    figures = train_reader(data, out, train=replace(ReaderTrainConfig(), **overrides), draws=draws,
                           log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out / READER}")
    print(json.dumps(figures), flush=True)


@app.command("prior")
def prior(
    data: Path = typer.Option(..., "--data", help="The generated dataset the encoder was trained on."),
    out: Path = typer.Option(..., "--out", help="Model folder holding OUT/semantic; the prior goes to OUT/prior."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    seed: int | None = typer.Option(None, "--seed", help="Training seed."),
    partial_captions: int | None = typer.Option(None, "--partial-captions", min=0, help="Captions per subject "
                                                "naming only 1-3 of its attributes, beside the whole ones "
                                                "(default: the preset's)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (GPUs; default: "
                                               "the accelerate config's)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Accumulate each process's share of a batch "
                                   "over this many micro-batches (same effective batch, less memory)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard the weights, EMA and optimiser state across the "
                              "launched processes (torch FSDP2); checkpoints and the saved model stay whole."),
) -> None:
    """Train the latent prior: z from a sentence (text to avatar) or from nothing (unconditional)."""
    from rodin.config import get_preset
    from rodin.pipeline import write_model_index
    from rodin.semantic.loading import load_semantic
    from rodin.train.prior import PRIOR, train_prior

    chosen = get_preset(preset)
    if fsdp:
        from rodin.train.sharding import check_fsdp

        check_fsdp()      # before the encoder is read: one line, nothing touched
    semantic = load_semantic(out / "semantic")
    overrides = {k: v for k, v in dict(steps=steps, seed=seed).items() if v is not None}
    config = replace(chosen.prior, dim=semantic.dim)
    if partial_captions is not None:
        config = replace(config, partial_captions=partial_captions)
    figures = train_prior(data, out, encoder=semantic, config=config, train=replace(chosen.train_prior, **overrides),
                          portraits=chosen.train_encoder, cpu=cpu, mixed_precision=mixed_precision,
                          grad_accum=grad_accum, fsdp=fsdp, log=lambda m: typer.echo(m, err=True))
    if not _main_process():
        return
    if (out / "model_index.json").is_file():
        write_model_index(out, render=chosen.render, preset=chosen.name, components={PRIOR: PRIOR})
    typer.echo(f"wrote {out / PRIOR}")
    print(json.dumps(figures), flush=True)


@app.command("judge")
def judge(
    data: Path = typer.Option(..., "--data", help="A generated dataset (rodin data synth output)."),
    out: Path = typer.Option(..., "--out", help="Folder for the judge (config.json + model.safetensors)."),
    steps: int = typer.Option(3000, "--steps", min=1, help="Training steps."),
    batch: int = typer.Option(64, "--batch", min=1, help="Images per step."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
) -> None:
    """Train the attribute judge that referees the semantic figures (and gives FID/KID features)."""
    from rodin.semantic.judge import train_judge

    metrics = train_judge(data, out, steps=steps, batch=batch, seed=seed, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {out}")
    print(json.dumps({"accuracy": metrics["accuracy"], "majority": metrics["majority"]}), flush=True)


@app.command("all")
def all_stages(
    out: Path = typer.Option(..., "--out", help="Model folder to write: the components, MODEL_CARD.md and "
                             "train_all.json (the progress record; a rerun resumes from it)."),
    preset: str = typer.Option("small", "--preset", help="Scale preset: tiny, small or paper."),
    work: Path | None = typer.Option(None, "--work", help="Folder for the dataset (WORK/data) and the fit run "
                                     "(WORK/fit), which the model does not ship (default: runs/<OUT's name>-work)."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage: data, fit, encoder, base, "
                                     "prior, upsampler, refiner, judge or eval (default: all of them)."),
    subjects: int | None = typer.Option(None, "--subjects", help="Subjects in the dataset (default: the "
                                        "preset's)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
) -> None:
    """Train every stage in order (data, fit, encoder, base, prior, upsampler, refiner, judge, eval) into one
    model folder with its model card; a rerun skips finished stages and resumes the one cut short."""
    import shlex

    from rodin.config import get_preset
    from rodin.train.all import CARD, STAGES, check_stage, default_work, train_all

    chosen = get_preset(preset)
    if until is not None:
        check_stage(until)
    work = work if work is not None else default_work(out)
    words = ["rodin", "train", "all", "--preset", preset, "--out", str(out), "--work", str(work)]
    if subjects is not None:
        words += ["--subjects", str(subjects)]
    if until is not None:
        words += ["--until", until]
    if cpu:
        words.append("--cpu")
    record = train_all(out, preset=chosen, work=work, subjects=subjects, until=until, cpu=cpu,
                       command=shlex.join(words), log=lambda m: typer.echo(m, err=True))
    left = [s for s in STAGES if s not in record["stages"]]
    typer.echo(f"wrote {out / CARD}" + (f"; not yet trained: {', '.join(left)} (rerun to go on)" if left else ""))
    print(json.dumps({"finished": [s for s in STAGES if s in record["stages"]], "not_yet_trained": left,
                      "wall_s": {s: e["wall_s"] for s, e in record["stages"].items()}}), flush=True)
