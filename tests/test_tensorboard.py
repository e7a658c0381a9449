"""`training.report_to: tensorboard`: Trainer's event files end up in the output dir, survive --resume, and a missing
package is an exit-2 message with the install command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import invoke, sentiment_rows, tiny_classification_config, write_config, write_tsv


def _config(tmp: Path, **training: object) -> Path:
    train = write_tsv(tmp / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    settings = {"report_to": "tensorboard", "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "max_steps": 2, "save_steps": 2, **training}
    return write_config(tmp / "cfg.yaml", tiny_classification_config(train, dev, tmp / "run", **settings))


def _event_files(run: Path) -> set[Path]:
    """The run's TensorBoard event files, relative to the run dir."""
    return {events.relative_to(run) for events in run.glob("runs/*/events.out.tfevents.*")}


def _scalars(run: Path) -> dict[str, list[int]]:
    """Every scalar tag in the run's event files, with the steps it was logged at."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[str, list[int]] = {}
    for events in sorted(_event_files(run)):
        accumulator = EventAccumulator(str(run / events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(event.step for event in accumulator.Scalars(tag))
    return steps


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
def test_event_files_land_in_the_output_dir_and_a_resumed_run_continues_them(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = invoke("finetune", str(config))
    assert first.exit_code == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert not (tmp_path / "run.incomplete").exists()
    # One log dir per run (the final evaluation after training writes a second event file into it).
    first_files = _event_files(run)
    assert len({events.parent for events in first_files}) == 1
    scalars = _scalars(run)
    assert scalars["train/loss"] == [1, 2] and 2 in scalars["eval/loss"] and 2 in scalars["eval/accuracy"]
    # --resume of the completed run with more steps: the earlier event files come along into the new output dir,
    # beside the resumed run's own (in a new runs/<date>_<host> dir, or the same one when both start in one second).
    resumed = invoke("finetune", str(config), "training.max_steps=4", "--resume")
    assert resumed.exit_code == 0, resumed.stderr[-3000:]
    assert first_files < _event_files(run)
    assert sorted(_scalars(run)["train/loss"]) == [1, 2, 3, 4]


def test_without_the_package_it_is_an_exit_2_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    for command in ("finetune", "validate"):
        result = invoke(command, str(config))
        assert result.exit_code == 2, result.stderr[-3000:]
        assert 'training.report_to' in result.stderr and 'pip install "llmtune[tensorboard]"' in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists()
    assert invoke("validate", str(config), "training.report_to=[none]").exit_code == 0
