"""The web demo (`rodin demo`): a gradio page around `RodinPipeline`.

`uploads` checks what a browser sends, `studio` turns requests into avatar files (no web code, so it is
tested alone), and `app` lays out the page and serves it on localhost with gradio's telemetry off. The
serving defaults live here, so that the CLI can show them without importing gradio or torch.
"""

DEFAULT_HOST = "127.0.0.1"          # this machine only; --host 0.0.0.0 opens the page to the network
DEFAULT_PORT = 7860
DEFAULT_WORKERS = 2                 # requests computed at once; more wait in the queue (2 cores here)
DEFAULT_MAX_UPLOAD_MB = 10.0
