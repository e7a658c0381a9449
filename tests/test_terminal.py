"""What a training run prints on stderr: quiet by default, nothing but errors and the result under --quiet, all under -v.

The runs go through the real console entry point in a subprocess (real file descriptors: the Rust tokenizer
trainer and tqdm write to them), with fresh datasets and llmtune caches so that every first-run step happens
(generating the Arrow files, training the tokenizer, tokenizing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, check_model_card, sentiment_rows, tiny_classification_config, write_config, write_tsv

# What the libraries print for each little step of a first run, and must not by default.
NOISE = ("Generating", "Casting the dataset", "tokenizing (", "Writing model shards", "'pin_memory' argument", "loss_type", "Token indices")


def _run(tmp: Path, *args: str, **training: object) -> subprocess.CompletedProcess:
    """A tiny finetune through the console script in `tmp`, writing to the relative output dir `run`."""
    train = write_tsv(tmp / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    settings = {"logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "max_steps": 4, "save_strategy": "no", "disable_tqdm": False}
    config = write_config(tmp / "cfg.yaml", tiny_classification_config(train, dev, Path("run"), **{**settings, **training}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(tmp / "datasets"), "LLMTUNE_CACHE_DIR": str(tmp / "llmtune")}
    return subprocess.run([sys.executable, "-m", "llmtune", "finetune", str(config), *args], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)


def _lines(stderr: str) -> list[str]:
    """stderr as a terminal would leave it: each carriage-return redraw of a bar is a line of its own."""
    return [part for line in stderr.split("\n") for part in line.split("\r")]


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 1, proc.stdout[:2000]
    return json.loads(proc.stdout)


def test_default_stderr_is_one_bar_one_line_per_evaluation_and_the_final_table(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    result = _result(proc)
    lines = _lines(proc.stderr)
    assert not [line for line in lines if any(word in line for word in NOISE)], proc.stderr
    assert not [line for line in lines if line.lstrip().startswith("{")], "no Trainer log dict by default"
    # The data, the tokenizer (its Rust trainer printed empty lines) and tokenizing come first: nothing before the run's first line.
    assert proc.stderr.startswith("INFO llmtune: precision: "), repr(proc.stderr[:300])
    evaluations = [line for line in lines if line.startswith("evaluation at step")]
    assert [line.split(":")[0] for line in evaluations] == ["evaluation at step 2/4 (epoch 0.6667)", "evaluation at step 4/4 (epoch 1.333)"]
    assert f"eval_accuracy {result['eval_accuracy']:.4g}" in [line for line in lines if line.startswith("final evaluation")][0]
    assert "eval_runtime" not in "".join(evaluations)  # speed fields stay in the table and the JSON
    assert proc.stderr.count("***** final metrics *****") == 1
    bars = [line for line in lines if "it/s" in line or "s/it" in line]
    assert bars and all("/4 [" in line for line in bars), "one bar, over the 4 training steps (none per evaluation)"
    assert "loss=" in bars[-1]
    assert "INFO llmtune: saved the run in run" in proc.stderr
    # The card, read from anywhere, names the folder by its absolute path (the run was given a relative one).
    check_model_card(tmp_path / "run", result, "llmtune predict")


def test_quiet_prints_only_the_result_and_still_the_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--quiet")
    assert set(_result(proc)) >= {"eval_accuracy", "train_loss"}
    assert proc.stderr == ""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\n", encoding="utf-8")
    failed = subprocess.run(
        [sys.executable, "-m", "llmtune", "-q", "finetune", str(tmp_path / "cfg.yaml"), "--overwrite"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=300,
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("error: data.train_file:") and "line 2" in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_verbose_shows_what_the_default_hides(tmp_path: Path) -> None:
    proc = _run(tmp_path, "-v")
    _result(proc)
    assert "Generating" in proc.stderr and "tokenizing (train)" in proc.stderr  # datasets' bars
    assert "{'loss': " in proc.stderr and "{'eval_loss': " in proc.stderr  # every Trainer log dict
    assert "***** Running training *****" in proc.stderr  # transformers' info logs


def test_a_log_file_gets_a_redraw_every_half_minute_not_ten_a_second(tmp_path: Path) -> None:
    """stderr captured (a pipe here, a file or CI log in use): 60 quick steps leave the first and last bar, not ~60 redraws."""
    from llmtune.terminal import LOG_REDRAW_S

    proc = _run(tmp_path, max_steps=60, eval_strategy="no", logging_steps=10)
    _result(proc)
    bars = [line for line in _lines(proc.stderr) if "/60 [" in line]
    took = float(proc.stderr.rsplit("train_runtime", 1)[1].split("=")[1].split()[0].split(":")[-1])  # 0:00:SS.ss, under a minute
    assert bars[0].startswith("  0%") and bars[-1].startswith("100%") and "loss=" in bars[-1]
    assert len(bars) <= 3 + int(took // LOG_REDRAW_S), bars


def test_without_a_bar_the_losses_are_lines(tmp_path: Path) -> None:
    """training.disable_tqdm: true (CI logs that keep the info lines): each logged loss is a line instead of a bar."""
    proc = _run(tmp_path, disable_tqdm=True)
    _result(proc)
    lines = _lines(proc.stderr)
    assert [line for line in lines if line.startswith("step ")] == [line for line in lines if line.startswith("step ") and ": loss " in line]
    assert len([line for line in lines if line.startswith("step ")]) == 4
    assert not [line for line in lines if "it/s" in line]


@pytest.mark.parametrize("flags", [["--quiet", "-v"], ["-q", "--verbose"]])
def test_quiet_and_verbose_together_is_a_usage_error(flags: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmtune", "validate", "nope.yaml", *flags],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )
    assert proc.returncode == 2 and "--quiet and --verbose" in proc.stderr and proc.stdout == ""
