"""The `sextant datasets` commands as a shell user runs them (real process, real workspace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.conftest import REPO_ROOT


def sextant(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        timeout=120,
    )


def test_upload_list_show_download(example_csv: Path, sextant_home: Path, tmp_path: Path) -> None:
    upload = sextant("datasets", "upload", str(example_csv), "--name", "churn", "--json")
    assert upload.returncode == 0, upload.stderr
    payload = json.loads(upload.stdout)
    assert payload["name"] == "churn" and payload["version"] == 1 and payload["created"] is True
    assert payload["rows"] == pl.read_csv(example_csv).height and payload["columns"] == 14

    again = json.loads(sextant("datasets", "upload", str(example_csv), "--name", "churn", "--json").stdout)
    assert again["version"] == 1 and again["created"] is False

    listing = json.loads(sextant("datasets", "list", "--json").stdout)
    assert listing["total"] == 1 and listing["datasets"][0]["latest_version"] == 1

    shown = sextant("datasets", "show", "churn:1", "--json")
    assert json.loads(shown.stdout)["versions"] == [1]
    text = sextant("datasets", "show", "churn").stdout
    assert "churn:1" in text and "customer_id" in text

    target = tmp_path / "out.csv"
    download = sextant("datasets", "download", "churn", "--output", str(target))
    assert download.returncode == 0, download.stderr
    assert pl.read_csv(target).height == payload["rows"]


def test_bad_inputs_exit_non_zero_with_a_message(tmp_path: Path, sextant_home: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    result = sextant("datasets", "upload", str(ragged), "--name", "r", "--json")
    assert result.returncode == 1
    assert "ragged rows" in result.stderr
    assert "ragged rows" in json.loads(result.stdout)["error"]

    bad_name = sextant("datasets", "upload", str(ragged), "--name", "../x")
    assert bad_name.returncode == 1 and "path separator" in bad_name.stderr

    missing = sextant("datasets", "upload", str(tmp_path / "nope.csv"), "--name", "n")
    assert missing.returncode == 1 and "no such file" in missing.stderr

    unknown = sextant("datasets", "show", "ghost")
    assert unknown.returncode == 1 and "'ghost' does not exist" in unknown.stderr
    assert json.loads(sextant("datasets", "list", "--json").stdout)["total"] == 0
    assert not any((sextant_home / "datasets").rglob("*.parquet"))
