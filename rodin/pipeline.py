"""`RodinPipeline`: a model folder in, avatars out.

    pipe = RodinPipeline.from_pretrained("models/small")
    avatar = pipe(image="portrait.png", seed=0)       # or pipe(seed=3) for an unconditional one
    avatar.save("out/avatar.safetensors"); frames = avatar.turntable(); mesh = avatar.mesh()

A model folder holds `model_index.json` (which component lives where, and the render settings)
and one folder per component (config.json + model.safetensors). Components that a stage has not
trained yet are simply absent, and asking for what they provide fails with a clear message.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from rodin.config import BaseModelConfig, DecoderConfig, PortraitFitConfig, RenderConfig, from_dict
from rodin.errors import ConfigError, DataError
from rodin.io import write_atomic, write_json

INDEX = "model_index.json"
SHEET_AZIMUTHS = (0.0, 45.0, 90.0, 180.0)
AVATAR_FORMAT = "rodin-avatar/1"


@dataclass
class Avatar:
    """One generated (or fitted) avatar: its tri-plane and the decoder that reads it."""

    planes: torch.Tensor                      # (3, C, H, W)
    decoder: Any                              # TriplaneDecoder
    render_config: RenderConfig
    info: dict = field(default_factory=dict)  # how it was made (seed, input image, guidance, model)
    latent: torch.Tensor | None = None        # (D,) the z it was drawn for, so that it can be edited later
    refiner: Any | None = None                # stage 4 (rodin.refine.network.Refiner), when the model has one

    def views(self, *, count: int = 8, resolution: int = 128, elevation: float = 10.0,
              refine: bool = True) -> np.ndarray:
        """(count, R, R, 3) uint8 views evenly spaced around the avatar, the first from the front. With a
        refiner (and `refine`), rendered `scale` times smaller and enlarged by it when the scale divides R."""
        from rodin.render.turntable import render_turntable

        return render_turntable(self.planes, self.decoder, self.render_config, frames=count, resolution=resolution,
                                elevation=elevation, refiner=self.refiner if refine else None)

    def turntable(self, *, frames: int = 48, resolution: int = 128, elevation: float = 10.0,
                  refine: bool = True) -> np.ndarray:
        return self.views(count=frames, resolution=resolution, elevation=elevation, refine=refine)

    def mesh(self, *, resolution: int = 128, threshold: float | None = None):
        """A coloured trimesh.Trimesh from marching cubes on the density (small floaters removed);
        `threshold` is the surface's density level (rodin.render.mesh.DEFAULT_THRESHOLD by default)."""
        from rodin.render.mesh import extract_mesh

        return extract_mesh(self.planes, self.decoder, resolution=resolution, threshold=threshold)

    def save(self, path: Path | str) -> Path:
        """A self-contained avatar file: the tri-plane, and the decoder's (and refiner's) weights and
        configs beside it."""
        path = Path(path)
        tensors = {"planes": self.planes.detach().float().contiguous().cpu()}
        if self.latent is not None:
            tensors["latent"] = self.latent.detach().float().reshape(-1).contiguous().cpu()
        tensors.update({f"decoder.{k}": v.detach().contiguous().cpu() for k, v in self.decoder.state_dict().items()})
        metadata = {
            "format": AVATAR_FORMAT,
            "decoder_config": json.dumps(asdict(self.decoder.config)),
            "render_config": json.dumps(asdict(self.render_config)),
            "info": json.dumps(self.info),
        }
        if self.refiner is not None:
            tensors.update({f"refiner.{k}": v.detach().contiguous().cpu()
                            for k, v in self.refiner.state_dict().items()})
            metadata["refiner_config"] = json.dumps(asdict(self.refiner.config))
        write_atomic(path, save(tensors, metadata=metadata))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Avatar:
        from safetensors import safe_open

        from rodin.config import RefinerConfig
        from rodin.refine.network import Refiner
        from rodin.triplane.decoder import TriplaneDecoder

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: avatar file not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{path}: not an avatar file ({err})") from None
        if metadata.get("format") != AVATAR_FORMAT or "planes" not in tensors:
            raise DataError(f"{path}: not a rodin avatar (expected format {AVATAR_FORMAT!r})")
        try:
            decoder = TriplaneDecoder(from_dict(DecoderConfig, json.loads(metadata["decoder_config"])))
            render = from_dict(RenderConfig, json.loads(metadata["render_config"]))
            info = json.loads(metadata.get("info", "{}"))
            decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
            refiner = None
            if "refiner_config" in metadata:
                refiner = Refiner(from_dict(RefinerConfig, json.loads(metadata["refiner_config"])))
                refiner.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("refiner.")})
                refiner.eval()
        except (KeyError, ValueError, RuntimeError, ConfigError) as err:
            raise DataError(f"{path}: damaged avatar file ({err})") from None
        planes = tensors["planes"]
        if planes.ndim != 4 or planes.shape[0] != 3 or planes.shape[1] != decoder.config.features:
            raise DataError(f"{path}: planes of shape {tuple(planes.shape)} do not fit its decoder")
        if not torch.isfinite(planes).all():
            raise DataError(f"{path}: the tri-plane holds NaN or infinity")
        latent = tensors.get("latent")
        if latent is not None and (latent.ndim != 1 or not torch.isfinite(latent).all()):
            raise DataError(f"{path}: damaged avatar file (its z is not a finite vector)")
        return cls(planes, decoder.eval(), render, info, latent=latent, refiner=refiner)


def write_model_index(folder: Path, *, render: RenderConfig, preset: str, components: dict[str, str]) -> None:
    """Record (or update) which components a model folder holds."""
    path = Path(folder) / INDEX
    index = json.loads(path.read_text()) if path.is_file() else {}
    index.update({"_class_name": "RodinPipeline", "preset": preset, "render": asdict(render)})
    index.setdefault("portrait_fit", asdict(_preset_portrait_fit(preset)))
    index.setdefault("components", {}).update(components)
    write_json(path, index)


def _preset_portrait_fit(preset: str | None) -> PortraitFitConfig:
    from rodin.config import PRESETS

    return PRESETS[preset].portrait_fit if preset in PRESETS else PortraitFitConfig()


def _load_read_with_encoder(folder: Path, semantic: Path, *, allow_pickle: bool, module, config, kind: str,
                            stale: str):
    """A component measured through the semantic encoder (labelled edits, the prompt reader's bank), or None
    with the warning `stale` when that encoder has changed since."""
    from rodin.modeling import load_component
    from rodin.train.edits import encoder_digest

    component = load_component(module, config, folder, kind=kind, allow_pickle=allow_pickle)
    if component.config.encoder_digest != encoder_digest(semantic):
        warnings.warn(f"{folder}: {stale}", stacklevel=4)
        return None
    return component


def _load_edits(folder: Path, semantic: Path, *, allow_pickle: bool):
    from rodin.semantic.edit import LabelledEdits, LabelledEditsConfig
    from rodin.train.edits import KIND

    return _load_read_with_encoder(
        folder, semantic, allow_pickle=allow_pickle, module=LabelledEdits, config=LabelledEditsConfig, kind=KIND,
        stale="measured with another semantic encoder; edits follow raw text directions until `rodin train "
              "edits` measures them again")


def _load_reader(folder: Path, semantic: Path, *, allow_pickle: bool):
    from rodin.semantic.prompt_reader import PromptReader, PromptReaderConfig
    from rodin.train.reader import KIND

    return _load_read_with_encoder(
        folder, semantic, allow_pickle=allow_pickle, module=PromptReader, config=PromptReaderConfig, kind=KIND,
        stale="its bank was read with another semantic encoder; prompts go through the latent prior until "
              "`rodin train reader` reads it again")


class RodinPipeline:
    """Generation from a model folder. Keyword-only calls; see the module docstring."""

    def __init__(self, *, decoder, render: RenderConfig, base=None, encoder=None, semantic=None, prior=None,
                 upsampler=None, refiner=None, edits=None, reader=None, portrait_fit: PortraitFitConfig | None = None,
                 path: Path | None = None) -> None:
        self.decoder = decoder.eval()
        self.render = render
        self.base = base.eval() if base is not None else None
        self.upsampler = upsampler.eval() if upsampler is not None else None   # stage 3: base planes to full size
        self.refiner = refiner.eval() if refiner is not None else None         # stage 4: renders to 4x images
        self.encoder = encoder            # the legacy pixel-PCA portrait encoder (models without `semantic`)
        self.semantic = semantic          # the image-text encoder z lives in (rodin.semantic.space)
        self.prior = prior.eval() if prior is not None else None
        self.edits = edits                # labelled edit directions (rodin.semantic.edit.LabelledEdits)
        self.reader = reader.eval() if reader is not None else None   # prompts as attributes (prompt_reader)
        self.portrait_fit = portrait_fit or PortraitFitConfig()   # how a portrait's avatar is fitted to it
        self.path = path
        self._edits = None
        self.last_portrait_note: str | None = None   # what preparing the last photo said (several faces, ...)

    @classmethod
    def from_pretrained(cls, path: Path | str, *, allow_pickle: bool = False) -> RodinPipeline:
        """Load a model folder. Weights are read from safetensors only; `allow_pickle=True` also reads a
        component's pickled weights (.pt/.pth/.bin), which can run code: only for files you trust."""
        from rodin.config import PriorConfig, RefinerConfig, UpsamplerConfig
        from rodin.diffusion.base import KIND as BASE_KIND
        from rodin.diffusion.base import BaseDiffusion
        from rodin.diffusion.prior import KIND as PRIOR_KIND
        from rodin.diffusion.prior import LatentPrior
        from rodin.diffusion.upsampler import KIND as UPSAMPLER_KIND
        from rodin.diffusion.upsampler import UpsamplerDiffusion
        from rodin.fit.run import DECODER_KIND
        from rodin.modeling import load_component
        from rodin.refine.network import KIND as REFINER_KIND
        from rodin.refine.network import Refiner
        from rodin.semantic.loading import load_semantic
        from rodin.semantic.pixel_encoder import KIND as LATENT_KIND
        from rodin.semantic.pixel_encoder import PixelEncoder, PixelEncoderConfig
        from rodin.triplane.decoder import TriplaneDecoder

        path = Path(path)
        index_path = path / INDEX
        if not index_path.is_file():
            raise DataError(f"{path}: not a model folder (no {INDEX}); train one with `rodin train base`")
        try:
            index = json.loads(index_path.read_text())
            components = index["components"]
            render = from_dict(RenderConfig, index["render"])
            portrait_fit = (from_dict(PortraitFitConfig, index["portrait_fit"]) if "portrait_fit" in index
                            else _preset_portrait_fit(index.get("preset")))
        except (ValueError, KeyError, TypeError, ConfigError) as err:
            raise DataError(f"{index_path}: malformed model index ({err})") from None

        def part(name: str) -> Path | None:
            folder = components.get(name)
            return path / folder if folder else None

        if part("decoder") is None:
            raise DataError(f"{index_path}: names no decoder")
        trust = {"allow_pickle": allow_pickle}
        decoder = load_component(TriplaneDecoder, DecoderConfig, part("decoder"), kind=DECODER_KIND, **trust)
        base = encoder = semantic = prior = upsampler = refiner = None
        if part("base") is not None:
            base = load_component(BaseDiffusion, BaseModelConfig, part("base"), kind=BASE_KIND, **trust)
        if part("latent") is not None:
            encoder = load_component(PixelEncoder, PixelEncoderConfig, part("latent"), kind=LATENT_KIND, **trust)
        if part("semantic") is not None:
            semantic = load_semantic(part("semantic"))
        if part("prior") is not None:
            prior = load_component(LatentPrior, PriorConfig, part("prior"), kind=PRIOR_KIND, **trust)
        if part("upsampler") is not None:
            upsampler = load_component(UpsamplerDiffusion, UpsamplerConfig, part("upsampler"), kind=UPSAMPLER_KIND,
                                       **trust)
        if part("refiner") is not None:
            refiner = load_component(Refiner, RefinerConfig, part("refiner"), kind=REFINER_KIND, **trust)
        edits = None
        if part("edits") is not None and semantic is not None:
            edits = _load_edits(part("edits"), part("semantic"), **trust)
        reader = None
        if part("reader") is not None and semantic is not None:
            reader = _load_reader(part("reader"), part("semantic"), **trust)
        if base is not None and semantic is not None and semantic.dim != base.latent_dim:
            raise DataError(f"{path}: its semantic encoder makes {semantic.dim}-d z but its base model reads "
                            f"{base.latent_dim}-d z; retrain the base model with this encoder")
        _check_stages_fit(path, decoder, base, upsampler, refiner)
        return cls(decoder=decoder, render=render, base=base, encoder=encoder, semantic=semantic, prior=prior,
                   upsampler=upsampler, refiner=refiner, edits=edits, reader=reader, portrait_fit=portrait_fit,
                   path=path)

    # --- where z comes from -------------------------------------------------------------------------
    def encode_image(self, image: Path | str | np.ndarray | torch.Tensor) -> torch.Tensor:
        """z (1, D) of a portrait: a file, an (H, W, 3|4) uint8/float array, or a (3, S, S) tensor.
        Photos are cropped to the training framing first (`rodin.semantic.face`)."""
        from rodin.semantic.space import latent_from_embedding

        self.last_portrait_note = None
        if self.semantic is not None:
            pixels = self.portrait_pixels(image, size=self.semantic.image_size)
            return latent_from_embedding(self.semantic.encode_images(pixels[None]).cpu())
        if self.encoder is None:
            raise DataError(f"{self.path}: this model has no image encoder; generate with a seed instead")
        with torch.no_grad():
            return self.encoder(self.portrait_pixels(image, size=self.encoder.config.image_size)[None])

    def portrait_pixels(self, image: Path | str | np.ndarray | torch.Tensor, *, size: int) -> torch.Tensor:
        """(3, size, size) floats on white: the portrait as this model reads it. With a semantic encoder a
        photo is cropped to the training framing (`rodin.semantic.face`, which sets `last_portrait_note`);
        the legacy pixel encoder takes the centre square as it is."""
        from rodin.semantic.pixel_encoder import load_portrait, portrait_from_array

        if self.semantic is not None:
            from rodin.semantic.face import prepare_portrait

            if isinstance(image, torch.Tensor):
                image = image.detach().cpu().numpy()
            prepared = prepare_portrait(image, size=size)
            self.last_portrait_note = prepared.note
            return prepared.pixels
        return load_portrait(image, size=size) if isinstance(image, (str, Path)) else portrait_from_array(
            image, size=size)

    def _text_encoder(self):
        if self.semantic is None:
            raise DataError(f"{self.path}: this model has no text encoder; generate from --image or --seed "
                            "(train one with `rodin train encoder`)")
        return self.semantic

    def encode_prompt(self, prompt: str, *, seed: int = 0, guidance_scale: float | None = None) -> torch.Tensor:
        """z (1, D) of a sentence: drawn from the portraits that have what it names when the model has a
        prompt reader, else by the latent prior (`guidance_scale` is the prior's)."""
        if self.reader is not None:
            from rodin.semantic.text import check_prompt

            return self.reader.draw([check_prompt(prompt)], generator=_prior_generator(seed))
        return self._prompt_latent(self._prompt_text(prompt), seed=seed, guidance_scale=guidance_scale)

    def prompt_reading(self, prompt: str) -> str | None:
        """What the model read in a prompt, in words ("hair colour red 0.98, glasses round 1.00"); None
        where it has no prompt reader."""
        from rodin.semantic.prompt_reader import describe_reading

        if self.reader is None:
            return None
        return describe_reading(self.reader.read(prompt).named(self.reader.config.said))

    @property
    def prompts_use_text_head(self) -> bool:
        """Whether a prompt's avatar starts from the base model's text-head planes (wholly, or with a prompt
        reader in part: `PromptReaderConfig.text_head_share`)."""
        if self.base is None or self.base.text_planes is None:
            return False
        return self.reader is None or self.reader.config.text_head_share > 0

    def _prompt_text(self, prompt: str) -> torch.Tensor:
        from rodin.semantic.text import check_prompt

        return self._text_encoder().encode_texts([check_prompt(prompt)]).cpu()

    def _prompt_latent(self, text: torch.Tensor, *, seed: int, guidance_scale: float | None = None) -> torch.Tensor:
        if self.prior is None:
            raise DataError(f"{self.path}: this model has no latent prior; text-to-avatar needs "
                            "`rodin train prior`")
        return self.prior.sample(text, generator=_prior_generator(seed), guidance_scale=guidance_scale)

    @torch.no_grad()
    def prompt_means(self, prompts: list[str], latents: torch.Tensor, *,
                     skip: frozenset[str] = frozenset()) -> torch.Tensor | None:
        """The planes the base model starts prompts' avatars from, given their z (None: the mean-planes head's
        planes of z, as for a portrait). The text head's planes; with a prompt reader, mixed with the
        mean-planes head's planes of the drawn z, as `text_head_share` says: each carries attributes the other
        misses (BENCHMARKS.md, "Prompts read as attributes"); then, where the reader holds value planes,
        steered toward the values each prompt names except the attributes in `skip` (`PromptReader.steer`)."""
        from rodin.semantic.text import check_prompt

        if not self.prompts_use_text_head:
            return None
        prompts = [check_prompt(p) for p in prompts]
        texts = self._text_encoder().encode_texts(prompts).cpu()
        mean = self.base.prompt_mean(texts)
        if self.reader is not None:
            share = self.reader.config.text_head_share
            mean = share * mean + (1.0 - share) * self.base.mean_planes(latents.to(mean))
            if self.reader.value_planes is not None and self.reader.config.steer > 0:
                self._check_value_planes()
                said = self.reader.config.said
                readings = [self.reader.read(p).named(said) for p in prompts]
                mean = self.reader.steer(mean, readings, self.base.normalise, skip=skip)
        return mean

    def _check_value_planes(self) -> None:
        shape = tuple(self.reader.config.plane_shape)
        want = (3, self.base.config.unet.channels) + (self.base.config.unet.resolution,) * 2
        if shape != want:
            raise DataError(f"{self.path}: the prompt reader's value planes {shape} do not fit this base model "
                            f"{want}; measure them again with `rodin train steering --triplanes RUN`")

    @torch.no_grad()
    def prompt_mean(self, prompt: str, *, latent: torch.Tensor | None = None,
                    edited: torch.Tensor | None = None, edits: list[str] = ()) -> torch.Tensor | None:
        """The planes the base model starts a prompt's avatar from (`prompt_means`; None without a text
        head). `latent` is the prompt's own z (needed with a prompt reader); with `edited` (z after an edit)
        too, the edit's change to the mean-planes head's planes is added, so that an edit moves a prompt's
        avatar as it moves a portrait's. The prompt is not steered toward what `edits` name: "with blue hair"
        on "a person with red hair" must not be pulled back to red."""
        if not self.prompts_use_text_head:
            return None
        if latent is None and self.reader is not None:
            raise ValueError("with a prompt reader, a prompt's planes depend on its drawn z: pass latent")
        skip = frozenset()
        if edits and self.reader is not None:
            said = self.reader.config.said
            skip = frozenset(name for text in edits for name in self.reader.read(text).named(said))
        mean = self.prompt_means([prompt], latent, skip=skip)
        if latent is not None and edited is not None:
            heads = self.base.mean_planes(torch.cat([latent, edited]).to(mean))
            mean = mean + heads[1:] - heads[:1]
        return mean

    def random_latent(self, *, seed: int = 0) -> torch.Tensor | None:
        """z (1, D) of an avatar drawn from nothing (None without a prior: the base model's null z)."""
        if self.prior is None:
            return None
        return self.prior.sample(None, count=1, generator=_prior_generator(seed))

    def _edit_directions(self):
        from rodin.semantic.edit import EditDirections

        if self._edits is None:
            self._edits = EditDirections(self._text_encoder(), labelled=self.edits)
        return self._edits

    def edit_reading(self, edit: str) -> str | None:
        """How the model read an edit, in words ("'dressed in green clothing' 0.96"); None where it has no
        labelled edits (it follows the raw text direction)."""
        phrases = self._edit_directions().reading(edit)
        if not phrases:
            return None
        return ", ".join(f"'{phrase}' {weight:.2f}" for phrase, weight in phrases)

    def edit_latent(self, latent: torch.Tensor, edit: str, *, strength: float = 1.0) -> torch.Tensor:
        """z moved along the text direction of `edit` (`rodin.semantic.edit`)."""
        return self._edit_directions().apply(latent, edit, strength=strength)

    @torch.no_grad()
    def edit_planes(self, edit: str, *, strength: float = 1.0) -> torch.Tensor | None:
        """What `edit` adds to the planes the base model starts from (1, C, H, 3W), in its normalised units:
        `strength` times `plane_gain` times the edit's labelled plane direction; None where MODEL/edits
        holds none or the base has no mean-planes head to add it to. Where it is not None, an edit moves
        these planes and leaves z alone: that measured better than moving z, or both (BENCHMARKS.md,
        "Edits in the planes")."""
        if self.base is None or self.base.mean_planes is None:
            return None
        change = self._edit_directions().plane_direction(edit)
        if change is None:
            return None
        if tuple(change.shape[1:]) != (self.base.config.unet.channels,) + (self.base.config.unet.resolution,) * 2:
            raise DataError(f"{self.path}: the edits' plane directions ({tuple(change.shape)}) do not fit this "
                            "base model; measure them again with `rodin train edits --triplanes RUN`")
        gain = float(strength) * self.edits.config.plane_gain
        return gain * self.base.normalise_change(change[None])

    def _edited(self, latent: torch.Tensor | None, edits: list[tuple[str, float]], *, prompt: str | None,
                unedited: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(z, planes to start from, or None for the base model's own) of the avatar of z `latent` after
        `edits` [(text, strength)]: along plane directions where the model has them, else moving z. A
        prompt's avatar starts from its text head's planes (moved by what z moved since `unedited`)."""
        changes = []
        for text, strength in edits:
            change = self.edit_planes(text, strength=strength)
            if change is not None:
                changes.append(change)
                continue
            if latent is None:
                raise DataError(f"{self.path}: this model has no latent prior, so an avatar from a seed has no "
                                "z to edit; edit a portrait's avatar instead")
            latent = self.edit_latent(latent, text, strength=strength)
        mean = None if prompt is None else self.prompt_mean(prompt, latent=unedited, edited=latent,
                                                            edits=[text for text, _ in edits])
        if not changes:
            return latent, mean
        if mean is None:
            with torch.no_grad():
                z = torch.zeros(1, self.base.latent_dim) if latent is None else latent
                mean = self.base.mean_planes(z.to(changes[0]))
        return latent, mean + sum(changes).to(mean)

    # --- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, *, image: Path | str | np.ndarray | torch.Tensor | None = None, prompt: str | None = None,
                 edit: str | None = None, strength: float = 1.0, seed: int = 0, guidance_scale: float | None = None,
                 steps: int | None = None, sampler: str | None = None, upsample: bool = True,
                 portrait_steps: int | None = None) -> Avatar:
        """One avatar from a portrait (`image`), a sentence (`prompt`), or nothing but `seed`; `edit` then
        moves it in words ("with red hair") by `strength`. `upsample=False` skips the upsampler (stage 3)
        of a model that has one and keeps the base tri-plane. A portrait's avatar is then fitted to the
        portrait for `portrait_steps` (default: the model's `portrait_fit.steps`; 0: not at all)."""
        if image is not None and prompt is not None:
            raise ConfigError("give a portrait or a prompt, not both (to change a portrait in words, use an edit)")
        if self.base is None:
            raise DataError(f"{self.path}: this model has no base diffusion model; train one with "
                            "`rodin train base`")
        if not np.isfinite(strength):
            raise ConfigError(f"the edit strength must be a number, got {strength}")
        if image is not None:
            latent = self.encode_image(image)
        elif prompt is not None:
            latent = self.encode_prompt(prompt, seed=seed)
        else:
            latent = self.random_latent(seed=seed)
        edits = [] if edit is None else [(edit, float(strength))]
        unedited = latent
        latent, mean = self._edited(latent, edits, prompt=prompt, unedited=latent)
        info = {"seed": int(seed), "image": str(image) if isinstance(image, (str, Path)) else None,
                "prompt": prompt, "edit": edit, "strength": float(strength) if edit is not None else None,
                "edits": [list(e) for e in edits]}
        draw = {"seed": seed, "guidance_scale": guidance_scale, "steps": steps, "sampler": sampler,
                "upsample": upsample}
        avatar = self.sample(latent, info=info, mean=mean, **draw)
        fit_steps = self.portrait_fit.steps if portrait_steps is None else int(portrait_steps)
        if image is None or fit_steps <= 0:
            return avatar
        # The portrait's own avatar is fitted to it; an edited one then as `edit` refits it.
        drawn = avatar if not edits else self.sample(unedited, **draw)
        fitted = self.fit_portrait(drawn.planes, image, steps=fit_steps, seed=seed)
        if edits:
            fitted = self.refit_edit(fitted, drawn.planes, avatar.planes, steps=fit_steps, seed=seed)
        avatar.planes = fitted
        avatar.info["portrait_steps"] = fit_steps
        return avatar

    def refit_edit(self, fitted: torch.Tensor, drawn: torch.Tensor, edited: torch.Tensor, *, steps: int | None = None,
                   seed: int = 0) -> torch.Tensor:
        """The edited drawn avatar `edited` fitted to what the fitted avatar `fitted` (drawn as `drawn`) shows
        from the portrait camera, except where the edit changes that view (`rodin.fit.portrait.edited_portrait`):
        an edit of a portrait's avatar does all it does to a drawn one, and keeps the likeness elsewhere."""
        from dataclasses import replace

        from rodin.fit.portrait import edited_portrait, fit_to_portrait

        config = self.portrait_fit if steps is None else replace(self.portrait_fit, steps=int(steps))
        target = edited_portrait(fitted, drawn, edited, self.decoder, config=config, render=self.render)
        return fit_to_portrait(edited, self.decoder, target, config=config, render=self.render,
                               generator=torch.Generator().manual_seed(int(seed) + 1))

    def fit_portrait(self, planes: torch.Tensor, image: Path | str | np.ndarray | torch.Tensor, *,
                     steps: int | None = None, seed: int = 0) -> torch.Tensor:
        """`planes` (3, C, H, W) fitted to the portrait `image` (prepared as `encode_image` prepares it) for
        `steps` (default: the model's `portrait_fit.steps`): see `rodin.fit.portrait`."""
        from dataclasses import replace

        from rodin.fit.portrait import fit_to_portrait

        config = self.portrait_fit if steps is None else replace(self.portrait_fit, steps=int(steps))
        pixels = self.portrait_pixels(image, size=config.resolution)
        return fit_to_portrait(planes, self.decoder, pixels, config=config, render=self.render,
                               generator=torch.Generator().manual_seed(int(seed)))

    @torch.no_grad()
    def sample(self, latent: torch.Tensor | None, *, seed: int = 0, guidance_scale: float | None = None,
               steps: int | None = None, sampler: str | None = None, info: dict | None = None,
               upsample: bool = True, mean: torch.Tensor | None = None) -> Avatar:
        """The avatar the base model draws for z (None: unconditional) with the noise of `seed`, enlarged
        by the upsampler when the model has one (and `upsample`). `mean` (`prompt_mean`) replaces the
        planes the base model's mean-planes head would start from."""
        generator = torch.Generator().manual_seed(int(seed))
        planes = self.base.sample(latent, count=1, steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                  generator=generator, mean=mean)
        upsampled = upsample and self.upsampler is not None
        if upsampled:
            # Its own noise: the base tri-plane of a seed stays the same with or without this stage.
            planes = self.upsampler.sample(planes, latent, generator=upsampler_generator(seed))
        if not torch.isfinite(planes).all():
            raise DataError("sampling produced NaN or infinity; try another seed or fewer guidance")
        info = {**(info or {}), "seed": int(seed),
                "guidance_scale": guidance_scale if guidance_scale is not None
                else self.base.config.diffusion.guidance_scale,
                "steps": steps or self.base.config.diffusion.sample_steps, "upsampled": upsampled,
                "model": str(self.path)}
        return Avatar(planes[0], self.decoder, self.render, info, latent=None if latent is None else latent[0],
                      refiner=self.refiner)

    def edit(self, avatar: Avatar, *, edit: str, strength: float = 1.0, guidance_scale: float | None = None,
             steps: int | None = None) -> Avatar:
        """The same avatar changed in words: its z moved by the edit, sampled again with its own seed."""
        if avatar.latent is None:
            raise DataError("this avatar records no z (it was fitted, or drawn without one); edit its portrait "
                            "instead")
        if avatar.latent.shape[-1] != (self.base.latent_dim if self.base is not None else -1):
            raise DataError("this avatar was made by another model (its z does not fit this one); pass that "
                            "model with --model")
        seed = int(avatar.info.get("seed", 0))
        history = avatar.info.get("edits")
        if not isinstance(history, list):       # an avatar saved before its edits were recorded as a list
            history = [[avatar.info["edit"], avatar.info.get("strength") or 1.0]] if avatar.info.get("edit") else []
        done = [(str(text), float(s)) for text, s in history]
        prompt = avatar.info.get("prompt")
        unedited = None
        if isinstance(prompt, str) and self.prompts_use_text_head:
            # A prompt's avatar starts from its text head's planes, and so do its edits, moved by what they
            # changed in z since the prompt's own z.
            unedited = self.encode_prompt(prompt, seed=seed)
        else:
            prompt = None
        # Plane edits leave z alone, so the avatar's planes are its z plus every plane edit it has had; edits
        # that moved z are already in its z and are not applied again.
        earlier = [(t, s) for t, s in done if self.edit_planes(t, strength=s) is not None]
        new = (edit, float(strength))
        latent, mean = self._edited(avatar.latent[None], earlier + [new], prompt=prompt, unedited=unedited)
        info = {**avatar.info, "edit": edit, "strength": float(strength), "edited_from": avatar.info.get("edit"),
                "edits": [list(e) for e in done + [new]]}
        draw = {"seed": seed, "steps": steps or avatar.info.get("steps"),
                "guidance_scale": guidance_scale if guidance_scale is not None else avatar.info.get("guidance_scale"),
                "upsample": bool(avatar.info.get("upsampled", True))}
        after = self.sample(latent, info=info, mean=mean, **draw)
        fit_steps = avatar.info.get("portrait_steps")
        if fit_steps:
            # A portrait's fitted avatar: the edited drawn avatar refitted to it, outside what the edit changes.
            was_latent, was_mean = self._edited(avatar.latent[None], earlier, prompt=prompt, unedited=unedited)
            drawn = self.sample(was_latent, mean=was_mean, **draw)
            after.planes = self.refit_edit(avatar.planes.to(after.planes), drawn.planes, after.planes,
                                           steps=int(fit_steps), seed=seed)
        return after


def _check_stages_fit(path: Path, decoder, base, upsampler, refiner) -> None:
    """The stages of one model folder must have been trained for each other: fail at load, not mid-call."""
    channels = decoder.config.features
    for name, model in (("base", base), ("upsampler", upsampler)):
        if model is not None and model.config.unet.channels != channels:
            raise DataError(f"{path}: its {name} model makes {model.config.unet.channels}-channel planes but its "
                            f"decoder reads {channels}; they were not trained together")
    if base is not None and upsampler is not None and upsampler.config.base_resolution != base.config.unet.resolution:
        raise DataError(f"{path}: its upsampler reads base planes of side {upsampler.config.base_resolution} "
                        f"but its base model makes {base.config.unet.resolution}; retrain one of them")
    if base is not None and upsampler is not None and upsampler.latent_dim != base.latent_dim:
        raise DataError(f"{path}: its upsampler reads {upsampler.latent_dim}-d z but its base model "
                        f"{base.latent_dim}-d z; retrain the upsampler with the same encoder")
    extra = getattr(decoder.config, "extra_features", 0)
    if refiner is not None and refiner.config.in_channels != 3 + extra:
        raise DataError(f"{path}: its refiner reads {refiner.config.in_channels} channels but its decoder renders "
                        f"{3 + extra}; retrain the refiner with this decoder")


def upsampler_generator(seed: int) -> torch.Generator:
    """The upsampler's own noise for an avatar's seed (shared with batched sampling in rodin.eval)."""
    return torch.Generator().manual_seed(int(seed) * 6151 + 524287)


def _prior_generator(seed: int) -> torch.Generator:
    """The prior's own noise, apart from the base model's, so that an edit re-draws the same avatar."""
    return torch.Generator().manual_seed(int(seed) * 7919 + 104729)


def sample_sheet(pipe: RodinPipeline, portraits: list[Path | None], *, seed: int = 0, resolution: int = 64,
                 guidance_scale: float | None = None) -> np.ndarray:
    """A contact sheet, one row per entry: the portrait (blank for None: unconditional), then the avatar
    sampled from it (seed + row) seen from `SHEET_AZIMUTHS`."""
    from rodin.io import to_uint8
    from rodin.render.turntable import grid
    from rodin.semantic.pixel_encoder import load_portrait
    from rodin.train.base import render_planes

    tiles = []
    for row, portrait in enumerate(portraits):
        avatar = pipe(image=portrait, seed=seed + row, guidance_scale=guidance_scale)
        if portrait is None:
            tiles.append(np.full((resolution, resolution, 3), 255, np.uint8))
        else:
            tiles.append(to_uint8(load_portrait(portrait, size=resolution).permute(1, 2, 0).numpy()))
        tiles.extend(render_planes(avatar.planes, pipe.decoder, pipe.render, azimuths=list(SHEET_AZIMUTHS),
                                   resolution=resolution))
    return grid(np.stack(tiles), 1 + len(SHEET_AZIMUTHS))
