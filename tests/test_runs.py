"""Output directories that are never lost, atomic result files, and --resume continuing the same run exactly.

The kill tests start the real CLI in a subprocess through a small wrapper (WRAPPER) that pauses the
run at a chosen checkpoint, after it is saved or in the middle of saving it, and writes a marker
file; the test waits for the marker and SIGKILLs the process, then resumes and compares every tensor
of model.safetensors and the final metrics with an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_BERT, invoke, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv

# Runs the CLI with one Trainer step patched to write $PAUSE_MARKER and sleep, so the test can kill it
# at a known moment: "after-save" once checkpoint-$PAUSE_STEP is complete, "mid-save" after its model
# and optimizer are written but before its RNG state and trainer_state.json. $FORBID_TOKENIZER_TRAINING
# makes training a tokenizer fail (a resumed run must load the checkpoint's); $RAISE_AT_STEP makes
# training raise when it reaches that step.
WRAPPER = r"""
import os, sys, time
from transformers import Trainer

stage, step, marker = os.environ.get("PAUSE_AT"), int(os.environ.get("PAUSE_STEP", "0")), os.environ.get("PAUSE_MARKER")

def pause():
    with open(marker, "w") as handle:
        handle.write("paused")
    time.sleep(600)

if stage == "after-save":
    original_save = Trainer._save_checkpoint
    def _save_checkpoint(self, model, trial):
        original_save(self, model, trial)
        if self.state.global_step == step:
            pause()
    Trainer._save_checkpoint = _save_checkpoint
elif stage == "mid-save":
    original_rng = Trainer._save_rng_state
    def _save_rng_state(self, output_dir):
        if self.state.global_step == step:
            pause()
        original_rng(self, output_dir)
    Trainer._save_rng_state = _save_rng_state

if os.environ.get("RAISE_AT_STEP"):
    original_step = Trainer.training_step
    def training_step(self, *args, **kwargs):
        if self.state.global_step == int(os.environ["RAISE_AT_STEP"]):
            raise RuntimeError("training failed on purpose")
        return original_step(self, *args, **kwargs)
    Trainer.training_step = training_step

if os.environ.get("FORBID_TOKENIZER_TRAINING"):
    import llmtune.modeling
    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run trained a new tokenizer")
    llmtune.modeling.train_tokenizer = refuse

from llmtune.cli import main
sys.argv = ["llmtune", *sys.argv[1:]]
main()
"""


def wrapped(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the CLI through WRAPPER (stdout/stderr to files next to nothing: the caller reads the Popen)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *args], env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill_at(marker: Path, *args: str, stage: str, step: int) -> None:
    """Run the CLI until it pauses at `stage` of checkpoint `step`, then SIGKILL it."""
    proc = wrapped(*args, env={"PAUSE_AT": stage, "PAUSE_STEP": str(step), "PAUSE_MARKER": str(marker)})
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before pausing at {stage} {step}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never reached the pause")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    left, right = tensors(a), tensors(b)
    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert not different, f"tensors differ: {different[:5]}"


def final_metrics(metrics: dict) -> dict:
    """The metrics that must match between an uninterrupted and a resumed run (timings differ, train_loss is checked apart)."""
    return {k: v for k, v in metrics.items() if k.startswith(("eval_", "test_")) and not k.endswith(("_runtime", "_per_second"))}


def save_wordpiece(folder: Path, texts: list[str]) -> Path:
    """A WordPiece tokenizer saved once, so that two runs (processes) share the same vocabulary."""
    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    if folder.is_dir():
        return folder
    train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), texts, 32).save_pretrained(folder)
    return folder


# --- configs: tiny models, a checkpoint every 2 steps, 8 steps in all -----------------------------------


def classification_config(tmp: Path, out: Path) -> Path:
    train = write_tsv(tmp / "train.tsv", sentiment_rows(64, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    tokenizer = save_wordpiece(tmp / "tokenizer", [t for t, _ in sentiment_rows(64, seed=1)])
    cfg = tiny_classification_config(train, dev, out, num_train_epochs=2, save_strategy="steps", save_steps=2, logging_steps=3)
    cfg["tokenizer"] = {"name_or_path": str(tokenizer)}
    return write_config(tmp / "cls.yaml", cfg)


def causal_config(tmp: Path, out: Path) -> Path:
    train = tmp / "corpus.txt"
    train.write_text("\n\n".join(t for t, _ in sentiment_rows(80, seed=4)) + "\n", encoding="utf-8")  # one document a paragraph
    cfg = {
        "task": "causal-lm",
        "seed": 0,
        "model": {"from_config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}},
        "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
        "data": {"train_file": str(train), "validation_split": 0.2, "max_length": 16, "text_column": "text"},
        "training": {
            "output_dir": str(out), "max_steps": 8, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
            "logging_steps": 3, "save_strategy": "steps", "save_steps": 2, "disable_tqdm": True,
        },
    }
    return write_config(tmp / "causal.yaml", cfg)


def mlm_config(tmp: Path, out: Path) -> Path:
    texts = [t for t, _ in sentiment_rows(160, seed=3)]
    train = tmp / "mlm.txt"
    train.write_text("\n".join(texts) + "\n", encoding="utf-8")
    tokenizer = save_wordpiece(tmp / "mlm-tokenizer", texts)
    cfg = {
        "seed": 0,
        "model": {"from_config": {k: v for k, v in TINY_BERT.items() if k != "model_type"}},
        "tokenizer": {"name_or_path": str(tokenizer)},
        "data": {"train_file": str(train), "validation_split": 0.2, "max_length": 16},
        "mlm": {"probability": 0.15},
        "training": {
            "output_dir": str(out), "num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 2e-3,
            "logging_steps": 3, "save_strategy": "steps", "save_steps": 2, "disable_tqdm": True,
        },
    }
    return write_config(tmp / "mlm.yaml", cfg)


KILL_CASES = {
    # task: (command, config builder, how the first run is killed)
    "classification": ("finetune", classification_config, "mid-save"),
    "causal-lm": ("finetune", causal_config, "after-save"),
    "pretrain-mlm": ("pretrain-mlm", mlm_config, "mid-save"),
}


# classification (killed while saving a checkpoint) runs by default; the other two take ~45 s each on a busy 2-core machine.
@pytest.mark.parametrize(
    "task", [pytest.param(task, marks=[] if task == "classification" else [pytest.mark.slow]) for task in KILL_CASES]
)
def test_kill_then_resume_ends_bit_identical_to_an_uninterrupted_run(task: str, tmp_path: Path) -> None:
    command, build, stage = KILL_CASES[task]
    reference = stdout_json(run_cli(command, str(build(tmp_path, tmp_path / "reference"))))

    out = tmp_path / "run"
    config = build(tmp_path, out)
    kill_at(tmp_path / "paused", command, str(config), stage=stage, step=4)
    staging = tmp_path / "run.incomplete"
    assert not out.exists(), "a killed run must not create the output directory"
    assert (staging / "checkpoint-2" / "trainer_state.json").is_file()
    if stage == "mid-save":
        # Killed while writing checkpoint-4: the model is there, trainer_state.json is not.
        assert (staging / "checkpoint-4" / "model.safetensors").is_file()
        assert not (staging / "checkpoint-4" / "trainer_state.json").exists()
        resumed_from = staging / "checkpoint-2"
    else:
        resumed_from = staging / "checkpoint-4"

    # Without a flag, the interrupted run is pointed out, not silently discarded or continued.
    refused = invoke(command, str(config))
    assert refused.exit_code == 2
    assert "run.incomplete holds an interrupted run" in refused.stderr and "--resume" in refused.stderr and "--overwrite" in refused.stderr

    proc = run_cli(command, str(config), "--resume")
    resumed = stdout_json(proc)
    assert f"resuming from {resumed_from}" in proc.stderr
    if stage == "mid-save":
        assert f"skipping {staging / 'checkpoint-4'}: it is incomplete" in proc.stderr
    assert not staging.exists()
    assert final_metrics(resumed) == final_metrics(reference)
    assert_same_weights(tmp_path / "reference", out)
    assert json.loads((out / "metrics.json").read_text()) == resumed
    # train_loss covers the whole run, not only the steps after the resume.
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-9)
    assert resumed["train_epoch"] == reference["train_epoch"]


def run_wrapped(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI through WRAPPER to the end."""
    proc = wrapped(*args, env=env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>" for p in sorted(root.rglob("*"))
    }


def previous_output(tmp: Path) -> Path:
    out = tmp / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous weights")
    (out / "metrics.json").write_text('{"eval_accuracy": 0.9}\n', encoding="utf-8")
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}", encoding="utf-8")
    return out


@pytest.mark.slow  # ~20-35 s on 2 cores; the README test command (CI) runs slow tests
def test_a_failure_during_training_with_overwrite_leaves_the_previous_run_byte_identical(tmp_path: Path) -> None:
    config = classification_config(tmp_path, tmp_path / "run")
    out = previous_output(tmp_path)
    before = snapshot(out)

    # Fails before the first checkpoint: nothing to resume, so no staging folder is left either.
    proc = run_wrapped("finetune", str(config), "--overwrite", RAISE_AT_STEP="1")
    assert proc.returncode == 1 and "training failed on purpose" in proc.stderr
    assert snapshot(out) == before
    assert not (tmp_path / "run.incomplete").exists()

    # Fails after checkpoint-2: the old run is intact, the new one waits in the staging folder for --resume.
    proc = run_wrapped("finetune", str(config), "--overwrite", RAISE_AT_STEP="3")
    assert proc.returncode == 1
    assert snapshot(out) == before
    assert (tmp_path / "run.incomplete" / "checkpoint-2" / "trainer_state.json").is_file()

    # --overwrite discards that interrupted run; only a complete new run replaces the old directory.
    proc = run_wrapped("finetune", str(config), "--overwrite", "training.max_steps=2")
    stdout_json(proc)
    assert "discarding the interrupted run" in proc.stderr
    assert not (tmp_path / "run.incomplete").exists()
    assert not (out / "checkpoint-7").exists() and (out / "checkpoint-2").is_dir()
    assert json.loads((out / "metrics.json").read_text())["train_epoch"] > 0
    saved = (out / "llmtune.yaml").read_text()
    assert f"output_dir: {out}" in saved and ".incomplete" not in saved
    assert not (out / ".llmtune-staging").exists()


@pytest.mark.slow  # about 20 s; run by the README test command (CI)
def test_resume_loads_the_tokenizer_saved_with_the_run(tmp_path: Path) -> None:
    train, dev = write_tsv(tmp_path / "train.tsv", sentiment_rows(64, seed=1)), write_tsv(tmp_path / "dev.tsv", sentiment_rows(16, seed=2))
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "c.yaml",
        tiny_classification_config(train, dev, out, num_train_epochs=2, save_strategy="steps", save_steps=2),  # tokenizer.train
    )
    kill_at(tmp_path / "paused", "finetune", str(config), stage="after-save", step=2)
    saved = json.loads((tmp_path / "run.incomplete" / "checkpoint-2" / "tokenizer.json").read_text())["model"]["vocab"]
    proc = run_wrapped("finetune", str(config), "--resume", FORBID_TOKENIZER_TRAINING="1")
    stdout_json(proc)
    assert f"resuming with the tokenizer saved in {tmp_path / 'run.incomplete' / 'checkpoint-2'}" in proc.stderr
    assert json.loads((out / "tokenizer.json").read_text())["model"]["vocab"] == saved


@pytest.mark.slow  # about 20 s; run by the README test command (CI)
def test_resume_of_a_completed_run_keeps_its_checkpoints(tmp_path: Path) -> None:
    config = causal_config(tmp_path, tmp_path / "run")
    stdout_json(run_cli("finetune", str(config), "training.max_steps=4"))
    first = (tmp_path / "run" / "checkpoint-4" / "model.safetensors").read_bytes()
    proc = run_cli("finetune", str(config), "training.max_steps=6", "--resume")
    metrics = stdout_json(proc)
    names = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert names == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert (tmp_path / "run" / "checkpoint-4" / "model.safetensors").read_bytes() == first
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and metrics["train_loss"] > 0


# --- the swap and atomic files, in-process ------------------------------------------------------------


def filled(folder: Path, content: str, state: str | None = None) -> Path:
    folder.mkdir()
    (folder / "model.safetensors").write_text(content)
    (folder / "sub").mkdir()
    (folder / "sub" / "f").write_text(content)
    if state:
        (folder / ".llmtune-staging").write_text(state + "\n")
    return folder


def contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_swap_replaces_the_output_dir_with_the_staging_folder(tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmtune import runs

    if not exchange:
        monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    out = filled(tmp_path / "run", "old")
    staging = filled(tmp_path / "run.incomplete", "new", "training")
    runs.swap_into_place(staging, out)
    assert contents(out) == {"model.safetensors": "new", "sub/f": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_swap_is_finished_on_the_next_start(tmp_path: Path) -> None:
    from llmtune import runs

    new = {"model.safetensors": "new", "sub/f": "new"}
    # Killed before the exchange: the staging folder says "complete", the old output is still in place.
    out = filled(tmp_path / "a", "old")
    filled(tmp_path / "a.incomplete", "new", "complete")
    runs.recover_interrupted_swap(out)
    assert contents(out) == new and not (tmp_path / "a.incomplete").exists()
    # Killed after the exchange: the old output sits in the staging folder, marked "replaced".
    out = filled(tmp_path / "b", "new", "complete")
    filled(tmp_path / "b.incomplete", "old", "replaced")
    runs.recover_interrupted_swap(out)
    assert contents(out) == new and not (tmp_path / "b.incomplete").exists()
    # Killed between the two renames of the fallback: no output dir, the old one aside, the new one complete.
    filled(tmp_path / "c.replaced", "old", "replaced")
    filled(tmp_path / "c.incomplete", "new", "complete")
    runs.recover_interrupted_swap(tmp_path / "c")
    assert contents(tmp_path / "c") == new
    assert not (tmp_path / "c.replaced").exists() and not (tmp_path / "c.incomplete").exists()
    # An interrupted training run ("training") is left alone for --resume / --overwrite.
    out = filled(tmp_path / "d", "old")
    filled(tmp_path / "d.incomplete", "new", "training")
    runs.recover_interrupted_swap(out)
    assert contents(out) == {"model.safetensors": "old", "sub/f": "old"}
    assert contents(tmp_path / "d.incomplete") == {".llmtune-staging": "training\n", **new}


def test_atomic_writer_never_leaves_a_partial_file(tmp_path: Path) -> None:
    from llmtune.files import atomic_writer

    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as handle:
            handle.write("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with atomic_writer(path) as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: chmod for a normal user, a read-only tmpfs mount for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only filesystem")
    return folder


def test_an_unwritable_output_location_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = read_only_folder(tmp_path)
    try:
        config = classification_config(tmp_path, folder / "run")
        result = invoke("finetune", str(config))
        assert result.exit_code == 2
        assert f"training.output_dir: cannot write in {folder}" in result.stderr and "Choose a writable" in result.stderr
        result = invoke("predict", "--model", str(tmp_path / "no-model"), "--input", str(config), "--output", str(folder / "p.jsonl"))
        assert result.exit_code == 2 and f"--output: cannot write in {folder}" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_the_model_card_names_a_folder_with_spaces_and_quotes_so_it_pastes(tmp_path: Path) -> None:
    """The card's Python snippet and llmtune command hold the folder as one literal / one shell word, whatever its name."""
    import ast
    import shlex

    from llmtune import lora
    from llmtune.config import load_config
    from llmtune.runs import cli_usage, write_model_card
    from llmtune.tasks import registry

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(8, seed=1))
    cfg = load_config("finetune", write_config(tmp_path / "cfg.yaml", tiny_classification_config(train, train, tmp_path / "run")))
    folder = (tmp_path / 'my "best" run\\it\'s here').resolve()

    def python_paths(snippet: str) -> list[str]:
        return [node.value for node in ast.walk(ast.parse(snippet)) if isinstance(node, ast.Constant) and isinstance(node.value, str)]

    def shell_model(line: str) -> str:
        words = shlex.split(line.split("|")[-1], comments=True)
        return words[words.index("--model") + 1]

    for task in registry.TASKS:
        assert shell_model(cli_usage(task, folder)) == str(folder), task.name
        base = str(tmp_path / 'base "model"')
        assert python_paths(lora.adapter_card(task, folder, base, merged=False)[1]) == [str(folder), base, str(folder)]
        assert python_paths(lora.merged_card(task, folder / "merged", "bert-base")[1]) == [str(folder / "merged")]
    folder.mkdir()
    write_model_card(folder, cfg, {"eval_accuracy": 0.5}, "finetune", "text-classification", task=registry.task("classification"))
    card = (folder / "README.md").read_text(encoding="utf-8")
    python, bash = card.split("```python\n")[1].split("\n```")[0], card.split("```bash\n")[1].split("\n```")[0]
    assert str(folder) in python_paths(python) and shell_model(bash) == str(folder)
