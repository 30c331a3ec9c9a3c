"""benchmarks/recipe_draw.sh refuses bad arguments before it trains anything."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_draw.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_without_a_seed_it_prints_its_usage():
    done = _run()
    assert done.returncode != 0
    assert "usage: benchmarks/recipe_draw.sh SEED" in done.stderr


def test_an_unknown_precision_is_named():
    done = _run("3", "fp16")
    assert done.returncode == 2
    assert "PRECISION must be bf16-mixed or 32-true, not 'fp16'" in done.stderr


def test_an_unknown_recipe_variant_is_named():
    done = _run("3", "bf16-mixed", "no_such_variant")
    assert done.returncode == 2
    assert "no configs/demo_no_such_variant.yaml" in done.stderr


def test_an_unknown_arm_is_named_before_anything_trains():
    done = subprocess.run(["bash", str(SCRIPT), "3"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "ARMS": "w4 w9"})
    assert done.returncode == 2
    assert "ARMS names w4, w8, w4k, w4kb, w4kbs or w4kbs05, not 'w9'" in done.stderr
