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

# Rebuilds the shipped demo model from scratch (about 3 h on a 2-core CPU: rendering and tokenizing about
# 40 min, 7500 training steps at 0.8 s (native bf16) to 1.2 s (float32) each, the fine-tune 10 min): the embedded codec fitted on
# 40 training chorales (float16), all 353 chorales rendered and tokenized (the paper's random-subset
# pairs and as many again at half their number whose context is the whole mix but the target), the
# `small` preset trained with the full-context recipe for 7500 steps with the fine-tune's task mix from
# the first step (configs/demo_full_context.yaml + configs/demo_full_context_7500.yaml +
# configs/demo_full_context_taskmix.yaml: level 0 on 4 in 7 examples, fully masked 80% of the time
# there), then fine-tuned for 600 steps at the peak rate toward a whole level 0 from the whole mix
# (configs/demo_finetune_candidate.yaml + configs/demo_finetune_600.yaml), both stages reading the
# context's pitch-class profile beside its tokens (configs/demo_context_chroma.yaml, since the
# thirty-ninth session: 75 min for the base in bf16 on a 2-core Xeon with AMX), exported in float16 with
# its codec. It generates by default with nested guidance toward the context (lambda_a 3, lambda_i 1),
# level 0 at temperature 0.5 behind the silence gate; drums with the paper's best made nested
# (docs/listening.md, sixteenth and twenty-eighth sessions). Its instrument-free guidance branches p(t|a)
# and p(t) come from a second network (since the forty-first session): the same base fine-tuned for 600
# steps with the kitless pairs (the crops drawn again with the drums left out of every pitched target's
# context, 7 min to tokenize) as instrument-free examples (configs/demo_finetune_kitless_branch.yaml),
# joined as the ensemble's null-instrument member (`stemgen ensemble --null_instrument_members`); the
# default never runs those rows. The earlier demo models are kept:
# benchmarks/candidates/taskmix_600 (the same recipe without the chroma, shipped from the twenty-ninth
# to the thirty-eighth session), benchmarks/candidates/finetune_600 (the same fine-tune of the base without the task mix, shipped
# from the nineteenth to the twenty-eighth session), benchmarks/candidates/finetune_1200 (its step
# 1200) and benchmarks/candidates/demo_chorales_13000 (configs/demo_chorales.yaml, 13000 steps).
demo-model: install
	$(BIN)/stemgen data chorales --limit 60
	$(BIN)/stemgen codec fit --out $(DEMO_MODEL)/codec --half true
	$(BIN)/stemgen data chorales --out $(CHORALES_ALL)
	rm -rf benchmarks/gpu_tokens benchmarks/gpu_tokens_full benchmarks/gpu_tokens_pitched runs/full_context_taskmix \
		runs/finetune_taskmix runs/finetune_branch
	$(BIN)/stemgen data tokens benchmarks/gpu_tokens --data chorales --root $(CHORALES_ALL) \
		--codec $(DEMO_MODEL)/codec --crop_seconds 8 --draws 8
	$(BIN)/stemgen data tokens benchmarks/gpu_tokens_full --data chorales --root $(CHORALES_ALL) \
		--codec $(DEMO_MODEL)/codec --crop_seconds 8 --draws 4 --full_context 1.0
	$(BIN)/stemgen data tokens benchmarks/gpu_tokens_pitched --data chorales --root $(CHORALES_ALL) \
		--codec $(DEMO_MODEL)/codec --crop_seconds 8 --draws 4 --full_context 1.0 --pitched_context 1.0
	$(BIN)/stemgen-train --config configs/demo_full_context.yaml --config configs/demo_full_context_7500.yaml \
		--config configs/demo_full_context_taskmix.yaml --config configs/demo_context_chroma.yaml \
		--trainer.default_root_dir runs/full_context_taskmix
	$(BIN)/stemgen export runs/full_context_taskmix/checkpoints/last.ckpt runs/full_context_taskmix/export --half true
	$(BIN)/stemgen-train --config configs/demo_finetune_candidate.yaml --config configs/demo_finetune_600.yaml \
		--config configs/demo_context_chroma.yaml \
		--model.init_from runs/full_context_taskmix/export --trainer.default_root_dir runs/finetune_taskmix
	$(BIN)/stemgen export runs/finetune_taskmix/checkpoints/last.ckpt runs/finetune_taskmix/export --half true \
		--settings configs/gpu_export_shipped.json
	$(BIN)/stemgen-train --config configs/demo_finetune_candidate.yaml --config configs/demo_finetune_600.yaml \
		--config configs/demo_finetune_kitless_branch.yaml --config configs/demo_context_chroma.yaml \
		--model.init_from runs/full_context_taskmix/export --trainer.default_root_dir runs/finetune_branch
	$(BIN)/stemgen export runs/finetune_branch/checkpoints/last.ckpt runs/finetune_branch/export --half true
	$(BIN)/stemgen ensemble $(DEMO_MODEL) '["runs/finetune_taskmix/export", "runs/finetune_branch/export"]' \
		--null_instrument_members '[2]'

bench-codec: install
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
