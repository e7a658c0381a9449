"""`llmtune predict` and the input reader: every input route, order, passthrough, truncation, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import run_cli, sentiment_rows, tiny_classifier_dir
from llmtune.cli import app
from llmtune.errors import DataError
from llmtune.inputs import read_records

LABELS = ["negative", "neutral", "positive"]
TEXTS = [text for text, _ in sentiment_rows(10, seed=5)]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier_dir(tmp_path_factory.mktemp("predict") / "model", LABELS, TEXTS)


@pytest.fixture(scope="module")
def expected(model: Path) -> list[dict[str, float]]:
    """Each text's probabilities from transformers' own text-classification pipeline, one text at a time."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model), top_k=None)
    return [{r["label"]: r["score"] for r in result} for result in classify(TEXTS, batch_size=1)]


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.strip().splitlines()]


def test_stdin_text_through_the_real_cli_keeps_order_and_matches_the_pipeline(model: Path, expected: list) -> None:
    proc = run_cli("predict", "--model", str(model), "--input", "-", "--batch-size", "3", stdin="\n".join(TEXTS) + "\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _lines(proc.stdout)
    assert len(rows) == len(TEXTS)
    for row, probs in zip(rows, expected):
        assert set(row) == {"label", "score", "probabilities"}
        assert row["probabilities"] == pytest.approx(probs, abs=1e-5)
        assert list(row["probabilities"]) == sorted(probs, key=probs.get, reverse=True)  # most likely first
        assert row["label"] == max(probs, key=probs.get) and row["score"] == pytest.approx(max(probs.values()), abs=1e-5)
    assert "predicted 10 rows (0 truncated" in proc.stderr


def test_jsonl_passthrough_top_k_and_output_file(model: Path, expected: list, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": f"r{i}", "review": t}) for i, t in enumerate(TEXTS)) + "\n\n", encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(model), "--input", str(source), "--text-field", "review", "--top-k", "2", "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    rows = _lines(out.read_text())
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(TEXTS))]
    assert all(len(r["probabilities"]) == 2 and "review" not in r for r in rows)
    assert [r["label"] for r in rows] == [max(p, key=p.get) for p in expected]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_and_tsv_with_sentence_pairs_and_truncation(model: Path, tmp_path: Path, suffix: str) -> None:
    sep = "," if suffix == ".csv" else "\t"
    source = tmp_path / f"pairs{suffix}"
    source.write_text(f"id{sep}first{sep}second\n" + "".join(f"{i}{sep}{t}{sep}{TEXTS[-1 - i]}\n" for i, t in enumerate(TEXTS[:4])), encoding="utf-8")
    args = ["predict", "--model", str(model), "--input", str(source), "--text-field", "first", "--text-pair-field", "second"]
    result = CliRunner().invoke(app, args + ["--max-length", "6"])
    assert result.exit_code == 0, result.stderr
    rows = _lines(result.stdout)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert "predicted 4 rows (4 truncated to 6 tokens)" in result.stderr
    untruncated = _lines(CliRunner().invoke(app, args).stdout)
    assert [r["probabilities"] for r in untruncated] != [r["probabilities"] for r in rows]  # the pair and the cut both count


def test_read_records_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("one\n\nthree\n", encoding="utf-8")
    assert [(r.line, r.fields) for r in read_records(tmp_path / "a.txt")] == [(1, {"text": "one"}), (2, {"text": ""}), (3, {"text": "three"})]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "x", "id": 7}\n\n{"text": "y"}\n'))
    assert [(r.line, r.fields) for r in read_records("-")] == [(1, {"text": "x", "id": 7}), (3, {"text": "y"})]
    monkeypatch.setattr("sys.stdin", io.StringIO("plain text\n"))
    assert [r.fields for r in read_records("-", field="sentence")] == [{"sentence": "plain text"}]


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": "oops"\n', {}, "bad.jsonl, line 2: invalid JSON"),
        ("list.jsonl", '{"text": "ok"}\n["text"]\n', {}, "line 2: expected a JSON object"),
        ("field.jsonl", '{"text": "ok"}\n{"txt": "no"}\n', {}, "line 2: no field 'text'. Did you mean 'txt'?"),
        ("number.jsonl", '{"text": 5}\n', {}, "line 1: field 'text' must be a string"),
        ("cols.csv", "id,body\n1,hello\n", {}, "cols.csv, line 2: no field 'text'"),
        ("cells.csv", "id,text\n1,hello,extra\n", {}, "line 2: more cells than header columns"),
        ("empty.jsonl", "\n\n", {}, "empty.jsonl: no data rows (it is empty or blank)"),
        ("pair.txt", "a\n", {"pair_field": "second"}, "sentence pairs need .jsonl, .csv or .tsv"),
        ("data.parquet", "", {}, "unsupported file type '.parquet'"),
    ],
)
def test_bad_input_names_the_line(tmp_path: Path, name: str, content: str, args: dict, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_records(tmp_path / name, **args)
    assert message in str(caught.value)


def test_bad_input_and_wrong_model_exit_2(model: Path, tmp_path: Path) -> None:
    from conftest import tiny_gpt2_dir

    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    result = runner.invoke(app, ["predict", "--model", str(model), "--input", str(bad)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "line 2: invalid JSON" in result.stderr
    missing = runner.invoke(app, ["predict", "--model", str(model), "--input", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "file not found" in missing.stderr
    lm = tiny_gpt2_dir(tmp_path / "lm", TEXTS)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    wrong = runner.invoke(app, ["predict", "--model", str(lm), "--input", str(tmp_path / "in.txt")])
    assert wrong.exit_code == 2 and "is not a sequence classifier (GPT2LMHeadModel)" in wrong.stderr


def test_input_format_reads_a_file_named_its_own_way(model: Path, tmp_path: Path) -> None:
    """--input-format overrides the extension: a `.dat` file of JSON lines predicts what the same `.jsonl` does."""
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS))
    (tmp_path / "in.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "in.dat").write_text(lines, encoding="utf-8")
    expected = CliRunner().invoke(app, ["predict", "--model", str(model), "--input", str(tmp_path / "in.jsonl")])
    named = CliRunner().invoke(app, ["predict", "--model", str(model), "--input", str(tmp_path / "in.dat"), "--input-format", "jsonl"])
    assert expected.exit_code == 0 and named.exit_code == 0, named.stderr
    assert named.stdout == expected.stdout and [r["id"] for r in _lines(named.stdout)] == list(range(len(TEXTS)))
    as_text = CliRunner().invoke(app, ["predict", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--input-format", "txt"])
    assert as_text.exit_code == 0 and "id" not in _lines(as_text.stdout)[0]  # each whole line classified as text
