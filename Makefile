# Thin targets; the work is done by scripts/ and Python modules.
# Every target creates or reuses the virtual environment (scripts/venv.sh).
SHELL := /bin/bash
PY = "$$(scripts/venv.sh)/bin/python"
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# Real recordings used by some tests (skipped with a reason when absent).
export REAL_AUDIO_DIR ?= $(abspath $(CURDIR)/../shared/audio)
# The real-speech corpus (speech/<speaker>/, noise/, rir/) of make demo-real and its tests.
export REAL_CORPUS_DIR ?= $(abspath $(CURDIR)/../shared/real_corpus)
DEMO_DATA ?= data/demo
DEMO_RESULTS ?= results/demo_unet_tcm

.PHONY: help venv test lint format demo demo-corpus mixer-demo bench clean

help:
	@echo "make test         install what is needed, run ruff and the whole test suite"
	@echo "make demo         the main job end to end on the offline demo corpus"
	@echo "make mixer-demo   write example mixtures and a spectrogram PNG"
	@echo "make demo-corpus  generate the offline demo corpus into $(DEMO_DATA)"
	@echo "make bench        run the benchmarks (prints measured figures)"
	@echo "make venv         create/reuse the virtual environment and print its path"

venv:
	@scripts/venv.sh

test:
	@scripts/ensure_espeak.sh
	$(PY) -m ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --durations=25

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

demo-corpus:
	@scripts/ensure_espeak.sh
	$(PY) -m data_prepare.demo --out $(DEMO_DATA)

mixer-demo: demo-corpus
	$(PY) -m custom_modules.mixer_demo --data_folder $(DEMO_DATA) --out results/mixer_demo

# Generate the demo corpus if missing, train the CPU-size UNet-TCM for a bounded time
# (max_train_minutes in the YAML), test the best-STOI checkpoint and print the table.
# Run again to resume training from the last checkpoint.
demo: demo-corpus
	$(PY) recipes/unet_tcm/train.py recipes/unet_tcm/hparams/unet_cpu.yaml \
		--data_folder $(DEMO_DATA) --output_folder $(DEMO_RESULTS)

bench:
	$(PY) benchmarks/mixing.py
	$(PY) benchmarks/data_prepare.py
	$(PY) benchmarks/streaming.py
	$(PY) benchmarks/streaming_equivalence.py

clean:
	rm -rf results .pytest_cache .ruff_cache

# Enhancement quality of runs against peer systems (noisereduce, RNNoise, DeepFilterNet3) on a
# fixed test set, in the benchmark venv (scripts/venv.sh --bench: requirements-bench.txt too).
# make bench-quality QUALITY_TEST_SET=<fixed set folder> QUALITY_RUNS="<run folder> ..."
# [QUALITY_ARGS="--max_utterances 20 --output_json results/quality.json"]
QUALITY_TEST_SET ?=
QUALITY_RUNS ?=
QUALITY_ARGS ?=
BENCH_PY = "$$(scripts/venv.sh --bench)/bin/python"

.PHONY: bench-quality
bench-quality:
	@if [ -z "$(QUALITY_TEST_SET)" ]; then \
		echo "usage: make bench-quality QUALITY_TEST_SET=<fixed set folder> [QUALITY_RUNS=\"<run> ...\"] [QUALITY_ARGS=...]" >&2; \
		exit 2; \
	fi
	OMP_NUM_THREADS=1 $(BENCH_PY) benchmarks/quality.py --test_set "$(QUALITY_TEST_SET)" \
		$(foreach run,$(QUALITY_RUNS),--run "$(run)") $(QUALITY_ARGS)
