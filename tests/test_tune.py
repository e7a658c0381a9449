"""`llmtune tune`: an Optuna study over a tiny classification config, its database, best.yaml, pruning and --resume.

Every trial is a real (tiny) training run of a few steps, evaluated every 2 steps. The study's own bookkeeping
is read back from study.db with Optuna, never trusted from stdout alone.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, invoke, is_png, sentiment_rows, tiny_classification_config, write_config, write_tsv

SPACE = {
    "training.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "training.per_device_train_batch_size": {"type": "categorical", "choices": [8, 16]},
}


def tune_config(tmp: Path, out: str = "study", space: dict | None = None, metric: str = "eval_accuracy", **training: object) -> Path:
    """The tiny classification config with a `search:` section; 4 steps per trial, evaluated at steps 2 (and 4)."""
    train = write_tsv(tmp / "train.tsv", sentiment_rows(64, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    settings = {"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "no", **training}
    config = tiny_classification_config(train, dev, tmp / out, **settings)
    config["search"] = {"metric": metric, "trials": 3, "space": space or SPACE}
    return write_config(tmp / "tune.yaml", config)


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.strip().splitlines()]


def load_study(folder: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="llmtune", storage=f"sqlite:///{folder / 'study.db'}")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 3-trial study through the CLI (in-process), shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("tune")
    config = tune_config(tmp)
    result = invoke("tune", str(config))
    assert result.exit_code == 0, result.stderr[-3000:]
    return {"tmp": tmp, "config": config, "out": tmp / "study", "lines": lines(result.stdout), "stderr": result.stderr}


def test_three_trials_give_three_lines_a_database_best_yaml_and_plots(study: dict) -> None:
    out, printed = study["out"], study["lines"]
    trials, best = printed[:-1], printed[-1]
    assert [t["trial"] for t in trials] == [0, 1, 2] and all(t["state"] == "COMPLETE" for t in trials), printed
    for line in trials:
        lr, batch = line["params"]["training.learning_rate"], line["params"]["training.per_device_train_batch_size"]
        assert 1e-4 <= lr <= 1e-2 and batch in (8, 16)
        assert line["metric"] == "eval_accuracy" and 0 <= line["value"] <= 1
        trial_dir = Path(line["output_dir"])
        assert trial_dir == out / f"trial-{line['trial']:03d}"
        # Each trial is an ordinary llmtune run with the trial's values in its config and its metric in metrics.json.
        saved = yaml.safe_load((trial_dir / "llmtune.yaml").read_text())
        assert saved["training"]["learning_rate"] == lr and saved["training"]["per_device_train_batch_size"] == batch
        assert saved.get("search") is None
        assert json.loads((trial_dir / "metrics.json").read_text())["eval_accuracy"] == line["value"]
        assert (trial_dir / "model.safetensors").is_file()
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3, "the sampler repeated a point"

    db = load_study(out)
    assert [t.state.name for t in db.trials] == ["COMPLETE"] * 3
    assert [t.value for t in db.trials] == [t["value"] for t in trials]
    # Intermediate evaluations reached Optuna (the pruner's input): step 2 of each 4-step trial.
    assert all(2 in t.intermediate_values for t in db.trials)
    assert db.direction.name == "MAXIMIZE"

    assert best["best_trial"] == db.best_trial.number and best["value"] == max(t["value"] for t in trials)
    assert best["params"] == trials[best["best_trial"]]["params"]
    assert Path(best["best_config"]) == out / "best.yaml"
    best_cfg = yaml.safe_load((out / "best.yaml").read_text())
    assert "search" not in best_cfg
    assert best_cfg["training"]["output_dir"] == str((out / "best").absolute())
    assert best_cfg["training"]["learning_rate"] == best["params"]["training.learning_rate"]
    for name in ("optimization_history.png", "slice.png", "param_importances.png"):
        assert is_png(out / name), name
    assert not list(out.parent.glob("study.incomplete*")), "a fresh study works in its output_dir directly"


def test_best_yaml_trains_with_finetune(study: dict) -> None:
    out = study["out"]
    result = invoke("finetune", str(out / "best.yaml"))
    assert result.exit_code == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert "eval_accuracy" in metrics and (out / "best" / "model.safetensors").is_file()


def test_same_config_and_seed_sample_the_same_values(study: dict, tmp_path: Path) -> None:
    again = invoke("tune", str(study["config"]), f"training.output_dir={tmp_path / 'again'}", "--trials", "2")
    assert again.exit_code == 0, again.stderr[-3000:]
    assert [t["params"] for t in lines(again.stdout)[:-1]] == [t["params"] for t in study["lines"][:2]]
    other = invoke("tune", str(study["config"]), f"training.output_dir={tmp_path / 'other'}", "seed=1", "--trials", "1")
    assert other.exit_code == 0, other.stderr[-3000:]
    assert lines(other.stdout)[0]["params"] != study["lines"][0]["params"], "the seed does not reach the sampler"


def test_a_tune_config_validates_and_finetune_ignores_search(study: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = invoke("validate", str(study["config"]))
    assert result.exit_code == 0, result.stderr
    assert "valid tune config (2 searched keys, 3 trials; finetune trains it as written)" in result.stderr
    search = json.loads(result.stdout)["config"]["search"]
    assert search["direction"] == "maximize"  # eval_accuracy: higher is better
    assert search["space"]["training.per_device_train_batch_size"]["choices"] == [8, 16]
    with caplog.at_level("INFO", logger="llmtune"):
        trained = invoke("finetune", str(study["config"]), f"training.output_dir={tmp_path / 'plain'}")
    assert trained.exit_code == 0, trained.stderr[-2000:]
    assert "search: is for llmtune tune; finetune trains the config as it is" in caplog.text
    assert yaml.safe_load((tmp_path / "plain" / "llmtune.yaml").read_text())["training"]["learning_rate"] == 1e-3


def test_bad_trials_are_pruned(tmp_path: Path) -> None:
    """A learning rate of 1.0 blows the loss up by step 2: once two trials have finished, such a trial is pruned there."""
    space = {"training.learning_rate": {"type": "categorical", "choices": [1.0, 1.0e-6]}}
    config = tune_config(tmp_path, space=space, metric="eval_loss")
    result = invoke("tune", str(config), "--trials", "4")
    assert result.exit_code == 0, result.stderr[-3000:]
    printed = lines(result.stdout)[:-1]
    db = load_study(tmp_path / "study")
    states = {t.number: t.state.name for t in db.trials}
    pruned = [t for t in db.trials if t.state.name == "PRUNED"]
    assert pruned, f"nothing pruned: {[(t.params, t.intermediate_values) for t in db.trials]}"
    for trial in pruned:
        assert trial.params["training.learning_rate"] == 1.0
        assert trial.number >= 2, "pruned before two trials had finished"
        assert max(trial.intermediate_values) < 4, "a pruned trial ran to its last step"
        earlier = [t.intermediate_values[2] for t in db.trials if t.number < trial.number and t.state.name == "COMPLETE"]
        assert trial.intermediate_values[2] > statistics.median(earlier)
        assert not (tmp_path / "study" / f"trial-{trial.number:03d}").exists(), "a pruned trial's folder is kept"
    assert [(t["trial"], t["state"]) for t in printed] == sorted(states.items())
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 4


def test_peft_r_is_searched_on_a_lora_config(tmp_path: Path) -> None:
    """`peft.r` in the space (issue 11's example): each trial is a LoRA run of its own rank, best.yaml keeps it."""
    from conftest import tiny_classifier_dir

    base = tiny_classifier_dir(tmp_path / "base", ["negative", "positive"], [text for text, _ in sentiment_rows(64, seed=1)])
    config = yaml.safe_load(tune_config(tmp_path, space={"peft.r": {"type": "int", "low": 2, "high": 16, "log": True}}, metric="eval_loss").read_text())
    config["model"], config["peft"] = {"name_or_path": str(base)}, {"r": 8, "alpha": 16, "merge": False}
    del config["tokenizer"]
    result = invoke("tune", str(write_config(tmp_path / "tune.yaml", config)), "--trials", "2")
    assert result.exit_code == 0, result.stderr[-3000:]
    *trials, best = lines(result.stdout)
    assert len(trials) == 2 and len({t["params"]["peft.r"] for t in trials}) == 2, trials
    for trial in trials:
        if trial["state"] == "COMPLETE":
            adapter = json.loads((Path(trial["output_dir"]) / "adapter_config.json").read_text())
            assert adapter["r"] == trial["params"]["peft.r"] and adapter["lora_alpha"] == 16
    best_config = yaml.safe_load(Path(best["best_config"]).read_text())
    assert best_config["peft"]["r"] == best["params"]["peft.r"] and "search" not in best_config


def test_no_search_section_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    config = tune_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["search"]
    write_config(config, data)
    result = invoke("tune", str(config))
    assert result.exit_code == 2 and "tune needs a search: section" in result.stderr
    assert not (tmp_path / "study").exists()


def test_several_processes_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = invoke("tune", str(tune_config(tmp_path)))
    assert result.exit_code == 2 and "one after another in one process" in result.stderr, result.stderr
    assert not (tmp_path / "study").exists()


def test_overwrite_keeps_the_old_study_until_the_new_one_is_complete(study: dict, tmp_path: Path) -> None:
    """--overwrite over a finished study: a failing new study (its data vanished) leaves the old one as it was."""
    import shutil

    old = tmp_path / "study"
    shutil.copytree(study["out"], old)
    before = sorted(p.name for p in old.iterdir())
    config = tune_config(tmp_path)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")  # no rows: the trial's data step fails
    failed = invoke("tune", str(config), "--overwrite")
    assert failed.exit_code == 2, failed.stderr[-2000:]
    assert "trial 0 (" in failed.stderr and "train" in failed.stderr
    assert sorted(p.name for p in old.iterdir()) == before
    assert load_study(old).best_trial.number == study["lines"][-1]["best_trial"]
    assert not (tmp_path / "study.incomplete").exists(), "the new study's first trial failed on the data: nothing is left"
    write_tsv(tmp_path / "train.tsv", sentiment_rows(64, seed=1))
    done = invoke("tune", str(config), "--overwrite", "--trials", "1")
    assert done.exit_code == 0, done.stderr[-2000:]
    assert [t.number for t in load_study(old).trials] == [0]
    assert not (tmp_path / "study.incomplete").exists()


# Pauses the CLI in the middle of trial 1's training (a Trainer step), so the test can SIGKILL it there.
PAUSING = r"""
import os, sys, time
from transformers import Trainer

original = Trainer.training_step
def training_step(self, *args, **kwargs):
    if "trial-001" in str(self.args.output_dir) and self.state.global_step == 2:
        open(os.environ["PAUSE_MARKER"], "w").close()
        time.sleep(600)
    return original(self, *args, **kwargs)
Trainer.training_step = training_step

from llmtune.cli import main
sys.argv = ["llmtune", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # a subprocess killed in trial 1, then the resumed study: ~40 s on 2 cores
def test_a_killed_study_resumes_without_redoing_finished_trials(study: dict, tmp_path: Path) -> None:
    config = tune_config(tmp_path)
    out = tmp_path / "study"
    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSING, "tune", str(config)], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the study ended (exit {proc.returncode}) before trial 1 trained:\n{proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "trial 1 never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    killed_stdout, _ = proc.communicate()
    assert [line["trial"] for line in lines(killed_stdout)] == [0]
    db = load_study(out)
    assert [t.state.name for t in db.trials] == ["COMPLETE", "RUNNING"]
    first = db.trials[0]
    first_mtime = (out / "trial-000" / "model.safetensors").stat().st_mtime_ns
    assert (out / "trial-001.incomplete").is_dir()

    result = invoke("tune", str(config), "--resume")
    assert result.exit_code == 0, result.stderr[-3000:]
    printed = lines(result.stdout)
    # stdout is the whole study: the trial finished before the kill, the killed one (FAIL), the rest, the best.
    assert [(t["trial"], t["state"]) for t in printed[:-1]] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"), (3, "COMPLETE")]
    assert "interrupted" in printed[1]["error"]
    db = load_study(out)
    assert db.trials[0].datetime_complete == first.datetime_complete and db.trials[0].value == first.value
    assert (out / "trial-000" / "model.safetensors").stat().st_mtime_ns == first_mtime, "trial 0 was trained again"
    assert not (out / "trial-001").exists() and not (out / "trial-001.incomplete").exists()
    assert db.trials[2].params == db.trials[1].params, "the killed trial's values are tried again first"
    # The resumed study sampled exactly what the uninterrupted one did.
    completed = [t["params"] for t in printed[:-1] if t["state"] == "COMPLETE"]
    assert completed == [t["params"] for t in study["lines"][:-1]]
    assert (out / "best.yaml").is_file()
