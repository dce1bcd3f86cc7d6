"""The gradio page of `rodin demo`, and serving it safely.

The page only wires widgets to `Studio`; every check and every file lives there. Serving binds to 127.0.0.1
unless told otherwise, caps uploads with gradio's own `max_file_size`, queues requests with a fixed number
of workers (so a burst waits instead of failing), and turns off what would reach the internet: gradio's
analytics and version check, Hugging Face telemetry, share links.
"""

from __future__ import annotations

import html
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from rodin.cli.render import EXAMPLE_EDIT, EXAMPLE_PROMPT
from rodin.errors import DataError, RodinError
from rodin.web import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS
from rodin.web.studio import MAX_SEED, MAX_STRENGTH, Result, Studio, WebSettings

QUEUE_SIZE = 32                     # requests waiting beyond that are refused with a message
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_SHARE": "False",
    "GRADIO_SSR_MODE": "False",     # no Node server
}

log = logging.getLogger(__name__)


def go_offline() -> None:
    """Before gradio is imported: no analytics, version checks or hub calls (there is no internet here,
    and a local demo has no business reporting home)."""
    os.environ.update(OFFLINE_ENV)


def _gradio():
    go_offline()
    try:
        import gradio as gr
    except ImportError:
        raise DataError("the web demo needs gradio: pip install 'rodin[web]' (or run `rodin demo --batch`)") from None
    return gr


def _shown(err: Exception) -> str:
    """An error as the page shows it: gradio renders messages as HTML, and file names come from users."""
    return html.escape(str(err))


def _outputs(result: Result) -> tuple:
    files = [str(p) for p in result.downloads]
    return str(result.video), str(result.mesh), files, result.message, result.request


def build_app(studio: Studio):
    """The gr.Blocks page; `launch` it with `serve_app` (or through `serve`)."""
    gr = _gradio()

    def guarded(fn):
        def run(*args):
            try:
                return fn(*args)
            except RodinError as err:
                raise gr.Error(_shown(err), print_exception=False) from None
            except Exception as err:       # a bug: the page gets one line, the server log the traceback
                log.exception("web demo request failed")
                raise gr.Error(f"internal error: {html.escape(type(err).__name__)} (see the server log)",
                               print_exception=False) from None
        run.__name__ = fn.__name__
        return run

    @guarded
    def preview(upload):
        if upload is None:
            return None
        return str(studio.check(upload))

    @guarded
    def from_portrait(upload, seed):
        if upload is None:
            raise DataError("no portrait uploaded; choose an image file first")
        return _outputs(studio.generate(image=upload, seed=seed))

    @guarded
    def from_prompt(prompt, seed):
        return _outputs(studio.generate(prompt=prompt or "", seed=seed))

    @guarded
    def from_seed(seed):
        return _outputs(studio.generate(seed=seed))

    @guarded
    def edited(request, edit, strength):
        return _outputs(studio.edit(request=request, edit=edit or "", strength=strength))

    def new_seed():
        return random.randint(0, MAX_SEED)

    with gr.Blocks(title="Rodin: 3D avatars", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# Rodin: 3D avatars from a portrait, a sentence or a seed\n"
                    "Tri-plane radiance fields drawn by diffusion, running on this machine's CPU. "
                    "Make an avatar, then change it in words.")
        request = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                 elem_id="seed")
                with gr.Tabs():
                    with gr.Tab("Random", id="random"):
                        draw = gr.Button("Draw a random avatar", variant="primary", elem_id="draw")
                        roll = gr.Button("New seed and draw", elem_id="roll")
                    with gr.Tab("Prompt", id="prompt"):
                        prompt = gr.Textbox(label="Describe the avatar", value=EXAMPLE_PROMPT, lines=2,
                                            elem_id="prompt")
                        write = gr.Button("Generate from the prompt", variant="primary", elem_id="write")
                    with gr.Tab("Portrait", id="portrait"):
                        upload = gr.File(label="Portrait (PNG, JPEG or WebP; a render or a frontal photo)",
                                         file_types=["image"], type="filepath", elem_id="upload")
                        shown = gr.Image(label="Uploaded", interactive=False, type="filepath", height=160)
                        paint = gr.Button("Generate from the portrait", variant="primary", elem_id="paint")
                with gr.Group():
                    edit = gr.Textbox(label="Edit in words", placeholder=EXAMPLE_EDIT, elem_id="edit")
                    strength = gr.Slider(0.0, MAX_STRENGTH, value=1.0, step=0.25, label="Edit strength",
                                         elem_id="strength")
                    change = gr.Button("Apply the edit", elem_id="change")
                status = gr.Markdown("Nothing made yet.", elem_id="status")
            with gr.Column(scale=2):
                with gr.Row(equal_height=True):
                    video = gr.Video(label="Turntable", autoplay=True, loop=True, interactive=False, height=400,
                                     elem_id="video")
                    mesh = gr.Model3D(label="Mesh (drag to turn)", clear_color=(1.0, 1.0, 1.0, 1.0),
                                      camera_position=(90, 80, 3.2), height=400, elem_id="mesh")
                files = gr.File(label="Downloads: mesh.glb, avatar.safetensors, turntable.mp4, views.png",
                                file_count="multiple", interactive=False, elem_id="downloads")
        made = [video, mesh, files, status, request]
        upload.upload(preview, inputs=upload, outputs=shown, api_name="check_upload")
        draw.click(from_seed, inputs=seed, outputs=made, api_name="random")
        roll.click(new_seed, outputs=seed, queue=False, api_visibility="private").then(
            from_seed, inputs=seed, outputs=made, api_visibility="private")
        write.click(from_prompt, inputs=[prompt, seed], outputs=made, api_name="prompt")
        paint.click(from_portrait, inputs=[upload, seed], outputs=made, api_name="portrait")
        change.click(edited, inputs=[request, edit, strength], outputs=made, api_name="edit")
    return app


def serve_app(app, *, studio: Studio, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              workers: int = DEFAULT_WORKERS, block: bool = True):
    """Queue and launch `app`. With `block` False it returns once serving (tests); close it with `app.close()`."""
    _gradio()
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    app.queue(default_concurrency_limit=workers, max_size=QUEUE_SIZE)
    try:
        app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                   max_file_size=studio.settings.max_upload_bytes, allowed_paths=[str(studio.workdir)],
                   show_error=False, enable_monitoring=False, mcp_server=False, pwa=False, ssr_mode=False,
                   quiet=not block)
    except OSError as err:
        raise DataError(f"cannot serve on {host}:{port} ({err}); pass another --port") from None
    return app


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(*, settings: WebSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          workers: int = DEFAULT_WORKERS) -> None:
    """`rodin demo`: serve the page until Ctrl+C or SIGTERM (both stop gradio cleanly); results live in a
    temporary folder removed at exit."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="rodin-web-"))
    try:
        studio = Studio(settings=settings, workdir=workdir)
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("serving on %s: anyone who can reach this machine can use the demo", host)
        app = build_app(studio)
        try:
            serve_app(app, studio=studio, host=host, port=port, workers=workers, block=True)
        except KeyboardInterrupt:         # stopped while still starting (gradio handles it once serving)
            app.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

