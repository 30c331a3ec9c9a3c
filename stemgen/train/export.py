"""Turn a Lightning training checkpoint into a shareable export (safetensors + config).

An export is self-contained: a fitted embedded codec (which exists nowhere else) is written
beside the weights into ``OUT/codec``; a published codec (EnCodec) is referenced by name.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..codec import load_codec
from ..errors import CheckpointError, MissingWeightsError
from ..model import ModelConfig, StemGenModel
from ..model.io import CHECKPOINT_KEY, CODEC_DIR, ModelRecord, check_codec, save_exported
from ..sampling.settings import SamplingSettings

log = logging.getLogger(__name__)


def read_checkpoint(ckpt: str | Path) -> tuple[StemGenModel, ModelRecord, dict]:
    """Read a stemgen-train checkpoint with ``torch.load(weights_only=True)``.

    Returns ``(model in eval mode, its record, info)``: the :class:`ModelRecord` (model shape,
    the codec the model was trained with, the training window) and ``info`` (the step, epoch and
    training hyper-parameters).
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
    if "state_dict" not in data or (CHECKPOINT_KEY not in data and "preset" not in hp):
        raise CheckpointError(f"{ckpt} is not a stemgen-train checkpoint (no stemgen model record).")
    if CHECKPOINT_KEY in data:
        record = ModelRecord.from_dict(data[CHECKPOINT_KEY], str(ckpt))
    else:  # checkpoints of stemgen 0.1: the preset name and two loose keys
        cfg = ModelConfig.from_name(hp["preset"], num_levels=hp["num_levels"], cardinality=hp["cardinality"])
        record = ModelRecord(cfg, data.get("stemgen_codec") or {}, data.get("stemgen_window_seconds"))
    model = StemGenModel(record.model)
    state = {k[len("model."):]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{ckpt}: weights do not fit the recorded model shape: {err}") from err
    # Lightning's WeightAveraging callbacks (e.g. EMAWeightAveraging) store the average as `state_dict`
    # and the raw weights as `current_model_state`: the export is the average, and says so
    info = {"global_step": data.get("global_step"), "epoch": data.get("epoch"), "source": ckpt.name,
            "weights_averaged": "current_model_state" in data,
            "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()}}
    return model.eval(), record, info


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, half: bool = False,
                      max_shard_bytes: int | None = None, sampling: dict | None = None,
                      instrument_sampling: dict | None = None) -> Path:
    """Write ``out_dir`` (weights, config, and the embedded codec if the model used one).

    ``half`` stores weights (and codebooks) as float16: half the size, loaded back as float32.
    ``max_shard_bytes`` splits the weights into files of at most that size (see
    :func:`~stemgen.model.io.save_exported`). ``sampling``: the decoding settings the model
    generates with by default (:class:`~stemgen.sampling.settings.SamplingSettings` fields that
    differ from the paper's best, e.g. ``{"guidance_form": "nested"}``), validated here;
    ``instrument_sampling``: ``{instrument: such fields}`` for instruments that generate with
    settings of their own (:attr:`ModelRecord.instrument_sampling`).
    The bundled codec's fingerprint is computed from the files written, as every later load
    computes it.
    """
    model, record, info = read_checkpoint(ckpt)
    if sampling:
        SamplingSettings.paper(record.model.num_levels).updated(sampling, record.model.num_levels, "--sampling")
        record.sampling = dict(sampling)
    if instrument_sampling:
        if not isinstance(instrument_sampling, dict):
            raise ValueError(f"instrument_sampling must map instruments to settings fields, e.g. "
                             f"{{\"drums\": {{}}}}; got {instrument_sampling!r}.")
        for inst, fields in instrument_sampling.items():
            SamplingSettings.paper(record.model.num_levels).updated(fields or {}, record.model.num_levels,
                                                                    f"--instrument_sampling {inst}")
        # replace() runs the record's check of the instrument names
        record = dataclasses.replace(record, instrument_sampling=dict(instrument_sampling))
    out_dir = Path(out_dir)
    if record.codec.get("codec") == "embedded":
        codec = load_codec(record.codec["name"])
        check_codec(record.model, codec, record,
                    fix=f"The embedded codec at {record.codec['name']} is not the one {ckpt} was trained with; "
                        f"export needs the original codec.")
        if half:
            codec.to_half_precision()
        codec.save(out_dir / CODEC_DIR, half=half)
        written = load_codec(out_dir / CODEC_DIR)
        record = dataclasses.replace(ModelRecord.for_codec(record.model, written, CODEC_DIR, record.window_seconds),
                                     sampling=record.sampling, instrument_sampling=record.instrument_sampling)
        log.info("bundled the embedded codec into %s", out_dir / CODEC_DIR)
    return save_exported(model, out_dir, record, info, half=half, max_shard_bytes=max_shard_bytes)
