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
# make demo-real: a plain corpus root (speech/<speaker>/, noise/, rir/): ../shared/real_corpus
# when present, else data/real (python -m data_prepare.download speechocean762 rirs_noises --out data/real).
REAL_CORPUS ?= $(if $(wildcard $(REAL_CORPUS_DIR)/speech),$(REAL_CORPUS_DIR),data/real)
REAL_RESULTS ?= results/real_unet_tcm
REAL_TRAIN_MINUTES ?= 52
# make demo-real-tse: SpEx+ on the real speakers of REAL_CORPUS; REAL_TSE_ARGS adds YAML overrides
# (ablations: make demo-real-tse REAL_TSE_RESULTS=results/x REAL_TSE_ARGS="--ce_weight 0").
REAL_TSE_RESULTS ?= results/real_spex_plus
REAL_TSE_TRAIN_MINUTES ?= 50
REAL_TSE_ARGS ?=
# With ../shared/real_corpus: its own noise/ and rir/ files are the held-out test material; the
# real noises and RIRs of ../shared/audio train, two noises and one strongly reverberant room of
# them (sb_rir1: direct-to-reverberant ratio -1.7 dB) held out for validation, with one game
# package's effects (minetest-data: 96 files, 2.1 min) when the game effects train.
# Other roots use the YAML's held-out fractions.
REAL_USES_SHARED = $(and $(filter $(REAL_CORPUS_DIR),$(abspath $(REAL_CORPUS))),$(wildcard $(REAL_AUDIO_DIR)/noise))
REAL_VALID_GAME = $(if $(filter 1,$(REAL_GAME_SFX)),$(comma) "*/game_sfx/minetest-data/*")
REAL_SHARED_HELD_OUT = --extra_rir_folders "[$(REAL_AUDIO_DIR)/rir]" \
	--test_patterns "[noise/*, rir/*]" --noise_test_ratio 0 --rir_test_ratio 0 \
	--valid_patterns '["*/sc_exercise_bike.wav", "*/tam_babble_single403a.wav", "*/sb_rir1.wav"$(REAL_VALID_GAME)]' \
	--noise_valid_ratio 0 --rir_valid_ratio 0
# (a variable of its own: the commas in these lists would split the arguments of $(if)).
REAL_HELD_OUT ?= $(if $(REAL_USES_SHARED),$(REAL_SHARED_HELD_OUT))
# Recorded sound effects of 8 free games packaged by Debian (python -m data_prepare.download
# game_sfx: 1.0 GB from deb.debian.org once, about 2 minutes; skipped when done) train as more
# kinds of real noise, 45 % of the noise draws, with the loss weighting over-suppression 4 times
# (recipes/unet_tcm/README.md, ablation rounds 10-12). REAL_GAME_SFX=0 trains without both.
# With roots other than ../shared/real_corpus the YAML's held-out fractions apply to them too.
REAL_GAME_SFX ?= 1
GAME_SFX_DIR ?= data/game_sfx
REAL_ARGS ?=
comma := ,
space := $(subst ,, )
REAL_GAME_FOLDER = $(if $(filter 1,$(REAL_GAME_SFX)),$(abspath $(GAME_SFX_DIR))/noise/game_sfx)
REAL_NOISE_FOLDERS = $(strip $(if $(REAL_USES_SHARED),$(REAL_AUDIO_DIR)/noise) $(REAL_GAME_FOLDER))
# The plain layout names extra noise folders extra_noise_<index in the list>.
REAL_GAME_SOURCE = extra_noise_$(if $(REAL_USES_SHARED),1,0)
REAL_GAME_ARGS = --train_noise_mix "{$(REAL_GAME_SOURCE): 0.45, generated/babble: 0.2, generated/synthetic_noise: 0.1, '*': 0.25}" \
	--over_suppression_weight 4
REAL_GAME_DOWNLOAD = $(PY) -m data_prepare.download game_sfx --out $(GAME_SFX_DIR) || { \
	echo "make demo-real: could not get the game sound effects into $(GAME_SFX_DIR) (see above);" \
		"REAL_GAME_SFX=0 trains without them" >&2; exit 2; }
REAL_NOISE_ARGS = $(if $(REAL_NOISE_FOLDERS),--extra_noise_folders "[$(subst $(space),$(comma),$(REAL_NOISE_FOLDERS))]") \
	$(if $(REAL_GAME_FOLDER),$(REAL_GAME_ARGS))

.PHONY: help venv test lint format demo demo-real demo-real-tse demo-corpus mixer-demo bench clean

help:
	@echo "make test         install what is needed, run ruff and the whole test suite"
	@echo "make demo         the main job end to end on the offline demo corpus"
	@echo "make demo-real    the main job on real speech (REAL_CORPUS), <= 60 min on 2 cores"
	@echo "                  (downloads the game sound effects once into GAME_SFX_DIR; REAL_GAME_SFX=0: without)"
	@echo "make demo-real-tse  SpEx+ on REAL_CORPUS's speakers, tested on unseen ones, <= 60 min"
	@echo "make mixer-demo   write example mixtures and a spectrogram PNG"
	@echo "make demo-corpus  generate the offline demo corpus into $(DEMO_DATA)"
	@echo "make bench        run the benchmarks (prints measured figures)"
	@echo "make venv         create/reuse the virtual environment and print its path"

venv:
	@scripts/venv.sh

test:
	@scripts/ensure_espeak.sh
	@scripts/ensure_chromium.sh
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
	$(PY) -m custom_modules.data.mixer_demo --data_folder $(DEMO_DATA) --out results/mixer_demo

# Generate the demo corpus if missing, train the CPU-size UNet-TCM for a bounded time
# (max_train_minutes in the YAML), test the best-STOI checkpoint and print the table.
# Run again to resume training from the last checkpoint.
demo: demo-corpus
	$(PY) recipes/unet_tcm/train.py recipes/unet_tcm/hparams/unet_cpu.yaml \
		--data_folder $(DEMO_DATA) --output_folder $(DEMO_RESULTS)

# Train the CPU-size UNet-TCM on real speech for REAL_TRAIN_MINUTES (data preparation and the
# test add a few minutes), test the best-STOI checkpoint on the speaker- and noise-disjoint
# real test split and print the table. Run again to resume (the time budget continues).
demo-real:
	@if [ ! -d "$(REAL_CORPUS)/speech" ]; then \
		echo "make demo-real: no plain corpus root at $(REAL_CORPUS) (needs speech/<speaker>/...);" \
			"get one with: python -m data_prepare.download speechocean762 rirs_noises --out data/real" >&2; \
		exit 2; \
	fi
	$(if $(REAL_GAME_FOLDER),$(REAL_GAME_DOWNLOAD))
	$(PY) recipes/unet_tcm/train.py recipes/unet_tcm/hparams/unet_cpu.yaml \
		--data_folder $(REAL_CORPUS) --output_folder $(REAL_RESULTS) \
		--max_train_minutes $(REAL_TRAIN_MINUTES) --number_of_epochs 1000 --train_batches_per_epoch 200 \
		$(REAL_HELD_OUT) $(REAL_NOISE_ARGS) $(REAL_ARGS)

# Train the CPU-size SpEx+ on the speakers of REAL_CORPUS (speech/<speaker>/...: speaker-disjoint
# train/valid/test by valid_ratio/test_ratio) for REAL_TSE_TRAIN_MINUTES (data preparation and the
# test add a few minutes), test the best checkpoint on triplets of the unseen test speakers (also
# with a zero and another speaker's reference) and print the table. Run again to resume.
demo-real-tse:
	@if [ ! -d "$(REAL_CORPUS)/speech" ]; then \
		echo "make demo-real-tse: no plain corpus root at $(REAL_CORPUS) (needs speech/<speaker>/...);" \
			"get one with: python -m data_prepare.download speechocean762 --out data/real" >&2; \
		exit 2; \
	fi
	$(PY) recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus_cpu.yaml \
		--data_folder $(REAL_CORPUS) --output_folder $(REAL_TSE_RESULTS) \
		--max_train_minutes $(REAL_TSE_TRAIN_MINUTES) --number_of_epochs 1000 \
		--train_batches_per_epoch 100 --num_valid_examples 60 --num_test_examples 300 $(REAL_TSE_ARGS)

# Every benchmark writes its JSON into BENCH_OUT; the README rows are printed from them at the end.
# The streaming benchmark runs in the benchmark venv, so that RNNoise and DeepFilterNet3 are timed too.
BENCH_OUT ?= results/bench
bench:
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.mixing --output_json $(BENCH_OUT)/mixing.json
	$(PY) -m benchmarks.data_prepare --output_json $(BENCH_OUT)/data_prepare.json
	OMP_NUM_THREADS=1 $(BENCH_PY) -m benchmarks.streaming --output_json $(BENCH_OUT)/streaming.json
	$(PY) -m benchmarks.streaming_equivalence --output_json $(BENCH_OUT)/streaming_equivalence.json
	$(PY) -m benchmarks.readme_rows $(BENCH_OUT)/mixing.json $(BENCH_OUT)/streaming.json

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
	OMP_NUM_THREADS=1 $(BENCH_PY) -m benchmarks.quality --test_set "$(QUALITY_TEST_SET)" \
		$(foreach run,$(QUALITY_RUNS),--run "$(run)") $(QUALITY_ARGS)
