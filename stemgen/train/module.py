"""The LightningModule that trains a :class:`~stemgen.model.StemGenModel`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional, Union

import torch
from lightning import LightningModule

from ..model import ModelConfig, StemGenModel
from ..data.songs import DatasetError
from ..errors import CheckpointError
from ..model.ensemble import EnsembleModel
from ..model.io import CHECKPOINT_KEY, CODEC_DIR, ModelRecord, check_codec, load_exported
from ..model.loss import listening_losses, masked_loss, masked_token_loss
from ..model.masking import level_probability, level_weight_tensor
from ..paths import model_dir
from .metrics import Listening, MaskedTokenAccuracy
from .schedule import fit_schedule, tri_stage_lr_scale

#: the key of the LR phases in a training checkpoint
SCHEDULE_KEY = "stemgen_lr_phases"


class StemGenLightning(LightningModule):
    """Masked-token training with SoundStorm masking and condition dropout.

    Args:
        preset: model shape (``tiny``, ``small``, ``paper``; see stemgen.model.PRESETS).
        dim: width (model dimension) instead of the preset's; a multiple of the number of heads.
        n_layers: depth (transformer blocks) instead of the preset's.
        n_heads: attention heads instead of the preset's.
        num_levels: Q, must equal the codec's.
        cardinality: V, must equal the codec's.
        lr: peak learning rate (the paper: 5e-4).
        warmup_steps: linear warm-up steps (the paper: 10k).
        hold_steps: steps at the peak (the paper: 50k).
        decay_steps: exponential decay steps (the paper: 300k).
        final_lr_scale: the decay's end, as a fraction of the peak.
        weight_decay: AdamW weight decay (not applied to embeddings, norms or the null context).
        betas: AdamW betas.
        p_drop_context: probability of replacing the context by the learned null context.
        p_drop_instrument: probability of replacing the instrument by the null entry.
        p_full_mask: probability of masking the trained level entirely instead of at the cosine
            ratio (0: the paper's SoundStorm masking); one for every level or one per level.
        level_weights: relative frequencies of the trained levels, one per level (None: uniform,
            the paper's); weighting level 0 trains more of the steps where the notes are chosen.
        dropout: residual dropout in training (see :class:`~stemgen.model.ModelConfig`; 0: none, the
            paper's); drawn per step from (seed, global step) like the masks, so a resumed run
            drops what the uninterrupted one would. Not part of the shape: a model exported with
            one value fine-tunes (``init_from``) with another.
        p_prefix: probability that an example is a continuation: its level given up to a random
            frame (10-90% of the window) and masked after it, as generation continues a window's
            overlap (0: the paper's masking); one for every level or one per level.
        codec_embeddings: start the code embeddings from the codec's codebooks (see
            :meth:`~stemgen.model.StemGenModel.init_embeddings_from_codebooks`) when training
            starts; a resumed run takes its weights from the checkpoint as always.
        codec_heads: with ``codec_embeddings``, start the output heads from the codebooks too.
        codebook_dim: > 0 gives every code embedding a learned map of its codec codebook vector
            (reduced to this many dimensions, fixed from the training codec when training starts;
            see :class:`~stemgen.model.ModelConfig`).
        codebook_heads: with ``codebook_dim``, the output heads read the codec features too.
        init_from: fine-tune: start from the weights of an exported model (a folder written by
            ``stemgen export``, or ``demo`` for the shipped demo model) instead of random ones. Its
            shape must be this module's (preset and shape options) and its codec the training
            data's. Loaded when training starts; a resumed run takes its weights from the
            checkpoint as always.
        shared_embeddings: context and target read one embedding table per level (see
            :class:`~stemgen.model.ModelConfig`).
        seed: seed of the masks and dropouts (drawn per step from (seed, global step)).
        compile: run the training step's model work (:func:`~stemgen.model.loss.masked_loss`:
            forward, heads, cross-entropy, and through autograd its backward) through
            ``torch.compile`` as one graph. Default: on when training on CUDA (the compiler fuses
            the elementwise work that otherwise dominates there), off on CPU (minutes of compiling
            for a short run).
        context_chroma: the model reads the context's pitch-class profile beside its tokens (see
            :class:`~stemgen.model.ModelConfig`); the batches must carry ``context_chroma``
            ``(B, T)`` (tokens exported by this version of ``stemgen data tokens`` do).
    """

    def __init__(self, preset: str = "tiny", num_levels: int = 4, cardinality: int = 2048, lr: float = 5e-4,
                 warmup_steps: int = 10_000, hold_steps: int = 50_000, decay_steps: int = 300_000,
                 final_lr_scale: float = 0.01, weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.95),
                 p_drop_context: float = 0.1, p_drop_instrument: float = 0.1, p_full_mask: Union[float, list[float]] = 0.0,
                 shared_embeddings: bool = False, seed: int = 0, compile: bool | None = None,
                 level_weights: Optional[list[float]] = None, codec_embeddings: bool = False,
                 codec_heads: bool = False, codebook_dim: int = 0, codebook_heads: bool = False,
                 init_from: Optional[str] = None, dim: Optional[int] = None, n_layers: Optional[int] = None,
                 n_heads: Optional[int] = None, p_prefix: Union[float, list[float]] = 0.0, dropout: float = 0.0,
                 context_chroma: bool = False):
        super().__init__()
        if level_weights is not None:
            level_weight_tensor(level_weights, num_levels)  # a wrong value fails here, not at the first step
        # a wrong value fails here, not at the first step
        level_probability(p_full_mask, num_levels, "p_full_mask")
        level_probability(p_prefix, num_levels, "p_prefix")
        shape = {k: v for k, v in dict(dim=dim, n_layers=n_layers, n_heads=n_heads).items() if v is not None}
        cfg = ModelConfig.from_name(preset, num_levels=num_levels, cardinality=cardinality,
                                    shared_embeddings=shared_embeddings, codebook_dim=codebook_dim,
                                    codebook_heads=codebook_heads, dropout=dropout, context_chroma=context_chroma,
                                    **shape)
        self.save_hyperparameters()
        self.model = StemGenModel(cfg)
        self.val_accuracy = MaskedTokenAccuracy(num_levels)
        self.val_listening = Listening()
        #: the LR phases (warm-up, hold, decay) in use, fitted to max_steps (see fit_schedule)
        self._schedule: tuple[int, int, int] | None = None
        self._train_loss_fn = None

    def train_loss_fn(self):
        """:func:`~stemgen.model.loss.masked_loss`, compiled where ``compile`` says so (decided on the
        first call, once the module is on its device)."""
        if self._train_loss_fn is None:
            on = self.hparams.compile if self.hparams.compile is not None else self.device.type == "cuda"
            # one graph; the batch dimension becomes dynamic if a smaller last batch arrives
            self._train_loss_fn = torch.compile(masked_loss, fullgraph=True) if on else masked_loss
        return self._train_loss_fn

    def setup(self, stage: str) -> None:
        codec = getattr(self._datamodule(), "codec", None)
        if codec is not None:
            check_codec(self.model.cfg, codec, fix="Set --model.num_levels/--model.cardinality to the codec's.")
        from_codec = [name for name in ("codec_embeddings", "codebook_dim") if self.hparams.get(name)]
        if stage == "fit" and from_codec:
            if codec is None:
                raise ValueError(f"{from_codec[0]} needs the codec of the training data: train with a stemgen data "
                                 f"module (--data), or turn --model.{from_codec[0]} off.")
            # runs before a checkpoint's weights are restored, so a resumed run is unaffected
            if self.hparams.get("codec_embeddings"):
                self.model.init_embeddings_from_codebooks(codec.codebook_vectors(),
                                                          heads=bool(self.hparams.get("codec_heads")))
            if self.model.cfg.codebook_dim > 0:
                self.model.set_codebook_features(codec.codebook_vectors())
        if stage == "fit" and self.hparams.get("init_from"):
            self.load_pretrained(self.hparams.init_from, codec)

    def load_pretrained(self, name: str, codec=None) -> None:
        """Copy the weights of the exported model ``name`` (a folder, or ``demo``) into the model.

        Raises:
            MissingWeightsError: no export there; CheckpointError: another model shape, or tokens of
            another codec than ``codec`` (the training data's, when known).
        """
        path = model_dir(name)
        model, record, _ = load_exported(path)
        if isinstance(model, EnsembleModel):
            # an ensemble with one generating member (the shipped demo model: one network and its
            # instrument-free branch network) fine-tunes that member; of several, the choice is the user's
            if len(model.main_members) != 1:
                raise CheckpointError(f"--model.init_from {name}: an ensemble of {len(model.members)} models; give "
                                      f"the folder of the member to start from ({path}/member-1, ...).")
            model = model.members[model.main_members[0]]
        ours, theirs = asdict(self.model.cfg), asdict(model.cfg)
        diff = ", ".join(f"{k}: {theirs[k]} (training: {ours[k]})" for k in ours
                         if k != "dropout" and ours[k] != theirs.get(k))  # dropout is no part of the shape
        if diff:
            raise CheckpointError(f"--model.init_from {name}: the exported model has another shape ({diff}). "
                                  f"Train with the --model options it was trained with (its config.json).")
        if codec is not None:
            check_codec(self.model.cfg, codec, record,
                        fix=f"Fine-tune on tokens of the codec it was trained with ({path / CODEC_DIR}).")
        self.model.load_state_dict(model.state_dict())

    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer else None

    def record(self) -> ModelRecord:
        """The model's record: its shape, and the codec and window of the attached data module."""
        dm = self._datamodule()
        if getattr(dm, "codec", None) is None:
            return ModelRecord(self.model.cfg)
        return ModelRecord.for_codec(self.model.cfg, dm.codec, dm.codec_name, getattr(dm, "crop_seconds", None))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # which codec the tokens came from (an exported model must be paired with it) and the
        # window the model saw in training (generation uses it for long inputs)
        checkpoint[CHECKPOINT_KEY] = self.record().to_dict()
        checkpoint[SCHEDULE_KEY] = list(self._schedule) if self._schedule else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        recorded = checkpoint.get(SCHEDULE_KEY)
        self._schedule = tuple(recorded) if recorded else None

    def _seed(self, offset: int) -> int:
        # masks and dropout depend only on (seed, step): a resumed run draws what the uninterrupted one would
        return self.hparams.seed * 1_000_003 + offset

    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self._seed(offset))

    @property
    def reads_context_chroma(self) -> bool:
        """Whether batches must carry ``context_chroma`` (the audio data modules compute it only then)."""
        return self.model.cfg.context_chroma

    def _context(self, batch: dict) -> torch.Tensor:
        """The context the model reads: ``context_tokens`` ``(B, Q, T)``, with the chroma codes as a
        last row ``(B, Q + 1, T)`` for a model with ``context_chroma``."""
        if not self.model.cfg.context_chroma:
            return batch["context_tokens"]
        if "context_chroma" not in batch:
            raise DatasetError("--model.context_chroma reads the context's pitch-class profile, and these batches "
                               "carry none: export the tokens again with this version (`stemgen data tokens`), or "
                               "train without --model.context_chroma.")
        return torch.cat([batch["context_tokens"], batch["context_chroma"][:, None].to(batch["context_tokens"])], 1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # dropout reads the global RNG: seeded per step (the caller's state kept), it too depends
        # only on (seed, step); the backward pass reuses the masks autograd saved
        drops = self.model.cfg.dropout > 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [], enabled=drops):
            if drops:
                torch.manual_seed(self._seed(3 * 10**9 + self.global_step))
            out = masked_token_loss(self.model, self._context(batch), batch["target_tokens"], batch["instrument"],
                                    self.hparams.p_drop_context, self.hparams.p_drop_instrument,
                                    self._generator(self.global_step), p_full_mask=self.hparams.p_full_mask,
                                    loss_fn=self.train_loss_fn(), level_weights=self.hparams.get("level_weights"),
                                    p_prefix=self.hparams.get("p_prefix", 0.0),
                                    instrument_free=batch.get("instrument_free"))
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # every level of every example, no condition dropout, fixed masks: comparable over time
        losses = []
        for q in range(self.model.cfg.num_levels):
            out = masked_token_loss(self.model, self._context(batch), batch["target_tokens"], batch["instrument"],
                                    0.0, 0.0, self._generator(10**9 + 16 * batch_idx + q), level=q)
            self.val_accuracy.update(out.correct, out.count)
            losses.append(out.loss)
        self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=batch["instrument"].shape[0])
        # listening: the same tokens scored with the true, another song's and no context
        self.val_listening.update(*listening_losses(self.model, self._context(batch), batch["target_tokens"],
                                                    batch["instrument"], batch.get("song_index"),
                                                    self._generator(2 * 10**9 + batch_idx)))

    def on_validation_epoch_end(self) -> None:
        acc = self.val_accuracy.compute()
        for q, a in enumerate(acc):
            self.log(f"val/accuracy_level{q}", a)
        self.val_accuracy.reset()
        for name, value in self.val_listening.compute().items():
            self.log(f"val/{name}", value)
        self.val_listening.reset()

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
        h = self.hparams
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=h.lr, betas=tuple(h.betas),
                                fused=fuse_adamw(self.device.type, self.trainer.gradient_clip_val))
        # a resumed run keeps the phases it started with, even if max_steps changed
        self._schedule = self._schedule or fit_schedule(h.warmup_steps, h.hold_steps, h.decay_steps,
                                                        self.trainer.max_steps)
        warmup, hold, decay = self._schedule
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: tri_stage_lr_scale(step, warmup, hold, decay, h.final_lr_scale))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fuse_adamw(device_type: str, gradient_clip_val: Optional[float]) -> bool:
    """Whether the training step's AdamW is the fused CUDA kernel: on CUDA, unless gradients are clipped.

    A fused AdamW unscales its gradients itself, so Lightning's mixed-precision plugin refuses to clip
    them (a RuntimeError at the first step: seen on an H200 with the demo recipes' clip of 1.0); the
    multi-tensor (foreach) AdamW that replaces it there costs little at these model sizes.
    """
    return device_type == "cuda" and not gradient_clip_val
