#!/usr/bin/env python3
"""Recipe: SpEx+ target speaker extraction (Ge et al., Interspeech 2020).

Given a mixture of two speakers and a reference (enrolment) utterance of the
target speaker, the model (``custom_modules/models/spex_plus.py``) outputs the
target speaker's speech. Training minimises the multi-scale negative SI-SDR
(0.8 / 0.1 / 0.1) plus 0.5 x the cross-entropy of the speaker-classification
head over the training speakers; validation and test score the short-window
output ``s1`` only (SI-SDR, SI-SDR improvement, PESQ). The best-SI-SDR
checkpoint is evaluated on the test set at the end.

Data (``custom_modules/data/tse_data.py``) from ``data_folder``: a folder holding
``LibriSpeech/`` (e.g. the demo corpus; speaker-disjoint train-clean-100 /
dev-clean / test-clean) or a plain corpus root (``speech/<speaker>/...``,
speakers split by ``valid_ratio`` / ``test_ratio``); triplets: a fixed
training set (``train_mode: fixed``, ``num_train_triplets``) or fresh
triplets every epoch (``train_mode: onthefly``, optionally with a TIR
curriculum), and fixed, seeded validation/test sets. The classes of the
speaker head are the training speakers that can be targets
(``<prep_folder>/train_speakers.json``); ``num_speakers: 0`` in the YAML gives
the head their number once the data is prepared (the run's ``hyperparams.yaml``
keeps 0; a checkpoint sizes the head when ``infer.py``/``test.py`` load it).
The Brain (``SpexPlusBrain``), diagnostics, learning-rate policies, the
curriculum and speaker-branch pretraining: ``custom_modules/training/tse.py``.

To run::

    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus.yaml \
        --data_folder /data            # holds LibriSpeech/

    # CPU size, on the offline demo corpus (python -m data_prepare.demo --out data/demo)
    python recipes/spex_plus/train.py recipes/spex_plus/hparams/spex_plus_cpu.yaml \
        --data_folder data/demo       # or a plain corpus root: make demo-real-tse

Then ``test.py`` (any custom directory, chunked evaluation) and ``infer.py``
(one mixture + one enrolment), see the README.
"""

import sys
from pathlib import Path

import speechbrain as sb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.audio.files import read_json  # noqa: E402
from custom_modules.data.tse_data import prepare_tse_data, speakers_file, tse_datasets  # noqa: E402
from custom_modules.training.experiment import setup_experiment, train_and_evaluate  # noqa: E402
from custom_modules.training.tse import SpexPlusBrain, resolve_num_speakers  # noqa: E402

if __name__ == "__main__":
    hparams, run_opts = setup_experiment(sys.argv[1:])
    # Manifests, speakers and triplet sets: once, on the main process.
    progress = not run_opts.noprogressbar
    sb.utils.distributed.run_on_main(
        prepare_tse_data, args=[hparams], kwargs={"progress": progress}
    )
    speakers = read_json(speakers_file(hparams))
    resolve_num_speakers(hparams, len(speakers))  # the head's size is known only now
    train_and_evaluate(SpexPlusBrain, hparams, run_opts, *tse_datasets(hparams, speakers))
