"""stemgen-train: data aliases, codec-linked model shape, a short run that writes a checkpoint."""

import json

import pytest

from stemgen.instruments import InstrumentError
from stemgen.train.cli import DATA_ALIASES, expand_data_alias, main
from stemgen.train.schedule import fit_schedule

from ..data.fixtures import make_slakh


def test_data_aliases():
    assert expand_data_alias(["--data", "slakh", "--data.root", "x"]) == [
        "--data", DATA_ALIASES["slakh"], "--data.root", "x"]
    assert expand_data_alias(["--data=chorales"]) == ["--data=" + DATA_ALIASES["chorales"]]
    assert expand_data_alias(["--data.root", "stems"]) == ["--data.root", "stems"]
    assert expand_data_alias(["--data.help", "stems"]) == ["--data.help", DATA_ALIASES["stems"]]


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--ckpt_path" in out and "--model.preset" in out and "--trainer.max_steps" in out
    with pytest.raises(SystemExit):
        main(["--data.help", "stems"])  # a data module's own options, by its short name
    assert "--data.root" in capsys.readouterr().out


def test_the_command_prints_no_lightning_cli_warning():
    import subprocess
    import sys

    code = "import sys; from stemgen.train.cli import main; sys.argv = ['stemgen-train', '--help']; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: stemgen-train" in out.stdout
    assert "not recommended" not in out.stderr and "Warning" not in out.stderr


def test_configs_name_no_run_folder_but_the_root():
    from pathlib import Path

    for config in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"):
        text = config.read_text()
        assert "dirpath" not in text and "save_dir" not in text, config.name


def _args(tmp_path, codec, root, steps, run):
    return ["--data", "slakh", "--data.root", str(root), "--data.codec", str(codec), "--data.crop_seconds", "1.0",
            "--data.segment_seconds", "1.5", "--data.batch_size", "2", "--data.num_workers", "0",
            "--model.preset", "tiny", "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
            "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1"]


def test_short_run_writes_last_ckpt_resumes_it_and_fits_the_schedule(tmp_path, tiny_codec, caplog):
    import csv

    import torch

    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        main(_args(tmp_path, codec, root, 4, run))  # no config: the defaults must still be resumable
    assert "scaled" in caplog.text  # the paper's 10k warm-up does not fit in 4 steps
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists()  # the model's V was linked to the codec's 64
    rows = list(csv.DictReader(open(next((run / "csv").rglob("metrics.csv")))))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert max(lrs) > 1e-4  # not stuck in a 10k-step warm-up at lr ~ 1e-7
    phases = torch.load(last, weights_only=True)["stemgen_lr_phases"]
    assert phases == list(fit_schedule(10_000, 50_000, 300_000, 4))
    main(_args(tmp_path, codec, root, 6, run) + ["--ckpt_path", "last"])
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 6  # resumed from 4, not restarted
    assert resumed["stemgen_lr_phases"] == phases  # and on the schedule it started with
    with pytest.raises(SystemExit, match="no last.ckpt"):
        main(_args(tmp_path, codec, root, 2, tmp_path / "elsewhere") + ["--ckpt_path", "last"])


def test_a_config_run_writes_under_the_root_given_on_the_command_line(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    (tmp_path / "run.yaml").write_text(f"""trainer:
  default_root_dir: {tmp_path / "from_config"}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, every_n_train_steps: 1}}
""")
    main(["--config", str(tmp_path / "run.yaml")] + _args(tmp_path, codec, root, 2, tmp_path / "chosen"))
    assert (tmp_path / "chosen" / "checkpoints" / "last.ckpt").exists() and (tmp_path / "chosen" / "csv").exists()
    assert not (tmp_path / "from_config").exists()


def test_a_second_checkpoint_callback_keeps_its_steps_without_a_second_last(tmp_path, tiny_codec):
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    (tmp_path / "run.yaml").write_text("""trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 1}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 2, save_top_k: -1, filename: "{step}"}
""")
    run = tmp_path / "run"
    main(["--config", str(tmp_path / "run.yaml")] + _args(tmp_path, codec, root, 4, run))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and "step=2.ckpt" in names and "step=4.ckpt" in names
    assert not [n for n in names if n.startswith("last-")], names


def _exported_tokens(tmp_path, tiny_codec):
    """Tokens of the fixture Slakh folder exported by `stemgen data tokens` (crops of 1.5 s, 2 draws):
    (the codec folder, the Slakh root, the tokens folder)."""
    from stemgen.cli import main as stemgen_main

    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    tokens = tmp_path / "tokens"
    assert stemgen_main(["data", "tokens", str(tokens), "--data", "slakh", "--root", str(root), "--codec",
                         str(codec), "--crop_seconds", "1.5", "--draws", "2"]) == 0
    return codec, root, tokens


def test_training_from_exported_tokens(tmp_path, tiny_codec):
    import torch

    from stemgen.cli import main as stemgen_main
    from stemgen.data.datamodule import TokenWindows

    codec, root, tokens = _exported_tokens(tmp_path, tiny_codec)
    meta = json.loads((tokens / "tokens.json").read_text())
    assert meta["min_target_active"] == 0.0 and meta["full_context"] == 0.0
    # the option reaches the pair sampler and is recorded (these tones sound throughout: same count)
    strict = tmp_path / "tokens_strict"
    assert stemgen_main(["data", "tokens", str(strict), "--data", "slakh", "--root", str(root), "--codec",
                         str(codec), "--crop_seconds", "1.5", "--draws", "2", "--min_target_active", "0.9"]) == 0
    strict_meta = json.loads((strict / "tokens.json").read_text())
    assert strict_meta["min_target_active"] == 0.9 and strict_meta["examples"] == meta["examples"]
    windows = TokenWindows(tokens / "train.safetensors", 50, random_offset=True, seed=0)
    n = len(windows)
    assert windows[0]["context_tokens"].shape == (4, 50) and windows.context.shape[-1] == 75
    # example k again in the next epoch (index e * n + k): the same example at another offset; an
    # index always gives the same window (a resumed run sees what the first run saw)
    starts = [windows.start(e * n + 1) for e in range(8)]
    assert len(set(starts)) > 1 and all(0 <= s <= 25 for s in starts) and windows.start(n + 1) == starts[1]
    item = windows[3 * n + 1]
    assert torch.equal(item["target_tokens"], windows.target[1, :, starts[3]:starts[3] + 50].long())
    assert TokenWindows(tokens / "validation.safetensors", 50, random_offset=False).start(7) == 0
    # instrument_repeats: the examples of one target instrument k times per epoch, the others once
    inst = int(windows.instrument[0])
    favoured = int((windows.instrument == inst).sum())
    more = TokenWindows(tokens / "train.safetensors", 50, random_offset=True, seed=0, repeats={inst: 3})
    assert len(more) == n + 2 * favoured
    drawn = torch.stack([more[i]["instrument"] for i in range(len(more))])
    assert int((drawn == inst).sum()) == 3 * favoured and int((drawn != inst).sum()) == n - favoured
    from stemgen.data.datamodule import TokensData
    from stemgen.instruments import resolve

    data = TokensData(tokens, crop_seconds=1.0, instrument_repeats={resolve(inst).name: 3})
    data.setup()
    assert len(data.datasets["train"]) == n + 2 * favoured and len(data.datasets["validation"]) == len(
        TokenWindows(tokens / "validation.safetensors", 50, random_offset=False))
    with pytest.raises(ValueError, match="whole number >= 1"):
        TokensData(tokens, instrument_repeats={"bass": 0})
    with pytest.raises(InstrumentError, match="bass"):
        TokensData(tokens, instrument_repeats={"basss": 2})
    run = tmp_path / "run"
    main(["--data", "tokens", "--data.root", str(tokens), "--data.crop_seconds", "1.0", "--data.batch_size", "2",
          "--model.preset", "tiny", "--trainer.max_steps", "2", "--trainer.accelerator", "cpu",
          "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
          "--trainer.limit_val_batches", "1"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["stemgen"]["codec"]["fingerprint"] == tiny_codec.fingerprint()
    assert ckpt["stemgen"]["window_seconds"] == 1.0 and ckpt["stemgen"]["model"]["cardinality"] == 64
    with pytest.raises(ValueError, match="longer than the exported crops"):
        from stemgen.data.datamodule import TokensData

        TokensData(tokens, crop_seconds=2.0)


def test_extra_training_tokens_are_added_with_their_own_songs(tmp_path, tiny_codec):
    import torch

    from stemgen.cli import main as stemgen_main
    from stemgen.data.datamodule import TokensData
    from stemgen.data.songs import DatasetError

    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    folders = {}
    for name, crop, seed in [("a", "1.5", "0"), ("b", "1.5", "1"), ("short", "1.0", "0")]:
        folders[name] = tmp_path / name
        assert stemgen_main(["data", "tokens", str(folders[name]), "--data", "slakh", "--root", str(root), "--codec",
                             str(codec), "--crop_seconds", crop, "--draws", "1", "--seed", seed]) == 0
    alone = TokensData(folders["a"], crop_seconds=1.0)
    both = TokensData(folders["a"], crop_seconds=1.0, extra_train=[str(folders["b"])])
    alone.setup(), both.setup()
    a, ab = alone.datasets["train"], both.datasets["train"]
    n_a = len(a)
    assert len(ab) == 2 * n_a  # the same songs and draws per segment, another seed
    assert torch.equal(ab.target[:n_a], a.target) and not torch.equal(ab.target[n_a:], a.target)
    # the second file's songs never share an index with the first's (the mismatched-context pairing
    # must not take another file's song for the same one)
    assert int(ab.song_index[n_a:].min()) > int(a.song_index.max())
    assert len(both.datasets["validation"]) == len(alone.datasets["validation"])
    with pytest.raises(DatasetError, match="crop_seconds"):
        TokensData(folders["a"], extra_train=[str(folders["short"])])
    # a folder of training songs alone (augmented versions) exports its training examples only
    import shutil

    shutil.rmtree(root / "validation")
    train_only = tmp_path / "train_only"
    assert stemgen_main(["data", "tokens", str(train_only), "--data", "slakh", "--root", str(root), "--codec",
                         str(codec), "--crop_seconds", "1.5", "--draws", "1", "--seed", "1"]) == 0
    assert sorted(p.name for p in train_only.iterdir()) == ["tokens.json", "train.safetensors"]
    extra = TokensData(folders["a"], crop_seconds=1.0, extra_train=[str(train_only)])
    extra.setup()
    assert torch.equal(extra.datasets["train"].target, both.datasets["train"].target)
    # examples that train the instrument-free branch alone: added the same way, flagged per item
    free = TokensData(folders["a"], crop_seconds=1.0, instrument_free_train=[str(folders["b"])])
    free.setup()
    windows = free.datasets["train"]
    assert torch.equal(windows.target, ab.target)
    assert [bool(windows[i]["instrument_free"]) for i in (0, n_a - 1, n_a, 2 * n_a - 1)] == [False, False, True, True]
    assert "instrument_free" not in free.datasets["validation"][0] and "instrument_free" not in a[0]
    with pytest.raises(DatasetError, match="crop_seconds"):
        TokensData(folders["a"], instrument_free_train=[str(folders["short"])])
    # or as a share of each epoch: the others once each, then slots drawn afresh from the flagged ones
    shared = TokensData(folders["a"], crop_seconds=1.0, instrument_free_train=[str(folders["b"])],
                        instrument_free_share=0.25)
    shared.setup()
    w = shared.datasets["train"]
    assert len(w) == n_a + max(1, round(n_a / 3))
    assert [bool(w[i]["instrument_free"]) for i in range(len(w))] == [False] * n_a + [True] * (len(w) - n_a)
    assert torch.equal(w[0]["target_tokens"], a[0]["target_tokens"])
    drawn = {w.row(e * len(w) + j) for e in range(40) for j in range(n_a, len(w))}
    assert drawn <= set(range(n_a, 2 * n_a)) and len(drawn) > 1  # every epoch draws again
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="instrument_free_share"):
            TokensData(folders["a"], instrument_free_train=[str(folders["b"])], instrument_free_share=bad)
    with pytest.raises(ValueError, match="comes with instrument_free_train"):
        TokensData(folders["a"], instrument_free_share=0.1)
    main(["--data", "tokens", "--data.root", str(folders["a"]), "--data.crop_seconds", "1.0", "--data.batch_size", "2",
          "--data.instrument_free_train", f"[{folders['b']}]", "--model.preset", "tiny", "--trainer.max_steps", "2",
          "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "free_run")])
    assert (tmp_path / "free_run" / "checkpoints" / "last.ckpt").exists()


def test_bf16_falls_back_to_float32_on_a_cpu_that_emulates_it(tmp_path, tiny_codec, caplog, monkeypatch):
    import stemgen.model
    from stemgen.train.cli import cpu_precision

    monkeypatch.setattr(stemgen.model, "native_bf16", lambda device="cpu": False)
    assert cpu_precision("bf16-mixed", "cpu") == "32-true" and "30x slower" in caplog.text
    assert cpu_precision("bf16-mixed", "cpu", keep=True) == "bf16-mixed"
    assert cpu_precision("16-mixed", "cpu") == "16-mixed" and cpu_precision("32-true", "cpu") == "32-true"
    monkeypatch.setattr(stemgen.model, "native_bf16", lambda device="cpu": True)
    assert cpu_precision("bf16-mixed", "cpu") == "bf16-mixed"  # native bf16: as configured
    # through the command: the trainer it builds runs in float32
    monkeypatch.setattr(stemgen.model, "native_bf16", lambda device="cpu": False)
    codec = tiny_codec.save(tmp_path / "codec")
    root = make_slakh(tmp_path / "slakh")
    seen = {}
    import lightning.pytorch as pl

    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *a, **k: seen.setdefault("precision", self.precision))
    main(_args(tmp_path, codec, root, 1, tmp_path / "run") + ["--trainer.precision", "bf16-mixed"])
    assert seen.pop("precision") == "32-true"
    main(_args(tmp_path, codec, root, 1, tmp_path / "run") + ["--trainer.precision", "bf16-mixed",
                                                           "--keep_precision", "true"])
    assert seen.pop("precision") == "bf16-mixed"


def test_a_model_that_reads_the_context_chroma_trains_from_exported_tokens_and_generates(tmp_path, tiny_codec):
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from stemgen.api import load_model
    from stemgen.data.datamodule import TokenWindows
    from stemgen.data.songs import DatasetError
    from stemgen.spectra import chroma_codes

    from ..conftest import SR, melody

    _, _, tokens = _exported_tokens(tmp_path, tiny_codec)
    data = load_file(str(tokens / "train.safetensors"))
    n = len(data["instrument"])
    assert data["context_chroma"].shape == (n, 75) and data["context_chroma"].dtype == torch.int32
    assert int(data["context_chroma"].max()) < 4 ** 12 and (data["context_chroma"] > 0).any()
    # a window's chroma codes are the same frames as its tokens
    windows = TokenWindows(tokens / "train.safetensors", 50, random_offset=True, seed=0)
    start = windows.start(n + 1)
    assert torch.equal(windows[n + 1]["context_chroma"], windows.chroma[1, start:start + 50].long())

    run = tmp_path / "run"
    args = ["--data", "tokens", "--data.root", str(tokens), "--data.crop_seconds", "1.0", "--data.batch_size", "2",
            "--model.preset", "tiny", "--model.context_chroma", "true", "--trainer.max_steps", "2",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1"]
    main(args + ["--trainer.default_root_dir", str(run)])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["stemgen"]["model"]["context_chroma"] is True
    assert "model.chroma_embed.weight" in ckpt["state_dict"]
    m = load_model(run / "checkpoints" / "last.ckpt", device="cpu")
    wav = melody([57, 61, 64, 69] * 2)  # 2 s
    ctx = m.encode_context(wav)
    assert ctx.shape == (5, 100)
    assert np.array_equal(ctx[4].cpu().numpy(), chroma_codes(wav, SR, tiny_codec.hop_length, 100))
    stem = m.generate(wav, "bass", sample_rate=SR, steps=(2, 1, 1, 1), seed=0)
    assert stem.tokens.shape == (4, 100)

    # tokens exported before the chroma existed: a clear error, not a shape error deep in the model
    old = tmp_path / "old_tokens"
    old.mkdir()
    (old / "tokens.json").write_text((tokens / "tokens.json").read_text())
    for split in ("train", "validation"):
        d = load_file(str(tokens / f"{split}.safetensors"))
        save_file({k: v for k, v in d.items() if k != "context_chroma"}, str(old / f"{split}.safetensors"))
    with pytest.raises(DatasetError, match="export the tokens again"):
        main([*args[:3], str(old), *args[4:], "--trainer.default_root_dir", str(tmp_path / "run_old")])
