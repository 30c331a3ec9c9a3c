"""The stemgen command: help texts, subcommands, clear errors."""

import subprocess
import sys

import numpy as np

from stemgen.audio import read_audio, write_audio
from stemgen.cli import main

from .conftest import melody


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "data" in out and "codec" in out and "demo" in out


def test_subcommand_help_documents_every_option(capsys):
    try:
        main(["data", "chorales", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for opt in ("--out", "--limit", "--seed", "--sample_rate"):
        assert opt in out
    assert "Slakh layout" in out and "353" in out


def test_roundtrip_command(tmp_path, tiny_codec):
    tiny_codec.save(tmp_path / "codec")
    write_audio(tmp_path / "in.wav", melody([60, 67, 72, 76], sr=44100), 44100)  # 1 s
    assert main(["codec", "roundtrip", str(tmp_path / "in.wav"), "--out", str(tmp_path / "out.wav"),
                 "--codec", str(tmp_path / "codec"), "--plot", str(tmp_path / "cmp.png")]) == 0
    wav, sr = read_audio(tmp_path / "out.wav")
    assert sr == 32000 and wav.shape[1] == 32000
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_clear_error_and_exit_code(tmp_path, tiny_codec, capsys):
    tiny_codec.save(tmp_path / "codec")
    code = main(["codec", "roundtrip", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o.wav"),
                 "--codec", str(tmp_path / "codec")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_missing_codec_is_a_clear_error(tmp_path, capsys):
    write_audio(tmp_path / "in.wav", np.full(3200, 0.1, dtype=np.float32), 32000)
    assert main(["codec", "roundtrip", str(tmp_path / "in.wav"), "--out", str(tmp_path / "o.wav")]) == 2
    assert "stemgen codec fit" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "stemgen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "subcommands" in out.stdout
