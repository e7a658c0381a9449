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


def test_unparseable_json_array_names_the_cause_not_datasets_wrapper(tmp_path: Path) -> None:
    """.json/.parquet have no lines to check: the message is the parser's, not "An error occurred while generating"."""
    path = tmp_path / "bad.json"
    path.write_text('[{"text": "a"}, {"text": ]')
    with pytest.raises(DataError, match=r"data.train_file: cannot read .*bad.json as .json data: Expected object or value") as caught:
        load_splits(DataSection(train_file=str(path)))
    assert "An error occurred" not in str(caught.value)


# --- the line reader (llmtune.inputs) as training's pre-check ----------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.tsv", b"", "empty.tsv: no data rows (it is empty or blank)"),
        ("empty.txt", b"", "empty.txt: no data rows (it is empty)"),
        ("blank.jsonl", b"\n  \n", "blank.jsonl: no data rows (it is empty or blank)"),
        ("head.tsv", b"text\tlabel\n\n", "head.tsv: no data rows, only the header line (text, label)"),
        ("head.csv", b"\xef\xbb\xbftext,label\r\n", "head.csv: no data rows, only the header line (text, label)"),  # BOM dropped
        ("latin.tsv", b"text\tlabel\nok\t1\ncr\xe8me\t0\n", "latin.tsv, line 3: byte 3 of the line (0xe8) is not valid UTF-8. Re-encode the file as UTF-8"),
        ("long.tsv", b"text\tlabel\n\ta\tb\t1\n", "long.tsv, line 2: more cells than header columns: 4 cells, the header has 2 columns (text, label)"),
        ("short.tsv", b"text\tlabel\nok\t1\nno tab here\n", "short.tsv, line 3: fewer cells than header columns: 1 cell"),
        ("long.csv", b'text,label\n"a, b",1\na, b,1\n', "long.csv, line 3: more cells than header columns: 3 cells"),
        ("bad.jsonl", b'{"text": "a"}\n\n{"text": "b",}\n', "bad.jsonl, line 3: invalid JSON (Expecting property name enclosed in double quotes at column 14)"),
        ("list.jsonl", b'{"text": "a"}\n[1, 2]\n', "list.jsonl, line 2: expected a JSON object"),
        ("some.jsonl", b'{"text": "a", "label": 1}\n{"label": 0}\n', "some.jsonl, line 2: no field 'text' (data.text_column), which other lines have"),
        ("type.jsonl", b'{"text": "a", "label": 1}\n{"text": 7, "label": 0}\n', "type.jsonl, line 2: 'text' (data.text_column) must be a string, got 7"),
    ],
)
def test_bad_training_file_names_key_file_line_and_fix(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_splits(DataSection(train_file=str(path)), {"data.text_column": "text", "data.label_column": "label"})
    assert str(caught.value).startswith(f"data.train_file: {path}")
    assert message in str(caught.value)


def test_headerless_file_counts_cells_against_column_names(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "nohead.tsv", [("fine", 1), ("dull", 0)], header=None)
    path.write_text(path.read_text() + "no label\n")
    with pytest.raises(DataError, match=r"nohead.tsv, line 3: fewer cells than header columns: 1 cell, data.column_names has 2 columns \(text, label\)"):
        load_splits(DataSection(train_file=str(path), column_names=["text", "label"]))


def test_reader_records_are_the_rows_datasets_loads(tmp_path: Path) -> None:
    """One reader: record N is row N of the loaded Dataset, with the line it starts on (BOM, CRLF, blank and
    spaces-only lines, a quoted cell over two lines, a delimiter-only row of empty cells, a 200 kB cell)."""
    from llmtune.inputs import iter_records

    path = tmp_path / "t.csv"
    long = b"x" * 200_000  # over the csv module's default cell limit; pandas has none
    path.write_bytes(b'\xef\xbb\xbftext,label\r\n"two\nlines",1\r\n\r\n   \nplain,0\n,\n"a, b",1\n' + long + b",0\n")
    records = list(iter_records(path, ".csv", "t.csv"))
    assert [r.line for r in records] == [2, 6, 7, 8, 9]
    loaded = load_splits(DataSection(train_file=str(path)))["train"]
    assert [r.fields["text"] or None for r in records] == loaded["text"]
    assert [int(r.fields["label"]) if r.fields["label"] else None for r in records] == loaded["label"]

    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a"}\n\n  \n{"text": "b"}\n')
    assert [(r.line, r.fields["text"]) for r in iter_records(jsonl, ".jsonl", "t.jsonl")] == [(1, "a"), (4, "b")]
    assert load_splits(DataSection(train_file=str(jsonl)))["train"]["text"] == ["a", "b"]

    txt = tmp_path / "t.txt"
    txt.write_text("a\n\nb\r\n")  # blank lines are rows of a text file
    assert [(r.line, r.fields["text"]) for r in iter_records(txt, ".txt", "t.txt")] == [(1, "a"), (2, ""), (3, "b")]
    assert load_splits(DataSection(train_file=str(txt)))["train"]["text"] == ["a", "", "b"]


def test_label_errors_name_the_line_after_blank_lines_and_a_header(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\nfine\t1\n\ndull\t0\nmeh\t\n")  # data row 3 is line 5
    data = DataSection(train_file=str(path))
    with pytest.raises(DataError, match=rf"data.train_file: {path}, line 5: no label in column 'label'"):
        encode_labels(load_splits(data), data)


def test_non_utf8_far_into_a_file_names_its_line(tmp_path: Path) -> None:
    """Files are decoded in large chunks; a bad byte past the first chunk still gets its own line number."""
    path = tmp_path / "big.txt"
    lines = [f"line number {i} of a long file".encode() for i in range(1, 5001)]
    lines[4320] = b"caf\xe9 " + lines[4320]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"big.txt, line 4321: byte 4 of the line \(0xe9\) is not valid UTF-8"):
        load_splits(DataSection(train_file=str(path)))


def test_reader_streams_and_leaves_no_file_open(tmp_path: Path) -> None:
    """The pre-check holds one line at a time: the first record arrives before the rest is read (the bad
    last line is not reached yet), and a failed check has closed the file even while its traceback lives."""
    import os

    from llmtune.data import check_file
    from llmtune.inputs import iter_records

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n' * 1000 + "oops\n")
    records = iter_records(path, ".jsonl", "t.jsonl")
    assert next(records).line == 1
    records.close()
    with pytest.raises(DataError, match="line 1001: invalid JSON") as caught:
        check_file(path, "data.train_file")
    open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(path) not in open_files, caught.traceback


def test_stdin_is_read_by_the_same_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from llmtune.inputs import read_records

    stdin = io.TextIOWrapper(io.BytesIO(b'{"text": "ok"}\n{"text": "caf\xe9"}\n'), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(DataError, match=r"stdin, line 2: byte 14 of the line \(0xe9\) is not valid UTF-8"):
        read_records("-")


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
    # The 9th token is kept: one last block padded to full length, masked out.
    assert [len(x) for x in packed["train"]["input_ids"]] == [4, 4, 4]
    assert [sum(x) for x in packed["train"]["attention_mask"]] == [4, 4, 1]
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


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".json", ".parquet", ".txt"])
def test_data_format_reads_a_file_named_its_own_way_as_its_extension_would(tmp_path: Path, suffix: str) -> None:
    """data.format overrides the extension: `train.raw` read as the format loads what `train<suffix>` does."""
    named = write_format(tmp_path, suffix)
    renamed = named.rename(tmp_path / "train.raw")
    (tmp_path / "again").mkdir()
    expected = load_splits(DataSection(train_file=str(write_format(tmp_path / "again", suffix))))["train"].to_list()
    assert load_splits(DataSection(train_file=str(renamed), format=suffix[1:]))["train"].to_list() == expected
    with pytest.raises(DataError, match=r"unsupported file type '\.raw'.*data\.format"):
        load_splits(DataSection(train_file=str(renamed)))


def test_data_format_also_decides_how_a_bad_row_is_found_by_line(tmp_path: Path) -> None:
    """The line a message names comes from reading the file in data.format too (a header, blank lines)."""
    path = tmp_path / "train.dat"
    path.write_text("text\tlabel\n\na fine film\tpos\n\nso boring\t\n", encoding="utf-8")
    data = DataSection(train_file=str(path), format="tsv")
    with pytest.raises(DataError, match=r"data.train_file: .*train.dat, line 5: no label in column 'label'"):
        encode_labels(load_splits(data), data)


def test_a_wikitext_raw_file_read_as_txt_is_packed_as_running_text_like_a_txt_file(tmp_path: Path) -> None:
    """A causal-LM `wiki.train.raw` with data.format: txt is cut into paragraphs and blocks exactly as the same `.txt` is."""
    from llmtune.config import load_config
    from llmtune.tasks import causal_lm

    text = " = Valkyria Chronicles = \n\n Senjō no Valkyria is a game .\n It was released in 2011 .\n\n = Gameplay = \n\n Units move .\n"
    prepared = {}
    for name, fmt in (("wiki.train.txt", None), ("wiki.train.raw", "txt")):
        (tmp_path / name).write_text(text * 4, encoding="utf-8")
        config = {
            "task": "causal-lm",
            "model": {"from_config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 32}},
            "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
            "data": {"train_file": str(tmp_path / name), "validation_split": 0.25, "max_length": 16, **({"format": fmt} if fmt else {})},
            "training": {"output_dir": str(tmp_path / f"run-{name}")},
        }
        cfg = load_config("finetune", None, base=config)
        tokenizer, splits = causal_lm.prepare_data(cfg, None)
        prepared[name] = {role: split["input_ids"] for role, split in splits.items()}
    assert prepared["wiki.train.raw"] == prepared["wiki.train.txt"]
    assert len(prepared["wiki.train.txt"]["train"]) > 1
