"""Smoke test: a passing report, and a failing one that names the model and the check."""

import json
import subprocess
import sys

from arctax.training.smoke import format_table, smoke_test
from tests.conftest import REPO


def test_smoke_report_all_ok(tiny_cfg, tiny_data, tmp_path):
    report = smoke_test(tiny_cfg, tiny_data, tmp_path / "smoke.json")
    assert report["ok"], format_table(report)
    assert json.loads((tmp_path / "smoke.json").read_text()) == report
    for r in report["models"].values():
        assert set(r["checks"]) == {
            "finite_loss",
            "finite_grads",
            "nonzero_grads",
            "step_changes_weights",
            "trial69_recipe",
        }


def test_cli_fails_with_a_readable_table(tiny_data, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "arctax.cli",
        "--set",
        "data.max_cells=64",
        "--set",
        "models.decoder_only.n_layers=1",
        "--set",
        "trial69.optimizer.lr=0.1",
        "smoke",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "s.json"),
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "FAIL champion / trial69_recipe: lr: 0.1 != Trial 69 0.0018498849832733245" in res.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "arctax.cli",
            "--set",
            "trial69.bogus=1",
            "smoke",
            "--data",
            "x",
            "--out",
            "y",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "trial69" in bad.stderr and "bogus" in bad.stderr
