"""Data loading for every file format, headerless files, labels, columns and validation splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_tsv
from llmtune.config.schema import DataSection
from llmtune.data import encode_labels, load_splits, require_columns, split_validation, tokenize_for_lm
from llmtune.errors import DataError

ROWS = [("a fine film", "pos"), ("a dull film", "neg"), ("great fun", "pos"), ("so boring", "neg")]


def write_format(tmp_path: Path, suffix: str, rows=ROWS) -> Path:
    path = tmp_path / f"train{suffix}"
    if suffix == ".tsv":
        write_tsv(path, rows, header=("text", "label"))
    elif suffix == ".csv":
        path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    elif suffix == ".json":
        path.write_text(json.dumps([{"text": t, "label": label} for t, label in rows]))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [label for _, label in rows]}), path)
    elif suffix == ".txt":
        path.write_text("".join(f"{t}\n" for t, _ in rows))
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".json", ".parquet"])
def test_every_table_format_loads_with_string_labels(tmp_path: Path, suffix: str) -> None:
    data = DataSection(train_file=str(write_format(tmp_path, suffix)))
    splits = load_splits(data)
    assert splits["train"]["text"] == [t for t, _ in ROWS]
    splits, names = encode_labels(splits, data)
    assert names == ["neg", "pos"]  # strings are sorted and numbered
    assert splits["train"]["labels"] == [1, 0, 1, 0]


def test_txt_is_one_example_per_line(tmp_path: Path) -> None:
    splits = load_splits(DataSection(train_file=str(write_format(tmp_path, ".txt"))))
    assert splits["train"].column_names == ["text"]
    assert len(splits["train"]) == 4


def test_headerless_tsv_with_column_names(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "nohead.tsv", [("he said \"wow\" loudly", 1), ("meh", 0)], header=None)
    data = DataSection(train_file=str(path), column_names=["text", "label"])
    splits = load_splits(data)
    assert splits["train"]["text"] == ['he said "wow" loudly', "meh"]  # unquoted TSV: quotes are text
    assert splits["train"]["label"] == [1, 0]


def test_integer_labels_keep_their_ids_and_take_names(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "t.tsv", [("x", 1), ("y", 0), ("z", 1)], header=("text", "label"))
    data = DataSection(train_file=str(path), label_names=["negative", "positive"])
    splits, names = encode_labels(load_splits(data), data)
    assert names == ["negative", "positive"]
    assert splits["train"]["labels"] == [1, 0, 1]
    assert splits["train"].features["labels"].names == names


def test_unknown_label_in_validation_names_file_and_row(tmp_path: Path) -> None:
    train = write_format(tmp_path, ".tsv")
    dev = write_tsv(tmp_path / "dev.tsv", [("ok", "pos"), ("hmm", "neutral")], header=("text", "label"))
    data = DataSection(train_file=str(train), validation_file=str(dev))
    # The header is line 1, so the second data row is line 3.
    with pytest.raises(DataError, match=rf"data.validation_file: {dev}, line 3: label 'neutral' is not a known label"):
        encode_labels(load_splits(data), data)


def test_missing_label_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": null}\n')  # a blank line: row 2 is line 3
    data = DataSection(train_file=str(path))
    with pytest.raises(DataError, match=rf"data.train_file: {path}, line 3: no label in column 'label'"):
        encode_labels(load_splits(data), data)


def test_missing_column_suggests_the_close_one(tmp_path: Path) -> None:
    data = DataSection(train_file=str(write_format(tmp_path, ".csv")), text_column="txt")
    with pytest.raises(DataError, match=r"data.text_column: column 'txt' not found .* Did you mean 'text'\?"):
        require_columns(load_splits(data), {"data.text_column": data.text_column})


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.train_file: file not found"):
        load_splits(DataSection(train_file=str(tmp_path / "nope.tsv")))
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_splits(DataSection(train_file=str(tmp_path / "x.xlsx")))


def test_unparseable_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{not json\n')
    with pytest.raises(DataError, match="data.train_file: cannot read"):
        load_splits(DataSection(train_file=str(path)))


def test_validation_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    rows = [(f"text {i}", "pos" if i % 4 else "neg") for i in range(200)]  # 75% pos
    data = DataSection(train_file=str(write_format(tmp_path, ".jsonl", rows)), validation_split=0.2)
    first, _ = encode_labels(load_splits(data), data)
    first = split_validation(first, data, seed=3, stratify_by="labels")
    second, _ = encode_labels(load_splits(data), data)
    second = split_validation(second, data, seed=3, stratify_by="labels")
    assert len(first["validation"]) == 40 and len(first["train"]) == 160
    assert first["validation"]["text"] == second["validation"]["text"]
    assert sum(first["validation"]["labels"]) == 30  # stratified: exactly 75% positive


def test_max_samples_caps(tmp_path: Path) -> None:
    data = DataSection(train_file=str(write_format(tmp_path, ".csv")), max_train_samples=3)
    assert len(load_splits(data)["train"]) == 3


def test_packing_keeps_the_remainder(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "a", "b", "c", "d"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    path = tmp_path / "t.txt"
    path.write_text("a b c\nd a\n\nb b b b\n")  # 9 tokens, one empty line
    data = DataSection(train_file=str(path), max_length=4)
    packed = tokenize_for_lm(load_splits(data), tokenizer, data, packing=True)
    assert [len(x) for x in packed["train"]["input_ids"]] == [4, 4, 1]
    lines = tokenize_for_lm(load_splits(data), tokenizer, data, packing=False)
    assert [len(x) for x in lines["train"]["input_ids"]] == [3, 2, 4]


def test_hub_data_offline_is_one_clear_message() -> None:
    data = DataSection(hub={"path": "glue", "name": "sst2"})
    with pytest.raises(DataError, match=r"data.hub: cannot load 'glue' \(sst2\) from the Hugging Face Hub.*Offline"):
        load_splits(data)


def test_training_without_validation_data_is_one_clear_message(tmp_path: Path) -> None:
    from llmtune.data import with_validation

    data = DataSection(train_file=str(write_format(tmp_path, ".csv")))
    with pytest.raises(DataError, match=r"data: no validation data\. Set data.validation_file or data.validation_split"):
        with_validation(load_splits(data), data, seed=0)
    carved = with_validation(load_splits(data), data.model_copy(update={"validation_split": 0.5}), seed=0)
    assert len(carved["validation"]) == 2
