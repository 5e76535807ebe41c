"""The run flow every recipe shares: set up the experiment, train, test the best checkpoint.

A recipe's ``__main__`` then reads::

    hparams, run_opts = setup_experiment(sys.argv[1:])
    run_on_main(prepare_data, kwargs={"hparams": hparams})
    train_and_evaluate(MyBrain, hparams, run_opts, *datasets(hparams))

The checkpoint kept during training (``save_and_keep_only(max_keys=[...])``
in :class:`custom_modules.brain.EnhancementBrain`) and the one evaluated here
are chosen by the same ``checkpoint_key`` hparam, so they cannot disagree.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml


def setup_experiment(argv):
    """Parse the command line, join DDP if launched by torchrun, load the YAML.

    Arguments
    ---------
    argv : list of str
        ``[hparams_file, --key value, ...]`` (SpeechBrain's command line).

    Returns
    -------
    (dict, dict)
        The loaded hyperparameters and SpeechBrain's run options.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op unless launched by torchrun
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    # SpeechBrain copies its caller (this file) next to the results; keep the recipe too.
    recipe_script = getattr(sys.modules["__main__"], "__file__", None)
    if recipe_script and sb.utils.distributed.if_main_process():
        shutil.copy(recipe_script, Path(hparams["output_folder"]) / Path(recipe_script).name)
    return hparams, run_opts


def train_and_evaluate(brain_class, hparams, run_opts, train_set, valid_set, test_set):
    """Fit ``brain_class`` then evaluate its best ``checkpoint_key`` checkpoint on the test set.

    Keys read: ``modules``, ``opt_class``, ``checkpointer``, ``epoch_counter``,
    ``train_loader_options``, ``valid_loader_options``, ``test_loader_options``,
    ``checkpoint_key``.

    Returns
    -------
    speechbrain.Brain
        The trained brain (its ``test_summary`` holds the test means).
    """
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        valid_set,
        train_loader_kwargs=hparams["train_loader_options"],
        valid_loader_kwargs=hparams["valid_loader_options"],
    )
    brain.evaluate(
        test_set,
        max_key=hparams["checkpoint_key"],
        test_loader_kwargs=hparams["test_loader_options"],
    )
    return brain
