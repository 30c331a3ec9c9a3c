"""``stemgen-train``: LightningCLI over :class:`StemGenLightning` and the data modules.

    stemgen-train --config configs/tiny_chorales.yaml
    stemgen-train --config configs/tiny_chorales.yaml --ckpt_path last     # resume
    stemgen-train --data slakh --data.root /data/slakh2100 --model.preset paper
    stemgen-train --data chorales
    stemgen-train --data stems --data.root /data/my_stems

``--data`` takes a short name (slakh, chorales, stems) or a LightningDataModule class path.
The model's Q and V follow the data's codec. Every option is listed by ``--help``
(``--data slakh --help`` for one data module's options).
"""

from __future__ import annotations

import functools
import sys

DATA_ALIASES = {
    "slakh": "stemgen.data.datamodule.SlakhData",
    "chorales": "stemgen.data.datamodule.ChoralesData",
    "stems": "stemgen.data.datamodule.StemsData",
}


def expand_data_alias(argv: list[str]) -> list[str]:
    """``--data slakh`` / ``--data=slakh`` -> the class path LightningCLI understands."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--data" and i + 1 < len(out) and out[i + 1] in DATA_ALIASES:
            out[i + 1] = DATA_ALIASES[out[i + 1]]
        elif arg.startswith("--data=") and arg[7:] in DATA_ALIASES:
            out[i] = "--data=" + DATA_ALIASES[arg[7:]]
    return out


@functools.lru_cache(maxsize=4)
def _codec_shape(codec: str) -> tuple[int, int]:
    from ..codec import load_codec

    c = load_codec(codec)
    return c.num_levels, c.cardinality


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``stemgen-train``."""
    from lightning.pytorch.cli import LightningCLI

    from ..data.datamodule import PairDataModule
    from .module import StemGenLightning

    class StemGenCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="resume training from this checkpoint ('last': the newest in the run folder)")
            parser.link_arguments("data.init_args.codec", "model.num_levels",
                                  compute_fn=lambda c: _codec_shape(c)[0])
            parser.link_arguments("data.init_args.codec", "model.cardinality",
                                  compute_fn=lambda c: _codec_shape(c)[1])

    args = expand_data_alias(sys.argv[1:] if argv is None else argv)
    cli = StemGenCLI(StemGenLightning, PairDataModule, subclass_mode_data=True, args=args, run=False,
                     save_config_kwargs={"overwrite": True},
                     parser_kwargs={"prog": "stemgen-train", "description": __doc__.split("\n\n")[0]})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
