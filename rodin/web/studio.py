"""What the web demo does, without the web: check a request, make or edit an avatar, write its files.

Every request gets its own folder of the files `rodin generate` writes (through the same `write_outputs`),
so that concurrent requests never share a file and the page can serve and offer them for download. Edits
follow `rodin generate --edit`: the text model draws the recorded request again with its z moved by the
words, with the same seed, so an avatar from any source can be edited.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rodin.errors import DataError
from rodin.io import write_atomic
from rodin.web import DEFAULT_MAX_UPLOAD_MB
from rodin.web.uploads import check_upload, max_upload_bytes

MAX_SEED = 2**31 - 1
MAX_STRENGTH = 4.0                  # as `rodin generate --strength`


@dataclass(frozen=True)
class WebSettings:
    """Which models the page uses and how much it renders per request."""
    image_model: Path               # portraits and seeds (`default_model()`)
    text_model: Path                # prompts and edits (`default_model(text=True)`)
    frames: int = 24                # turntable frames
    resolution: int = 128           # px, turntable and views
    mesh_resolution: int = 96       # marching-cubes grid nodes per axis
    steps: int | None = None        # sampling steps (None: the model's own)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    keep_results: int = 64          # result folders kept on disk; older ones are removed

    @property
    def max_upload_bytes(self) -> int:
        return max_upload_bytes(self.max_upload_mb)


@dataclass(frozen=True)
class Request:
    """What an avatar was made from, kept so that an edit can draw it again."""
    seed: int
    image: Path | None = None       # the checked copy of an uploaded portrait
    prompt: str | None = None

    def describe(self) -> str:
        if self.image is not None:
            return "the uploaded portrait"
        if self.prompt is not None:
            return f"the prompt {self.prompt!r}"
        return f"seed {self.seed}"


@dataclass(frozen=True)
class Result:
    """One finished request: its files and a line for the page."""
    request: Request
    folder: Path
    message: str

    @property
    def video(self) -> Path:
        return self.folder / "turntable.mp4"

    @property
    def mesh(self) -> Path:
        return self.folder / "mesh.glb"

    @property
    def downloads(self) -> list[Path]:
        names = ("mesh.glb", "avatar.safetensors", "turntable.mp4", "views.png")
        return [self.folder / name for name in names if (self.folder / name).is_file()]


def check_seed(seed: float | int | None) -> int:
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed):
        raise DataError(f"the seed must be a whole number, got {seed!r}")
    if int(seed) != seed or not 0 <= seed <= MAX_SEED:
        raise DataError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def check_strength(strength: float | int | None) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= MAX_STRENGTH:
        raise DataError(f"the edit strength must be a number from 0 to {MAX_STRENGTH:g}, got {strength!r}")
    return float(strength)


class Studio:
    """Loads each model once, on first use, and serves requests from several threads at a time."""

    def __init__(self, *, settings: WebSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pipes: dict[Path, object] = {}
        self._loading = threading.Lock()
        self._portrait = threading.Lock()   # `last_portrait_note` is per pipeline: read it under this lock
        self._folders = threading.Lock()
        self._busy: set[Path] = set()       # folders of requests in flight: never pruned

    def pipeline(self, *, text: bool):
        """The RodinPipeline for prompts and edits (`text`) or for portraits and seeds."""
        from rodin.pipeline import RodinPipeline

        path = self.settings.text_model if text else self.settings.image_model
        with self._loading:
            if path not in self._pipes:
                pipe = RodinPipeline.from_pretrained(path)
                if pipe.base is None:
                    raise DataError(f"{path}: no base diffusion model; train one with `rodin train base`")
                self._pipes[path] = pipe
            return self._pipes[path]

    def check(self, upload: Path | str | None) -> Path:
        """An uploaded portrait checked against this page's limits (see `check_upload`)."""
        return check_upload(upload, max_bytes=self.settings.max_upload_bytes)

    def generate(self, *, image: Path | str | None = None, prompt: str | None = None,
                 seed: float | int = 0) -> Result:
        """An avatar from an uploaded portrait, a prompt, or (neither given) the seed alone."""
        seed = check_seed(seed)
        if image is not None and prompt is not None:
            raise DataError("give a portrait or a prompt, not both")
        checked = self.check(image) if image is not None else None
        with self._request_folder() as folder:
            request = Request(seed=seed, prompt=prompt)
            if checked is not None:
                kept = folder / f"input{checked.suffix.lower()}"
                write_atomic(kept, checked.read_bytes())        # at most the upload limit
                request = Request(seed=seed, image=kept)
            return self._make(request, folder, edit=None, strength=0.0)

    def edit(self, *, request: Request | None, edit: str, strength: float | int = 1.0) -> Result:
        """The avatar of `request` drawn again by the text model with its z moved by `edit`."""
        if request is None:
            raise DataError("make an avatar first (portrait, prompt or random), then edit it")
        strength = check_strength(strength)
        if request.image is not None:
            self.check(request.image)
        with self._request_folder() as folder:
            return self._make(request, folder, edit=edit, strength=strength)

    def _make(self, request: Request, folder: Path, *, edit: str | None, strength: float) -> Result:
        from rodin.cli.generate import write_outputs

        text = request.prompt is not None or edit is not None
        pipe = self.pipeline(text=text)
        started = time.perf_counter()
        inputs = dict(image=request.image, prompt=request.prompt, seed=request.seed, steps=self.settings.steps)
        if edit is not None:
            inputs.update(edit=edit, strength=strength)
        note = None
        if request.image is not None:
            with self._portrait:
                avatar = pipe(**inputs)
                note = pipe.last_portrait_note
        else:
            avatar = pipe(**inputs)
        s = self.settings
        write_outputs(avatar, folder, frames=s.frames, resolution=s.resolution, mesh_resolution=s.mesh_resolution,
                      mesh=True)
        what = f"edited ({edit!r}, strength {strength:g}) from" if edit is not None else "from"
        seed = "" if request.image is None and request.prompt is None else f" (seed {request.seed})"
        message = (f"Avatar {what} {request.describe()}{seed}, by the model {Path(pipe.path).name}, "
                   f"in {time.perf_counter() - started:.1f} s.")
        reading = pipe.prompt_reading(request.prompt) if request.prompt is not None else None
        if reading:
            message += f" The prompt was read as: {reading}."
        reading = pipe.edit_reading(edit) if edit is not None else None
        if reading:
            message += f" The edit was read as {reading}."
        if note:
            message += f" Note: {note}."
        self._prune(folder)
        return Result(request=request, folder=folder, message=message)

    @contextmanager
    def _request_folder(self) -> Iterator[Path]:
        """A fresh folder for one request, removed again if the request fails."""
        with self._folders:
            folder = self.workdir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            folder.mkdir()
            self._busy.add(folder)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            with self._folders:
                self._busy.discard(folder)

    def _prune(self, keep: Path) -> None:
        """After a request succeeded: the oldest folders beyond `keep_results` go (not `keep`, none in flight)."""
        with self._folders:
            existing = sorted(p for p in self.workdir.iterdir() if p.is_dir() and p != keep and p not in self._busy)
            for old in existing[:max(0, len(existing) + 1 - self.settings.keep_results)]:
                shutil.rmtree(old, ignore_errors=True)
