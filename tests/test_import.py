"""`import stemgen` is light: no torch, torchaudio or lightning until needed."""

import subprocess
import sys


def test_import_is_lazy_and_fast():
    code = ("import sys, time; t = time.perf_counter(); import stemgen; dt = time.perf_counter() - t; "
            "print(dt, 'torch' in sys.modules, 'torchaudio' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 3.0
    assert out[1:] == ["False", "False", "False"]


def test_codec_import_leaves_no_torchaudio():
    code = ("import sys, importlib.util; from stemgen.codec.encodec32 import EncodecCodec; EncodecCodec(); "
            "print('torchaudio' in sys.modules, importlib.util.find_spec('torchaudio') is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_lazy_attributes():
    import stemgen

    assert stemgen.resolve_instrument("bass").name == "Bass"
    assert callable(stemgen.load_codec)
