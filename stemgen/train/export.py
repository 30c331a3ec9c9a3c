"""Turn a Lightning training checkpoint into a shareable export (safetensors + config).

An export is self-contained: a fitted embedded codec (which exists nowhere else) is written
beside the weights into ``OUT/codec``; a published codec (EnCodec) is referenced by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..codec import load_codec
from ..errors import CheckpointError, MissingWeightsError
from ..model import ModelConfig, StemGenModel
from ..model.io import CODEC_DIR, save_exported

log = logging.getLogger(__name__)


def read_checkpoint(ckpt: str | Path) -> tuple[StemGenModel, dict]:
    """Read a stemgen-train checkpoint with ``torch.load(weights_only=True)``.

    Returns ``(model in eval mode, info)``; ``info`` holds the codec the model was trained with
    (``info["codec"]``: name and :meth:`~stemgen.codec.Codec.describe`), the training window in
    seconds, the step and the training hyper-parameters.
    """
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
    info = {"codec": data.get("stemgen_codec"), "window_seconds": data.get("stemgen_window_seconds"),
            "global_step": data.get("global_step"), "epoch": data.get("epoch"), "source": ckpt.name,
            "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()}}
    return model.eval(), info


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, half: bool = False) -> Path:
    """Write ``out_dir`` (weights, config, and the embedded codec if the model used one).

    ``half`` stores weights (and codebooks) as float16: half the size, loaded back as float32.
    """
    model, info = read_checkpoint(ckpt)
    out_dir = Path(out_dir)
    codec_info = info.get("codec") or {}
    if codec_info.get("codec") == "embedded":
        codec = load_codec(codec_info["name"])
        if codec_info.get("fingerprint") and codec.fingerprint() != codec_info["fingerprint"]:
            raise CheckpointError(
                f"the embedded codec at {codec_info['name']} is not the one {ckpt} was trained with "
                f"(fingerprint {codec.fingerprint()} vs {codec_info['fingerprint']}): it was refitted "
                f"since. Tokens would not match; export needs the original codec.")
        if half:
            codec.to_half_precision()
        codec.save(out_dir / CODEC_DIR, half=half)
        info["codec"] = {**codec_info, "name": CODEC_DIR, "fingerprint": codec.fingerprint()}
        log.info("bundled the embedded codec into %s", out_dir / CODEC_DIR)
    return save_exported(model, out_dir, info, half=half)
