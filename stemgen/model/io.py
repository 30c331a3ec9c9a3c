"""Exported models: ``model.safetensors`` + ``config.json`` (no pickles, safe to share)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingWeightsError
from ..paths import atomic_write
from .transformer import ModelConfig, StemGenModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CODEC_DIR = "codec"  # an export's own codec (fitted embedded codecs travel with their model)
FORMAT = "stemgen-model-v1"


def save_exported(model: StemGenModel, folder: str | Path, extra: dict | None = None, half: bool = False) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically).

    ``extra`` (JSON-able) is stored under ``config["info"]``: the codec the model was trained
    with, the training step, ... ``half`` stores the weights as float16 (loaded back as float32).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    config = {"format": FORMAT, "model": model.cfg.to_dict(), "info": extra or {}}
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return folder


def load_exported(folder: str | Path) -> tuple[StemGenModel, dict]:
    """Load an exported model; returns ``(model in eval mode, info dict)``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise MissingWeightsError(f"no exported stemgen model in {folder} (need {CONFIG} and {WEIGHTS}); "
                                  f"export a training checkpoint with `stemgen export CKPT {folder}`.")
    cfg = json.loads((folder / CONFIG).read_text())
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG} is not a stemgen model export (format {cfg.get('format')!r}).")
    model = StemGenModel(ModelConfig(**cfg["model"]))
    try:
        state = load_file(str(folder / WEIGHTS))
        model.load_state_dict(state)  # copies into the float32 parameters (float16 exports too)
    except Exception as err:
        raise CheckpointError(f"cannot load the weights in {folder / WEIGHTS}: {err}") from err
    return model.eval(), cfg.get("info", {})
