"""Shared pytest fixtures.

Real recordings live outside the repository (``../shared/audio`` in CI); tests
find them through the ``REAL_AUDIO_DIR`` environment variable that ``.ci/run``
and the Makefile set. Tests that need them skip with a clear reason when it is
absent; everything else generates its fixtures at test time.
"""

import os
from pathlib import Path

import pytest


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
