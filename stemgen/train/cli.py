"""``stemgen-train``: LightningCLI over :class:`StemGenLightning` and the data modules.

    stemgen-train --config configs/tiny_chorales.yaml
    stemgen-train --config configs/tiny_chorales.yaml --ckpt_path last     # resume
    stemgen-train --data slakh --data.root /data/slakh2100 --model.preset paper
    stemgen-train --data chorales
    stemgen-train --data stems --data.root /data/my_stems
    stemgen-train --data tokens --data.root tokens/chorales     # from `stemgen data tokens` (no audio)

``--data`` takes a short name (slakh, chorales, stems, tokens) or a data module's class path.
The model's Q and V follow the data's codec. Every option is listed by ``--help``
(``--data.help stems`` for one data module's options). Everything a run writes goes under
``--trainer.default_root_dir`` (checkpoints/, with last.ckpt, and csv/ logs) unless a config
names other places.
"""

from __future__ import annotations

import functools
import sys

DATA_ALIASES = {
    "slakh": "stemgen.data.datamodule.SlakhData",
    "chorales": "stemgen.data.datamodule.ChoralesData",
    "stems": "stemgen.data.datamodule.StemsData",
    "tokens": "stemgen.data.datamodule.TokensData",
}


def expand_data_alias(argv: list[str]) -> list[str]:
    """``--data slakh`` / ``--data=slakh`` -> the class path LightningCLI understands."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--data", "--data.help"):
            if arg == flag and i + 1 < len(out) and out[i + 1] in DATA_ALIASES:
                out[i + 1] = DATA_ALIASES[out[i + 1]]
            elif arg.startswith(flag + "=") and arg[len(flag) + 1:] in DATA_ALIASES:
                out[i] = f"{flag}={DATA_ALIASES[arg[len(flag) + 1:]]}"
    return out


def run_folders(trainer, logger_configured: bool) -> None:
    """Put what a run writes under ``trainer.default_root_dir`` where the config named no place:
    checkpoints in ``ROOT/checkpoints`` (always with ``last.ckpt``, which ``--ckpt_path last``
    resumes) and, unless loggers were configured or turned off, CSV logs in ``ROOT/csv`` (and
    TensorBoard logs in ``ROOT/tensorboard`` where tensorboard is installed)."""
    import os
    from pathlib import Path

    root = Path(trainer.default_root_dir)
    # one callback writes last.ckpt: two in one folder would write last.ckpt and last-v1.ckpt (a
    # second full copy each time, and a `last` that is not the newest name)
    writes_last = any(cb.save_last for cb in trainer.checkpoint_callbacks)
    for cb in trainer.checkpoint_callbacks:
        if cb.dirpath is None:
            cb.dirpath = os.path.realpath(root / "checkpoints")
        if cb.save_last is None:
            cb.save_last = not writes_last
            writes_last = True
    if not logger_configured and trainer.loggers:
        import importlib.util

        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        tensorboard = importlib.util.find_spec("tensorboard") is not None
        trainer.loggers = [CSVLogger(root, name="csv")] + ([TensorBoardLogger(root, name="tensorboard")]
                                                           if tensorboard else [])


def resume_path(trainer, ckpt_path: str | None) -> str | None:
    """``--ckpt_path``: ``last`` is the run's ``last.ckpt``, which must exist (resuming nothing
    would silently start from scratch)."""
    from pathlib import Path

    if ckpt_path != "last":
        return ckpt_path
    found = [Path(cb.dirpath) / "last.ckpt" for cb in trainer.checkpoint_callbacks if cb.dirpath]
    found = [p for p in found if p.exists()]
    if not found:
        dirs = ", ".join(str(cb.dirpath) for cb in trainer.checkpoint_callbacks) or "(checkpointing is off)"
        raise SystemExit(f"stemgen-train: error: --ckpt_path last: no last.ckpt in {dirs}, so there is nothing to "
                         f"resume. Give the run's --trainer.default_root_dir (or its --config), or a checkpoint file.")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def cpu_precision(precision, accelerator, keep: bool = False):
    """The precision to train in: a bf16 precision on a CPU that only emulates bf16 becomes
    "32-true" with a warning (a bf16-autocast step of the ``small`` preset measured 30x slower
    than float32 on an AVX2-only CPU), unless ``keep``. Anything else is returned unchanged."""
    import logging

    import torch

    from ..model import native_bf16

    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())
    if keep or not on_cpu or "bf16" not in str(precision) or native_bf16("cpu"):
        return precision
    logging.getLogger(__name__).warning(
        "stemgen-train: this CPU has no native bfloat16 (no AVX512-BF16/AMX), where precision %s runs about 30x "
        "slower than float32: training in 32-true instead (--keep_precision true keeps %s).", precision, precision)
    return "32-true"


@functools.lru_cache(maxsize=4)
def _codec_shape(codec: str | None, root: str | None = None) -> tuple[int, int]:
    """(Q, V) of the data's codec; exported tokens (``--data tokens``) name theirs in tokens.json."""
    import json
    from pathlib import Path

    from ..codec import load_codec
    from ..data.datamodule import TOKENS_META

    meta_path = Path(root).expanduser() / TOKENS_META if root is not None else None
    if codec is None and meta_path is not None and meta_path.exists():
        meta = json.loads(meta_path.read_text())["codec"]
        return meta["num_levels"], meta["cardinality"]
    c = load_codec(codec)
    return c.num_levels, c.cardinality


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``stemgen-train``."""
    from lightning.pytorch.cli import LightningCLI

    from ..data.datamodule import StemgenData
    from .module import StemGenLightning

    class StemGenCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="resume training from this checkpoint ('last': the newest in the run folder)")
            parser.add_argument("--keep_precision", type=bool, default=False,
                                help="train in --trainer.precision even where a CPU only emulates bf16 (by "
                                     "default bf16 falls back to 32-true there: emulated bf16 is ~30x slower)")
            source = ("data.init_args.codec", "data.init_args.root")
            parser.link_arguments(source, "model.num_levels",
                                  compute_fn=lambda c, r: _codec_shape(c, None if r is None else str(r))[0])
            parser.link_arguments(source, "model.cardinality",
                                  compute_fn=lambda c, r: _codec_shape(c, None if r is None else str(r))[1])

        def before_instantiate_classes(self):
            t = self.config.trainer
            t.precision = cpu_precision(t.precision, t.accelerator, self.config.keep_precision)

    if argv is None:  # LightningCLI reads sys.argv itself (given both, it warns)
        sys.argv[1:] = expand_data_alias(sys.argv[1:])
        args = None
    else:
        args = expand_data_alias(argv)
    cli = StemGenCLI(StemGenLightning, StemgenData, subclass_mode_data=True, args=args, run=False,
                     save_config_kwargs={"overwrite": True},
                     parser_kwargs={"prog": "stemgen-train", "description": __doc__.split("\n\n")[0]})
    run_folders(cli.trainer, logger_configured=cli.config.trainer.logger not in (None, True))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume_path(cli.trainer, cli.config.ckpt_path))
