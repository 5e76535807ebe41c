"""A recipe copied from the template is discovered and runs in the harness."""

import shutil

import pytest
from test_recipes import ROOT, discover, run_recipe

from scripts.new_recipe import create_recipe


def test_copy_refuses_bad_names_and_overwrites(tmp_path):
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes" / "_template", recipes / "_template")
    with pytest.raises(ValueError, match="lower case"):
        create_recipe("My Recipe", "x", recipes)
    create_recipe("mine", "Mine", recipes)
    with pytest.raises(FileExistsError, match="already exists"):
        create_recipe("mine", "Mine", recipes)


@pytest.mark.slow
def test_template_copy_is_discovered_and_runs(demo_corpus, tmp_path):
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes" / "_template", recipes / "_template")
    new = create_recipe("my_enhancer", "My enhancer", recipes)
    text = (new / "train.py").read_text() + (new / "hparams" / "train.yaml").read_text()
    assert "TEMPLATE_" not in text
    pairs = discover(recipes)
    assert [(t.parent.name, h.name) for t, h in pairs] == [("my_enhancer", "train.yaml")]
    train_py, hparams = pairs[0]
    output = tmp_path / "run"
    proc = run_recipe(train_py, hparams, demo_corpus, output)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (output / "train_log.txt").is_file()
    assert (output / "test_report" / "per_utterance.csv").is_file()
