"""The public API: :func:`load_model`, :func:`generate` and the :class:`Stem` they return.

    import stemgen
    stem = stemgen.generate("song.wav", instrument="bass", seed=0)
    stem.save("bass.wav"); stem.save_mix("song_with_bass.wav")

Default model (``model=None``): the ``STEMGEN_MODEL`` environment variable if set (any name or
path :func:`load_model` accepts), else ``"demo"``, the small chorale model shipped in the
package (``stemgen/assets/demo_chorales``, trained by ``make demo-model``).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import secrets
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .audio import dbfs, load_mono, mix_down, write_audio
from .codec import Codec, load_codec
from .errors import AudioError, MissingWeightsError
from .instruments import resolve as resolve_instrument
from .model.io import CODEC_DIR, CONFIG, ModelRecord, check_codec, load_exported
from .model.transformer import StemGenModel, native_bf16
from .paths import DEMO, demo_model_dir, model_dir  # demo_model_dir: public here since 0.1
from .sampling.settings import PerLevel, SamplingSettings, override
from .sampling.windows import decode_windows
from .spectra import chroma_codes

ENV_MODEL = "STEMGEN_MODEL"
#: context quieter than this (dBFS) is treated as silence: there is nothing to listen to
MIN_CONTEXT_DBFS = -70.0


@dataclass
class Stem:
    """A generated stem.

    Attributes:
        audio: ``(N,)`` float32 at ``sample_rate`` (the codec's rate), as long as the context;
            scaled down if it would clip (``settings["gain"]`` < 1).
        sample_rate: Hz.
        tokens: ``(Q, T)`` the codec tokens the audio was decoded from.
        instrument: the instrument class name.
        context: ``(N,)`` the mono context at ``sample_rate`` the stem was generated for.
        settings: everything needed to reproduce it alone: the model, its own seed and every
            sampling setting (``generate(context, seed=stem.settings["seed"], settings=...)``
            gives the same tokens, whatever the stem was batched with).
    """

    audio: np.ndarray
    sample_rate: int
    tokens: torch.Tensor
    instrument: str
    context: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.audio.shape[-1] / self.sample_rate

    def mix(self, stem_gain_db: float = 0.0) -> np.ndarray:
        """Context plus stem ``(N,)``, scaled down together only if the sum would clip."""
        return mix_down([self.context, self.audio * 10.0 ** (stem_gain_db / 20.0)])

    def save(self, path: Union[str, Path]) -> Path:
        """Write the stem (format from the extension: wav, flac, ogg)."""
        return write_audio(path, self.audio, self.sample_rate)

    def save_mix(self, path: Union[str, Path], stem_gain_db: float = 0.0) -> Path:
        """Write the stem mixed with its context."""
        return write_audio(path, self.mix(stem_gain_db), self.sample_rate)


class StemModel:
    """A masked-token transformer with the codec its tokens come from, ready to generate.

    Get one with :func:`load_model`; reuse it across :meth:`generate` calls.
    """

    def __init__(self, model: StemGenModel, codec: Codec, record: ModelRecord | None = None, name: str = "",
                 device: str | torch.device | None = None, precision: str = "auto", info: dict | None = None):
        self.record = record or ModelRecord(model.cfg)
        check_codec(model.cfg, codec, self.record)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}.")
        #: the transformer's matmuls under bf16 autocast (about 10x faster on CPUs with bf16
        #: instructions); the codec and the sampling math stay float32
        self.precision = _auto_precision(self.device) if precision == "auto" else precision
        self.model = model.eval().to(self.device)
        if self.precision == "bf16":  # generation runs under bf16 autocast: cast the matmul weights once
            self.model.cast_matmul_weights(torch.bfloat16)
        self.codec = codec.eval().to(self.device)
        #: provenance (training step, hyper-parameters) as the checkpoint or export gave it
        self.info = info or {}
        self.name = name
        #: what :meth:`generate` samples with when not told otherwise: the paper's best setting,
        #: with what the model's record says it generates best with (``ModelRecord.sampling``)
        self.default_settings = SamplingSettings.paper(model.cfg.num_levels).updated(
            self.record.sampling, model.cfg.num_levels, f"model {name!r}")
        #: instruments the record gives settings of their own (``ModelRecord.instrument_sampling``),
        #: by class id: each over the paper's best
        self.instrument_settings = {
            resolve_instrument(inst).id: SamplingSettings.paper(model.cfg.num_levels).updated(
                fields, model.cfg.num_levels, f"model {name!r}, {inst}")
            for inst, fields in self.record.instrument_sampling.items()}
        seconds = self.record.window_seconds or 10.0
        #: frames per decoding window: the crop length the model was trained on
        self.window_frames = max(2, int(round(seconds * codec.frame_rate)))

    def __repr__(self) -> str:
        cfg = self.model.cfg
        return (f"StemModel({self.name!r}, {self.model.num_parameters() / 1e6:.1f}M parameters, codec "
                f"{self.codec.name} Q={cfg.num_levels} V={cfg.cardinality}, window "
                f"{self.window_frames / self.codec.frame_rate:.1f} s, device {self.device}, {self.precision})")

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def default_settings_for(self, instrument: Union[str, int, None] = None) -> SamplingSettings:
        """What :meth:`generate` samples ``instrument`` with when not told otherwise: its own
        settings where the record gives some (:attr:`instrument_settings`), else
        :attr:`default_settings`."""
        if instrument is None:
            return self.default_settings
        return self.instrument_settings.get(resolve_instrument(instrument).id, self.default_settings)

    def model_for(self, instrument: Union[str, int, None] = None, settings: SamplingSettings | None = None):
        """The network that generates ``instrument``: the model, or for an ensemble that routes
        the instrument to some of its members (:meth:`EnsembleModel.for_instrument`) those members;
        and where ``settings`` run no instrument-free branch
        (:meth:`~stemgen.sampling.settings.SamplingSettings.runs_null_instrument`), without the
        ensemble's null-instrument members (:meth:`EnsembleModel.conditioned`)."""
        net = self.model
        if instrument is not None and hasattr(net, "for_instrument"):
            net = net.for_instrument(resolve_instrument(instrument).id)
        if settings is not None and not settings.runs_null_instrument() and hasattr(net, "conditioned"):
            net = net.conditioned()
        return net

    def settings(self, settings: SamplingSettings | None = None, instrument: Union[str, int, None] = None,
                 **short) -> SamplingSettings:
        """``settings`` (default: :meth:`default_settings_for` ``instrument``: the paper's best
        for this model's levels unless its record says otherwise) with the short arguments of
        :meth:`generate` that were given applied (see :func:`stemgen.sampling.settings.override`)."""
        return override(settings or self.default_settings_for(instrument), self.model.cfg.num_levels, **short)

    @torch.no_grad()
    def generate(self, context, instrument: Union[str, int, Sequence] = "bass", *, sample_rate: int | None = None,
                 seed: int | None = None, settings: SamplingSettings | None = None, steps: PerLevel = None,
                 guidance: Union[bool, float, tuple[float, float], None] = None, causal_bias: float | None = None,
                 temperature: PerLevel = None, silence_gate: bool | None = None,
                 silence_temperature: float | None = None, sampler: str | None = None, compile: bool | None = None,
                 num_samples: int = 1, keep=None, regenerate: tuple[float, float] | None = None,
                 overlap_seconds: float = 1.0, progress: bool = False) -> Union[Stem, list[Stem]]:
        """Generate a stem of ``instrument`` that fits the music in ``context``.

        Args:
            context: a path (wav/flac/ogg), or a numpy array / torch tensor ``(N,)`` or
                ``(channels, N)`` with ``sample_rate``; any rate, stereo is downmixed. A list of
                contexts generates one stem each, batched.
            instrument: class name (``"bass"``, ``"drums"``, ``"piano"``, ... see
                :func:`stemgen.instruments.valid_names`), id, or one per context.
            sample_rate: the rate of an array/tensor context (Hz).
            seed: makes the result reproducible. Random if omitted. The stems of one call get
                the seeds ``seed, seed + 1, ...`` in the order they are returned (contexts, then
                samples), each stem its own random stream: a stem is reproduced by a single call
                with ``seed=stem.settings["seed"]``, whatever it was batched with.
            settings: a full :class:`~stemgen.sampling.settings.SamplingSettings` (default:
                :attr:`default_settings`, the paper's best ``SamplingSettings.paper()`` with what
                the model's export records as its own (``ModelRecord.sampling``); the naive setting is
                ``SamplingSettings.naive()``). The short arguments below override it only where
                they are given.
            steps: decoding steps, one int for every level or one per level (paper: 128, 64, 32, 32).
            guidance: multi-source classifier-free guidance. ``True``: on, with the scales of
                ``settings`` (paper: lambda_a = lambda_i = 3); a number: both scales;
                ``(lambda_a, lambda_i)``: context and instrument scales; ``False``: no guidance
                (one fully conditioned pass per step).
            causal_bias: the ranking's position weight w_s (paper: 0.1; 0 is VampNet-like).
            temperature: one for every level or one per level (paper: 1.0); 0 is greedy.
            silence_gate: temper *whether* the stem sounds (the codec's code of silence against
                all the others) apart from *what* it plays, so that a low temperature does not
                make silence the likeliest draw (on by default; a no-op at temperature 1).
            silence_temperature: the gate's own temperature (default: the level's); lower keeps
                a stem that the model thinks probably sounds from falling silent.
            sampler: ``"fused"`` (the fused step ops, and the fused attention on a CPU: bf16 with
                AVX512-BF16, float32 with AVX2) or ``"eager"`` (the reference functions): the same
                tokens from the same seed, except where the fused attention's rounding tips a near-tie.
            compile: compile each decoding step with ``torch.compile``.
            num_samples: stems per context (a batch); more than one returns a list.
            keep: a :class:`Stem`, path or array of a stem to keep (continuation: a stem shorter
                than the context is continued to its end). A :class:`Stem` keeps its own tokens;
                audio is encoded by the codec first, so the kept part is the codec's tokens of
                that audio, not the tokens of the stem it was decoded from (decoding and
                re-encoding is not an identity).
            regenerate: ``(start, end)`` seconds of ``keep`` to generate again (inpainting).
            overlap_seconds: contexts longer than the model's window are generated in windows
                that overlap by this much (at most half a window); the overlap is carried over
                as decoded prefix.
            progress: draw a progress bar per level.

        Returns:
            A :class:`Stem` (audio at the codec's rate, tokens, settings), or a list of them for
            a list of contexts or ``num_samples > 1``.
        """
        contexts = list(context) if isinstance(context, (list, tuple)) else [context]
        plural = isinstance(context, (list, tuple)) or num_samples > 1
        instruments = list(instrument) if isinstance(instrument, (list, tuple)) else [instrument] * len(contexts)
        if len(instruments) != len(contexts):
            raise ValueError(f"{len(instruments)} instruments for {len(contexts)} contexts: give one "
                             f"instrument, or one per context.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        if regenerate is not None and keep is None:
            raise ValueError("regenerate=(start, end) needs keep=: the stem whose span is regenerated.")
        classes = [resolve_instrument(i) for i in instruments]
        short = dict(steps=steps, guidance=guidance, causal_bias=causal_bias, temperature=temperature,
                     silence_gate=silence_gate, silence_temperature=silence_temperature, sampler=sampler,
                     compile=compile)
        # each context's instrument may have settings of its own (the model's record)
        per_context = [self.settings(settings, c.id, **short) for c in classes]
        seed = secrets.randbits(31) if seed is None else int(seed)
        wavs = [self._context_audio(c, sample_rate) for c in contexts]
        tokens = [self.encode_context(w) for w in wavs]  # (Q, T) each; (Q + 1, T) with the chroma row
        kept = self._kept_tokens(keep, sample_rate)
        levels = self.model.cfg.num_levels
        prefixes = [self._prefix(kept, regenerate, t[:levels]) for t in tokens]
        overlap = int(round(overlap_seconds * self.codec.frame_rate))
        overlap = min(max(overlap, 0), self.window_frames // 2)

        # stem j (contexts, then samples) has the seed seed + j and its own generator; one batch
        # per context length and settings
        jobs = [k for k in range(len(contexts)) for _ in range(num_samples)]
        results: dict[int, torch.Tensor] = {}
        kinds = [next(i for i, other in enumerate(per_context) if other == mine) for mine in per_context]
        # (frames, kind of settings, the instrument whose members answer where an ensemble routes it) -> stems
        batches: dict[tuple[int, int, int], list[int]] = {}
        routed = getattr(self.model, "routes", {})
        for j, k in enumerate(jobs):
            route = classes[k].id if classes[k].id in routed else -1
            batches.setdefault((tokens[k].shape[-1], kinds[k], route), []).append(j)
        for (_, kind, route), group in sorted(batches.items()):
            s = per_context[kind]
            ctx = torch.stack([tokens[jobs[j]] for j in group])  # (B, Q, T)
            inst = torch.tensor([classes[jobs[j]].id for j in group], device=self.device)
            prefix = torch.stack([prefixes[jobs[j]] for j in group])
            gens = [torch.Generator(device=self.device).manual_seed(seed + j) for j in group]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                net = self.model_for(None if route < 0 else route, s)
                out = decode_windows(net, ctx, inst, self.window_frames, overlap, s, gens, prefix,
                                     callback=_progress_bars(s, progress, len(group)),
                                     silence=self.codec.silence_codes())
            results.update({j: out[b] for b, j in enumerate(group)})
        stems = []
        for j, k in enumerate(jobs):
            toks = results[j]
            audio = self.codec.decode(toks[None])[0, : wavs[k].shape[-1]].float().cpu().numpy()
            peak = float(np.abs(audio).max())
            gain = min(1.0, 0.99 / peak) if peak > 0 else 1.0  # never write a clipping stem
            audio = audio * gain
            record = {"model": self.name, "seed": seed + j, **per_context[k].to_dict(), "gain": gain,
                      "precision": self.precision,
                      "overlap_seconds": overlap / self.codec.frame_rate,
                      "window_seconds": self.window_frames / self.codec.frame_rate}
            if regenerate is not None:
                record["regenerate"] = list(regenerate)
            stems.append(Stem(audio.astype(np.float32), self.sample_rate, toks.cpu(), classes[k].name, wavs[k], record))
        return stems if plural else stems[0]

    def _context_audio(self, context, sample_rate: int | None) -> np.ndarray:
        wav = load_mono(context, self.sample_rate, sample_rate=sample_rate, min_samples=self.codec.hop_length,
                        name="context")
        level = dbfs(wav)
        if level < MIN_CONTEXT_DBFS:
            raise AudioError(f"context is silent ({level:.0f} dBFS, below {MIN_CONTEXT_DBFS:.0f}): there is nothing "
                             f"to listen to. Pass the music the stem should fit.")
        return wav

    def _encode(self, wav: np.ndarray) -> torch.Tensor:
        """Mono ``(N,)`` at the codec's rate -> tokens ``(Q, T)`` on the model's device."""
        return self.codec.encode(torch.from_numpy(wav)[None].to(self.device))[0]

    def encode_context(self, wav: np.ndarray) -> torch.Tensor:
        """Mono context audio ``(N,)`` at the codec's rate -> what the model reads of it, on the
        model's device: its tokens ``(Q, T)``, and for a model with ``context_chroma`` the codes of
        its pitch-class profile as one more row (``(Q + 1, T)``, :func:`stemgen.spectra.chroma_codes`)."""
        tokens = self._encode(wav)
        if not self.model.cfg.context_chroma:
            return tokens
        codes = chroma_codes(wav, self.sample_rate, self.codec.hop_length, tokens.shape[-1])
        return torch.cat([tokens, torch.from_numpy(codes).to(tokens)[None]])

    def _kept_tokens(self, keep, sample_rate: int | None) -> torch.Tensor | None:
        """Tokens ``(Q, Tk)`` of the stem to keep (a :class:`Stem`'s own, or its audio encoded)."""
        if keep is None:
            return None
        if isinstance(keep, Stem):
            return keep.tokens.to(self.device)
        return self._encode(load_mono(keep, self.sample_rate, sample_rate=sample_rate,
                                      min_samples=self.codec.hop_length, name="kept stem"))

    def _prefix(self, kept: torch.Tensor | None, regenerate, context_tokens: torch.Tensor) -> torch.Tensor:
        """``(Q, T)`` target tokens fixed before decoding (MASK id where free)."""
        mask_id = self.model.cfg.mask_id
        prefix = torch.full_like(context_tokens, mask_id)
        if kept is None:
            return prefix
        t, tk = context_tokens.shape[-1], kept.shape[-1]
        if kept.shape[0] != prefix.shape[0] or tk > t:
            raise ValueError(f"the stem to keep has {kept.shape[0]} levels x {tk} frames; the context has "
                             f"{prefix.shape[0]} x {t}. A kept stem must come from this model's codec and be "
                             f"no longer than the context.")
        prefix[:, :tk] = kept
        if regenerate is not None:
            start, end = (float(x) for x in regenerate)
            duration = t / self.codec.frame_rate
            if not 0.0 <= start < end <= duration + 1e-9:
                raise ValueError(f"regenerate=({start}, {end}) is not a span inside the context "
                                 f"(0 to {duration:.2f} s): give (start, end) seconds with start < end.")
            fr = self.codec.frame_rate
            prefix[:, int(math.floor(start * fr)): int(math.ceil(end * fr))] = mask_id
        return prefix


def _auto_precision(device: torch.device) -> str:
    """bf16 where the hardware runs it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    return "bf16" if native_bf16(device) else "fp32"


def _progress_bars(settings: SamplingSettings, enabled: bool, batch: int):
    """A callback drawing one tqdm bar per level, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bars: dict[int, tqdm] = {}

    def update(level: int, done: int, total: int) -> None:
        if level not in bars:
            bars[level] = tqdm(total=total, desc=f"level {level + 1}/{len(settings.steps)} (batch {batch})",
                               unit="step", leave=True)
        bar = bars[level]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _codec_for(folder: Path | None, record: ModelRecord, codec) -> Codec:
    if codec is not None:
        return codec if isinstance(codec, Codec) else load_codec(codec)
    if folder is not None and (folder / CODEC_DIR / CONFIG).exists():
        return load_codec(folder / CODEC_DIR)
    name = record.codec.get("name")
    if not name:
        raise MissingWeightsError("the model does not say which codec it was trained with: pass codec=...")
    if name == CODEC_DIR and folder is not None:  # exported with its own codec, which is not there
        raise MissingWeightsError(
            f"{folder} was exported with its codec in {folder / CODEC_DIR}, which is missing (a GPU run's export "
            f"comes back without it): copy the codec folder it was trained with there, or pass codec=... "
            f"(e.g. stemgen/assets/demo_chorales/codec).")
    return load_codec(name)


def _hub_folder(repo_id: str) -> Path:
    """Download (or find in the local hub cache) an exported model on the Hugging Face hub."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", f"{CODEC_DIR}/*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:
        raise MissingWeightsError(
            f"model '{repo_id}' is not a local folder or checkpoint, and the hub could not provide it "
            f"({type(err).__name__}). Pass an exported folder (stemgen export), a .ckpt from stemgen-train, "
            f"or '{DEMO}' for the shipped demo model.") from err


def load_model(name_or_path: Union[str, Path, StemModel, None] = None, *, codec=None,
               device: str | torch.device | None = None, precision: str = "auto") -> StemModel:
    """Load a model with its codec.

    Args:
        name_or_path: ``None`` (the default model: ``$STEMGEN_MODEL`` or ``"demo"``); ``"demo"``
            (shipped chorale model); a folder written by ``stemgen export``; a ``.ckpt`` written by
            ``stemgen-train``; or a Hugging Face hub id ``owner/name`` holding an export.
        codec: override the codec (a :class:`Codec`, name or path); it must match the model's.
        device: default CUDA when available, else CPU.
        precision: ``"auto"`` (bf16 autocast where the hardware has native bf16, else float32),
            ``"bf16"`` or ``"fp32"``.

    Raises:
        MissingWeightsError: nothing found under that name; CheckpointError: unreadable weights,
        or a codec that does not make the model's tokens.
    """
    if isinstance(name_or_path, StemModel):
        return name_or_path
    name = str(name_or_path or os.environ.get(ENV_MODEL) or DEMO)
    path = model_dir(name)
    if path.is_file():
        from .train.export import read_checkpoint

        model, record, info = read_checkpoint(path)
        return StemModel(model, _codec_for(None, record, codec), record, name, device, precision, info)
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith("."):
        path = _hub_folder(name)
    if not path.is_dir():
        raise MissingWeightsError(f"no model at '{name}': give an exported folder (stemgen export), a .ckpt "
                                  f"from stemgen-train, a hub id owner/name, or '{DEMO}'.")
    model, record, info = load_exported(path)
    return StemModel(model, _codec_for(path, record, codec), record, name, device, precision, info)


@functools.lru_cache(maxsize=2)
def _cached_model(name: str, device: str | None) -> StemModel:
    return load_model(name, device=device)


def generate(context, instrument: Union[str, int, Sequence] = "bass", *, model=None, device: str | None = None,
             **options) -> Union[Stem, list[Stem]]:
    """Generate a stem of ``instrument`` that fits the music in ``context`` with ``model``.

    ``model``: a :class:`StemModel`, or anything :func:`load_model` accepts (default: the demo
    model, or ``$STEMGEN_MODEL``), loaded once and reused; ``device``: where to load it (default
    CUDA when available, else CPU). The other arguments are :meth:`StemModel.generate`'s:
    """
    if isinstance(model, StemModel):
        sm = model
    elif model is None or isinstance(model, (str, Path)):
        sm = _cached_model(str(model or os.environ.get(ENV_MODEL) or DEMO), device)
    else:
        raise TypeError(f"model must be a StemModel, a name or a path, not {type(model).__name__}.")
    return sm.generate(context, instrument, **options)


def _generate_signature() -> inspect.Signature:
    """``generate``'s signature: :meth:`StemModel.generate`'s, with ``model`` and ``device``."""
    params = list(inspect.signature(StemModel.generate).parameters.values())[1:]  # without self
    own = [p for p in inspect.signature(generate).parameters.values() if p.name in ("model", "device")]
    return inspect.Signature(params[:2] + own + params[2:], return_annotation=Union[Stem, list[Stem]])


generate.__signature__ = _generate_signature()
generate.__doc__ += textwrap.indent(textwrap.dedent(StemModel.generate.__doc__.split("\n", 1)[1]), "    ")
