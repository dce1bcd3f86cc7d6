"""Load whichever semantic encoder a model folder holds: ours, or a reference to the user's CLIP."""

from __future__ import annotations

import json
from pathlib import Path

from rodin.errors import ConfigError, DataError
from rodin.semantic.space import SemanticEncoder


def component_kind(folder: Path) -> str:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise DataError(f"{path}: missing (a component folder holds config.json)")
    try:
        raw = json.loads(path.read_text())
        return str(raw["kind"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a component config ({err})") from None


def load_semantic(folder: Path | str) -> SemanticEncoder:
    from rodin.config import DualEncoderConfig
    from rodin.modeling import load_component
    from rodin.semantic import clip_adapter, dual_encoder

    folder = Path(folder)
    kind = component_kind(folder)
    if kind == dual_encoder.KIND:
        return load_component(dual_encoder.DualEncoder, DualEncoderConfig, folder, kind=kind).eval()
    if kind == clip_adapter.KIND:
        return clip_adapter.load_clip_reference(folder)
    raise ConfigError(f"{folder}: a {kind!r} component is not a semantic encoder "
                      f"(expected {dual_encoder.KIND!r} or {clip_adapter.KIND!r})")
