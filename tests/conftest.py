"""Shared pytest fixtures.

Real recordings live outside the repository (``../shared/audio`` in CI); tests
find them through the ``REAL_AUDIO_DIR`` environment variable that ``.ci/run``
and the Makefile set. Tests that need them skip with a clear reason when it is
absent; everything else generates its fixtures at test time.
"""

import os
import sys
from pathlib import Path

import pytest
import speechbrain  # noqa: F401  (registers SpeechBrain's lazy modules in sys.modules)
from speechbrain.utils.importutils import LazyModule


def _hide_unloaded_lazy_modules():
    """Give SpeechBrain's not-yet-loaded lazy modules ``__file__ = None``.

    Hypothesis scans ``sys.modules`` with ``getattr(module, "__file__", None)``;
    on a lazy module that triggers the import, and the optional k2 integration
    then raises ImportError (k2 is not installed) in the middle of a test.
    """
    for module in list(sys.modules.values()):
        if isinstance(module, LazyModule) and module.lazy_module is None:
            module.__dict__["__file__"] = None


_hide_unloaded_lazy_modules()


@pytest.fixture(autouse=True)
def _lazy_modules_stay_hidden():
    """Modules imported by a test may register more lazy modules."""
    _hide_unloaded_lazy_modules()


def _real_audio_dir():
    value = os.environ.get("REAL_AUDIO_DIR")
    if value and (Path(value) / "speech").is_dir():
        return Path(value)
    return None


@pytest.fixture(scope="session")
def real_audio_dir():
    """Folder of real 16 kHz recordings (speech/, noise/, rir/, pairs/)."""
    path = _real_audio_dir()
    if path is None:
        pytest.skip("REAL_AUDIO_DIR is not set or has no speech/ folder (see README)")
    return path


@pytest.fixture(scope="session")
def real_corpus_subset(tmp_path_factory):
    """A few seconds of ``REAL_CORPUS_DIR`` (../shared/real_corpus) as a plain corpus root.

    Symbolic links (nothing copied): 8 speakers x 3 utterances, the corpus'
    noise and RIR files, and its MANIFEST.tsv.
    """
    value = os.environ.get("REAL_CORPUS_DIR")
    source = Path(value) if value else None
    if source is None or not (source / "speech").is_dir():
        pytest.skip("REAL_CORPUS_DIR is not set or has no speech/ folder (see README)")
    root = tmp_path_factory.mktemp("real_corpus_subset") / "corpus"
    speakers = sorted(p for p in (source / "speech").iterdir() if p.is_dir())[:8]
    for speaker in speakers:
        (root / "speech" / speaker.name).mkdir(parents=True)
        for utterance in sorted(speaker.iterdir())[:3]:
            (root / "speech" / speaker.name / utterance.name).symlink_to(utterance)
    for kind in ("noise", "rir"):
        (root / kind).mkdir()
        for path in sorted((source / kind).iterdir()):
            (root / kind / path.name).symlink_to(path)
    (root / "MANIFEST.tsv").symlink_to(source / "MANIFEST.tsv")
    return root


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The offline demo corpus (tiny preset), generated once per session (per xdist worker)."""
    import shutil

    from data_prepare.demo.corpus import generate_demo_corpus

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make test installs it; see README)")
    out = tmp_path_factory.mktemp("demo_corpus") / "demo"
    return generate_demo_corpus(out, seed=0, size="tiny", progress=False)


@pytest.fixture(scope="session")
def unet_tcm_cpu_demo_run(demo_corpus, tmp_path_factory):
    """Output folder of a debug run of ``recipes/unet_tcm`` with ``unet_cpu.yaml`` (once per session).

    Trained a few batches on the tiny demo corpus, exactly as the recipe
    harness runs it (``tests/recipes/test_recipes.py::run_recipe``): a real
    checkpoint with real (if barely trained) weights, for tests of inference
    code that need one.
    """
    from tests.recipes.test_recipes import run_recipe

    root = Path(__file__).resolve().parents[1]
    output = tmp_path_factory.mktemp("unet_tcm_cpu_run") / "run"
    proc = run_recipe(
        root / "recipes" / "unet_tcm" / "train.py",
        root / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml",
        demo_corpus,
        output,
    )
    if proc.returncode != 0:
        pytest.fail(f"unet_tcm debug run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return output
