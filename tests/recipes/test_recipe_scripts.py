"""The recipes' extra scripts are thin commands over ``custom_modules`` entry points.

``recipes/spex_plus/{test,infer,model_size}.py`` and
``recipes/spectral_mask/export_inference.py`` hold no logic and no ``sys.path`` edit
(tests/test_architecture.py): each runs the ``main`` of a module that ``python -m`` also
runs from the clone's root, uninstalled. Their behaviour is tested with the modules
(tests/inference/test_spex_plus_recipe.py, test_spectral_mask_inference.py,
tests/evaluation/test_spex_plus_size.py); here both ways in start and reach their options.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# recipe script -> (module it runs, one of its options)
SCRIPTS = {
    "recipes/spex_plus/test.py": ("custom_modules.inference.tse_evaluation", "--test_dir"),
    "recipes/spex_plus/infer.py": ("custom_modules.inference.speaker_extraction", "--chunk_sec"),
    "recipes/spex_plus/model_size.py": (
        "custom_modules.evaluation.spex_plus_size",
        "--num_speakers",
    ),
    "recipes/spectral_mask/export_inference.py": (
        "custom_modules.inference.export",
        "--checkpoint_key",
    ),
}


def run(command, cwd, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        command, cwd=cwd, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_recipe_script_and_module_reach_the_same_options(script, tmp_path):
    module, option = SCRIPTS[script]
    source = (ROOT / script).read_text()
    assert f"from {module} import" in source and f"python -m {module}" in source
    # The script, with the project importable (pip install -e . / the Makefile's PYTHONPATH).
    by_script = run([sys.executable, str(ROOT / script), "--help"], tmp_path, str(ROOT))
    assert by_script.returncode == 0, by_script.stderr[-2000:]
    # The module from the clone's root, nothing installed.
    by_module = run([sys.executable, "-m", module, "--help"], ROOT)
    assert by_module.returncode == 0, by_module.stderr[-2000:]
    assert option in by_script.stdout and option in by_module.stdout
    options = lambda text: sorted(w for w in text.split() if w.startswith("--"))  # noqa: E731
    assert options(by_script.stdout) == options(by_module.stdout)
