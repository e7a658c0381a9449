"""`llmtune evaluate`: metrics against independent computations, gates and exit codes, pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import (
    is_png,
    run_cli,
    sentiment_rows,
    tiny_classification_config,
    tiny_classifier_dir,
    tiny_gpt2_dir,
    write_tsv,
)
from llmtune.cli import app
from llmtune.config import load_config
from llmtune.evaluation.causal_lm import sliding_windows
from llmtune.evaluation.classification import metric_names as classification_names
from llmtune.tasks import evaluate as evaluate_task

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An untrained 3-label classifier (it predicts a mix of labels) and a dev file with string labels."""
    tmp = tmp_path_factory.mktemp("classifier")
    rows = [(text, LABELS[i % 3]) for i, (text, _) in enumerate(sentiment_rows(30, seed=3))]
    dev = write_tsv(tmp / "dev.tsv", rows)
    return {"model": tiny_classifier_dir(tmp / "model", LABELS, [t for t, _ in rows]), "dev": dev, "rows": rows, "tmp": tmp}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("gpt2")
    texts = [text for text, _ in sentiment_rows(12, seed=4)]
    texts[3] = " ".join(texts)  # longer than the 16-token windows below
    (tmp / "dev.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"model": tiny_gpt2_dir(tmp / "model", texts), "dev": tmp / "dev.txt", "texts": texts}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier trained by llmtune (in-process), so its directory has llmtune.yaml and training_curves.png."""
    from llmtune.tasks.classification import run

    tmp = tmp_path_factory.mktemp("finetuned")
    train = write_tsv(tmp / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(16, seed=2))
    raw = tiny_classification_config(train, dev, tmp / "run", max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="no")
    raw["data"]["label_names"] = ["negative", "positive"]
    run(load_config("finetune", None, base=raw))
    return tmp / "run"


def _evaluate(**raw: object) -> dict:
    return evaluate_task.run(load_config("evaluate", None, base=raw))


def test_classification_metrics_match_scikit_learn(classifier: dict) -> None:
    import torch
    from sklearn import metrics as sk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = {"validation_file": str(classifier["dev"]), "text_column": "sentence", "max_length": 32}
    result = _evaluate(model={"name_or_path": str(classifier["model"])}, data=data, eval={"batch_size": 4})

    # Independent: one example at a time, no padding, scikit-learn metrics.
    tokenizer = AutoTokenizer.from_pretrained(classifier["model"])
    model = AutoModelForSequenceClassification.from_pretrained(classifier["model"]).eval()
    refs = [LABELS.index(label) for _, label in classifier["rows"]]
    with torch.no_grad():
        probs = [torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0], -1) for text, _ in classifier["rows"]]
    preds = [int(p.argmax()) for p in probs]
    assert len(set(preds)) > 1, "the random model should predict a mix of labels for this test to mean something"
    expected = {
        "eval_accuracy": sk.accuracy_score(refs, preds),
        "eval_f1": sk.f1_score(refs, preds, average="macro"),
        "eval_f1_weighted": sk.f1_score(refs, preds, average="weighted"),
        "eval_precision": sk.precision_score(refs, preds, average="macro", zero_division=0),
        "eval_precision_weighted": sk.precision_score(refs, preds, average="weighted", zero_division=0),
        "eval_recall": sk.recall_score(refs, preds, average="macro"),
        "eval_recall_weighted": sk.recall_score(refs, preds, average="weighted"),
        "eval_loss": float(sum(-math.log(p[r]) for p, r in zip(probs, refs)) / len(refs)),
    }
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-5), name
    assert result["kind"] == "classification" and result["num_examples"] == 30
    assert result["confusion_matrix"]["matrix"] == sk.confusion_matrix(refs, preds, labels=[0, 1, 2]).tolist()
    assert result["per_class"]["neutral"]["recall"] == pytest.approx(sk.recall_score(refs, preds, labels=[1], average="macro"))
    # Every reported metric is described, and the set matches what gates are checked against up front.
    names = classification_names(model.config)
    assert set(result["metrics_info"]) == set(names) == {k for k in result if k.startswith("eval_")}
    assert result["metrics_info"]["eval_f1_weighted"]["average"] == "weighted"


def _guide_perplexity(model_dir: Path, texts: list[str], max_length: int, stride: int | None) -> tuple[float, int]:
    """The transformers perplexity guide's loop, one window at a time, summing loss * tokens actually scored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nll_sum, n_tokens = 0.0, 0
    with torch.no_grad():
        if stride is None:
            for text in texts:
                ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_length]
                scored = ids.size(1) - 1
                nll_sum += model(ids, labels=ids).loss.item() * scored
                n_tokens += scored
        else:
            encodings = tokenizer("\n\n".join(texts), return_tensors="pt")
            seq_len = encodings.input_ids.size(1)
            prev_end_loc = 0
            for begin_loc in range(0, seq_len, stride):
                end_loc = min(begin_loc + max_length, seq_len)
                trg_len = end_loc - prev_end_loc
                input_ids = encodings.input_ids[:, begin_loc:end_loc]
                target_ids = input_ids.clone()
                target_ids[:, :-trg_len] = -100
                scored = int((target_ids[:, 1:] != -100).sum())
                nll_sum += model(input_ids, labels=target_ids).loss.item() * scored
                n_tokens += scored
                prev_end_loc = end_loc
                if end_loc == seq_len:
                    break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.mark.parametrize("stride", [None, 8], ids=["per-text", "sliding-window"])
def test_causal_lm_perplexity_matches_a_direct_torch_loop(gpt2: dict, stride: int | None) -> None:
    data = {"validation_file": str(gpt2["dev"]), "max_length": 16}
    result = _evaluate(model={"name_or_path": str(gpt2["model"])}, data=data, eval={"stride": stride, "batch_size": 3})
    perplexity, tokens = _guide_perplexity(gpt2["model"], gpt2["texts"], 16, stride)
    assert result["kind"] == "causal-lm"
    assert result["eval_scored_tokens"] == tokens
    assert result["eval_perplexity"] == pytest.approx(perplexity, rel=1e-4)
    assert result["eval_nll_per_token"] == pytest.approx(math.log(perplexity), rel=1e-4)
    method = "per-text" if stride is None else "sliding-window"
    assert result["perplexity_definition"] == result["metrics_info"]["eval_perplexity"]["method"] == method
    if stride is not None:
        assert result["metrics_info"]["eval_perplexity"]["stride"] == 8
        assert result["metrics_info"]["eval_perplexity"]["windows"] > 3


def test_sliding_windows_score_every_token_once() -> None:
    ids = list(range(23))
    windows = sliding_windows(ids, max_length=8, stride=3)
    scored = [tok for _, labels in windows for tok in labels if tok != -100]
    assert scored == ids  # each token is a target exactly once (the first is later dropped by the shift)
    assert all(len(window) <= 8 for window, _ in windows) and windows[1][0][0] == 3


def test_gates_exit_codes_and_messages(gpt2: dict) -> None:
    runner = CliRunner()
    base = ["evaluate", "--model", str(gpt2["model"]), f"data.validation_file={gpt2['dev']}", "data.max_length=16"]

    passed = runner.invoke(app, base + ["--fail-over", "perplexity=1e9", "--fail-under", "eval_scored_tokens=1"])
    assert passed.exit_code == 0, passed.stderr
    metrics = json.loads(passed.stdout)

    failed = runner.invoke(app, base + ["--fail-over", "perplexity=1", "--fail-under", "token_accuracy=0.99", "--fail-under", "scored_tokens=1"])
    assert failed.exit_code == 3
    assert json.loads(failed.stdout) == metrics  # the metrics are printed before the gates fail
    assert "2 of 3 gates failed" in failed.stderr
    assert f"eval_perplexity = {metrics['eval_perplexity']:.6g} is above 1 (--fail-over)" in failed.stderr
    assert "eval_token_accuracy" in failed.stderr and "scored_tokens" not in failed.stderr.split("failed:")[1]

    unknown = runner.invoke(app, base + ["--fail-under", "eval_acuracy=0.8"])
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert "unknown metric in --fail-under eval_acuracy" in unknown.stderr and "eval_perplexity" in unknown.stderr

    malformed = runner.invoke(app, base + ["--fail-under", "accuracy"])
    assert malformed.exit_code == 2 and "expected METRIC=NUMBER" in malformed.stderr


def test_finetuned_dir_is_evaluated_on_its_own_data_through_the_real_cli(finetuned: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = run_cli("evaluate", "--model", str(finetuned), "--output-dir", str(out), "--fail-under", "accuracy=1.01")
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["num_examples"] == 16 and result["confusion_matrix"]["labels"] == ["negative", "positive"]
    assert result["metrics_info"]["eval_f1"]["average"] == "binary"
    # The same numbers Trainer computed on the same validation data at the end of training.
    trained = json.loads((finetuned / "metrics.json").read_text())
    assert result["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    assert result["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-4)
    assert json.loads((out / "metrics.json").read_text()) == result
    assert is_png(out / "confusion_matrix.png")
    assert "eval_accuracy = " in proc.stderr and "is below 1.01 (--fail-under)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_training_writes_training_curves(finetuned: Path) -> None:
    assert is_png(finetuned / "training_curves.png")


def test_training_curves_plots_losses_and_metrics(tmp_path: Path) -> None:
    from llmtune.plots import _series, training_curves

    history = [{"loss": 0.7, "step": 2}, {"eval_loss": 0.6, "eval_accuracy": 0.5, "eval_runtime": 1.0, "step": 2}, {"loss": 0.5, "step": 4}]
    losses, metrics = _series(history)
    assert losses == {"train loss": [(2, 0.7), (4, 0.5)], "eval loss": [(2, 0.6)]}
    assert metrics == {"eval_accuracy": [(2, 0.5)]}
    assert is_png(training_curves(history, tmp_path / "c.png"))
    assert is_png(training_curves([], tmp_path / "empty.png"))


def test_evaluate_user_errors(classifier: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    no_data = runner.invoke(app, ["evaluate", "--model", str(classifier["model"])])
    assert no_data.exit_code == 2 and "data: no data to evaluate on" in no_data.stderr
    nothing = runner.invoke(app, ["evaluate"])
    assert nothing.exit_code == 2 and "CONFIG file or --model" in nothing.stderr
    no_test = runner.invoke(app, ["evaluate", "--model", str(classifier["model"]), f"data.validation_file={classifier['dev']}", "eval.split=test"])
    assert no_test.exit_code == 2 and "eval.split: no test data" in no_test.stderr
    bad_label = write_tsv(tmp_path / "bad.tsv", [("a film", "negative"), ("a film", "sarcastic")])
    unknown = runner.invoke(app, ["evaluate", "--model", str(classifier["model"]), f"data.validation_file={bad_label}", "data.text_column=sentence"])
    assert unknown.exit_code == 2 and f"data.validation_file: {bad_label}, line 3: label 'sarcastic' in" in unknown.stderr


def test_sections_of_another_kind_are_reported_as_ignored(classifier: dict, caplog: pytest.LogCaptureFixture) -> None:
    data = {"validation_file": str(classifier["dev"]), "text_column": "sentence", "max_length": 32}
    with caplog.at_level("WARNING", logger="llmtune"):
        result = _evaluate(model={"name_or_path": str(classifier["model"])}, data=data, mlm={"probability": 0.3})
    assert result["kind"] == "classification"
    assert "mlm: ignored, it applies to eval.kind masked-lm and this is a classification evaluation" in caplog.text
