"""Turn a Lightning training checkpoint into a shareable export (safetensors + config)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError, MissingWeightsError
from ..model import ModelConfig, StemGenModel
from ..model.io import save_exported


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> Path:
    """Read ``ckpt`` with ``torch.load(weights_only=True)`` and write ``out_dir``."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise MissingWeightsError(f"checkpoint {ckpt} not found.")
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {ckpt} as a training checkpoint with weights_only=True "
                              f"({type(err).__name__}: {err}).") from err
    hp = data.get("hyper_parameters") or {}
    if "preset" not in hp or "state_dict" not in data:
        raise CheckpointError(f"{ckpt} is not a stemgen-train checkpoint (no model hyper-parameters).")
    cfg = ModelConfig.from_name(hp["preset"], num_levels=hp["num_levels"], cardinality=hp["cardinality"])
    model = StemGenModel(cfg)
    state = {k[len("model."):]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{ckpt}: weights do not fit the '{hp['preset']}' model: {err}") from err
    info = {"codec": data.get("stemgen_codec"), "global_step": data.get("global_step"),
            "epoch": data.get("epoch"), "source": ckpt.name,
            "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()}}
    return save_exported(model, out_dir, info)
