# Two commands on a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

CHORALES_ALL ?= $(HOME)/.cache/stemgen/data/chorales_all
DEMO_MODEL := stemgen/assets/demo_chorales

.PHONY: install test test-fast demo demo-model bench-codec clean

install: $(VENV)/.installed

# Order matters: the local CPU torch wheel first, so that nothing resolves another
# (CUDA) torch; encodec and tinysoundfont without their dependencies (torchaudio
# does not load beside this torch, pyaudio does not build); and never leave a
# torchaudio in the venv.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps encodec==0.1.1 tinysoundfont==0.3.7
	-$(BIN)/pip uninstall -q -y torchaudio 2>/dev/null
	$(BIN)/python -c "import stemgen, importlib.util as u; assert u.find_spec('torchaudio') is None"
	touch $@

test: install
	$(BIN)/python -m pytest -q

# Generates a bass and a drums stem for a held-out chorale with the shipped demo model.
demo: install
	$(BIN)/python -m stemgen demo --out $(DEMO_OUT)

# Rebuilds the shipped demo model from scratch (about 2 h 20 min on 2 CPU cores): the embedded
# codec fitted on 40 training chorales (float16), all 353 chorales rendered, the `small` preset
# trained with the listening recipe for 13000 steps or 2 h 05 min, whichever comes first
# (configs/demo_chorales.yaml), exported in float16 with its codec; it generates by default
# with naive sampling, level 0 at temperature 0.5 behind the silence gate, and drums with the
# paper's best (docs/listening.md).
demo-model: install
	$(BIN)/stemgen data chorales --limit 60
	$(BIN)/stemgen codec fit --out $(DEMO_MODEL)/codec --half true
	$(BIN)/stemgen data chorales --out $(CHORALES_ALL)
	rm -rf runs/demo_chorales
	$(BIN)/stemgen-train --config configs/demo_chorales.yaml --data.init_args.root $(CHORALES_ALL)
	$(BIN)/stemgen export runs/demo_chorales/checkpoints/last.ckpt $(DEMO_MODEL) --half true \
		--sampling '{"guidance": false, "w_position": 0.0, "temperature": [0.5, 1.0, 1.0, 1.0]}' \
		--instrument_sampling '{"drums": {}}'

bench-codec: install
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
