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

from conftest import TINY_BERT, invoke, sentiment_rows, tiny_classification_config, write_config, write_tsv


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


def bad_train_file(name: str, content: bytes, task: str = "classification", text_column: str = "sentence") -> Callable[[Path], list[str]]:
    """A training run whose train file is `name` holding `content`, for finetune (classification or
    causal-lm) or pretrain-mlm; the validation data is carved out of train, so only that file matters."""

    def setup(tmp: Path) -> list[str]:
        train = tmp / name
        train.write_bytes(content)
        data = {"train_file": str(train), "validation_split": 0.25, "text_column": text_column, "max_length": 32}
        training = {"output_dir": str(tmp / "run"), "max_steps": 2, "disable_tqdm": True}
        if task == "pretrain-mlm":
            model, tokenizer = dict(TINY_BERT), {"type": "wordpiece", "vocab_size": 200, "min_frequency": 1}
            config = {"model": {"from_config": model}, "tokenizer": {"train": tokenizer}, "data": data, "training": training}
            return ["pretrain-mlm", str(write_config(tmp / "cfg.yaml", config))]
        if task == "causal-lm":
            model = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}
            tokenizer = {"type": "bpe", "vocab_size": 300, "min_frequency": 1}
        else:
            model, tokenizer = dict(TINY_BERT), {"type": "wordpiece", "vocab_size": 200, "min_frequency": 1}
        config = {"task": task, "model": {"from_config": model}, "tokenizer": {"train": tokenizer}, "data": data, "training": training}
        return ["finetune", str(write_config(tmp / "cfg.yaml", config))]

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
        ["data.validation_file:", "dev.tsv, line 3: label 7 is not a known label"],
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
    # --- bad training data, named by file and line (issue 8.4) -----------------------------------------
    # Classification (finetune), TSV and CSV:
    Case("data-empty-tsv", bad_train_file("train.tsv", b""), ["data.train_file:", "train.tsv: no data rows (it is empty"]),
    Case("data-header-only-tsv", bad_train_file("train.tsv", b"sentence\tlabel\n"), ["data.train_file:", "train.tsv: no data rows, only the header line (sentence, label)"]),
    Case("data-header-only-csv", bad_train_file("train.csv", b"sentence,label\r\n"), ["data.train_file:", "train.csv: no data rows, only the header line (sentence, label)"]),
    Case(
        "data-not-utf8-tsv",
        bad_train_file("train.tsv", b"sentence\tlabel\ngood film\t1\na caf\xe9 film\t0\n"),
        ["data.train_file:", "train.tsv, line 3: byte 6 of the line (0xe9) is not valid UTF-8", "Re-encode the file as UTF-8"],
    ),
    Case(
        "data-tsv-row-too-many-cells",
        bad_train_file("train.tsv", b"sentence\tlabel\ngood film\t1\nbad\tfilm\t0\nok\t1\n"),
        ["train.tsv, line 3: more cells than header columns: 3 cells, the header has 2 columns (sentence, label)", "Remove the stray tab"],
    ),
    Case(
        "data-tsv-row-too-few-cells",
        bad_train_file("train.tsv", b"sentence\tlabel\ngood film\t1\n\nbad film 0\nok\t1\n"),
        ["train.tsv, line 4: fewer cells than header columns: 1 cell, the header has 2 columns (sentence, label)", "Fill in the missing cells"],
    ),
    Case(
        "data-csv-row-too-many-cells",
        bad_train_file("train.csv", b'sentence,label\n"good, fine film",1\nbad, dull film,0\n'),
        ["train.csv, line 3: more cells than header columns: 3 cells", "Quote cells that contain commas"],
    ),
    Case(
        "data-csv-row-too-few-cells",
        bad_train_file("train.csv", b"sentence,label\ngood film,1\nbad film\n"),
        ["train.csv, line 3: fewer cells than header columns: 1 cell, the header has 2 columns"],
    ),
    # Classification, JSON Lines:
    Case("data-empty-jsonl", bad_train_file("train.jsonl", b"\n\n"), ["data.train_file:", "train.jsonl: no data rows (it is empty or blank)"]),
    Case(
        "data-malformed-jsonl-line",
        bad_train_file("train.jsonl", b'{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0\n'),
        ["data.train_file:", "train.jsonl, line 2: invalid JSON", "Each line must be one JSON object"],
    ),
    Case(
        "data-jsonl-line-not-an-object",
        bad_train_file("train.jsonl", b'{"sentence": "good", "label": 1}\n["bad", 0]\n'),
        ["train.jsonl, line 2: expected a JSON object", "got a list"],
    ),
    Case(
        "data-jsonl-text-missing-in-some-lines",
        bad_train_file("train.jsonl", b'{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0}\n{"sentnce": "ok", "label": 1}\n'),
        ["train.jsonl, line 3: no field 'sentence' (data.text_column), which other lines have"],
    ),
    Case(
        "data-jsonl-label-missing-in-some-lines",
        bad_train_file("train.jsonl", b'{"sentence": "good", "label": 1}\n{"sentence": "bad"}\n{"sentence": "ok", "label": 0}\n'),
        ["train.jsonl, line 2: no field 'label' (data.label_column), which other lines have"],
    ),
    Case(
        "data-missing-label-cell-names-the-line",
        bad_train_file("train.tsv", b"sentence\tlabel\ngood film\t1\n\nbad film\t\n"),
        ["data.train_file:", "train.tsv, line 4: no label in column 'label'"],
    ),
    # Causal LM (finetune task: causal-lm):
    Case("causal-lm-empty-txt", bad_train_file("train.txt", b"", "causal-lm", "text"), ["data.train_file:", "train.txt: no data rows (it is empty)"]),
    Case(
        "causal-lm-not-utf8-txt",
        bad_train_file("train.txt", b"To be, or not to be\n\nthat is the question\nwhether \xff tis nobler\n", "causal-lm", "text"),
        ["train.txt, line 4: byte 9 of the line (0xff) is not valid UTF-8", "Re-encode the file as UTF-8"],
    ),
    Case(
        "causal-lm-malformed-jsonl-line",
        bad_train_file("train.jsonl", b'{"text": "to be"}\n{"text": "or not\n', "causal-lm", "text"),
        ["train.jsonl, line 2: invalid JSON"],
    ),
    Case(
        "causal-lm-jsonl-text-missing-in-some-lines",
        bad_train_file("train.jsonl", b'{"text": "to be"}\n{"title": "Hamlet"}\n', "causal-lm", "text"),
        ["train.jsonl, line 2: no field 'text' (data.text_column), which other lines have"],
    ),
    Case(
        "causal-lm-csv-row-too-few-cells",
        bad_train_file("train.csv", b"title,text\nHamlet,to be\nor not to be\n", "causal-lm", "text"),
        ["train.csv, line 3: fewer cells than header columns: 1 cell, the header has 2 columns (title, text)"],
    ),
    # pretrain-mlm:
    Case("mlm-header-only-tsv", bad_train_file("train.tsv", b"text\tsource\n", "pretrain-mlm", "text"), ["train.tsv: no data rows, only the header line (text, source)"]),
    Case(
        "mlm-not-utf8-jsonl",
        bad_train_file("train.jsonl", b'{"text": "fine"}\n{"text": "na\xefve"}\n', "pretrain-mlm", "text"),
        ["train.jsonl, line 2: byte 13 of the line (0xef) is not valid UTF-8", "Re-encode the file as UTF-8"],
    ),
    Case(
        "mlm-jsonl-line-not-an-object",
        bad_train_file("train.jsonl", b'{"text": "fine"}\n"just a string"\n', "pretrain-mlm", "text"),
        ["train.jsonl, line 2: expected a JSON object", "got a str"],
    ),
    Case(
        "mlm-tsv-row-too-many-cells",
        bad_train_file("train.tsv", b"text\tsource\na line\twiki\nanother\tline\twiki\n", "pretrain-mlm", "text"),
        ["train.tsv, line 3: more cells than header columns: 3 cells, the header has 2 columns (text, source)"],
    ),
    Case(
        "mlm-jsonl-text-not-a-string",
        bad_train_file("train.jsonl", b'{"text": "fine"}\n{"text": ["a", "list"]}\n', "pretrain-mlm", "text"),
        ["train.jsonl, line 2: 'text' (data.text_column) must be a string", "got [\"a\", \"list\"]"],
    ),
]


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
