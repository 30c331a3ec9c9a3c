# Two commands on a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install test test-fast demo bench-codec clean

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

demo: install
	$(BIN)/python -m stemgen demo --out $(DEMO_OUT)

bench-codec: install
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
