"""The LightningModule on the fabricated Slakh fixture with a tiny codec: fit, log, checkpoint, resume."""

import csv
import warnings

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger

from stemgen.data.datamodule import SlakhData
from stemgen.errors import CheckpointError, MissingWeightsError
from stemgen.train.module import StemGenLightning, fuse_adamw

from ..data.fixtures import make_slakh


@pytest.fixture()
def datamodule(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    return SlakhData(root, codec=str(codec), crop_seconds=1.0, segment_seconds=1.5, batch_size=2, num_workers=0)


def trainer(tmp_path, max_steps):
    return Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path / "logs"),
                   default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                   val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1, gradient_clip_val=1.0,
                   log_every_n_steps=1)


def test_fit_logs_loss_and_per_level_accuracy_then_resumes(tmp_path, datamodule):
    module = StemGenLightning("tiny", cardinality=64, warmup_steps=2, hold_steps=2, decay_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = trainer(tmp_path, 4)
        t.fit(module, datamodule=datamodule)
    assert t.global_step == 4
    rows = list(csv.DictReader(open(t.logger.log_dir + "/metrics.csv")))
    keys = set().union(*rows)
    assert {"train/loss", "val/loss", "val/accuracy_level0", "val/accuracy_level3"} <= keys
    assert {"val/context_gain", "val/context_gain_train_mask", "val/ce/true", "val/ce/null_instrument",
            "val/ce/null_context", "val/ce/null_both"} <= keys
    acc = [float(r["val/accuracy_level0"]) for r in rows if r.get("val/accuracy_level0")]
    assert acc and all(0.0 <= a <= 1.0 for a in acc)
    ckpts = list((tmp_path / "logs").rglob("*.ckpt"))
    assert ckpts
    resumed = StemGenLightning("tiny", cardinality=64, warmup_steps=2, hold_steps=2, decay_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t2 = trainer(tmp_path / "again", 6)
        t2.fit(resumed, datamodule=datamodule, ckpt_path=str(ckpts[0]))
    assert t2.global_step == 6
    lr = t2.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(5e-4 * 0.01 ** (2 / 4))  # step 6: halfway through the decay


def test_audio_batches_carry_the_chroma_codes_only_to_a_module_that_reads_them(tmp_path, datamodule):
    seen = []

    class Spy(StemGenLightning):
        def training_step(self, batch, batch_idx):
            seen.append("context_chroma" in batch)
            return super().training_step(batch, batch_idx)

    for reads in (False, True):
        seen.clear()
        module = Spy("tiny", cardinality=64, context_chroma=reads, warmup_steps=1)
        assert module.reads_context_chroma is reads
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path / str(reads),
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
            t.fit(module, datamodule=datamodule)  # a chroma model without its codes would stop with DatasetError
        assert t.global_step == 2 and seen == [reads, reads]


def test_codec_mismatch_is_a_clear_error(tmp_path, datamodule):
    module = StemGenLightning("tiny", cardinality=2048)
    with pytest.raises(CheckpointError, match="--model.cardinality"):
        trainer(tmp_path, 1).fit(module, datamodule=datamodule)


def test_masks_depend_on_seed_and_step_only():
    m = StemGenLightning("tiny", cardinality=16, seed=3)
    a = torch.rand(4, generator=m._generator(7))
    b = torch.rand(4, generator=m._generator(7))
    assert torch.equal(a, b) and not torch.equal(a, torch.rand(4, generator=m._generator(8)))


def test_wrong_masking_options_fail_when_the_module_is_built():
    StemGenLightning("tiny", cardinality=16, p_full_mask=[0.8, 0.3, 0.3, 0.3], level_weights=[4.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="p_full_mask"):
        StemGenLightning("tiny", cardinality=16, p_full_mask=[0.8, 0.3])
    with pytest.raises(ValueError, match="level_weights"):
        StemGenLightning("tiny", cardinality=16, level_weights=[1.0, -1.0, 1.0, 1.0])
    StemGenLightning("tiny", cardinality=16, p_prefix=[0.3, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="p_prefix"):
        StemGenLightning("tiny", cardinality=16, p_prefix=1.5)


def _weights_after(tmp_path, datamodule_factory, max_steps, ckpt=None, every=None, rng_seed=123, ema_decay=None,
                   **module_kwargs):
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    torch.manual_seed(rng_seed)  # the model's init; the resumed run overwrites it from the checkpoint
    module = StemGenLightning("tiny", cardinality=64, warmup_steps=1, hold_steps=2, decay_steps=10, **module_kwargs)
    callbacks = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1)] if every else []
    if ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=ema_decay))
    t = Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                enable_checkpointing=bool(every), callbacks=callbacks, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(module, datamodule=datamodule_factory(), ckpt_path=ckpt)
    return {k: v.clone() for k, v in module.state_dict().items()}, t


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_mid_epoch_reaches_the_same_weights(tmp_path, tiny_codec, dropout):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")

    def dm():  # 4 segments, batch 2: 2 batches per epoch; two workers as in real runs
        return SlakhData(root, codec=str(codec), crop_seconds=1.0, segment_seconds=1.5, batch_size=2,
                         num_workers=2, seed=5)

    straight, _ = _weights_after(tmp_path / "a", dm, 7, dropout=dropout)
    _, stopped = _weights_after(tmp_path / "b", dm, 3, every=3, dropout=dropout)  # stopped mid-epoch 1
    ckpt = tmp_path / "b" / "ckpt" / "epoch=1-step=3.ckpt"
    assert ckpt.exists()
    # another global RNG state than the straight run's at step 3: dropout must not depend on it
    resumed, t = _weights_after(tmp_path / "c", dm, 7, ckpt=str(ckpt), rng_seed=7, dropout=dropout)
    assert t.global_step == 7
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    if dropout:  # and it did drop: the same run without dropout ends elsewhere
        plain, _ = _weights_after(tmp_path / "d", dm, 7)
        assert not torch.equal(plain["model.heads"], straight["model.heads"])


def test_validation_scores_every_level(tmp_path, datamodule):
    module = StemGenLightning("tiny", cardinality=64)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    module.log = lambda *a, **k: None
    module.validation_step(batch, 0)
    assert (module.val_accuracy.total > 0).all()  # all four levels were scored


def test_the_training_step_is_compiled_on_request_and_by_default_on_cuda_only():
    from stemgen.model.loss import masked_loss

    assert StemGenLightning("tiny").train_loss_fn() is masked_loss  # CPU default: eager
    compiled = StemGenLightning("tiny", compile=True).train_loss_fn()
    assert compiled is not masked_loss and getattr(compiled, "_torchdynamo_orig_callable", None) is masked_loss


def test_codec_embeddings_start_from_the_training_codec_codebooks(datamodule):
    module = StemGenLightning("tiny", cardinality=64, shared_embeddings=True, codec_embeddings=True)
    module._datamodule = lambda: datamodule
    module.setup("fit")
    books = datamodule.codec.codebook_vectors()
    want = StemGenLightning("tiny", cardinality=64, shared_embeddings=True).model.init_embeddings_from_codebooks(books)
    for q in range(4):
        torch.testing.assert_close(module.model.context_embed[q].weight[:, :books.shape[-1]],
                                   want.context_embed[q].weight[:, :books.shape[-1]])
    module._datamodule = lambda: None
    with pytest.raises(ValueError, match="codec_embeddings needs the codec"):
        module.setup("fit")
    feat = StemGenLightning("tiny", cardinality=64, codebook_dim=8)
    feat._datamodule = lambda: datamodule
    feat.setup("fit")
    fresh = StemGenLightning("tiny", cardinality=64, codebook_dim=8).model.set_codebook_features(books)
    torch.testing.assert_close(feat.model.codebook_features, fresh.codebook_features)
    assert feat.model.codebook_features.abs().sum() > 0


def test_init_from_starts_from_an_exported_model_of_the_same_shape_and_codec(tmp_path, datamodule):
    from stemgen.model.io import ModelRecord, save_exported

    source = StemGenLightning("tiny", cardinality=64, seed=1).model
    record = ModelRecord.for_codec(source.cfg, datamodule.codec, "codec", 1.0)
    save_exported(source, tmp_path / "export", record, half=True)
    module = StemGenLightning("tiny", cardinality=64, init_from=str(tmp_path / "export"))
    assert not torch.equal(module.model.heads, source.heads)  # random start differs
    module._datamodule = lambda: datamodule
    module.setup("fit")
    for name, value in source.state_dict().items():  # float16 export: the float16-rounded weights
        torch.testing.assert_close(module.model.state_dict()[name], value.half().float(), rtol=0, atol=0)
    module.setup("validate")  # only training starts from the export

    dropping = StemGenLightning("tiny", cardinality=64, dropout=0.1, init_from=str(tmp_path / "export"))
    dropping._datamodule = lambda: datamodule
    dropping.setup("fit")  # dropout is no shape: a model exported without it fine-tunes with it
    torch.testing.assert_close(dropping.model.heads, source.heads.half().float(), rtol=0, atol=0)
    assert dropping.model.cfg.dropout == 0.1 and dropping.model.blocks[0].dropout == 0.1

    other_shape = StemGenLightning("tiny", cardinality=64, shared_embeddings=True, init_from=str(tmp_path / "export"))
    other_shape._datamodule = lambda: datamodule
    with pytest.raises(CheckpointError, match="shared_embeddings: False \\(training: True\\)"):
        other_shape.setup("fit")
    save_exported(source, tmp_path / "other_codec", ModelRecord(source.cfg, {**record.codec, "fingerprint": "0" * 16}))
    other_codec = StemGenLightning("tiny", cardinality=64, init_from=str(tmp_path / "other_codec"))
    other_codec._datamodule = lambda: datamodule
    with pytest.raises(CheckpointError, match="Fine-tune on tokens of the codec it was trained with"):
        other_codec.setup("fit")
    missing = StemGenLightning("tiny", cardinality=64, init_from=str(tmp_path / "nothing"))
    with pytest.raises(MissingWeightsError, match="stemgen export"):
        missing.setup("fit")
    # an ensemble of generating members: which one to start from is the user's choice, named
    from stemgen.model.io import save_ensemble

    datamodule.codec.save(tmp_path / "the_codec")
    save_ensemble([tmp_path / "export", tmp_path / "export"], tmp_path / "ens",
                  codec=tmp_path / "the_codec")
    several = StemGenLightning("tiny", cardinality=64, init_from=str(tmp_path / "ens"))
    with pytest.raises(CheckpointError, match=r"an ensemble of 2 models; give the folder of the member"):
        several.setup("fit")


def test_init_from_demo_loads_the_shipped_model():
    from stemgen.model.io import load_exported
    from stemgen.paths import demo_model_dir

    shipped, _, _ = load_exported(demo_model_dir())
    module = StemGenLightning("small", shared_embeddings=True, context_chroma=True, init_from="demo")
    module.setup("fit")
    # the shipped export is the generating network and its instrument-free branch network: the first is fine-tuned
    torch.testing.assert_close(module.model.state_dict(), shipped.members[0].state_dict(), rtol=0, atol=0)
    # the shipped model reads its context's chroma: a module that does not is another shape, named as such
    with pytest.raises(CheckpointError, match=r"context_chroma: True \(training: False\)"):
        StemGenLightning("small", shared_embeddings=True, init_from="demo").setup("fit")


def test_adamw_is_fused_on_cuda_only_when_nothing_clips_gradients():
    # Lightning's mixed-precision plugin raises at the first step when asked to clip the gradients
    # of an optimizer that unscales them itself (the fused kernel), as every demo recipe clips at 1.0
    assert fuse_adamw("cuda", None) and fuse_adamw("cuda", 0.0)
    assert not fuse_adamw("cuda", 1.0)
    assert not fuse_adamw("cpu", None) and not fuse_adamw("cpu", 1.0)
