"""The codec contract every codec implements: mono audio <-> integer tokens ``(B, Q, T)``."""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from ..errors import AudioError, TokenError

#: how :meth:`Codec.fingerprint` is computed; records of another scheme cannot be compared
#: (scheme 1, before stemgen 0.2, also hashed buffers recomputed at load: machine-dependent)
FINGERPRINT_SCHEME = 2


class Codec(nn.Module):
    """A frozen audio tokenizer.

    Attributes:
        sample_rate: audio rate in Hz.
        hop_length: samples per token frame.
        num_levels: Q, the number of residual levels.
        cardinality: V, codes per level (tokens are ``0..V-1``).

    ``encode`` maps ``(B, N)`` (or ``(N,)`` / ``(B, 1, N)``) float audio to ``(B, Q, T)``
    int64 tokens with ``T = ceil(N / hop_length)``; ``decode`` maps ``(B, q, T)`` tokens with
    ``1 <= q <= Q`` (the first q levels) to ``(B, T * hop_length)`` audio.
    """

    sample_rate: int
    hop_length: int
    num_levels: int
    cardinality: int
    name: str = "codec"

    @property
    def frame_rate(self) -> float:
        """Token frames per second (Hz)."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """T for an input of ``num_samples`` samples."""
        return math.ceil(num_samples / self.hop_length)

    # -- input checks shared by every codec -------------------------------------------------
    def _check_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """Validate and reshape audio to ``(B, N)`` float32."""
        if not torch.is_tensor(wav):
            raise AudioError(f"{self.name}.encode expects a torch tensor, got {type(wav).__name__}; "
                             f"load files with stemgen.audio.load_mono first.")
        if wav.dim() == 1:
            wav = wav[None]
        elif wav.dim() == 3:
            if wav.shape[1] != 1:
                raise AudioError(f"{self.name} is mono: got {wav.shape[1]} channels in shape "
                                 f"{tuple(wav.shape)}; downmix first (stemgen.audio.to_mono).")
            wav = wav[:, 0]
        elif wav.dim() != 2:
            raise AudioError(f"audio must be (N,), (B, N) or (B, 1, N); got shape {tuple(wav.shape)}.")
        if wav.shape[-1] == 0:
            raise AudioError("cannot encode empty audio (0 samples).")
        if wav.shape[-1] < self.hop_length:
            raise AudioError(f"audio of {wav.shape[-1]} samples is shorter than one codec frame "
                             f"({self.hop_length} samples = {1000 * self.hop_length / self.sample_rate:.0f} ms "
                             f"at {self.sample_rate} Hz).")
        wav = wav.float()
        if not torch.isfinite(wav).all():
            raise AudioError("audio contains NaN or inf samples; clean it before encoding.")
        return wav

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate tokens ``(B, q, T)`` (or ``(q, T)``) against this codec's Q and V."""
        if not torch.is_tensor(tokens) or tokens.dtype.is_floating_point:
            raise TokenError(f"{self.name}.decode expects an integer token tensor.")
        if tokens.dim() == 2:
            tokens = tokens[None]
        if tokens.dim() != 3:
            raise TokenError(f"tokens must be (B, Q, T); got shape {tuple(tokens.shape)}.")
        if not 1 <= tokens.shape[1] <= self.num_levels:
            raise TokenError(f"tokens have {tokens.shape[1]} levels but {self.name} has "
                                  f"{self.num_levels}: were they made by another codec?")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cardinality):
            raise TokenError(f"token values must lie in 0..{self.cardinality - 1} for {self.name}; "
                                  f"got {int(tokens.min())}..{int(tokens.max())}: were they made by "
                                  f"another codec?")
        return tokens.long()

    def encode(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def codebook_vectors(self) -> torch.Tensor:  # pragma: no cover - interface
        """``(Q, V, F)``: the vector each code of each level stands for in the codec's latent
        space; a frame's quantised latent is the sum over levels of its codes' vectors."""
        raise NotImplementedError

    @torch.no_grad()
    def silence_codes(self) -> tuple[int, ...]:
        """The code of digital silence at each level, ``Q`` ints: the most frequent token of one
        second of zeros (edge frames aside, every frame of silence gets the same code). Computed
        once per codec; the sampler's silence gate needs it (``SamplingSettings.silence_gate``)."""
        if getattr(self, "_silence_codes", None) is None:
            tokens = self.encode(torch.zeros(1, self.sample_rate, device=self.device))[0]  # (Q, T)
            self._silence_codes = tuple(int(level.mode().values) for level in tokens.cpu())
        return self._silence_codes

    @torch.no_grad()
    def roundtrip(self, wav) -> "np.ndarray":
        """Encode and decode mono audio ``(N,)`` at :attr:`sample_rate`; returns ``(N,)`` float32."""
        import numpy as np

        x = torch.as_tensor(np.asarray(wav, dtype=np.float32))[None].to(self.device)
        return self.decode(self.encode(x))[0, : x.shape[-1]].float().cpu().numpy()

    @property
    def device(self) -> torch.device:
        """Where the codec's weights are (CPU for a codec without any)."""
        return next(iter([*self.parameters(), *self.buffers()]), torch.empty(0)).device

    def describe(self) -> dict:
        """The token contract as a plain dict (for configs, logs and compatibility checks).

        ``fingerprint`` identifies the weights that map audio to tokens: two codecs with equal
        shapes but different fingerprints give different tokens for the same audio.
        ``fingerprint_scheme`` names how it was computed (:data:`FINGERPRINT_SCHEME`).
        """
        return {"codec": self.name, "sample_rate": self.sample_rate, "hop_length": self.hop_length,
                "frame_rate": self.frame_rate, "num_levels": self.num_levels,
                "cardinality": self.cardinality, "fingerprint": self.fingerprint(),
                "fingerprint_scheme": FINGERPRINT_SCHEME}

    def fingerprint(self) -> str:
        """A short hash of what is stored: the state dict and :meth:`fingerprint_extra`.

        The same on every machine: the state dict holds only tensors read from the codec's files
        (anything recomputed at load, such as an STFT window, is a non-persistent buffer, since
        its last bits depend on the CPU's math library), hashed as float32, which every stored
        float16/bfloat16/float32 value converts to exactly (so a codec rounded to float16 in
        memory has the fingerprint of its float16 file).
        """
        import hashlib

        h = hashlib.sha1(json.dumps(self.fingerprint_extra(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu()
            h.update(name.encode())
            h.update(str(t.dtype if not t.is_floating_point() else torch.float32).encode())
            h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def fingerprint_extra(self) -> dict:
        """Settings outside the state dict that change the tokens (subclasses add theirs)."""
        return {}
