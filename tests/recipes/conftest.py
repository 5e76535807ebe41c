"""Fixtures of the recipe harness: one tiny demo corpus per test session."""

import shutil

import pytest

from data_prepare.demo import generate_demo_corpus


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The offline demo corpus (tiny preset), generated once per session."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make test installs it; see README)")
    out = tmp_path_factory.mktemp("demo_corpus") / "demo"
    return generate_demo_corpus(out, seed=0, size="tiny", progress=False)
