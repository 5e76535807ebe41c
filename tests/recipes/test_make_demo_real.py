"""``make demo-real`` assembles a training command the recipe accepts.

``make -n`` prints the commands without running them; the UNet-TCM command is
parsed the way ``train.py`` parses it (SpeechBrain's ``parse_arguments``) and
its overrides are loaded into ``unet_cpu.yaml``: a key given twice (the noise
folders of the held-out split and of the game sound effects) would fail here,
and the noise-mix share must name the game folder's place in the list.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _demo_real_hparams(**variables):
    """The YAML loaded with the training overrides of ``make -n demo-real``; the commands."""
    args = [f"{key}={value}" for key, value in variables.items()]
    proc = subprocess.run(
        ["make", "-s", "-n", "demo-real", *args], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.replace("\\\n", " ")
    line = next(c for c in commands.splitlines() if "recipes/unet_tcm/train.py" in c)
    argv = shlex.split(line)
    argv = argv[argv.index("recipes/unet_tcm/train.py") + 1 :]
    hparams_file, _, overrides = sb.parse_arguments(argv)
    assert Path(hparams_file) == Path("recipes/unet_tcm/hparams/unet_cpu.yaml")
    with open(YAML, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides), commands


@pytest.fixture
def shared(tmp_path):
    """A fake ../shared: a corpus root with speech/ and an audio folder with noise/ and rir/."""
    corpus, audio = tmp_path / "real_corpus", tmp_path / "audio"
    for folder in (corpus / "speech", audio / "noise", audio / "rir"):
        folder.mkdir(parents=True)
    return corpus, audio


def _game_source(hparams, game_folder):
    (source,) = [key for key in hparams["train_noise_mix"] if key.startswith("extra_noise_")]
    index = int(source.rsplit("_", 1)[1])
    return hparams["extra_noise_folders"][index] == game_folder


def test_shared_corpus_trains_with_its_noises_and_the_game_effects(shared, tmp_path):
    corpus, audio = shared
    game = tmp_path / "game"
    hparams, commands = _demo_real_hparams(
        REAL_CORPUS_DIR=corpus, REAL_AUDIO_DIR=audio, GAME_SFX_DIR=game
    )
    game_folder = f"{game}/noise/game_sfx"
    assert hparams["extra_noise_folders"] == [f"{audio}/noise", game_folder]
    assert hparams["extra_rir_folders"] == [f"{audio}/rir"]
    assert hparams["test_patterns"] == ["noise/*", "rir/*"]
    # validation: two recorded noises, one game package, one strongly reverberant room
    assert hparams["valid_patterns"] == [
        "*/sc_exercise_bike.wav",
        "*/tam_babble_single403a.wav",
        "*/sb_rir1.wav",
        "*/game_sfx/minetest-data/*",
    ]
    assert hparams["rir_valid_ratio"] == 0 and hparams["noise_valid_ratio"] == 0
    assert _game_source(hparams, game_folder)
    assert sum(hparams["train_noise_mix"].values()) == pytest.approx(1.0)
    assert hparams["over_suppression_weight"] == 4
    assert f"data_prepare.download game_sfx --out {game}" in commands


def test_other_root_trains_with_the_game_effects_only(shared, tmp_path):
    _, audio = shared
    root, game = tmp_path / "other_root", tmp_path / "game"
    hparams, _ = _demo_real_hparams(REAL_CORPUS=root, REAL_AUDIO_DIR=audio, GAME_SFX_DIR=game)
    game_folder = f"{game}/noise/game_sfx"
    assert hparams["extra_noise_folders"] == [game_folder]
    assert hparams["extra_rir_folders"] == []
    assert hparams["test_patterns"] == []  # the YAML's held-out fractions
    assert _game_source(hparams, game_folder)


def test_without_the_game_effects_nothing_of_them_is_passed(shared, tmp_path):
    corpus, audio = shared
    hparams, commands = _demo_real_hparams(
        REAL_CORPUS_DIR=corpus, REAL_AUDIO_DIR=audio, REAL_GAME_SFX=0
    )
    assert hparams["extra_noise_folders"] == [f"{audio}/noise"]
    assert hparams["train_noise_mix"] == {}
    assert hparams["over_suppression_weight"] == 1.0
    assert "game_sfx" not in commands
    assert hparams["valid_patterns"][-1] == "*/sb_rir1.wav"


def test_real_args_add_overrides(shared, tmp_path):
    corpus, audio = shared
    hparams, _ = _demo_real_hparams(
        REAL_CORPUS_DIR=corpus, REAL_AUDIO_DIR=audio, REAL_ARGS="--crop_sec 3.0"
    )
    assert hparams["crop_sec"] == 3.0
