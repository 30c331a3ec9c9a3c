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


def test_missing_codec_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import stemgen.codec as codec_pkg

    monkeypatch.setattr(codec_pkg, "shipped_embedded_dir", lambda: tmp_path / "no_shipped_codec")
    write_audio(tmp_path / "in.wav", np.full(3200, 0.1, dtype=np.float32), 32000)
    assert main(["codec", "roundtrip", str(tmp_path / "in.wav"), "--out", str(tmp_path / "o.wav")]) == 2
    assert "stemgen codec fit" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "stemgen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "subcommands" in out.stdout
    help_of = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("    ") and line.split()}
    for command in ("data", "codec", "bench", "generate", "demo", "export"):
        assert len(help_of[command].split()) > 3, f"`{command}` has no description in stemgen --help"


def test_generate_command_writes_stem_mix_and_plot(tmp_path, tiny_export, capsys):
    import soundfile as sf

    from .conftest import SR, melody

    sf.write(tmp_path / "song.wav", melody([60, 64, 67, 72, 48, 52]), SR)
    args = ["generate", str(tmp_path / "song.wav"), "--instrument", "bass", "-o", str(tmp_path / "bass.wav"),
            "--model", str(tiny_export), "--seed", "3", "--steps", "[3,2,2,1]", "--mix", str(tmp_path / "mix.wav"),
            "--plot", str(tmp_path / "bass.png")]
    assert main(args) == 0
    err = capsys.readouterr()
    assert "level 1/4" in err.err and "level 4/4" in err.err and "seed 3" in err.out
    assert sf.info(str(tmp_path / "bass.wav")).frames == sf.info(str(tmp_path / "song.wav")).frames
    assert sf.info(str(tmp_path / "mix.wav")).samplerate == SR
    assert (tmp_path / "bass.png").read_bytes()[:4] == b"\x89PNG"
    first, _ = sf.read(tmp_path / "bass.wav")
    assert main(args[:-4] + ["--naive", "true"]) == 0  # other settings, other stem
    second, _ = sf.read(tmp_path / "bass.wav")
    assert main(args[:-4]) == 0  # same seed and settings: the same stem again
    third, _ = sf.read(tmp_path / "bass.wav")
    assert np.array_equal(first, third) and not np.array_equal(first, second)
    assert main(args[:-4] + ["--sampler", "eager"]) == 0  # the reference sampler: the same stem
    eager, _ = sf.read(tmp_path / "bass.wav")
    assert np.array_equal(first, eager)
    # --guidance 3 with the paper's w_s is the default setting, written out: the same stem
    assert main(args[:-4] + ["--guidance", "3", "--causal_bias", "0.1", "--temperature", "1"]) == 0
    explicit, _ = sf.read(tmp_path / "bass.wav")
    assert np.array_equal(first, explicit)
    # one temperature per level; the silence gate is a no-op at temperature 1, on or off
    assert main(args[:-4] + ["--temperature", "[1,1,1,1]", "--silence_gate", "false"]) == 0
    ungated, _ = sf.read(tmp_path / "bass.wav")
    assert np.array_equal(first, ungated)
    assert main(args[:-4] + ["--temperature", "[0.5,1,1,1]", "--silence_temperature", "0.3"]) == 0
    cooler, _ = sf.read(tmp_path / "bass.wav")
    assert cooler.shape == first.shape and not np.array_equal(first, cooler)
    # inpainting a kept stem file: outside the span the kept stem's (re-encoded) tokens stay
    sf.write(tmp_path / "kept.wav", first, SR)
    assert main(args[:4] + ["-o", str(tmp_path / "fixed.wav"), "--model", str(tiny_export), "--steps", "[3,2,2,1]",
                            "--keep", str(tmp_path / "kept.wav"), "--regenerate", "[0.5,1.0]"]) == 0
    assert sf.info(str(tmp_path / "fixed.wav")).frames == len(first)


def test_generate_command_errors(tmp_path, tiny_export, capsys):
    import soundfile as sf

    from .conftest import SR, melody

    sf.write(tmp_path / "song.wav", melody([60, 64]), SR)
    assert main(["generate", str(tmp_path / "song.wav"), "--instrument", "kazoo", "--model", str(tiny_export)]) == 2
    assert "unknown instrument 'kazoo'" in capsys.readouterr().err
    # a typo is refused before anything is loaded or announced, with the closest names
    assert main(["generate", str(tmp_path / "song.wav"), "--instrument", "bas", "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'bass'" in err and "generating" not in err and "no model" not in err
    assert main(["generate", str(tmp_path / "song.wav"), "--naive", "true", "--guidance", "2",
                 "--model", str(tiny_export)]) == 2
    assert "--naive samples without guidance" in capsys.readouterr().err
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    assert main(["generate", str(tmp_path / "silent.wav"), "--model", str(tiny_export)]) == 2
    assert "silence" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "song.wav"), "--model", str(tmp_path / "no_model")]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "song.wav"), "--model", str(tiny_export), "--sampler", "fast"]) == 2
    assert "sampler must be 'fused' or 'eager', got 'fast'" in capsys.readouterr().err
