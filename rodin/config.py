"""Per-component configs and the scale presets of DESIGN.md.

Every config is a frozen dataclass; building one from a dict rejects unknown keys by name, so a
typo in a config file fails loudly instead of silently keeping a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rodin.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """The procedural avatar dataset."""

    subjects: int = 8
    views: int = 32                   # RGBA views per subject, spread over the upper sphere
    resolution: int = 32              # pixels, square views
    portrait_resolution: int = 128    # pixels, the frontal portrait


@dataclass(frozen=True)
class TriplaneConfig:
    """Tri-plane sizes: fitted at `resolution`, read by the base model at `base_resolution`."""

    channels: int = 8
    resolution: int = 32              # fitted / upsampled plane side
    base_resolution: int = 16         # base diffusion plane side


@dataclass(frozen=True)
class DecoderConfig:
    """The MLP that turns summed tri-plane features into density and colour."""

    features: int = 8                 # channels per plane
    hidden: int = 64
    layers: int = 2                   # hidden layers
    fourier_octaves: int = 2          # sin/cos embedding of the sampled features, as in the paper
    view_dependent: bool = True       # colour depends on the viewing direction
    extra_features: int = 0           # rendered feature channels for the refiner
    density_bias: float = 0.0         # initial log-density: a light fog that gradients can shape


@dataclass(frozen=True)
class RenderConfig:
    """Volume rendering settings."""

    resolution: int = 32              # rendered image side, pixels
    samples: int = 48                 # stratified samples per ray
    importance: int = 16              # extra samples drawn from the coarse weights
    background: float = 1.0           # white
    occupancy_resolution: int = 32    # grid used to skip empty space
    occupancy_threshold: float = 0.5  # density below which a cell counts as empty


@dataclass(frozen=True)
class PortraitFitConfig:
    """Generation from a portrait: the drawn tri-plane fitted to the portrait it came from
    (rodin.fit.portrait), with the decoder frozen."""

    steps: int = 60                   # optimisation steps; 0 keeps the drawn tri-plane as it is
    lr: float = 0.02                  # Adam, on the tri-plane's texels
    rays: int = 1024                  # portrait rays per step (and as many from the kept views)
    resolution: int = 64              # side at which the portrait is fitted
    samples: int = 24                 # stratified samples per ray while fitting
    importance: int = 8
    keep_views: int = 8               # cameras beside and behind the head whose renders stay as drawn
    keep_weight: float = 1.0
    density_points: int = 4096        # random points per step whose opacity stays as drawn
    density_weight: float = 1.0
    edit_threshold: float = 0.1       # colour change (0-1) at which an edit counts a portrait pixel as its own


@dataclass(frozen=True)
class FitConfig:
    """Stage 1: shared-decoder fitting."""

    joint_subjects: int = 8           # subjects fitted jointly with the decoder
    joint_rounds: int = 6             # turns over the joint group
    joint_steps_per_turn: int = 40    # optimiser steps per subject per turn
    steps: int = 150                  # optimiser steps per subject with the decoder frozen
    rays_per_step: int = 2048         # across the subjects of a step, drawn as square patches
    patch: int = 8                    # patch side, pixels (the SSIM term needs neighbourhoods)
    samples: int = 32                 # stratified samples per ray inside the visual hull (frozen decoder)
    joint_samples: int = 32           # the same while the decoder is fitted (the joint stage)
    plane_lr: float = 0.02
    # Adam's epsilon for the planes. At the default every texel moves about `lr` a step however weak its
    # gradient, so texels the decoder barely reads random-walk with the sampled rays (fit noise).
    plane_eps: float = 1e-8
    plane_levels: int = 1             # planes optimised as a sum of this many resolutions (1 = plain)
    init_noise: float = 0.1           # std of the random planes a subject starts from
    template_noise: float = 0.01      # std added to the decoder's template tri-plane when it has one
    decoder_lr: float = 5e-3
    heldout_views: int = 4            # views kept out of fitting, for the metrics
    ssim_weight: float = 0.0          # SSIM on patches: measured to slow fitting at our budgets (BENCHMARKS.md)
    mask_weight: float = 0.1          # opacity against the images' alpha
    sparse_weight: float = 1e-2       # L1 on density at random points of the box
    tv_weight: float = 1e-3           # total variation of the planes
    compact_weight: float = 1e-4      # L2 on plane features
    rescale_prob: float = 0.25        # chance a step reads the planes at the base resolution
    hull_resolution: int = 48         # visual-hull grid used to skip empty space while fitting
    batch_subjects: int = 8           # subjects fitted together with a frozen decoder
    seed: int = 0


@dataclass(frozen=True)
class UNetConfig:
    """Stage 2: the denoiser over rolled-out tri-planes (B, C, H, 3W)."""

    channels: int = 8                 # tri-plane channels in and out
    resolution: int = 16              # plane side the model works at
    width: int = 32                   # channels of the first level
    multipliers: tuple[int, ...] = (1, 2)  # width multiplier per level; each further level halves the side
    blocks: int = 2                   # residual blocks per level
    attention_resolutions: tuple[int, ...] = (8,)  # plane sides with self-attention across all three planes
    heads: int = 4
    latent_dim: int = 16              # size of the conditioning vector z
    conv: str = "aware"               # "aware" (3D-aware, DESIGN.md) or "plain", for the ablation
    # Spatial conditioning, concatenated to the input (0 = off, as in the first shipped models): learned
    # position planes, so that a denoiser whose input is pure noise knows where on each plane it writes,
    # and planes of z mapped linearly to the lowest resolution and enlarged, so that z says what goes where.
    position_channels: int = 0
    latent_channels: int = 0
    groups: int = 8                   # group norm groups
    dropout: float = 0.0


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and sampling of a diffusion model (diffusers schedulers)."""

    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # v-prediction: with a schedule whose last steps hold almost no signal, predicting the noise makes
    # x0 = (x - sqrt(1 - a) eps) / sqrt(a) blow up early in sampling (measured: samples diverged);
    # predicting v keeps x0 = sqrt(a) x - sqrt(1 - a) v bounded.
    prediction: str = "v_prediction"  # "v_prediction" or "epsilon"
    sampler: str = "ddim"             # "ddim" or "dpm" (DPM-Solver++ multistep)
    sample_steps: int = 25
    guidance_scale: float = 2.0       # classifier-free guidance on z; 1 = conditional only
    latent_dropout: float = 0.2       # share of training examples whose z is replaced by the null vector


@dataclass(frozen=True)
class BaseModelConfig:
    """What a saved base model needs to rebuild itself: the UNet and its diffusion process."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # Training only: a photometric loss on renders of the predicted clean planes (rodin.train.render_loss),
    # beside the plane-space loss, which weighs texels that change no image as much as those that do.
    render_weight: float = 0.0
    render_patches: int = 4           # 8x8-pixel patches rendered per example and step
    render_views: int = 4             # ground-truth views per subject kept in memory for that loss
    # Training only: "uniform" weighs every normalised channel alike in the loss; "decoder" weighs each by
    # what it changes in the decoded colour and opacity (rodin.train.channel_weights).
    channel_weighting: str = "uniform"
    # A regression of the planes from z alone (rodin.diffusion.mean_planes), trained with its own MSE
    # (times mean_weight, training only) beside the diffusion loss; the UNet reads it as input channels and,
    # predicting the clean sample, adds its output to it. Off in the models trained before it existed.
    mean_planes: bool = False
    mean_weight: float = 1.0
    # The head's form: "mlp" (an MLP to 8x8 features per plane, then upsampling convolutions, trained with the
    # UNet) or "linear" (one affine map from z to every texel, set by ridge regression before training, frozen).
    mean_head: str = "mlp"
    # A second linear map to the planes, from a prompt's text embedding: the ridge regression of the training
    # subjects' planes on the embeddings of their whole captions, fitted in closed form and frozen. For a
    # prompt its roll-out replaces the mean-planes head's (the UNet still reads the prior's z): a prompt says
    # more of the planes than the z the prior draws for it (BENCHMARKS.md, "Prompts straight to the planes").
    # Needs the mean-planes head and a text encoder; off in the models trained before it existed.
    text_head: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """A diffusion training run (any stage)."""

    steps: int = 2000
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 100                 # linear learning-rate warm-up steps, then cosine decay
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 250       # steps between resumable checkpoints
    sample_every: int = 500           # steps between sample renders in OUT/samples (0 = never)
    log_every: int = 25
    seed: int = 0


@dataclass(frozen=True)
class DualEncoderConfig:
    """Our CLIP-style image-text encoder (stage 5): a CNN image tower, a frozen MiniLM text tower."""

    dim: int = 64                     # size of the shared space (and of z)
    image_size: int = 64              # portraits are read at this side
    width: int = 32                   # channels of the image tower's first stage
    text_hidden: int = 256            # hidden width of the text projection
    text_features: int = 384          # width of the frozen sentence vectors (all-MiniLM-L6-v2)
    logit_scale_init: float = 14.3    # 1 / temperature at the start (CLIP: 1 / 0.07)


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Contrastive training of the dual encoder on portraits and captions."""

    steps: int = 1500
    batch: int = 128                  # subjects per step (distinct: in-batch negatives)
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 1e-4
    ema_decay: float = 0.995
    probe_weight: float = 0.5         # attribute probes on the image embedding, beside the contrastive loss
    captions_per_subject: int = 8     # wordings drawn per subject (the dataset's own caption among them)
    front_degrees: float = 45.0       # views within this azimuth of the face join the portrait as images
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0


@dataclass(frozen=True)
class PriorConfig:
    """The latent prior: a small diffusion model over z, conditioned on a text embedding (or nothing)."""

    dim: int = 64                     # size of z (= the semantic space)
    hidden: int = 512
    layers: int = 4                   # residual MLP blocks
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        prediction="sample", sample_steps=25, guidance_scale=2.0, latent_dropout=0.2))
    # Training only: per subject, captions naming 1-3 of its attributes beside the whole ones, so that a
    # prompt naming a few ("a person with red hair") is a condition the prior has seen. Off: at the small
    # preset 8 of them made prompts' z read worse, not better (BENCHMARKS.md, "Partial captions").
    partial_captions: int = 0


@dataclass(frozen=True)
class UpsamplerConfig:
    """Stage 3: diffusion of the full-resolution tri-plane given the base one (upsampled) and z.

    `unet.channels` and `unet.resolution` are the plane's own; the UNet reads the noisy planes and
    the condition concatenated (twice the channels) and z with the condition's noise level appended.
    """

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(resolution=32))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        prediction="sample", sample_steps=8, guidance_scale=1.0, latent_dropout=0.1))
    base_resolution: int = 16         # side of the base planes it is conditioned on
    condition_mode: str = "bicubic"   # how the base planes are enlarged: "bicubic" or "bilinear"
    # x0 = condition + the UNet's output, so training starts from plain enlargement (x0 prediction only).
    # Off by default so that an upsampler saved before this setting existed loads as it was trained; every
    # preset turns it on.
    residual: bool = False
    augment_noise: float = 0.2        # largest std of Gaussian noise on the condition (normalised units)
    augment_blur: float = 0.6         # largest Gaussian blur sigma on the condition, base-resolution texels
    augment_resize: float = 0.25      # share of training conditions also shrunk by 2 and enlarged again
    sample_noise: float = 0.05        # condition noise added when sampling (matches training's conditioning)
    render_weight: float = 1.0        # training: weight of the photometric loss on renders of the predicted planes
    render_patches: int = 4           # training: 8x8-pixel patches rendered per example and step
    render_views: int = 4             # training: ground-truth views per subject kept in memory for that loss


@dataclass(frozen=True)
class RefinerConfig:
    """Stage 4: a 2D network from the volume render (RGB + extra features) to an image `scale` times larger."""

    in_channels: int = 3              # RGB plus the decoder's extra feature channels
    scale: int = 4                    # output side / render side; a power of 2
    width: int = 32                   # convolution channels
    blocks: int = 4                   # residual blocks at the render resolution


@dataclass(frozen=True)
class RefinerTrainConfig:
    """Training of the refiner on renders of fitted subjects against their ground-truth views."""

    steps: int = 2000
    batch: int = 16                   # (subject, view) crops per step
    patch: int = 32                   # crop side at the render resolution (0 = whole images)
    lr: float = 1e-3
    warmup: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ssim_weight: float = 0.2          # 1 - SSIM beside L1
    lpips_weight: float = 0.1         # used only when an LPIPS folder is given
    subjects: int = 256               # most training subjects rendered for the training set
    views: int = 16                   # most views rendered per subject
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0


@dataclass(frozen=True)
class IdentitiesConfig:
    """Identities generated apart from the fit dataset, a few views each, for the stages that learn from
    portraits and front views alone: the image-text encoder (and with it the latent prior and the edit
    directions) and the attribute judge. They cost seconds of rendering per hundred, against minutes of
    fitting: on the fit dataset's 880 identities the judge memorised them (0.94 on training views, 0.60
    held out) and z carried 0.66 of a held-out portrait's attributes (linear probe); on 4,487 the judge
    reads 0.76 of held-out views and z carries more (BENCHMARKS.md, "An encoder trained on 5,000 identities")."""

    subjects: int = 5000              # 0: those stages learn from the fit dataset instead
    views: int = 6                    # views per identity (about a third face the front)
    seed: int = 1                     # not the fit dataset's seed, so every identity is new


@dataclass(frozen=True)
class JudgeTrainConfig:
    """Training of the attribute judge that referees the evaluation (rodin.semantic.judge), on the
    preset's identities (IdentitiesConfig)."""

    steps: int = 2500                 # images per step x steps: about 36 passes over 4,487 x ~3.5 images
    batch: int = 64                   # images per step
    seed: int = 0


@dataclass(frozen=True)
class ReaderTrainConfig:
    """The prompt reader's training (`rodin train reader`, rodin.train.reader)."""

    captions: int = 24_000        # generated captions to learn from (a twentieth held out)
    steps: int = 1_000            # more fits the captions' wording better and other wording worse
    batch: int = 256              # captions per step (one cached chunk of token states)
    lr: float = 2e-3
    token_dropout: float = 0.2    # tokens hidden at random while training, so no single word is leaned on
    reworded: float = 0.5         # share of the captions written in other words (rodin.train.reader_wording)
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.captions < 2 * self.batch:
            raise ConfigError(f"reader training: captions ({self.captions}) must be at least twice the batch "
                              f"({self.batch}), so that some are held out")


@dataclass(frozen=True)
class EvalConfig:
    """What `rodin train all` measures at the end: `rodin eval samples` with the judge's features."""

    samples: int = 64                 # unconditional samples against the held-out (val/test) subjects
    views: int = 1                    # views per avatar besides the portrait camera
    resolution: int = 64              # side of every compared image, pixels
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    train_base: TrainConfig = field(default_factory=TrainConfig)
    encoder: DualEncoderConfig = field(default_factory=DualEncoderConfig)
    train_encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train_prior: TrainConfig = field(default_factory=TrainConfig)
    train_reader: ReaderTrainConfig = field(default_factory=ReaderTrainConfig)
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    train_upsampler: TrainConfig = field(default_factory=TrainConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    train_refiner: RefinerTrainConfig = field(default_factory=RefinerTrainConfig)
    identities: IdentitiesConfig = field(default_factory=IdentitiesConfig)
    train_judge: JudgeTrainConfig = field(default_factory=JudgeTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    portrait_fit: PortraitFitConfig = field(default_factory=PortraitFitConfig)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        data=DataConfig(subjects=8, views=16, resolution=32, portrait_resolution=64),
        triplane=TriplaneConfig(channels=8, resolution=32, base_resolution=16),
        decoder=DecoderConfig(features=8, hidden=32, layers=2),
        render=RenderConfig(resolution=32, samples=32, importance=0, occupancy_resolution=32),
        fit=FitConfig(joint_subjects=4, joint_rounds=4, joint_steps_per_turn=75, steps=150,
                      rays_per_step=2048, heldout_views=2, batch_subjects=4),
        base=BaseModelConfig(
            unet=UNetConfig(channels=8, resolution=16, width=16, multipliers=(1, 2), blocks=1,
                            attention_resolutions=(8,), heads=2, latent_dim=16, groups=4),
            diffusion=DiffusionConfig(prediction="sample", sample_steps=10, guidance_scale=1.0),
            mean_planes=True, mean_head="linear", text_head=True,
        ),
        train_base=TrainConfig(steps=200, batch=4, lr=1e-3, warmup=10, ema_decay=0.99, checkpoint_every=50,
                               sample_every=0, log_every=10),
        encoder=DualEncoderConfig(dim=16, image_size=32, width=8, text_hidden=64),
        train_encoder=EncoderTrainConfig(steps=80, batch=8, lr=3e-3, warmup=10, ema_decay=0.9, captions_per_subject=4,
                                         checkpoint_every=40, log_every=10),
        prior=PriorConfig(dim=16, hidden=64, layers=2, diffusion=DiffusionConfig(
            prediction="sample", sample_steps=10, guidance_scale=2.0, latent_dropout=0.2)),
        train_prior=TrainConfig(steps=200, batch=32, lr=2e-3, warmup=10, ema_decay=0.99, checkpoint_every=100,
                                sample_every=0, log_every=20),
        train_reader=ReaderTrainConfig(captions=1024, steps=100, batch=128),
        upsampler=UpsamplerConfig(
            residual=True,
            unet=UNetConfig(channels=8, resolution=32, width=16, multipliers=(1, 2), blocks=1,
                            attention_resolutions=(), heads=2, latent_dim=16, groups=4),
            base_resolution=16),
        train_upsampler=TrainConfig(steps=200, batch=4, lr=1e-3, warmup=10, ema_decay=0.99, checkpoint_every=50,
                                    sample_every=0, log_every=10),
        refiner=RefinerConfig(scale=2, width=16, blocks=2),
        train_refiner=RefinerTrainConfig(steps=200, batch=8, patch=8, lr=2e-3, warmup=10, ema_decay=0.99,
                                         subjects=8, views=8, checkpoint_every=50, log_every=10),
        identities=IdentitiesConfig(subjects=16, views=6),
        train_judge=JudgeTrainConfig(steps=100, batch=16),
        eval=EvalConfig(samples=8, resolution=32),
        portrait_fit=PortraitFitConfig(steps=10, rays=512, resolution=32, samples=16, importance=0,
                                       keep_views=4, density_points=1024),
    ),
    "small": Preset(
        name="small",
        data=DataConfig(subjects=1000, views=32, resolution=64, portrait_resolution=128),
        triplane=TriplaneConfig(channels=16, resolution=64, base_resolution=32),
        decoder=DecoderConfig(features=16, hidden=64, layers=2),
        render=RenderConfig(resolution=64, samples=64, importance=16, occupancy_resolution=48),
        fit=FitConfig(joint_subjects=48, joint_rounds=12, joint_steps_per_turn=40, steps=300, samples=12,
                      rays_per_step=4096, heldout_views=4, batch_subjects=8),
        base=BaseModelConfig(
            unet=UNetConfig(channels=16, resolution=32, width=32, multipliers=(1, 2, 4), blocks=2,
                            attention_resolutions=(8,), heads=4, latent_dim=64, groups=8),
            # The shipped base's recipe (models/small-1k/MODEL_CARD.md; BENCHMARKS.md measures each part):
            # x0 prediction beside a linear mean-planes head, sampled without guidance, which only added
            # floaters. Before 2026-12-05 the preset said v-prediction, no head and guidance 2.
            diffusion=DiffusionConfig(prediction="sample", sample_steps=25, guidance_scale=1.0),
            mean_planes=True, mean_head="linear", text_head=True,
        ),
        train_base=TrainConfig(steps=4000, batch=16, lr=5e-4, warmup=200, ema_decay=0.999,
                               checkpoint_every=250, sample_every=1000, log_every=25),
        encoder=DualEncoderConfig(dim=64, image_size=64, width=32),
        train_encoder=EncoderTrainConfig(steps=1500, batch=128),
        prior=PriorConfig(dim=64, hidden=512, layers=4),
        train_prior=TrainConfig(steps=2000, batch=256, lr=1e-3, warmup=100, ema_decay=0.999, checkpoint_every=500,
                                sample_every=0, log_every=100),
        # Width 16, not 32: 1.2 s a training step of 8 on 2 cores instead of about 5 s. At this preset the
        # fitted 64² planes render only ~0.4 dB above bicubically enlarged 32² ones (BENCHMARKS.md), so
        # there is little detail for a wider network to find.
        upsampler=UpsamplerConfig(
            residual=True,
            unet=UNetConfig(channels=16, resolution=64, width=16, multipliers=(1, 2, 4), blocks=2,
                            attention_resolutions=(16,), heads=4, latent_dim=64, groups=8),
            # One step, no condition noise: the conditional mean, measured best by held-out render PSNR
            # (28.21 dB against 27.87 for 8 steps; bicubic 28.14). Sampled detail costs PSNR here.
            diffusion=DiffusionConfig(prediction="sample", sample_steps=1, guidance_scale=1.0, latent_dropout=0.1),
            base_resolution=32, sample_noise=0.0),
        train_upsampler=TrainConfig(steps=1200, batch=8, lr=5e-4, warmup=100, ema_decay=0.999,
                                    checkpoint_every=200, sample_every=0, log_every=25),
        # Width 64 and 6 blocks: +1.0 dB on held-out views over width 32 and 4 blocks (25.37 against 24.33 dB)
        # for 8.7 instead of 3.0 min of training (BENCHMARKS.md).
        refiner=RefinerConfig(scale=4, width=64, blocks=6),
        train_refiner=RefinerTrainConfig(steps=3000, batch=16, patch=16, lr=1e-3, warmup=100),
    ),
    "paper": Preset(
        name="paper",
        data=DataConfig(subjects=100_000, views=64, resolution=256, portrait_resolution=512),
        triplane=TriplaneConfig(channels=32, resolution=256, base_resolution=64),
        decoder=DecoderConfig(features=32, hidden=128, layers=3),
        render=RenderConfig(resolution=256, samples=96, importance=48, occupancy_resolution=128),
        fit=FitConfig(joint_subjects=300, joint_rounds=10, joint_steps_per_turn=100, steps=1000,
                      rays_per_step=16384, heldout_views=8, batch_subjects=32),
        base=BaseModelConfig(
            unet=UNetConfig(channels=32, resolution=64, width=128, multipliers=(1, 2, 3, 4), blocks=2,
                            attention_resolutions=(16, 8), heads=8, latent_dim=512, groups=32, dropout=0.1),
            # Not the small preset's recipe: a linear mean-planes head at this size maps 512 numbers to
            # 393,216 texels (201 M weights, more than the UNet), and nothing has been trained at this scale.
            diffusion=DiffusionConfig(sample_steps=50),
        ),
        encoder=DualEncoderConfig(dim=512, image_size=224, width=64, text_hidden=1024),
        train_encoder=EncoderTrainConfig(steps=50_000, batch=512, lr=1e-3, warmup=2000, checkpoint_every=2000),
        prior=PriorConfig(dim=512, hidden=2048, layers=6, diffusion=DiffusionConfig(
            prediction="sample", sample_steps=50, guidance_scale=2.0, latent_dropout=0.2)),
        train_prior=TrainConfig(steps=200_000, batch=1024, lr=1e-4, warmup=2000, ema_decay=0.9999,
                                checkpoint_every=5000, sample_every=0, log_every=100),
        train_base=TrainConfig(steps=500_000, batch=64, lr=1e-4, warmup=5000, ema_decay=0.9999,
                               checkpoint_every=5000, sample_every=20_000, log_every=100),
        upsampler=UpsamplerConfig(
            residual=True,
            unet=UNetConfig(channels=32, resolution=256, width=64, multipliers=(1, 2, 2, 4, 4), blocks=2,
                            attention_resolutions=(16,), heads=8, latent_dim=512, groups=32),
            base_resolution=64),
        train_upsampler=TrainConfig(steps=200_000, batch=32, lr=1e-4, warmup=5000, ema_decay=0.9999,
                                    checkpoint_every=5000, sample_every=0, log_every=100),
        refiner=RefinerConfig(scale=4, width=64, blocks=8),
        identities=IdentitiesConfig(subjects=0),     # 100,000 fitted identities are plenty
        portrait_fit=PortraitFitConfig(resolution=256, rays=4096, samples=48, importance=16),
        train_refiner=RefinerTrainConfig(steps=100_000, batch=32, patch=64, lr=2e-4, warmup=2000, ema_decay=0.9999,
                                         subjects=10_000, views=32, checkpoint_every=5000, log_every=100),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a (nested) config dataclass from a dict; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} expects a JSON object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {cls.__name__}; known keys: {', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        else:
            kwargs[name] = _check_type(cls.__name__, name, default, value)
    return cls(**kwargs)


def parse_settings(settings: list[str], *, flag: str = "--set") -> dict[str, Any]:
    """KEY=VALUE words (a command line's repeatable `--set`) to a dict; VALUE is read as JSON (numbers,
    true/false), else kept as text. The keys are checked later, by `from_dict` on the config they change."""
    out: dict[str, Any] = {}
    for word in settings:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {word!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config(cls: type[T], path: Path) -> T:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return from_dict(cls, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _check_type(owner: str, name: str, default: Any, value: Any) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, type(default[0]) if default else (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{owner}.{name} must be a list like {list(default)}, got {value!r}")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{owner}.{name} must be a string, got {value!r}")
    return value
