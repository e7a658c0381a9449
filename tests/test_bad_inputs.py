"""The bad-input matrix: every user mistake, across every command, ends the same way.

Each case builds its files in a fresh folder, runs the real CLI (in-process through Typer's CliRunner)
and checks the contract of the README's "Exit codes" section:
- exit code 2;
- one `error:` message on stderr that names the file, key or line and the fix (the case's `expect`);
- no traceback;
- nothing on disk changed: every file under the folder (configs, data, a previous run's output
  directory) is byte-identical afterwards, and nothing new appeared (no half-written output).

A case is one `Case(...)` row; `setup(tmp)` writes what the case needs and returns the CLI arguments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import invoke, sentiment_rows, tiny_classification_config, write_config, write_tsv


@dataclass
class Case:
    """One user mistake: how to set it up and what the error message must say."""

    id: str
    setup: Callable[[Path], list[str]]
    expect: list[str]
    stdin: str | None = None
    marks: list = field(default_factory=list)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with a hash of each file's bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


# --- builders shared by the cases -------------------------------------------------------------------


def data_files(tmp: Path) -> tuple[Path, Path]:
    """A tiny train/dev TSV pair (header sentence/label, integer labels)."""
    return write_tsv(tmp / "train.tsv", sentiment_rows(24, seed=1)), write_tsv(tmp / "dev.tsv", sentiment_rows(8, seed=2))


def previous_run(tmp: Path, name: str = "run") -> Path:
    """An output directory holding an earlier run's files, which a failed run must leave untouched."""
    out = tmp / name
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous weights")
    (out / "config.json").write_text('{"model_type": "bert"}\n', encoding="utf-8")
    (out / "metrics.json").write_text('{"eval_accuracy": 0.9}\n', encoding="utf-8")
    return out


def classification_config(tmp: Path, name: str = "cfg.yaml", **training: object) -> Path:
    """A valid tiny classification config over `data_files`, writing to tmp/run."""
    train, dev = data_files(tmp)
    return write_config(tmp / name, tiny_classification_config(train, dev, tmp / "run", **training))


def with_override(*overrides: str, flags: tuple[str, ...] = (), existing_run: bool = False) -> Callable[[Path], list[str]]:
    """`llmtune finetune cfg.yaml OVERRIDES FLAGS` on the tiny config, optionally over a previous run."""

    def setup(tmp: Path) -> list[str]:
        config = classification_config(tmp)
        if existing_run:
            previous_run(tmp)
        return ["finetune", str(config), *overrides, *flags]

    return setup


def raw_config(text: str, command: str = "finetune", data: bool = True) -> Callable[[Path], list[str]]:
    """A config file with the given text (`{train}`, `{dev}` and `{out}` filled in)."""

    def setup(tmp: Path) -> list[str]:
        train, dev = data_files(tmp) if data else (tmp / "train.tsv", tmp / "dev.tsv")
        path = tmp / "cfg.yaml"
        path.write_text(text.format(train=train, dev=dev, out=tmp / "run"), encoding="utf-8")
        return [command, str(path)]

    return setup


VALID_HEAD = """\
model:
  from_config: {{model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 64}}
tokenizer:
  train: {{type: wordpiece, vocab_size: 200, min_frequency: 1}}
data:
  train_file: {train}
  validation_file: {dev}
  text_column: sentence
"""


CASES: list[Case] = [
    # --- config files ---------------------------------------------------------------------------------
    Case("config-missing", lambda tmp: ["finetune", str(tmp / "nope.yaml")], ["config file not found", "nope.yaml"]),
    Case("config-invalid-yaml", raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n   learning_rate: 1\n"), ["cfg.yaml:", "invalid YAML"]),
    Case(
        "config-unknown-key",
        raw_config(VALID_HEAD.replace("text_column", "text_colum") + "training:\n  output_dir: {out}\n"),
        ["data.text_colum (line 8)", "Did you mean 'text_column'"],
    ),
    Case(
        "config-unknown-training-key",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  evaluation_strategy: epoch\n"),
        ["training.evaluation_strategy (line 11)", "use eval_strategy"],
    ),
    Case("config-no-output-dir", raw_config(VALID_HEAD + "training:\n  num_train_epochs: 1\n"), ["training.output_dir is required"]),
    Case("override-malformed", with_override("training.learning_rate"), ["override 'training.learning_rate'", "key.path=value"]),
    Case("override-wrong-type", with_override("data.max_length=many"), ["data.max_length (command-line override)", "'many'"]),
    # --- output directories ---------------------------------------------------------------------------
    Case("output-dir-not-empty", with_override(existing_run=True), ["run is not empty", "--overwrite", "--resume"]),
    Case("overwrite-and-resume", with_override(flags=("--overwrite", "--resume"), existing_run=True), ["--overwrite and --resume"]),
    Case("resume-without-checkpoint", with_override(flags=("--resume",), existing_run=True), ["--resume: no checkpoint", "Run without --resume"]),
    # --- training data --------------------------------------------------------------------------------
    Case("train-file-missing", with_override("data.train_file=nope.tsv"), ["data.train_file", "file not found", "nope.tsv"]),
    Case("text-column-missing", with_override("data.text_column=review"), ["data.text_column", "'review' not found", "sentence, label"]),
    Case(
        "unknown-validation-label",
        lambda tmp: [
            "finetune",
            str(
                write_config(
                    tmp / "cfg.yaml",
                    tiny_classification_config(
                        write_tsv(tmp / "train.tsv", sentiment_rows(24, seed=1)),
                        write_tsv(tmp / "dev.tsv", [("a fine film", 0), ("a dull film", 7)]),
                        tmp / "run",
                    ),
                )
            ),
        ],
        ["data.validation_file: row 2", "label 7", "not a known label"],
    ),
    # --- inference inputs -----------------------------------------------------------------------------
    Case(
        "predict-invalid-jsonl-line",
        lambda tmp: ["predict", "--model", str(tmp / "model"), "--input", str(_write(tmp / "in.jsonl", '{"text": "ok"}\n{"text": oops}\n'))],
        ["in.jsonl, line 2", "invalid JSON"],
    ),
    Case(
        "generate-unknown-generation-key",
        lambda tmp: ["generate", "--model", str(tmp / "model"), "generation.max_new_token=5"],
        ["generation.max_new_token (command-line override)", "Did you mean 'max_new_tokens'"],
    ),
    Case("evaluate-neither-config-nor-model", lambda tmp: ["evaluate"], ["evaluate needs a CONFIG file or --model DIR"]),
    # --- --resume with a config that cannot continue the run (issue 8, point 2: repeatable runs) --------
    Case(
        "resume-changed-batch-size",
        lambda tmp: resumable_run(tmp, "training.per_device_train_batch_size=8"),
        ["training.per_device_train_batch_size: 16 in the run, 8 now", "checkpoint-2/llmtune.yaml", "start a new run"],
    ),
    Case(
        "resume-changed-model-and-tokenizer",
        lambda tmp: resumable_run(tmp, "model.from_config.num_hidden_layers=3", "tokenizer.train.vocab_size=300"),
        ["model.from_config.num_hidden_layers: 2 in the run, 3 now", "tokenizer.train.vocab_size: 200 in the run, 300 now"],
    ),
    Case(
        "resume-changed-data-file",
        lambda tmp: resumable_run(tmp, f"data.train_file={write_tsv(tmp / 'other.tsv', sentiment_rows(24, seed=5))}"),
        ["data.train_file:", "train.tsv\" in the run", "other.tsv\" now"],
    ),
    Case(
        "resume-changed-data-content",
        lambda tmp: resumable_run(tmp, manifest={"data": [{"key": "data.train_file", "path": str(tmp / "train.tsv"), "sha256": "0" * 64}]}),
        ["data.train_file (content): \"sha256 000000000000\" in the run"],
    ),
    Case(
        "resume-changed-world-size",
        lambda tmp: resumable_run(tmp, manifest={"world_size": 2}),
        ["number of processes (world size): 2 in the run, 1 now"],
    ),
    Case(
        "resume-changed-seed-and-accumulation",
        lambda tmp: resumable_run(tmp, "seed=1", "training.gradient_accumulation_steps=4", "data.max_length=16"),
        ["seed: 0 in the run, 1 now", "training.gradient_accumulation_steps: 1 in the run, 4 now", "data.max_length: 32 in the run, 16 now"],
    ),
]


def resumable_run(tmp: Path, *overrides: str, manifest: dict | None = None) -> list[str]:
    """A run interrupted at checkpoint-2 (its llmtune.yaml as training saves it), resumed with `overrides`."""
    from llmtune.config import load_config, save_config

    config = classification_config(tmp)
    checkpoint = tmp / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    save_config(load_config("finetune", config), checkpoint / "llmtune.yaml")
    (checkpoint / "model.safetensors").write_bytes(b"checkpoint weights")
    if manifest is not None:
        (checkpoint / "manifest.json").write_text(json.dumps({"world_size": 1, "data": [], **manifest}), encoding="utf-8")
    return ["finetune", str(config), *overrides, "--resume"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_matrix_is_large_and_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 15


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_exits_2_with_a_clear_message_and_changes_nothing(case: Case, tmp_path: Path) -> None:
    args = case.setup(tmp_path)
    before = snapshot(tmp_path)
    result = invoke(*args, stdin=case.stdin)
    message = result.stderr
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr:\n{message[-3000:]}\nexception: {result.exception!r}"
    assert "Traceback" not in message and "Traceback" not in result.stdout
    assert message.count("error:") == 1, message
    for part in case.expect:
        assert part in message, f"{part!r} not in:\n{message}"
    assert result.stdout == "", "nothing but results on stdout, and there are none"
    assert snapshot(tmp_path) == before, "a failed command changed files on disk"


def test_snapshot_sees_emptied_and_new_files(tmp_path: Path) -> None:
    """The harness itself: an emptied output directory or a stray new file is a difference."""
    out = previous_run(tmp_path)
    before = snapshot(tmp_path)
    (out / "metrics.json").write_text("{}", encoding="utf-8")
    assert snapshot(tmp_path) != before
    (out / "metrics.json").write_text('{"eval_accuracy": 0.9}\n', encoding="utf-8")
    assert snapshot(tmp_path) == before
    (tmp_path / "new").mkdir()
    assert snapshot(tmp_path) != before
    assert json.loads((out / "metrics.json").read_text()) == {"eval_accuracy": 0.9}
