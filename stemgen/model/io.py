"""What a model records beside its weights (:class:`ModelRecord`), and exported models:
``model.safetensors`` + ``config.json`` (no pickles, safe to share), or an ensemble of such
exports (:func:`save_ensemble`)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..codec.base import FINGERPRINT_SCHEME, Codec
from ..errors import CheckpointError, InstrumentError, MissingWeightsError
from ..instruments import resolve as resolve_instrument
from ..paths import atomic_write
from .ensemble import COMBINES, EnsembleModel, check_contract
from .transformer import ModelConfig, StemGenModel

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
#: the index of a sharded export (the Hugging Face layout: ``{"weight_map": {tensor: file}}``)
WEIGHTS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
CODEC_DIR = "codec"  # an export's own codec (fitted embedded codecs travel with their model)
FORMAT = "stemgen-model-v1"
#: an ensemble export: ``config.json`` (the record, the members' folders, how they combine), the
#: shared ``codec/`` and one export per member in ``member-k/``
ENSEMBLE_FORMAT = "stemgen-ensemble-v1"
#: the key of the :class:`ModelRecord` in a training checkpoint
CHECKPOINT_KEY = "stemgen"


@dataclass
class ModelRecord:
    """What a training checkpoint and an export record beside the weights; written by
    :meth:`to_dict` and read by :meth:`from_dict` only.

    Attributes:
        model: the full model shape (rebuilds the model without the preset table).
        codec: the codec the training tokens came from: ``name`` (how to load it: a codec name,
            a path, or ``"codec"``, the export's own folder) and :meth:`Codec.describe`
            (token contract and fingerprint). Empty if unknown.
        window_seconds: the crop length the model was trained on (generation windows), seconds.
        sampling: the decoding settings the model is meant to generate with, as the fields of
            :class:`~stemgen.sampling.settings.SamplingSettings` that differ from the paper's
            best (e.g. ``{"guidance_form": "nested"}``); empty: the paper's best. Chosen at
            export time from a listening benchmark (``stemgen export --sampling``).
        instrument_sampling: instruments that generate with other settings than ``sampling``:
            ``{instrument name: fields over the paper's best}`` (``{"drums": {}}``: drums with the
            paper's best). A temperature chosen on pitched stems can silence drums, whose frames
            are mostly decaying hits (``stemgen export --instrument_sampling``).
    """

    model: ModelConfig
    codec: dict = field(default_factory=dict)
    window_seconds: Optional[float] = None
    sampling: dict = field(default_factory=dict)
    instrument_sampling: dict = field(default_factory=dict)

    def __post_init__(self):
        # one key per instrument class, whatever spelling the record was written with
        self.instrument_sampling = {resolve_instrument(k).name.lower(): dict(v or {})
                                    for k, v in dict(self.instrument_sampling).items()}

    @classmethod
    def for_codec(cls, model: ModelConfig, codec: Codec, name: str, window_seconds: float | None) -> "ModelRecord":
        """The record of a model trained on ``codec``'s tokens (loaded as ``name``)."""
        return cls(model, {"name": str(name), **codec.describe()},
                   None if window_seconds is None else float(window_seconds))

    def to_dict(self) -> dict:
        return {"model": asdict(self.model), "codec": dict(self.codec), "window_seconds": self.window_seconds,
                "sampling": dict(self.sampling), "instrument_sampling": dict(self.instrument_sampling)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "the record") -> "ModelRecord":
        try:
            return cls(ModelConfig(**data["model"]), dict(data.get("codec") or {}), data.get("window_seconds"),
                       dict(data.get("sampling") or {}), dict(data.get("instrument_sampling") or {}))
        except (KeyError, TypeError, InstrumentError) as err:
            raise CheckpointError(f"{source} has no valid stemgen model record ({type(err).__name__}: {err}); "
                                  f"was it written by stemgen-train / stemgen export?") from err


def check_codec(cfg: ModelConfig, codec: Codec, record: ModelRecord | None = None, fix: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``codec`` makes the tokens a model of shape ``cfg``
    reads: the same Q and V, and (when ``record`` names one) the fingerprint of the codec it was
    trained with. ``fix`` ends the message (what the user should do)."""
    fix = fix or "Use the codec the model was trained with (an export bundles it in its codec/ folder)."
    if (codec.num_levels, codec.cardinality) != (cfg.num_levels, cfg.cardinality):
        raise CheckpointError(
            f"model and codec do not match: the model reads Q={cfg.num_levels} levels of V={cfg.cardinality} "
            f"codes, the codec '{codec.name}' writes Q={codec.num_levels} levels of V={codec.cardinality}. {fix}")
    trained = (record.codec if record else {}).get("fingerprint")
    if not trained:
        return
    if record.codec.get("fingerprint_scheme") != FINGERPRINT_SCHEME:
        log.warning("the model records its codec's fingerprint in an older scheme, which cannot be checked on "
                    "this machine; make sure the codec is the one it was trained with (re-export the model "
                    "with this stemgen version to record a comparable fingerprint).")
        return
    if trained != codec.fingerprint():
        raise CheckpointError(
            f"model and codec do not match: the model was trained on tokens of codec {trained}, this "
            f"'{codec.name}' codec is {codec.fingerprint()} (refitted or another codec): its tokens would "
            f"mean nothing to the model. {fix}")


def save_exported(model: StemGenModel, folder: str | Path, record: ModelRecord, info: dict | None = None,
                  half: bool = False, max_shard_bytes: int | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically).

    ``config.json`` holds the :class:`ModelRecord` and ``info`` (JSON-able provenance: the
    training step, hyper-parameters, ...). ``half`` stores the weights as float16 (loaded back
    as float32). ``max_shard_bytes``: weights larger than this are written as
    ``model-0000k-of-0000n.safetensors`` files of at most that size (a tensor larger than the
    limit gets a file of its own) with ``model.safetensors.index.json``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    for old in [folder / WEIGHTS, folder / WEIGHTS_INDEX, *folder.glob("model-*-of-*.safetensors")]:
        old.unlink(missing_ok=True)  # a re-export may change the sharding
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    else:
        weight_map = {}
        for k, names in enumerate(shards):
            name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            part = {n: tensors[n] for n in names}
            atomic_write(folder / name, lambda tmp, part=part: save_file(part, str(tmp)))
            weight_map.update({n: name for n in names})
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": weight_map}
        atomic_write(folder / WEIGHTS_INDEX, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
    config = {"format": FORMAT, **record.to_dict(), "info": info or {}}
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return folder


def _shards(tensors: dict, max_bytes: int | None) -> list[list[str]]:
    """Tensor names grouped in order into shards of at most ``max_bytes`` (one shard: no limit)."""
    if not max_bytes:
        return [list(tensors)]
    shards, size = [[]], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def load_exported(folder: str | Path) -> tuple[StemGenModel | EnsembleModel, ModelRecord, dict]:
    """Load an exported model or ensemble; returns ``(model in eval mode, its record, info dict)``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = _read_config(folder) if (folder / CONFIG).exists() else None
    if cfg is not None and cfg.get("format") == ENSEMBLE_FORMAT:
        return _load_ensemble(folder, cfg)
    sharded = (folder / WEIGHTS_INDEX).exists()
    if cfg is None or not ((folder / WEIGHTS).exists() or sharded):
        raise MissingWeightsError(f"no exported stemgen model in {folder} (need {CONFIG} and {WEIGHTS}); "
                                  f"export a training checkpoint with `stemgen export CKPT {folder}`.")
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG} is not a stemgen model export (format {cfg.get('format')!r}).")
    info = cfg.get("info", {})
    if "codec" not in cfg:  # exports of stemgen 0.1 kept the codec and window inside "info"
        cfg = {**cfg, "codec": info.get("codec"), "window_seconds": info.get("window_seconds")}
    record = ModelRecord.from_dict(cfg, str(folder / CONFIG))
    model = StemGenModel(record.model)
    try:
        if sharded:
            files = sorted(set(json.loads((folder / WEIGHTS_INDEX).read_text())["weight_map"].values()))
            state = {k: v for f in files for k, v in load_file(str(folder / f)).items()}
        else:
            state = load_file(str(folder / WEIGHTS))
        model.load_state_dict(state)  # copies into the float32 parameters (float16 exports too)
    except Exception as err:
        raise CheckpointError(f"cannot load the weights in {folder}: {err}") from err
    return model.eval(), record, info


def _read_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG} is not readable JSON ({err}); re-export the model.") from err
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{folder / CONFIG} holds no stemgen model record; re-export the model.")
    return cfg


def _codec_id(record: ModelRecord) -> dict:
    """What identifies a record's codec's tokens: its description without the name it is loaded by."""
    return {k: v for k, v in record.codec.items() if k != "name"}


def save_ensemble(members: list[str | Path], folder: str | Path, combine: str = "mixture",
                  info: dict | None = None, codec: str | Path | None = None,
                  instrument_members: dict[str, list[int]] | None = None,
                  null_instrument_members: list[int] | None = None) -> Path:
    """Write an ensemble export of the exported models ``members`` (folders written by
    ``stemgen export``) to ``folder``: each member's files into ``member-k/``, the codec into
    ``codec/`` and ``config.json`` (the first member's record: codec, window and sampling
    settings; the members' folders; ``combine``, see
    :func:`~stemgen.model.ensemble.combine_log_probs`). Every member must record the same codec
    and training window. The codec is the first bundled one among the members (``codec/``), or
    the folder ``codec`` (for members exported without theirs, as a GPU run's come back), checked
    against the members' record. ``instrument_members``: instrument -> the members (numbered from 1,
    in the order given) that alone generate it, e.g. ``{"drums": [1]}``; the others generate with all.
    ``null_instrument_members``: the members (numbered from 1) that answer only the instrument-free
    guidance branches p(t|a) and p(t), e.g. ``[2]``; the others answer every conditioned row.
    :func:`load_exported` reads it back as an :class:`EnsembleModel`."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}.")
    if not members:
        raise ValueError("an ensemble needs at least one member: give exported model folders.")
    folder = Path(folder)
    loaded = []
    for m in map(Path, members):
        if m.resolve() == folder.resolve() or folder.resolve() in m.resolve().parents:
            raise ValueError(f"member {m} lies inside the output folder {folder}: write the ensemble elsewhere.")
        model, record, member_info = load_exported(m)  # checks each member loads before anything is written
        if isinstance(model, EnsembleModel):
            raise CheckpointError(f"{m} is itself an ensemble; give the exported models it is made of.")
        loaded.append((m, model, record, member_info))
    first = loaded[0][2]
    for m, _, record, _ in loaded[1:]:
        if _codec_id(record) != _codec_id(first):
            raise CheckpointError(f"{m} was trained on another codec's tokens than {loaded[0][0]} "
                                  f"({_codec_id(record).get('fingerprint')} vs {_codec_id(first).get('fingerprint')}): "
                                  f"an ensemble's members must read the same tokens.")
        if record.window_seconds != first.window_seconds:
            raise CheckpointError(f"{m} was trained on {record.window_seconds} s windows, {loaded[0][0]} on "
                                  f"{first.window_seconds} s: an ensemble generates in one window length.")
    check_contract([model.cfg for _, model, _, _ in loaded])
    codec_dir = _ensemble_codec(loaded, codec, folder)
    names = [f"member-{k}" for k in range(1, len(loaded) + 1)]
    routes = {}
    for inst, ks in (instrument_members or {}).items():
        try:
            name = resolve_instrument(inst).name.lower()
        except InstrumentError as err:
            raise ValueError(f"instrument_members: {err}") from err
        if not isinstance(ks, (list, tuple)) or not ks or any(not isinstance(k, int) or not 1 <= k <= len(names)
                                                             for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"instrument_members: {inst!r} needs a list of distinct member numbers from 1 to "
                             f"{len(names)} (in the order the members are given), got {ks!r}.")
        routes[name] = [names[k - 1] for k in ks]
    null = list(null_instrument_members or [])
    if (any(not isinstance(k, int) or not 1 <= k <= len(names) for k in null) or len(set(null)) != len(null)
            or len(null) >= len(names)):
        raise ValueError(f"null_instrument_members: give distinct member numbers from 1 to {len(names)} (in the order "
                         f"the members are given), leaving at least one member for the instruments; got {null!r}.")
    if any(names[k - 1] in ms for k in null for ms in routes.values()):
        raise ValueError("a null-instrument member answers only the instrument-free branches: do not also name it "
                         "in instrument_members.")
    # a single model exported here before (its weights) goes too: the folder holds one export
    for old in [folder / CONFIG, folder / CODEC_DIR, *folder.glob("member-*"), folder / WEIGHTS, folder / WEIGHTS_INDEX,
                *folder.glob("model-*-of-*.safetensors")]:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
    for name, (m, _, _, _) in zip(names, loaded):
        shutil.copytree(m, folder / name, ignore=shutil.ignore_patterns(CODEC_DIR, "*.tmp"))
    if codec_dir is not None:
        shutil.copytree(codec_dir, folder / CODEC_DIR, ignore=shutil.ignore_patterns("*.tmp"))
    spec = {"combine": combine, "members": names, **({"instruments": routes} if routes else {}),
            **({"null_instrument": [names[k - 1] for k in null]} if null else {})}
    config = {"format": ENSEMBLE_FORMAT, **first.to_dict(), "ensemble": spec,
              "info": {**(info or {}), "members": {name: {**member_info, "joined_from": str(m)}
                                                   for name, (m, _, _, member_info) in zip(names, loaded)}}}
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return folder


def _ensemble_codec(loaded: list, codec: str | Path | None, folder: Path) -> Path | None:
    """The codec folder an ensemble bundles: ``codec`` (checked against the first member's record), or
    the first member's bundled one; None where the record names a codec that is not bundled (EnCodec)."""
    first_path, first_model, first, _ = loaded[0]
    if codec is not None:
        from ..codec import load_codec

        path = Path(codec).expanduser()
        if path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents:
            raise ValueError(f"codec {codec} lies inside the output folder {folder}: give the codec from elsewhere.")
        if not (path / CONFIG).exists():
            raise CheckpointError(f"codec {codec}: not a codec folder (no {CONFIG}); give the folder of the codec "
                                  f"the members were trained with, e.g. stemgen/assets/demo_chorales/codec.")
        trained = first.codec.get("fingerprint")
        check_codec(first_model.cfg, load_codec(path), first,
                    f"Give the codec the members were trained with (their config.json: {trained}).")
        return path
    bundled = next((m / CODEC_DIR for m, _, _, _ in loaded if (m / CODEC_DIR / CONFIG).exists()), None)
    if bundled is None and first.codec.get("name") == CODEC_DIR:
        raise CheckpointError(f"none of the members carries the codec it was trained with ({first_path}/{CODEC_DIR} "
                              f"is missing, as in a GPU run's export): pass the codec folder (codec=..., "
                              f"`stemgen ensemble --codec PATH`), e.g. stemgen/assets/demo_chorales/codec.")
    return bundled


def _load_ensemble(folder: Path, cfg: dict) -> tuple[EnsembleModel, ModelRecord, dict]:
    """Read an ensemble export (see :func:`save_ensemble`)."""
    spec = cfg.get("ensemble") or {}
    names, combine = spec.get("members"), spec.get("combine", "mixture")
    if not names or not isinstance(names, list) or combine not in COMBINES:
        raise CheckpointError(f"{folder / CONFIG} is an ensemble export without a valid member list and combine "
                              f"({spec!r}); write it with `stemgen ensemble`.")
    record = ModelRecord.from_dict(cfg, str(folder / CONFIG))
    members = []
    for name in names:
        if Path(name).name != name:  # a member is a folder of this export, never a path elsewhere
            raise CheckpointError(f"{folder / CONFIG} names member {name!r}, not a folder of the export.")
        model, member_record, _ = load_exported(folder / name)
        if isinstance(model, EnsembleModel):
            raise CheckpointError(f"{folder / name} is an ensemble inside an ensemble; not supported.")
        if _codec_id(member_record) != _codec_id(record):
            raise CheckpointError(f"{folder / name} records another codec than {folder / CONFIG}: re-write the "
                                  f"ensemble with `stemgen ensemble`.")
        members.append(model)
    routes = spec.get("instruments") or {}
    if not isinstance(routes, dict) or any(not isinstance(ms, list) or any(m not in names for m in ms)
                                           for ms in routes.values()):
        raise CheckpointError(f"{folder / CONFIG}: the ensemble's instrument members ({routes!r}) must name its "
                              f"member folders {names}; write it with `stemgen ensemble`.")
    null = spec.get("null_instrument") or []
    if not isinstance(null, list) or any(m not in names for m in null):
        raise CheckpointError(f"{folder / CONFIG}: the ensemble's null-instrument members ({null!r}) must name its "
                              f"member folders {names}; write it with `stemgen ensemble`.")
    try:
        ensemble = EnsembleModel(members, combine, {resolve_instrument(inst).id: [names.index(m) for m in ms]
                                                    for inst, ms in routes.items()},
                                 null_members=[names.index(m) for m in null])
    except (ValueError, InstrumentError) as err:
        raise CheckpointError(f"{folder}: {err}") from err
    return ensemble.eval(), record, cfg.get("info", {})
