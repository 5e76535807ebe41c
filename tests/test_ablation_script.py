"""scripts/ablation.py reads what a run left behind (checkpoints, test summary, log)."""

import json

from scripts.ablation import collect


def _fake_run(root, summary):
    ckpt = root / "save" / "CKPT+1"
    ckpt.mkdir(parents=True)
    (ckpt / "CKPT.yaml").write_text("stoi: 0.6\nsi_snr: 3.0\npesq: 1.2\n")
    worse = root / "save" / "CKPT+0"
    worse.mkdir()
    (worse / "CKPT.yaml").write_text("stoi: 0.5\nsi_snr: 4.0\npesq: 1.1\n")
    (ckpt / "brain.ckpt").write_text("optimizer_step: 40\n")
    report = root / "test_report"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps(summary))
    (root / "train_log.txt").write_text("epoch: 1, lr: 1\nepoch: 2, lr: 1\n")


def test_collect_flat_summary(tmp_path):
    _fake_run(tmp_path, {"si_snr_delta": 2.0, "stoi_delta": 0.01, "pesq_delta": 0.1,
                         "si_snr_mixture": 0.0, "stoi_mixture": 0.6, "pesq_mixture": 1.2})  # fmt: skip
    result = collect(tmp_path, "stoi")
    assert result["valid"] == {"si_snr": 3.0, "stoi": 0.6, "pesq": 1.2}  # best by stoi
    assert result["test"] == {"si_snr": 2.0, "stoi": 0.01, "pesq": 0.1}
    assert result["epochs"] == 2 and result["steps"] == 40


def test_collect_summary_per_corruption(tmp_path):
    nested = {"si_snr_delta": 4.0, "stoi_delta": 0.02, "pesq_delta": 0.09, "si_snr_mixture": -1.0}
    _fake_run(tmp_path, {"num_utterances": 3, "per_corruption": {"mixer": nested}})
    result = collect(tmp_path, "si_snr")
    assert result["valid"]["si_snr"] == 4.0
    assert result["test"] == {"si_snr": 4.0, "stoi": 0.02, "pesq": 0.09}
    assert result["test_mixture"]["si_snr"] == -1.0
