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
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TINY_BERT, invoke, sentiment_rows, tiny_classification_config, write_config, write_tsv
from test_seq2seq import lines, seq2seq_case, toy_pairs


@dataclass
class Case:
    """One user mistake: how to set it up and what the error message must say."""

    id: str
    setup: Callable[[Path], list[str]]
    expect: list[str]
    stdin: str | None = None
    marks: list = field(default_factory=list)
    # Packages the case makes unimportable (as if not installed), for an integration that needs an extra.
    missing: tuple[str, ...] = ()


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


def tune_case(
    search: dict | None = None, key: str = "training.learning_rate", spec: dict | None = None, command: str = "tune",
    existing_run: bool = False, flags: tuple[str, ...] = (), empty_train: bool = False,
) -> Callable[[Path], list[str]]:
    """`llmtune tune` (or `command`) on the tiny config with a search: section: `search` keys over a valid one, and
    `spec` as the space entry of `key` (`empty_train`: a training file with no rows, found by the first trial)."""

    def setup(tmp: Path) -> list[str]:
        import yaml

        config = classification_config(tmp)
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        space = {key: spec or {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}
        data["search"] = {"metric": "eval_accuracy", "trials": 2, "space": space, **(search or {})}
        write_config(config, data)
        if existing_run:
            previous_run(tmp)
        if empty_train:
            (tmp / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
        return [command, str(config), *flags]

    return setup


def mlm_tune_case(metric: str) -> Callable[[Path], list[str]]:
    """`llmtune tune --for pretrain-mlm` on a tiny masked-LM config searching the learning rate for `metric`."""

    def setup(tmp: Path) -> list[str]:
        train, _ = data_files(tmp)
        config = {
            "model": {"from_config": dict(TINY_BERT)},
            "tokenizer": {"train": {"type": "wordpiece", "vocab_size": 200, "min_frequency": 1}},
            "data": {"train_file": str(train), "validation_split": 0.25, "text_column": "sentence", "max_length": 32},
            "training": {"output_dir": str(tmp / "run"), "max_steps": 2},
            "search": {"metric": metric, "space": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
        }
        return ["tune", str(write_config(tmp / "cfg.yaml", config)), "--for", "pretrain-mlm"]

    return setup


# --- builders of slice 'validate' (issue 8, points 3 and 5) ----------------------------------------------

BERT_CLASSIFIER = {
    "model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 120, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
}
BERT_MLM = {**BERT_CLASSIFIER, "architectures": ["BertForMaskedLM"]}
GPT2_LM = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}


def model_dir(tmp: Path, fields: dict, name: str = "model") -> Path:
    """A model directory holding only config.json: all that the config-time model checks read."""
    path = tmp / name
    path.mkdir()
    _write(path / "config.json", json.dumps(fields))
    return path


def tokenizer_dir(tmp: Path, kind: str = "bpe", vocab_size: int = 300, name: str = "tok") -> Path:
    """A tokenizer trained on the sentiment rows and saved (no model)."""
    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    texts = [text for text, _ in sentiment_rows(64, seed=3)] * 4 + [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(40)]
    tokenizer = train_tokenizer(TokenizerTrainSection(type=kind, vocab_size=vocab_size, min_frequency=1), texts, 64)
    tokenizer.save_pretrained(tmp / name)
    return tmp / name


def over_model(fields: dict, *overrides: str, command: str = "finetune", tokenizer: str | None = None) -> Callable[[Path], list[str]]:
    """The tiny classification config moved onto a pretrained `model_dir` (its own tokenizer unless `tokenizer` is
    `train` or `dir`), over a previous run it must not touch."""

    def setup(tmp: Path) -> list[str]:
        train, dev = data_files(tmp)
        config = tiny_classification_config(train, dev, tmp / "run", save_strategy="no")
        config["model"] = {"name_or_path": str(model_dir(tmp, fields))}
        if tokenizer == "dir":
            config["tokenizer"] = {"name_or_path": str(tokenizer_dir(tmp))}
        elif tokenizer is None:
            config.pop("tokenizer")
        if command == "pretrain-mlm":
            config.pop("metrics")
            config["data"].pop("validation_file")
            config["data"]["validation_split"] = 0.25
        previous_run(tmp)
        return [command, str(write_config(tmp / "cfg.yaml", config)), *overrides, "--overwrite"]

    return setup


def inference_on(fields: dict, command: str, *args: str) -> Callable[[Path], list[str]]:
    """`llmtune generate|evaluate --model DIR ARGS` on a config.json-only model directory."""

    def setup(tmp: Path) -> list[str]:
        data_files(tmp)
        return [command, "--model", str(model_dir(tmp, fields)), *[a.format(tmp=tmp) for a in args]]

    return setup


def config_bytes(data: bytes) -> Callable[[Path], list[str]]:
    """A config file with exactly these bytes (`{train}`/`{dev}`/`{out}` filled in)."""

    def setup(tmp: Path) -> list[str]:
        train, dev = data_files(tmp)
        path = tmp / "cfg.yaml"
        path.write_bytes(data.replace(b"{train}", str(train).encode()).replace(b"{dev}", str(dev).encode()).replace(b"{out}", str(tmp / "run").encode()))
        return ["finetune", str(path)]

    return setup


CAUSAL_HEAD = """\
task: causal-lm
model:
  from_config: {{model_type: gpt2, n_embd: 32, n_layer: 2, n_head: 2, n_positions: 32}}
tokenizer:
  train: {{type: bpe, vocab_size: 300, min_frequency: 1}}
data:
  train_file: {train}
  validation_file: {dev}
  text_column: sentence
training:
  output_dir: {out}
"""
MLM_GPT2 = """\
model:
  from_config: {{model_type: gpt2, n_embd: 32, n_layer: 2, n_head: 2, n_positions: 64}}
tokenizer:
  train: {{type: wordpiece, vocab_size: 200, min_frequency: 1}}
data:
  train_file: {train}
  validation_file: {dev}
  text_column: sentence
  max_length: 32
training:
  output_dir: {out}
"""
SECRET = "hf_llmtuneTestSecret0123456789abcdef"


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
    Case(
        "predict-input-format-unknown",
        lambda tmp: ["predict", "--model", str(tmp / "model"), "--input", str(_write(tmp / "in.txt", "a text\n")), "--input-format", "xml"],
        ["--input-format: expected one of txt, jsonl", "got 'xml'"],
    ),
    Case(
        "predict-unknown-extension-names-input-format",
        lambda tmp: ["predict", "--model", str(tmp / "model"), "--input", str(_write(tmp / "in.raw", "a text\n"))],
        ["--input: unsupported file type '.raw'", "--input-format csv|jsonl|tsv|txt"],
    ),
    # --- validate --stats -----------------------------------------------------------------------------
    Case("validate-processes-without-stats", lambda tmp: ["validate", str(classification_config(tmp)), "--processes", "2"], ["--processes goes with --stats"]),
    Case(
        "validate-stats-of-a-generate-config",
        lambda tmp: ["validate", str(_write(tmp / "gen.yaml", f"model:\n  name_or_path: {tmp}\nprompts: [hello]\n")), "--stats"],
        ["--stats is for training configs", "not generate", "drop --stats"],
    ),
    Case(
        "validate-stats-of-an-evaluate-config",
        lambda tmp: ["validate", str(_write(tmp / "eval.yaml", f"model:\n  name_or_path: {tmp}\neval:\n  kind: auto\n")), "--stats"],
        ["--stats is for training configs", "not evaluate", "drop --stats"],
    ),
    Case(
        "validate-stats-finds-the-bad-row",
        lambda tmp: ["validate", str(classification_config(tmp)), "--stats", "data.train_file=" + str(_write(tmp / "bad.tsv", "sentence\tlabel\ngood\n"))],
        ["data.train_file:", "bad.tsv, line 2"],
    ),
    # --- data.format: files named their own way ------------------------------------------------------
    Case("data-format-unknown", with_override("data.format=xlsx"), ["data.format (command-line override)", "'txt'", "'parquet'"]),
    Case(
        "data-unknown-extension-names-data-format",
        lambda tmp: [*with_override()(tmp), "data.train_file=" + str(_write(tmp / "wiki.train.raw", "a text\n"))],
        ["data.train_file: unsupported file type '.raw'", "data.format: csv|tsv|json|jsonl|parquet|txt (a WikiText .raw file is txt)"],
    ),
    Case(
        "data-format-that-does-not-fit-the-content",
        lambda tmp: [*with_override("data.format=jsonl")(tmp), "data.train_file=" + str(_write(tmp / "train.dat", "sentence\tlabel\ngood film\t1\n"))],
        ["data.train_file:", "train.dat, line 1", "invalid JSON"],
    ),
    Case("data-format-on-parallel-files", seq2seq_case("data.format=csv"), ["data.format: csv does not apply to {source, target} file pairs"]),
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
    # --- slice 'validate' (issue 8, point 3: caught by llmtune validate and before any work) ---------------
    Case(
        "batch-size-zero-over-a-previous-run",
        with_override("training.per_device_train_batch_size=0", flags=("--overwrite",), existing_run=True),
        ["training.per_device_train_batch_size (command-line override)", "must be at least 1", "got 0"],
    ),
    Case(
        "eval-batch-size-negative",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  per_device_eval_batch_size: -4\n"),
        ["training.per_device_eval_batch_size (line 11)", "must be at least 1", "got -4"],
    ),
    Case(
        "gradient-accumulation-zero",
        with_override("training.gradient_accumulation_steps=0"),
        ["training.gradient_accumulation_steps (command-line override)", "must be at least 1"],
    ),
    Case(
        "zero-epochs-without-max-steps",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  num_train_epochs: 0\n"),
        ["training.num_train_epochs (line 11)", "trains nothing", "Set num_train_epochs above 0, or a positive training.max_steps"],
    ),
    Case("max-steps-zero", with_override("training.max_steps=0"), ["training.max_steps (command-line override)", "0 steps trains nothing"]),
    Case(
        "max-length-over-from-config-positions",
        with_override("data.max_length=128", flags=("--overwrite",), existing_run=True),
        ["data.max_length (command-line override)", "128 tokens", "only 64 positions (max_position_embeddings)",
         "raise model.from_config.max_position_embeddings"],
    ),
    Case(
        "default-max-length-over-gpt2-positions",
        raw_config(CAUSAL_HEAD),
        ["data.max_length (line 6): 128 tokens (the default)", "only 32 positions (n_positions)", "Set data.max_length: 32 or less"],
    ),
    Case(
        "max-length-over-pretrained-positions",
        over_model(BERT_CLASSIFIER, "data.max_length=100"),
        ["data.max_length (command-line override)", "only 64 positions", "the model cannot attend further"],
    ),
    Case(
        "from-config-vocab-smaller-than-tokenizer",
        with_override("model.from_config.vocab_size=150"),
        ["model.from_config.vocab_size (command-line override)", "fewer than tokenizer.train.vocab_size 200", "Remove model.from_config.vocab_size"],
    ),
    Case(
        "tokenizer-train-over-a-pretrained-model",
        over_model(BERT_CLASSIFIER, tokenizer="train"),
        ["tokenizer.train (line", "newly trained vocabulary over the pretrained model", "model.resize_embeddings: true"],
    ),
    Case(
        "tokenizer-larger-than-pretrained-embeddings",
        over_model(BERT_CLASSIFIER, tokenizer="dir"),
        ["tokenizer.name_or_path (line", "larger than the 120 embedding rows", "model.resize_embeddings: true"],
    ),
    Case(
        "generate-tokenizer-larger-than-embeddings",
        lambda tmp: ["generate", "--model", str(model_dir(tmp, {**GPT2_LM, "vocab_size": 100})), f"tokenizer.name_or_path={tokenizer_dir(tmp)}", "--prompt", "hi"],
        ["tokenizer.name_or_path (command-line override)", "larger than the 100 embedding rows", "inference cannot add embedding rows"],
    ),
    Case(
        "hidden-size-not-divisible-by-heads",
        with_override("model.from_config.num_attention_heads=3"),
        ["model.from_config.hidden_size (line", "hidden_size 32 is not divisible by num_attention_heads 3"],
    ),
    Case(
        "gpt2-hidden-size-not-divisible-by-heads",
        raw_config(CAUSAL_HEAD.replace("n_head: 2", "n_head: 5")),
        ["model.from_config.n_embd (line 3)", "n_embd 32 is not divisible by n_head 5"],
    ),
    Case("unknown-model-type", with_override("model.from_config.model_type=bertt"), ["model.from_config.model_type", "'bertt' is not a transformers model type", "Did you mean 'bert'"]),
    Case(
        "pretrain-mlm-with-a-causal-architecture",
        raw_config(MLM_GPT2, command="pretrain-mlm"),
        ["model.from_config.model_type (line 2)", "model type 'gpt2' cannot be trained as a masked language model"],
    ),
    Case(
        "pretrain-mlm-over-a-pretrained-causal-lm",
        over_model(GPT2_LM, "data.max_length=32", command="pretrain-mlm"),
        ["model.name_or_path (line", "model type 'gpt2' cannot be trained as a masked language model"],
    ),
    Case(
        "generate-with-a-classifier",
        inference_on(BERT_CLASSIFIER, "generate", "--prompt", "hello"),
        ["model.name_or_path (command-line override)", "generate needs a causal language model", "BertForSequenceClassification (a sequence classifier)"],
    ),
    Case(
        "generate-with-a-masked-lm",
        inference_on(BERT_MLM, "generate", "--prompt", "hello"),
        ["generate needs a causal language model", "BertForMaskedLM (a masked language model)", "task: causal-lm"],
    ),
    Case(
        "evaluate-generation-with-a-classifier",
        inference_on(BERT_CLASSIFIER, "evaluate", "eval.kind=generation", "data.validation_file={tmp}/dev.tsv"),
        ["eval.kind (command-line override)", "eval.kind generation needs a causal language model", "or set eval.kind: auto"],
    ),
    Case(
        "evaluate-classification-of-a-causal-lm",
        inference_on(GPT2_LM, "evaluate", "eval.kind=classification", "data.validation_file={tmp}/dev.tsv"),
        ["eval.kind classification needs a sequence classifier", "GPT2LMHeadModel (a causal language model)"],
    ),
    Case(
        "duplicate-keys",
        raw_config(VALID_HEAD + "  text_column: text\ntraining:\n  output_dir: {out}\n  learning_rate: 1e-3\n  learning_rate: 1e-4\n"),
        ["data.text_column: given twice, on line 8 and line 9", "training.learning_rate: given twice, on line 12 and line 13", "Delete one"],
    ),
    Case(
        "duplicate-keys-in-validate",
        lambda tmp: ["validate", str(_write(tmp / "cfg.yaml", "seed: 1\nseed: 2\n"))],
        ["seed: given twice, on line 1 and line 2"],
    ),
    Case(
        "config-not-utf8",
        config_bytes(VALID_HEAD.format(train="{train}", dev="{dev}").replace("text_column: sentence", "text_column: s\xe9ntence").encode("latin-1")
                     + b"training:\n  output_dir: {out}\n"),
        ["cfg.yaml:8:", "not valid UTF-8 (byte 0xe9", "Save the config as UTF-8"],
    ),
    # --- slice 'validate' (issue 8, point 5: secrets never in a config) -----------------------------------
    Case(
        "hub-token-in-the-config",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  push_to_hub: false\n  hub_token: " + SECRET + "\n"),
        ["training.hub_token (line 12)", "access tokens are not read from configs", "HF_TOKEN environment variable"],
    ),
    Case(
        "hub-token-override-in-validate",
        lambda tmp: ["validate", str(classification_config(tmp)), f"training.hub_token={SECRET}"],
        ["training.hub_token (command-line override)", "HF_TOKEN environment variable"],
    ),
    # --- output locations, --overwrite and interrupted runs (A1: nothing on disk is lost) --------------
    Case(
        "output-dir-is-a-file",
        lambda tmp: ["finetune", str(classification_config(tmp)), "--overwrite"] if _write(tmp / "run", "a file") else [],
        ["training.output_dir:", "run is a file, not a directory", "Choose another training.output_dir"],
    ),
    Case(
        "output-dir-under-a-file",
        lambda tmp: ["finetune", str(classification_config(tmp)), f"training.output_dir={_write(tmp / 'notes.txt', 'x')}/run"],
        ["training.output_dir:", "lies under", "notes.txt, which is a file, not a folder"],
    ),
    Case(
        "interrupted-run-without-flag",
        lambda tmp: ["finetune", str(classification_config(tmp))] if _interrupted_run(tmp) else [],
        ["run.incomplete holds an interrupted run", "--resume to continue it", "--overwrite to discard it"],
    ),
    Case(
        "overwrite-max-length-above-positions-keeps-previous-run",
        lambda tmp: ["pretrain-mlm", str(_mlm_config(tmp)), "data.max_length=128", "--overwrite"] if previous_run(tmp) else [],
        ["data.max_length (command-line override): 128 tokens", "max_position_embeddings"],
    ),
    Case(
        "overwrite-bad-column-keeps-interrupted-run",
        lambda tmp: ["finetune", str(classification_config(tmp)), "data.text_column=review", "--overwrite"] if _interrupted_run(tmp) else [],
        ["data.text_column", "'review' not found"],
    ),
    Case(
        "predict-output-is-a-directory",
        lambda tmp: ["predict", "--model", str(tmp / "model"), "--input", str(_write(tmp / "in.txt", "a text\n")), "--output", str(_mkdir(tmp / "out"))],
        ["--output:", "out is a directory", "Give a file path"],
    ),
    Case(
        "generate-output-is-a-directory",
        lambda tmp: ["generate", "--model", str(tmp / "model"), "--prompt", "hi", "--output", str(_mkdir(tmp / "out"))],
        ["--output:", "out is a directory", "Give a file path"],
    ),
    Case(
        "evaluate-output-dir-is-a-file",
        lambda tmp: ["evaluate", "--model", str(tmp / "model"), "--output-dir", str(_write(tmp / "report", "a file"))],
        ["--output-dir:", "report is a file, not a directory"],
    ),
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
    # --- slice 'stream' (issue 9.6): a bad row after records were streamed; --output still leaves no file ---
    Case(
        "generate-too-long-prompt-after-two-windows-with-output",
        lambda tmp: _streamed_then_bad(tmp, "generate", "word " * 80),
        ["in.txt, line 41: the prompt has", "Shorten the prompt or lower generation.max_new_tokens"],
    ),
    Case(
        "predict-invalid-json-after-two-windows-with-output",
        lambda tmp: _streamed_then_bad(tmp, "predict", "{oops"),
        ["in.jsonl, line 41", "invalid JSON", "Each line must be one JSON object"],
    ),
    # --- slice 'precision'' (issue 9, points 2 and 5): precision and kernels chosen for the machine ---------
    Case(
        "precision-bf16-on-cpu",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  bf16: true\n"),
        ["training.bf16 (line 11)", "needs a GPU", "training.precision: auto", "run on a GPU"],
    ),
    Case(
        "precision-fp16-on-cpu-over-a-previous-run",
        with_override("training.precision=fp16", flags=("--overwrite",), existing_run=True),
        ["training.precision (command-line override)", "fp16 mixed precision needs a GPU", "Set training.precision: auto"],
    ),
    Case(
        "precision-bf16-on-cpu-pretrain-mlm",
        lambda tmp: ["pretrain-mlm", str(_mlm_config(tmp)), "training.precision=bf16"],
        ["training.precision (command-line override)", "bf16 mixed precision needs a GPU"],
    ),
    Case("precision-tf32-on-cpu", with_override("training.tf32=true"), ["training.tf32 (command-line override)", "Ampere", "Remove training.tf32"]),
    Case(
        "precision-contradicts-bf16",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  precision: fp32\n  bf16: true\n"),
        ["training.bf16 (line 12)", "contradicts training.precision: fp32", "Remove training.bf16"],
    ),
    Case(
        "precision-bf16-and-fp16",
        with_override("training.bf16=true", "training.fp16=true"),
        ["training.bf16 and training.fp16 are both true", "Keep one"],
    ),
    Case("precision-unknown-value", with_override("training.precision=half"), ["training.precision (command-line override)", "'auto', 'bf16', 'fp16' or 'fp32'"]),
    Case(
        "resume-fp16-run-on-cpu",
        lambda tmp: _with_scaler(resumable_run(tmp, manifest={"dtype": "fp16"}), tmp),
        ["--resume: the run in", "trained in fp16", "scaler.pt", "Resume it on a CUDA GPU"],
    ),
    # issue 9, classification data path (length-grouped batches, padding per device):
    Case(
        "train-sampling-strategy-misspelt",
        with_override("training.train_sampling_strategy=group_by_lenght", existing_run=True),
        ["training.train_sampling_strategy", "'group_by_lenght' is not one of random, sequential, group_by_length, batch_rebalance",
         "Did you mean 'group_by_length'?"],
    ),
    Case(
        "mlm-pad-to-multiple-of-zero",
        raw_config(VALID_HEAD.split("data:")[0] + "data:\n  train_file: {train}\n  text_column: sentence\n  validation_split: 0.25\n"
                   "mlm:\n  pad_to_multiple_of: 0\ntraining:\n  output_dir: {out}\n", command="pretrain-mlm"),
        ["mlm.pad_to_multiple_of: must be at least 1, got 0", "Use auto, null or a positive number such as 8"],
    ),
    # issue 10, slice C (~key overrides remove a key):
    Case(
        "remove-override-missing-key",
        with_override("~model.from_confg", "model.name_or_path=bert-base-uncased", existing_run=True),
        ["override '~model.from_confg'", "nothing to remove, model has no key 'from_confg'", "Did you mean 'from_config'?"],
    ),
    Case(
        "remove-override-with-a-value",
        with_override("~model.from_config=null", existing_run=True),
        ["override '~model.from_config=null'", "takes no value", "write ~model.from_config to remove it, or model.from_config=VALUE"],
    ),
    Case(
        "remove-override-missing-section-evaluate",
        lambda tmp: ["evaluate", "~evl.batch_size", "--model", str(tmp / "model")],
        ["override '~evl.batch_size'", "nothing to remove, the config has no top-level key 'evl'. The config is empty."],
    ),
    # issue 10, slice C (generate with an encoder-decoder model):
    Case(
        "generate-seq2seq-prompt-longer-than-the-encoder",
        lambda tmp: ["generate", "--model", str(_tiny_bart(tmp)), "--prompt", "fine", "--prompt", "good film " * 40],
        ["--prompt 2: the prompt has", "tokens, more than the 64 positions of the model's encoder", "Shorten the prompt"],
    ),
    Case(
        "generate-seq2seq-max-new-tokens-over-the-decoder",
        lambda tmp: ["generate", "--model", str(_tiny_bart(tmp)), "--prompt", "fine", "generation.max_new_tokens=65"],
        ["max_new_tokens=65 is more than the model's 64 decoder positions", "Lower generation.max_new_tokens to 64 or less"],
    ),
    # issue 10, slice A (the registry): command-line options are schema fields the CLI fills, never config keys.
    Case(
        "overwrite-written-in-the-config",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\noverwrite: true\n"),
        ["overwrite (line", "this is the --overwrite option of the command, not a config key", "pass --overwrite instead"],
    ),
    Case(
        "resume-as-an-override",
        with_override("resume=true", existing_run=True),
        ["resume (command-line override)", "this is the --resume option of the command", "pass --resume instead"],
    ),
    Case(
        "fail-under-written-in-an-evaluate-config",
        lambda tmp: ["evaluate", str(_write(tmp / "eval.yaml", "model:\n  name_or_path: some/model\nfail_under: [accuracy=0.9]\n"))],
        ["fail_under (line 3)", "the --fail-under option of the command", "pass --fail-under instead"],
    ),
    # issue 10, slice D (evaluate TRAIN_CONFIG --model DIR, evaluate metrics:):
    Case(
        "evaluate-training-config-without-model",
        lambda tmp: ["evaluate", str(classification_config(tmp))],
        ["cfg.yaml is a finetune config", "Pass --model DIR, the trained model directory (this config's training.output_dir", "does not exist yet: run llmtune finetune"],
    ),
    Case(
        "evaluate-training-config-without-model-after-training",
        lambda tmp: ["evaluate", str(classification_config(tmp)), *_after(previous_run(tmp))],
        ["cfg.yaml is a finetune config", "Pass --model DIR, the trained model directory, e.g. --model ", "/run (this config's training.output_dir)"],
    ),
    Case(
        "evaluate-classification-config-with-a-causal-lm",
        lambda tmp: ["evaluate", str(classification_config(tmp)), "--model", str(model_dir(tmp, GPT2_LM))],
        ["cfg.yaml (task: classification, the default): this config trains classification (a sequence classifier)", "is GPT2LMHeadModel (a causal language model)", "Pass --model the output directory of this config's run"],
    ),
    Case(
        "evaluate-causal-lm-config-with-a-classifier",
        lambda tmp: [*raw_config(CAUSAL_HEAD, command="evaluate")(tmp), "--model", str(model_dir(tmp, BERT_CLASSIFIER))],
        ["task (line 1): this config trains causal-lm", "is BertForSequenceClassification (a sequence classifier)", "or evaluate that model with a config for finetune with task: classification"],
    ),
    Case(
        "evaluate-unknown-metric",
        inference_on(BERT_CLASSIFIER, "evaluate", "data.validation_file={tmp}/dev.tsv", "metrics=[acuracy]"),
        ["metrics (command-line override)", "'acuracy' is not a metric evaluate reports (did you mean 'accuracy'?)"],
    ),
    Case(
        "evaluate-metric-of-another-kind",
        inference_on(BERT_CLASSIFIER, "evaluate", "data.validation_file={tmp}/dev.tsv", "metrics=[accuracy, bleu]"),
        ["metrics: bleu is not reported by a classification evaluation; choose among accuracy, f1, precision, recall"],
    ),
    Case(
        "evaluate-metrics-for-a-kind-with-fixed-metrics",
        inference_on(GPT2_LM, "evaluate", "data.validation_file={tmp}/dev.tsv", "metrics=[accuracy]"),
        ["metrics: a causal-lm evaluation has fixed metrics (eval_perplexity", "remove metrics:"],
    ),
    Case(
        "evaluate-gate-on-a-metric-metrics-leaves-out",
        inference_on(BERT_CLASSIFIER, "evaluate", "data.validation_file={tmp}/dev.tsv", "metrics=[accuracy]", "--fail-under", "f1=0.5"),
        ["unknown metric in --fail-under f1: a classification evaluation reports eval_loss, eval_accuracy.", "metrics: leaves out f1"],
    ),
    # issue 10, slice B: task: seq2seq (parallel text files, its keys, its model)
    Case(
        "seq2seq-parallel-files-line-count-mismatch",
        seq2seq_case(files={"train.fr": lines(toy_pairs(63, seed=1), 1)}),
        ["data.train_file: the two sides are not line-aligned", "train.en has 64 lines but", "train.fr has 63", "line counts match"],
    ),
    Case(
        "seq2seq-parallel-file-empty-line",
        seq2seq_case(files={"train.en": lines(toy_pairs(4, seed=1), 0) + b"\n" + lines(toy_pairs(59, seed=5), 0)}),
        ["data.train_file.source:", "train.en, line 5: empty line", "Delete it together with the same line of the other side's file"],
    ),
    Case(
        "seq2seq-parallel-file-bad-utf8",
        seq2seq_case(files={"train.fr": lines(toy_pairs(2, seed=1), 1) + b"Le chat \xff.\n" + lines(toy_pairs(61, seed=5), 1)}),
        ["data.train_file.target:", "train.fr, line 3: byte 9 of the line (0xff) is not valid UTF-8", "Re-encode the file as UTF-8"],
    ),
    Case("seq2seq-parallel-file-missing", seq2seq_case(files={"train.fr": None}), ["data.train_file.target: file not found", "train.fr"]),
    Case(
        "seq2seq-missing-source-column",
        seq2seq_case(files={"dev.jsonl": b'{"en": "The cat.", "target": "Le chat."}\n'}),
        ["data.source_column: column 'source' not found in the validation data (columns: en, target)"],
    ),
    Case(
        "seq2seq-empty-target-cell",
        seq2seq_case(files={"test.tsv": b"source\ttarget\nThe cat.\tLe chat.\nThe dog.\t\n"}),
        ["data.test_file:", "test.tsv, line 3: no text in 'target'", "Fill it in or delete the row"],
    ),
    Case(
        "seq2seq-text-column-unused",
        seq2seq_case("data.text_column=sentence"),
        ["data.text_column is not used by task: seq2seq; remove it", "data.source_column"],
    ),
    Case(
        "classification-with-seq2seq-keys",
        with_override("data.source_column=en", "data.max_target_length=32"),
        ["data.source_column, data.max_target_length only apply to task: seq2seq", "or set task: seq2seq"],
    ),
    Case(
        "classification-with-generation",
        with_override("generation.num_beams=4"),
        ["generation only applies to task: seq2seq", "remove it for task: classification"],
    ),
    Case(
        "seq2seq-classification-metric",
        seq2seq_case("metrics=[bleu, accuracy]"),
        ["metrics: accuracy: task: seq2seq reports bleu, chrf", "choose among them"],
    ),
    Case(
        "seq2seq-wordpiece-tokenizer",
        seq2seq_case("tokenizer.train.type=wordpiece"),
        ["tokenizer.train.type: wordpiece has no end-of-sequence token", "use type: bpe"],
    ),
    Case("seq2seq-generation-key-misspelt", seq2seq_case("generation.num_beam=4"), ["generation.num_beam", "Did you mean 'num_beams'?"]),
    Case(
        "seq2seq-several-outputs-per-source",
        seq2seq_case("generation.num_return_sequences=2", "generation.num_beams=2"),
        ["generation.num_return_sequences: validation scores one output per source", "remove it"],
    ),
    Case(
        "seq2seq-model-without-seq2seq-head",
        seq2seq_case("model.from_config={model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"),
        ["model type 'bert' cannot be trained as a sequence-to-sequence model (finetune with task: seq2seq)", "e.g. t5, bart, marian"],
    ),
    Case(
        "seq2seq-source-longer-than-positions",
        seq2seq_case("data.max_source_length=100"),
        ["data.max_source_length (command-line override): 100 tokens, but the model has only 64 positions", "model.from_config.max_position_embeddings"],
    ),
    # issue 11 slice C: adapter dirs
    Case(
        "generate-adapter-dir-base-model-missing",
        lambda tmp: _adapter_case(tmp, "generate", "base-gone"),
        ["is a LoRA adapter dir whose base model", "base_model_name_or_path in", "does not exist", "Put the base model back", "merged/"],
    ),
    Case(
        "evaluate-adapter-dir-base-model-missing",
        lambda tmp: _adapter_case(tmp, "evaluate", "base-gone"),
        ["model.name_or_path:", "is a LoRA adapter dir whose base model", "does not exist", "merged/"],
    ),
    Case(
        "predict-adapter-config-not-json",
        lambda tmp: _adapter_case(tmp, "predict", "not-json"),
        ["--model:", "adapter_config.json: not valid JSON (line 1, column 2", "Save the adapter again with peft's save_pretrained", "merged/"],
    ),
    Case(
        "predict-adapter-dir-without-its-new-head",
        lambda tmp: _adapter_case(tmp, "predict", "head-missing"),
        ["--model:", "lacks weights the adapter does not hold either (classifier.bias, classifier.weight)", "would be random", "merged/"],
    ),
    # issue 11 slice A: LoRA
    Case(
        "peft-over-a-model-from-config",
        with_override("peft.r=4"),
        ["peft: LoRA adapts a pretrained model, but model.from_config builds a randomly initialised one", "set model.name_or_path", "remove peft:"],
    ),
    Case(
        "peft-pretrain-mlm-from-scratch",
        lambda tmp: ["pretrain-mlm", str(_mlm_config(tmp)), "peft.method=lora"],
        ["peft: LoRA adapts a pretrained model", "model.name_or_path"],
    ),
    Case(
        "peft-with-a-trained-tokenizer",
        over_model(BERT_CLASSIFIER, "peft.r=4", tokenizer="train"),
        ["peft: tokenizer.train gives the model a new vocabulary", "remove tokenizer.train"],
    ),
    Case(
        "peft-unknown-target-module",
        over_model(BERT_CLASSIFIER, "peft.target_modules=[querry, value]"),
        ["peft.target_modules (command-line override): in this bert model, 'querry' matches no module (did you mean 'query'?)", "classifier, dense, key, query, value"],
    ),
    Case(
        "peft-target-module-not-linear-validate",
        lambda tmp: ["validate", *over_model(BERT_CLASSIFIER, "peft.target_modules=[dropout]")(tmp)[1:-1]],
        ["peft.target_modules (command-line override): in this bert model, 'dropout' is not a Linear layer LoRA can adapt", "or set peft.target_modules: auto"],
    ),
    Case(
        "peft-with-resized-embeddings",
        over_model(BERT_CLASSIFIER, "peft.r=4", "model.resize_embeddings=true"),
        ["peft: model.resize_embeddings adds randomly initialised embedding rows that LoRA would leave untrained", "remove model.resize_embeddings"],
    ),
    Case("peft-rank-zero", over_model(BERT_CLASSIFIER, "peft.r=0"), ["peft.r (command-line override)", "greater than 0"]),
    Case("peft-dropout-above-one", over_model(BERT_CLASSIFIER, "peft.dropout=1.5"), ["peft.dropout (command-line override)", "less than 1"]),
    Case("peft-unknown-method", over_model(BERT_CLASSIFIER, "peft.method=qlora"), ["peft.method (command-line override)", "'lora'", "qlora"]),
    # issue 11 slice B: tune (search: section, search space checked against the config, output-directory rules)
    Case("tune-no-search-section", lambda tmp: ["tune", str(classification_config(tmp))], ["tune needs a search: section", "training.learning_rate: {type: float"]),
    Case("tune-unknown-key-in-search", tune_case({"sampler": "tpe"}), ["search.sampler (line", "unknown key", "Valid keys here: metric, direction, trials, space, pruning"]),
    Case("tune-unknown-key-in-a-space-entry", tune_case(spec={"type": "float", "low": 1e-5, "high": 1e-3, "scale": "log"}), ["search.space.training.learning_rate.scale (line", "unknown key", "log"]),
    Case("tune-empty-range", tune_case(spec={"type": "float", "low": 1e-3, "high": 1e-5}), ["search.space.training.learning_rate (line", "empty range: low (0.001) must be below high (1e-05)"]),
    Case("tune-log-scale-from-zero", tune_case(spec={"type": "float", "low": 0, "high": 1e-3, "log": True}), ["search.space.training.learning_rate (line", "log: true needs low > 0"]),
    Case("tune-categorical-without-choices", tune_case(spec={"type": "categorical"}), ["search.space.training.learning_rate (line", "type: categorical needs choices"]),
    Case("tune-choices-for-a-float", tune_case(spec={"type": "float", "low": 1e-5, "high": 1e-3, "choices": [1e-4]}), ["choices only apply to type: categorical"]),
    Case("tune-int-type-for-a-float-key", tune_case(spec={"type": "int", "low": 1e-5, "high": 1e-3}), ["search.space.training.learning_rate (line", "type: int takes whole numbers", "use type: float"]),
    Case(
        "tune-float-type-for-an-int-key",
        tune_case(key="training.per_device_train_batch_size", spec={"type": "float", "low": 8, "high": 32}),
        ["search.space.training.per_device_train_batch_size (line", "takes whole numbers, but type: float would try values between them", "use type: int"],
    ),
    Case(
        "tune-space-key-not-in-the-config",
        tune_case(key="data.max_lenght", spec={"type": "int", "low": 8, "high": 32}),
        ["search.space.data.max_lenght (line", "is not a key of a finetune config. Did you mean 'data.max_length'?"],
    ),
    Case(
        "tune-space-value-the-key-refuses",
        tune_case(key="training.per_device_train_batch_size", spec={"type": "categorical", "choices": [8, 0]}),
        ["search.space.training.per_device_train_batch_size (line", "choices[1] = 0 does not fit", "must be at least 1"],
    ),
    Case(
        "tune-space-value-over-the-model-positions",
        tune_case(key="data.max_length", spec={"type": "int", "low": 16, "high": 128}),
        ["search.space.data.max_length (line", "high = 128 does not fit data.max_length", "64 positions"],
    ),
    Case("tune-searching-the-output-dir", tune_case(key="training.output_dir", spec={"type": "categorical", "choices": ["a", "b"]}), ["search.space.training.output_dir (line", "cannot search training.output_dir"]),
    Case("tune-metric-the-run-does-not-report", tune_case({"metric": "eval_bleu"}), ["search.metric (line", "does not report 'eval_bleu'", "eval_loss, eval_accuracy, eval_f1"]),
    Case("tune-search-checked-by-validate", tune_case({"metric": "eval_acc"}, command="validate"), ["search.metric (line", "Did you mean 'eval_accuracy'?"]),
    Case("tune-existing-output-dir", tune_case(existing_run=True), ["training.output_dir:", "is not empty. Pass --overwrite to replace it (once the new study is complete), --resume"]),
    Case("tune-resume-without-a-study", tune_case(flags=("--resume",)), ["--resume: no study.db in", "Run without --resume"]),
    Case("tune-resume-and-overwrite", tune_case(flags=("--resume", "--overwrite")), ["--overwrite and --resume contradict each other"]),
    Case("tune-bad-data-found-by-the-first-trial", tune_case(empty_train=True), ["trial 0 (", "train.tsv"]),
    Case("tune-pretrain-mlm-metric", mlm_tune_case("eval_accuracy"), ["search.metric (line", "does not report 'eval_accuracy'", "eval_perplexity, eval_nll_per_token, eval_token_accuracy"]),
    # --- training.report_to an integration whose extra is not installed (issue 12: TensorBoard) -------
    Case(
        "report-to-tensorboard-not-installed",
        raw_config(VALID_HEAD + "training:\n  output_dir: {out}\n  report_to: [tensorboard]\n"),
        ["training.report_to (line 11)", "tensorboard needs the tensorboard package", 'pip install "llmtune[tensorboard]"'],
        missing=("tensorboard", "tensorboardX"),
    ),
    Case(
        "report-to-tensorboard-not-installed-over-a-previous-run",
        with_override("training.report_to=tensorboard", flags=("--overwrite",), existing_run=True),
        ["training.report_to (command-line override)", 'pip install "llmtune[tensorboard]"', "or remove tensorboard from training.report_to"],
        missing=("tensorboard", "tensorboardX"),
    ),
]


def _adapter_case(tmp: Path, command: str, mistake: str) -> list[str]:
    """A LoRA adapter dir (conftest.lora_adapter_dir) on a tiny base, broken by `mistake`, given to `command`.

    base-gone: the base model folder that adapter_config.json names was deleted. not-json: adapter_config.json
    is cut off after its first byte. head-missing: the run's new classifier head is not in the adapter.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from conftest import lora_adapter_dir, tiny_classifier_dir, tiny_gpt2_dir

    texts = [text for text, _ in sentiment_rows(12, seed=4)]
    source = _write(tmp / "in.txt", "\n".join(texts) + "\n")
    if command == "predict" and mistake == "head-missing":
        # A 3-label head put on a 2-label base, then left out of the adapter: nothing holds the trained head.
        labels = {"id2label": {0: "negative", 1: "neutral", 2: "positive"}, "label2id": {"negative": 0, "neutral": 1, "positive": 2}}
        base = tiny_classifier_dir(tmp / "base", ["negative", "positive"], texts)
        adapter = lora_adapter_dir(tmp / "run", base, "SEQ_CLS", ignore_mismatched_sizes=True, **labels)
        weights = adapter / "adapter_model.safetensors"
        save_file({k: v for k, v in load_file(weights).items() if ".classifier." not in k}, weights)
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        config.update(task_type=None, modules_to_save=None)  # a LoRA config that never asked for the head
        (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        return ["predict", "--model", str(adapter), "--input", str(source)]
    if command == "predict":
        adapter = lora_adapter_dir(tmp / "run", tiny_classifier_dir(tmp / "base", ["negative", "positive"], texts), "SEQ_CLS")
        args = ["predict", "--model", str(adapter), "--input", str(source)]
    else:
        adapter = lora_adapter_dir(tmp / "run", tiny_gpt2_dir(tmp / "base", texts), "CAUSAL_LM")
        args = ["generate", "--model", str(adapter), "--input", str(source)]
        if command == "evaluate":
            args = ["evaluate", "--model", str(adapter), f"data.validation_file={source}", "data.max_length=16"]
    if mistake == "base-gone":
        shutil.rmtree(tmp / "base")
    else:
        config = adapter / "adapter_config.json"
        config.write_text(config.read_text(encoding="utf-8")[:1], encoding="utf-8")
    return args


def _after(*steps: object) -> list[str]:
    """No arguments: `steps` only ran first (e.g. previous_run, leaving an output directory behind)."""
    return []


def _tiny_bart(tmp: Path) -> Path:
    """An untrained tiny BART (64 positions) saved to tmp/bart."""
    from test_generate_seq2seq import tiny_bart_dir

    return tiny_bart_dir(tmp / "bart", [text for text, _ in sentiment_rows(40, seed=4)])


def _with_scaler(args: list[str], tmp: Path) -> list[str]:
    """The fp16 loss scaler's state, as Trainer saves it in an fp16 run's checkpoint."""
    (tmp / "run" / "checkpoint-2" / "scaler.pt").write_bytes(b"scaler state")
    return args


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _interrupted_run(tmp: Path) -> Path:
    """What a killed run leaves: the staging folder beside the output directory, with a checkpoint."""
    staging = _mkdir(tmp / "run.incomplete")
    (staging / ".llmtune-staging").write_text("training\n", encoding="utf-8")
    (_mkdir(staging / "checkpoint-2") / "trainer_state.json").write_text('{"global_step": 2}', encoding="utf-8")
    return staging


def _mlm_config(tmp: Path) -> Path:
    """A tiny from-scratch pretrain-mlm config (64 positions) writing to tmp/run."""
    (tmp / "corpus.txt").write_text("\n".join(text for text, _ in sentiment_rows(40, seed=3)) + "\n", encoding="utf-8")
    return _write(
        tmp / "mlm.yaml",
        VALID_HEAD.split("data:")[0].format()
        + f"data:\n  train_file: {tmp / 'corpus.txt'}\n  validation_split: 0.2\ntraining:\n  output_dir: {tmp / 'run'}\n",
    )


def resumable_run(tmp: Path, *overrides: str, manifest: dict | None = None) -> list[str]:
    """A run interrupted at checkpoint-2 (its llmtune.yaml as training saves it), resumed with `overrides`."""
    from llmtune.config import load_config, save_config

    config = classification_config(tmp)
    checkpoint = tmp / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    save_config(load_config("finetune", config), checkpoint / "llmtune.yaml")
    (checkpoint / "model.safetensors").write_bytes(b"checkpoint weights")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}', encoding="utf-8")  # what makes it complete
    if manifest is not None:
        (checkpoint / "manifest.json").write_text(json.dumps({"world_size": 1, "data": [], **manifest}), encoding="utf-8")
    return ["finetune", str(config), *overrides, "--resume"]


def _streamed_then_bad(tmp: Path, command: str, bad_line: str) -> list[str]:
    """40 good inputs then a bad line 41, batch size 1 (windows of 16: two windows are written before line 41 is
    read), to `--output`: the file must not appear, as if the error had come before the first record."""
    from conftest import tiny_classifier_dir, tiny_gpt2_dir

    texts = [text for text, _ in sentiment_rows(40, seed=4)]
    if command == "generate":
        model = tiny_gpt2_dir(tmp / "lm", texts)
        source = _write(tmp / "in.txt", "\n".join(texts + [bad_line]) + "\n")
        return ["generate", "--model", str(model), "--input", str(source), "batch_size=1", "generation.max_new_tokens=4", "--output", str(tmp / "out.jsonl")]
    model = tiny_classifier_dir(tmp / "clf", ["negative", "positive"], texts)
    source = _write(tmp / "in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts) + bad_line + "\n")
    return ["predict", "--model", str(model), "--input", str(source), "--batch-size", "1", "--output", str(tmp / "out.jsonl")]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_matrix_is_large_and_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 15


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_exits_2_with_a_clear_message_and_changes_nothing(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = case.setup(tmp_path)
    if case.missing:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name in case.missing else find_spec(name, *rest))
    before = snapshot(tmp_path)
    result = invoke(*args, stdin=case.stdin)
    message = result.stderr
    assert result.exit_code == 2, f"exit {result.exit_code}\nstderr:\n{message[-3000:]}\nexception: {result.exception!r}"
    assert "Traceback" not in message and "Traceback" not in result.stdout
    assert message.count("error:") == 1, message
    assert SECRET not in message, "an access token was echoed"
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
