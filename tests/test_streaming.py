"""`llmtune generate` and `llmtune predict` stream: lazy input, records in input order as batches finish, quiet closed pipes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, invoke, sentiment_rows, tiny_classifier_dir, tiny_gpt2_dir
from llmtune.streaming import WINDOW_BATCHES, in_input_order, reader_gone, windows

TEXTS = [text for text, _ in sentiment_rows(48, seed=7)]
# Prompts of many lengths (1 to 6 words), so that length grouping reorders them within a window.
PROMPTS = [" ".join(text.split()[: 1 + i % 6]) for i, text in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2_dir(tmp_path_factory.mktemp("stream") / "lm", TEXTS)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier_dir(tmp_path_factory.mktemp("stream") / "clf", ["negative", "neutral", "positive"], TEXTS)


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# --- the batching core ----------------------------------------------------------------------------------


def test_batches_are_length_grouped_and_the_earliest_input_runs_first() -> None:
    calls: list[list[str]] = []

    def run_batch(batch: list[str]) -> list[str]:
        calls.append(batch)
        return [item.upper() for item in batch]

    items = ["ccc", "a", "bbbb", "dd", "e", "ffffff", "gg"]
    results = in_input_order(items, run_batch, 2, len)
    assert next(results) == "CCC" and len(calls) == 1  # the first result after one batch
    assert [next(results) for _ in range(6)] == [s.upper() for s in items[1:]]
    # The batches of a whole-list sort by (length, position): (a, e), (dd, gg), (ccc, bbbb), (ffffff);
    # run in the order of the earliest input each holds (ccc is input 0, a input 1, dd input 3, ffffff 5).
    assert calls == [["ccc", "bbbb"], ["a", "e"], ["dd", "gg"], ["ffffff"]]


def test_windows_pull_items_only_as_they_are_needed() -> None:
    pulled: list[int] = []

    def source():
        for i in range(7):
            pulled.append(i)
            yield i

    chunks = windows(source(), 3)
    assert next(chunks) == [0, 1, 2] and pulled == [0, 1, 2]
    assert list(chunks) == [[3, 4, 5], [6]]
    assert list(windows(iter(range(5)), None)) == [[0, 1, 2, 3, 4]]


def test_reader_gone_sees_a_closed_pipe_only() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as stream:
        assert not reader_gone(stream)
        os.close(read)
        assert reader_gone(stream)
    assert not reader_gone(object())  # no descriptor (e.g. CliRunner's capture): never "gone"


# --- same records as before streaming -------------------------------------------------------------------


def test_generate_streamed_over_several_windows_equals_the_whole_input_batching(lm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.generation import build_generation_config, generate_texts

    batch = 2
    assert len(PROMPTS) > WINDOW_BATCHES * batch  # two windows, the second one short
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)), encoding="utf-8")
    result = invoke("generate", "--model", str(lm), "--input", str(source), f"batch_size={batch}", "generation.max_new_tokens=6")
    assert result.exit_code == 0, result.stderr
    rows = _jsonl(result.stdout)
    assert [(r["index"], r["id"], r["prompt"]) for r in rows] == [(i, i, p) for i, p in enumerate(PROMPTS)]

    # Today's (pre-streaming) batching: every prompt sorted by length at once, batch by batch.
    model, tokenizer = AutoModelForCausalLM.from_pretrained(lm).eval(), AutoTokenizer.from_pretrained(lm)
    config = build_generation_config(model, tokenizer, {"max_new_tokens": 6})
    whole = generate_texts(model, tokenizer, PROMPTS, config, batch_size=batch)
    assert [{k: r[k] for k in ("completion", "prompt_tokens", "completion_tokens", "finish_reason")} for r in rows] == [s[0] for s in whole]
    assert len({r["completion"] for r in rows}) > 1  # not a degenerate model that says the same for all


def test_predict_streamed_over_several_windows_equals_the_whole_input_batching(classifier: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmtune.inference import class_probabilities

    batch = 2
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    result = invoke("predict", "--model", str(classifier), "--input", str(source), "--batch-size", str(batch))
    assert result.exit_code == 0, result.stderr
    rows = _jsonl(result.stdout)
    assert len(rows) == len(PROMPTS) > WINDOW_BATCHES * batch
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(classifier).eval(), AutoTokenizer.from_pretrained(classifier)
    features = [dict(tokenizer(text, truncation=True)) for text in PROMPTS]
    whole = class_probabilities(model, tokenizer, features, batch)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    for row, probabilities in zip(rows, whole):
        # Other batch neighbours (other padding) move the float32 logits by ~1e-6, as in test_predict.
        assert row["probabilities"] == pytest.approx(dict(zip(names, probabilities)), abs=1e-5)
        assert row["label"] == names[probabilities.argmax()]
    assert len({r["label"] for r in rows}) > 1

    # Within one window the batches are exactly those of a whole-input sort: the very same numbers.
    one = WINDOW_BATCHES * batch
    source.write_text("\n".join(PROMPTS[:one]) + "\n", encoding="utf-8")
    result = invoke("predict", "--model", str(classifier), "--input", str(source), "--batch-size", str(batch))
    whole = class_probabilities(model, tokenizer, features[:one], batch)
    assert [r["probabilities"] for r in _jsonl(result.stdout)] == [dict(zip(names, map(float, p))) for p in whole]


# --- a bad row after good ones ----------------------------------------------------------------------------


def test_generate_bad_row_after_two_windows_keeps_the_streamed_records_and_writes_no_file(lm: Path, tmp_path: Path) -> None:
    lines = PROMPTS[:40] + ["word " * 80]  # line 41 does not fit the 64-token context
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["generate", "--model", str(lm), "--input", str(source), "batch_size=1", "generation.max_new_tokens=4"]
    result = invoke(*args)
    assert result.exit_code == 2
    assert f"{source}, line 41: the prompt has" in result.stderr and "Traceback" not in result.stderr
    # Windows of 16 prompts: the first two (lines 1-32) were generated and written; the third holds line 41
    # and is checked before any of it runs.
    assert [r["index"] for r in _jsonl(result.stdout)] == list(range(2 * WINDOW_BATCHES))

    out = tmp_path / "out" / "gen.jsonl"
    out.parent.mkdir()
    result = invoke(*args, "--output", str(out))
    assert result.exit_code == 2 and "line 41: the prompt has" in result.stderr
    assert result.stdout == "" and list(out.parent.iterdir()) == []  # no file, no temporary file left


def test_predict_bad_row_after_two_windows_keeps_the_streamed_records_and_writes_no_file(classifier: Path, tmp_path: Path) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(PROMPTS[:40])) + '{"text": oops}\n', encoding="utf-8")
    args = ["predict", "--model", str(classifier), "--input", str(source), "--batch-size", "1"]
    result = invoke(*args)
    assert result.exit_code == 2
    assert f"{source}, line 41: invalid JSON" in result.stderr and "Traceback" not in result.stderr
    # Windows of 16 rows: lines 1-32 were predicted and written; the third window (lines 33-41) is read first.
    assert [r["id"] for r in _jsonl(result.stdout)] == list(range(2 * WINDOW_BATCHES))
    out = tmp_path / "out" / "preds.jsonl"
    out.parent.mkdir()
    result = invoke(*args, "--output", str(out))
    assert result.exit_code == 2 and "line 41: invalid JSON" in result.stderr
    assert result.stdout == "" and list(out.parent.iterdir()) == []


# --- only the main process writes -------------------------------------------------------------------------


def test_only_rank_0_writes_records_or_the_output_file(lm: Path, classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.txt").write_text("a fine film\n", encoding="utf-8")
    generate = ["generate", "--model", str(lm), "--prompt", "a fine", "generation.max_new_tokens=3"]
    predict = ["predict", "--model", str(classifier), "--input", str(tmp_path / "in.txt")]
    monkeypatch.setenv("RANK", "1")
    for args in (generate, predict):
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        result = invoke(*args, "--output", str(tmp_path / "out.jsonl"))
        assert result.exit_code == 0 and result.stdout == "" and not (tmp_path / "out.jsonl").exists()
    monkeypatch.setenv("RANK", "0")
    for args in (generate, predict):
        result = invoke(*args)
        assert result.exit_code == 0 and len(_jsonl(result.stdout)) == 1


# --- the real CLI on pipes --------------------------------------------------------------------------------


def _read_line(stream, seconds: float) -> bytes:
    """One line from a child's stdout pipe, failing the test if none comes within `seconds`."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no record within {seconds} s"
    return stream.readline()


@pytest.mark.parametrize("command", ["generate", "predict"])
def test_first_record_arrives_while_stdin_is_still_open_and_a_closed_pipe_ends_quietly(command: str, lm: Path, classifier: Path) -> None:
    """The first record comes out while the child still waits for input (so the input is read lazily and the
    output streamed); closing the pipe after it (`| head -1`) ends the child with exit 0 and a clean stderr."""
    if command == "generate":
        args = ["generate", "--model", str(lm), "--input", "-", "batch_size=1", "generation.max_new_tokens=4"]
    else:
        args = ["predict", "--model", str(classifier), "--input", "-", "--batch-size", "1"]
    child = subprocess.Popen(
        [sys.executable, "-m", "llmtune", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        # One window (16 prompts at batch size 1) and a bit: enough to start, while stdin stays open.
        child.stdin.write(("\n".join(PROMPTS[:20]) + "\n").encode())
        child.stdin.flush()
        first = json.loads(_read_line(child.stdout, 240))
        assert child.poll() is None  # still running: it cannot have read its input to the end
        assert (first["index"], first["prompt"]) == (0, PROMPTS[0]) if command == "generate" else set(first) == {"label", "score", "probabilities"}
        child.stdout.close()  # what `head -1` does after its line
        try:
            child.stdin.write(("\n".join(PROMPTS) + "\n").encode())
            child.stdin.close()
        except BrokenPipeError:
            pass  # it already saw the closed pipe and left without reading the rest
        code = child.wait(timeout=240)
        stderr = child.stderr.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 0, stderr[-3000:]
    for bad in ("Traceback", "Exception ignored", "BrokenPipe", "error:"):
        assert bad not in stderr, stderr[-3000:]
    if command == "generate":
        # It stopped when the pipe closed: no batch of the second window (which needs prompts written after the
        # close) got past its check; 68 prompts would be generated otherwise.
        done = [int(line.split()[-2]) for line in stderr.splitlines() if line.startswith("INFO llmtune: generated")]
        assert done and max(done) <= WINDOW_BATCHES, stderr[-3000:]
    else:
        assert "predicted" not in stderr  # it did not run to the end
