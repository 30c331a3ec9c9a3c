"""EnCodec 32 kHz, the paper's codec (MusicGen's tokenizer), built from the ``encodec`` package.

SEANet ratios [8, 5, 4, 4] (hop 640 samples, 50 Hz), 64 filters, dimension 128, 2 LSTM
layers, weight norm, non-causal; RVQ with Q=4 levels of V=2048 codes (2.2 kbps).

Weights are read from either layout:

* transformers (``facebook/encodec_32khz``): a folder with ``config.json`` and
  ``model.safetensors`` (or ``pytorch_model.bin``), keys like ``encoder.layers.0.conv.weight_g``;
* audiocraft (``compression_state_dict.bin`` of a MusicGen release): a torch file holding
  ``{"best_state": state_dict, "xp.cfg": yaml}``, keys like ``encoder.model.0.conv.conv.weight_g``.

Weight norm may be stored as ``weight_g/weight_v`` or as
``parametrizations.weight.original0/1``; both are accepted. Nothing is unpickled beyond
tensors (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import re
import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import paths
from ..errors import CheckpointError, DependencyError, MissingWeightsError
from .base import Codec

HUB_ID = "facebook/encodec_32khz"
DEFAULT_NAME = "encodec_32khz"


@dataclass
class EncodecConfig:
    """Architecture of an EnCodec model (defaults: the 32 kHz MusicGen codec)."""

    sample_rate: int = 32000
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 4])
    n_filters: int = 64
    dimension: int = 128
    lstm: int = 2
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    causal: bool = False
    true_skip: bool = True
    pad_mode: str = "reflect"
    num_levels: int = 4
    cardinality: int = 2048

    @classmethod
    def from_transformers(cls, cfg: dict, num_levels: int | None = None) -> "EncodecConfig":
        """From a transformers ``config.json`` dict."""
        if cfg.get("norm_type", "weight_norm") != "weight_norm" or cfg.get("audio_channels", 1) != 1:
            raise CheckpointError("only mono, weight-norm EnCodec models (the 32 kHz MusicGen codec) "
                                  "are supported; this config.json describes another variant.")
        return cls(
            sample_rate=int(cfg.get("sampling_rate", 32000)),
            ratios=list(cfg.get("upsampling_ratios", [8, 5, 4, 4])),
            n_filters=int(cfg.get("num_filters", 64)),
            dimension=int(cfg.get("hidden_size", 128)),
            lstm=int(cfg.get("num_lstm_layers", 2)),
            n_residual_layers=int(cfg.get("num_residual_layers", 1)),
            kernel_size=int(cfg.get("kernel_size", 7)),
            last_kernel_size=int(cfg.get("last_kernel_size", 7)),
            residual_kernel_size=int(cfg.get("residual_kernel_size", 3)),
            dilation_base=int(cfg.get("dilation_growth_rate", 2)),
            compress=int(cfg.get("compress", 2)),
            causal=bool(cfg.get("use_causal_conv", False)),
            true_skip=not bool(cfg.get("use_conv_shortcut", False)),
            pad_mode=str(cfg.get("pad_mode", "reflect")),
            num_levels=num_levels or 4,
            cardinality=int(cfg.get("codebook_size", 2048)),
        )

    @classmethod
    def from_audiocraft(cls, xp_cfg: str | dict | None) -> "EncodecConfig":
        """From the ``xp.cfg`` YAML an exported audiocraft checkpoint carries (if any)."""
        if not xp_cfg:
            return cls()
        import yaml

        cfg = yaml.safe_load(xp_cfg) if isinstance(xp_cfg, str) else dict(xp_cfg)
        seanet = cfg.get("seanet", {}) or {}
        rvq = cfg.get("rvq", {}) or {}
        return cls(
            sample_rate=int(cfg.get("sample_rate", 32000)),
            ratios=list(seanet.get("ratios", [8, 5, 4, 4])),
            n_filters=int(seanet.get("n_filters", 64)),
            dimension=int(seanet.get("dimension", 128)),
            lstm=int(seanet.get("lstm", 2)),
            n_residual_layers=int(seanet.get("n_residual_layers", 1)),
            kernel_size=int(seanet.get("kernel_size", 7)),
            last_kernel_size=int(seanet.get("last_kernel_size", 7)),
            residual_kernel_size=int(seanet.get("residual_kernel_size", 3)),
            dilation_base=int(seanet.get("dilation_base", 2)),
            compress=int(seanet.get("compress", 2)),
            causal=bool(seanet.get("causal", False)),
            true_skip=bool(seanet.get("true_skip", True)),
            pad_mode=str(seanet.get("pad_mode", "constant")),
            num_levels=int(rvq.get("n_q", 4)),
            cardinality=int(rvq.get("bins", 2048)),
        )


def import_encodec_modules():
    """Import ``SEANetEncoder, SEANetDecoder, ResidualVectorQuantizer`` from ``encodec``.

    encodec 0.1.1 imports torchaudio at import time but only uses it in helpers stemgen never
    calls; where torchaudio is absent a stand-in module is placed in ``sys.modules`` for the
    duration of the import and removed afterwards, so no fake torchaudio stays visible.
    """
    if importlib.util.find_spec("encodec") is None:
        raise DependencyError("the EnCodec codec needs the 'encodec' package: "
                              "pip install --no-deps encodec==0.1.1 (it is part of `make install`; "
                              "--no-deps keeps its torchaudio dependency out).")
    stand_in = None
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:
        stand_in = types.ModuleType("torchaudio")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stand_in
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            modules = importlib.import_module("encodec.modules")
            quantization = importlib.import_module("encodec.quantization")
    finally:
        if stand_in is not None and sys.modules.get("torchaudio") is stand_in:
            del sys.modules["torchaudio"]
    return modules.SEANetEncoder, modules.SEANetDecoder, quantization.ResidualVectorQuantizer


class EncodecCodec(Codec):
    """EnCodec tokenizer: ``encode (B, N) -> (B, Q, T)``, ``decode (B, q, T) -> (B, T*640)``."""

    name = "encodec_32khz"

    def __init__(self, config: EncodecConfig | None = None):
        super().__init__()
        self.config = config = config or EncodecConfig()
        SEANetEncoder, SEANetDecoder, ResidualVectorQuantizer = import_encodec_modules()
        seanet = dict(channels=1, dimension=config.dimension, n_filters=config.n_filters,
                      n_residual_layers=config.n_residual_layers, ratios=list(config.ratios),
                      norm="weight_norm", kernel_size=config.kernel_size,
                      last_kernel_size=config.last_kernel_size,
                      residual_kernel_size=config.residual_kernel_size,
                      dilation_base=config.dilation_base, causal=config.causal,
                      pad_mode=config.pad_mode, true_skip=config.true_skip,
                      compress=config.compress, lstm=config.lstm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's old weight_norm API
            self.encoder = SEANetEncoder(**seanet)
            self.decoder = SEANetDecoder(**seanet)
        # kmeans_init=False: with True, untrained codebooks are all zeros until k-means runs.
        self.quantizer = ResidualVectorQuantizer(dimension=config.dimension, n_q=config.num_levels,
                                                 bins=config.cardinality, kmeans_init=False)
        self.sample_rate = config.sample_rate
        self.hop_length = 1
        for r in config.ratios:
            self.hop_length *= r
        self.num_levels = config.num_levels
        self.cardinality = config.cardinality
        self.eval()
        self.requires_grad_(False)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        wav = self._check_audio(wav)  # (B, N)
        emb = self.encoder(wav[:, None].to(self._device()))  # (B, D, T)
        codes = self.quantizer.vq.encode(emb, n_q=self.num_levels)  # (Q, B, T)
        return codes.transpose(0, 1).long()  # (B, Q, T)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self._check_tokens(tokens).to(self._device())  # (B, q, T)
        emb = self.quantizer.vq.decode(tokens.transpose(0, 1))  # (B, D, T)
        wav = self.decoder(emb)[:, 0]  # (B, T * hop)
        return wav[:, : tokens.shape[-1] * self.hop_length]

    def codebook_vectors(self) -> torch.Tensor:
        """``(Q, V, D)`` the residual quantizer's codebooks in EnCodec's latent space (D = 128)."""
        return torch.stack([layer._codebook.embed for layer in self.quantizer.vq.layers[: self.num_levels]])

    def _device(self) -> torch.device:
        return self.quantizer.vq.layers[0]._codebook.embed.device

    # -- weights ---------------------------------------------------------------------------
    def load_weights(self, state_dict: dict, layout: str) -> None:
        """Load a state dict in the ``"transformers"`` or ``"audiocraft"`` layout (strict)."""
        if layout == "transformers":
            state_dict = transformers_to_encodec_keys(state_dict, self)
        elif layout != "audiocraft":
            raise ValueError(f"unknown layout {layout!r}: 'transformers' or 'audiocraft'.")
        state_dict = match_weight_norm_keys(state_dict, self.state_dict().keys())
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"EnCodec checkpoint ({layout} layout) does not fit the {self.config.sample_rate} Hz "
                f"model: {len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} "
                f"unexpected keys (e.g. {unexpected[:3]}). Is it the 32 kHz MusicGen codec?")
        for key, value in state_dict.items():
            if tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointError(f"EnCodec checkpoint key {key} has shape {tuple(value.shape)}, "
                                      f"expected {tuple(own[key].shape)}.")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})


# -- key mapping (transformers <-> encodec package / audiocraft) ------------------------------
# transformers flattens the SEANet wrappers: encodec's SConv1d holds NormConv1d holds Conv1d,
# hence `model.N.conv.conv.*` there and `layers.N.conv.*` in transformers; transposed convs
# (`convtr.convtr`) are also called `conv` in transformers, so the target module decides.
_HF_RULES = [
    (re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.(.+)$"), r"quantizer.vq.layers.\1._codebook.\2"),
    (re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.lstm\.(.+)$"), r"\1.model.\2.lstm.\3"),
    (re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.block\.(\d+)\.conv\.(.+)$"), r"\1.model.\2.block.\3.conv.conv.\4"),
    (re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.shortcut\.conv\.(.+)$"), r"\1.model.\2.shortcut.conv.conv.\3"),
]
_HF_CONV = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.conv\.(.+)$")

_ENC_RULES = [
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.(.+)$"), r"quantizer.layers.\1.codebook.\2"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.lstm\.(.+)$"), r"\1.layers.\2.lstm.\3"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.block\.(\d+)\.conv\.conv\.(.+)$"), r"\1.layers.\2.block.\3.conv.\4"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.shortcut\.conv\.conv\.(.+)$"), r"\1.layers.\2.shortcut.conv.\3"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(?:conv\.conv|convtr\.convtr)\.(.+)$"), r"\1.layers.\2.conv.\3"),
]


def transformers_to_encodec_keys(state_dict: dict, model: EncodecCodec) -> dict:
    """Rename a transformers-layout state dict to the encodec package's module names."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _HF_RULES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            m = _HF_CONV.match(key)
            if m is None:
                out[key] = value  # reported as unexpected by the strict load
                continue
            part, idx, rest = m.groups()
            block = getattr(model, part).model[int(idx)]
            inner = "convtr.convtr" if hasattr(block, "convtr") else "conv.conv"
            out[f"{part}.model.{idx}.{inner}.{rest}"] = value
    return out


def encodec_to_transformers_keys(state_dict: dict) -> dict:
    """Rename encodec/audiocraft module names to the transformers layout (the inverse map)."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _ENC_RULES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            out[key] = value
    return out


def match_weight_norm_keys(state_dict: dict, target_keys) -> dict:
    """Rename weight-norm tensors to the convention of ``target_keys``.

    ``X.weight_g``/``X.weight_v`` (torch's old ``weight_norm``) and
    ``X.parametrizations.weight.original0``/``original1`` (the new parametrization) hold the
    same tensors.
    """
    target_keys = set(target_keys)
    new_style = any(".parametrizations.weight.original" in k for k in target_keys)
    out = {}
    for key, value in state_dict.items():
        if new_style:
            key = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", key)
            key = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", key)
        else:
            key = re.sub(r"\.parametrizations\.weight\.original0$", ".weight_g", key)
            key = re.sub(r"\.parametrizations\.weight\.original1$", ".weight_v", key)
        out[key] = value
    return out


# -- loading ---------------------------------------------------------------------------------
def default_dir() -> Path:
    """Where stemgen looks for the EnCodec weights when no path is given."""
    return paths.codecs_dir() / DEFAULT_NAME


def _missing_weights(detail: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"EnCodec 32 kHz weights not found ({detail}). Put either the transformers files of "
        f"'{HUB_ID}' (config.json + model.safetensors) or audiocraft's "
        f"compression_state_dict.bin into {default_dir()} (or pass a path: "
        f"load_encodec('/path/to/folder_or_file')); on a machine with internet they are "
        f"downloaded from the Hugging Face hub automatically. Offline, use the embedded codec "
        f"(stemgen codec fit).")


def load_encodec(source: str | Path | None = None, *, download: bool = True) -> EncodecCodec:
    """Load EnCodec 32 kHz weights.

    Args:
        source: a folder in the transformers layout, a ``compression_state_dict.bin`` file (or a
            folder holding one), a ``.safetensors`` file in either key layout, or a hub id
            (``"facebook/encodec_32khz"``). ``None``: :func:`default_dir`, then the hub.
        download: allow a hub download when the files are not local.

    Raises:
        MissingWeightsError: nothing found locally and no download possible; says where to
            put the files.
    """
    if source is None:
        local = default_dir()
        if _has_weights(local):
            return _load_local(local)
        source = HUB_ID
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path)
    if isinstance(source, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", source) and download:
        return _load_local(_hub_download(source))
    raise _missing_weights(f"{source} does not exist")


def _has_weights(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("model.safetensors", "pytorch_model.bin",
                                               "compression_state_dict.bin"))


def _hub_download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as err:  # offline, unknown repo, no huggingface_hub: all mean "not here"
        raise _missing_weights(f"hub download of {repo_id} failed: {type(err).__name__}") from err


def _load_local(path: Path) -> EncodecCodec:
    if path.is_dir():
        if (path / "compression_state_dict.bin").exists() and not (path / "config.json").exists():
            return _load_audiocraft(path / "compression_state_dict.bin")
        if not (path / "config.json").exists():
            raise _missing_weights(f"{path} has no config.json / compression_state_dict.bin")
        cfg = EncodecConfig.from_transformers(json.loads((path / "config.json").read_text()))
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                codec = EncodecCodec(cfg)
                codec.load_weights(_read_tensors(path / name), "transformers")
                return codec
        raise _missing_weights(f"{path} has a config.json but no model.safetensors")
    if path.suffix == ".safetensors":
        sd = _read_tensors(path)
        layout = "audiocraft" if any(k.startswith("encoder.model.") for k in sd) else "transformers"
        codec = EncodecCodec(EncodecConfig())
        codec.load_weights(sd, layout)
        return codec
    return _load_audiocraft(path)


def _load_audiocraft(path: Path) -> EncodecCodec:
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {path} as an exported audiocraft checkpoint with "
                              f"weights_only=True ({type(err).__name__}: {err}); stemgen never "
                              f"unpickles arbitrary objects.") from err
    if isinstance(pkg, dict) and "best_state" in pkg:
        state, cfg = pkg["best_state"], pkg.get("xp.cfg")
    elif isinstance(pkg, dict) and all(torch.is_tensor(v) for v in pkg.values()):
        state, cfg = pkg, None
    else:
        raise CheckpointError(f"{path} is not an audiocraft compression checkpoint "
                              f"(expected a dict with 'best_state').")
    codec = EncodecCodec(EncodecConfig.from_audiocraft(cfg))
    codec.load_weights(dict(state), "audiocraft")
    return codec


def _read_tensors(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
    return torch.load(path, map_location="cpu", weights_only=True)

