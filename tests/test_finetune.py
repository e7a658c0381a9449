"""End-to-end `llmtune finetune` (classification) on a tiny BERT through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import check_model_card, invoke, run_cli, stdout_json, tiny_classification_config, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run shared by the tests below (training is the slow part)."""
    from conftest import sentiment_rows, write_tsv

    tmp = tmp_path_factory.mktemp("finetune")
    train = write_tsv(tmp / "train.tsv", sentiment_rows(96, seed=1))
    dev = write_tsv(tmp / "dev.tsv", sentiment_rows(32, seed=2))
    out = tmp / "run"
    config = write_config(tmp / "cfg.yaml", tiny_classification_config(train, dev, out, eval_strategy="epoch"))
    proc = run_cli("finetune", str(config), "data.label_names=[negative, positive]")
    return {"proc": proc, "out": out, "config": config, "tmp": tmp}


def test_stdout_is_exactly_the_metrics_json(trained: dict) -> None:
    metrics = stdout_json(trained["proc"])
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "train_loss"):
        assert key in metrics
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert json.loads((trained["out"] / "metrics.json").read_text()) == metrics


@pytest.mark.smoke("classification")
def test_output_dir_is_a_hugging_face_model_dir_that_pipeline_uses(trained: dict) -> None:
    from transformers import AutoTokenizer, pipeline

    out = trained["out"]
    stdout_json(trained["proc"])
    for name in ("model.safetensors", "config.json", "tokenizer.json", "llmtune.yaml", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    card = check_model_card(out, stdout_json(trained["proc"]), "llmtune predict")
    assert "f1 of the positive class (label id 1, 'positive')" in card and f'pipeline("text-classification", model="{out.resolve()}")' in card
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert AutoTokenizer.from_pretrained(out).tokenize("great film") != []
    classify = pipeline("text-classification", model=str(out))
    result = classify(["a great and charming film", "a dull boring film"])
    assert [r["label"] in {"negative", "positive"} for r in result] == [True, True]


def test_resolved_config_is_saved(trained: dict) -> None:
    stdout_json(trained["proc"])
    saved = yaml.safe_load((trained["out"] / "llmtune.yaml").read_text())
    assert saved["data"]["label_names"] == ["negative", "positive"]  # the override
    assert saved["data"]["max_length"] == 32
    assert saved["training"]["num_train_epochs"] == 1
    assert saved["metrics"] == ["accuracy", "f1"]


def test_refuses_a_non_empty_output_dir_and_keeps_it(trained: dict) -> None:
    stdout_json(trained["proc"])
    before = sorted(p.name for p in trained["out"].iterdir())
    proc = run_cli("finetune", str(trained["config"]))
    assert proc.returncode == 2
    assert "is not empty" in proc.stderr and "--overwrite" in proc.stderr and "--resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in trained["out"].iterdir()) == before


def test_resume_continues_from_the_last_checkpoint(trained: dict) -> None:
    stdout_json(trained["proc"])
    first = json.loads((trained["out"] / "trainer_state.json").read_text())
    # The run's own settings (its label_names override too: --resume refuses a config that differs), one more epoch.
    proc = run_cli("finetune", str(trained["config"]), "data.label_names=[negative, positive]", "training.num_train_epochs=2", "--resume")
    metrics = stdout_json(proc)
    assert metrics["epoch"] == pytest.approx(2.0)
    state = json.loads((trained["out"] / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * first["global_step"]
    # The second run logged only the second epoch's steps: it did not start over.
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert min(steps) <= first["global_step"] < max(steps)
    assert f"resuming from {trained['out'] / 'checkpoint-'}" in proc.stderr
    assert "training.num_train_epochs changed from 1.0 to 2.0: the run's length changes" in proc.stderr


def test_resume_without_checkpoint_is_a_user_error(tmp_path: Path, sentiment_files: dict) -> None:
    config = write_config(tmp_path / "c.yaml", tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], tmp_path / "empty"))
    result = invoke("finetune", str(config), "--resume")
    assert result.exit_code == 2
    assert "no checkpoint" in result.stderr


def test_overwrite_replaces_the_output_dir(tmp_path: Path, sentiment_files: dict) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    config = write_config(
        tmp_path / "c.yaml", tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], out, max_steps=2)
    )
    result = invoke("finetune", str(config), "--overwrite")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "eval_accuracy" in json.loads(result.stdout)
    assert not (out / "stale.txt").exists()
    assert (out / "model.safetensors").is_file()


def test_bad_data_fails_cleanly_without_touching_the_output(tmp_path: Path, sentiment_files: dict) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    config = write_config(tmp_path / "c.yaml", tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], out))
    result = invoke("finetune", str(config), "data.text_column=sentense", "--overwrite")
    assert result.exit_code == 2
    assert "data.text_column: column 'sentense' not found" in result.stderr and "Did you mean 'sentence'?" in result.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_unreachable_hub_model_is_one_clear_message(tmp_path: Path, sentiment_files: dict) -> None:
    cfg = tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], tmp_path / "run")
    cfg["model"] = {"name_or_path": "bert-base-uncased"}
    cfg.pop("tokenizer")
    result = invoke("finetune", str(write_config(tmp_path / "c.yaml", cfg)))
    assert result.exit_code == 2
    assert "model.name_or_path: 'bert-base-uncased' is not a local directory and could not be fetched" in result.stderr
    assert "Traceback" not in result.stderr


def test_early_stopping_patience_adds_trainers_callback(tmp_path: Path, sentiment_files: dict) -> None:
    from llmtune.config import load_config
    from llmtune.runs import training_arguments
    from transformers import EarlyStoppingCallback

    cfg = tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], tmp_path / "run", early_stopping_patience=2)
    loaded = load_config("finetune", write_config(tmp_path / "c.yaml", cfg))
    args, callbacks = training_arguments(loaded)
    assert [type(c) for c in callbacks] == [EarlyStoppingCallback]
    assert callbacks[0].early_stopping_patience == 2
    assert args.load_best_model_at_end and args.eval_strategy == "epoch"


def test_tilde_overrides_switch_a_from_scratch_config_to_a_pretrained_start(tmp_path: Path, sentiment_files: dict) -> None:
    from transformers import AutoTokenizer

    from conftest import sentiment_rows, tiny_classifier_dir

    # A "pretrained" model whose tokenizer knows words the training data lacks, and a from-scratch config.
    texts = [f"{t} zebra quokka" for t, _ in sentiment_rows(50, seed=9)]
    pretrained = tiny_classifier_dir(tmp_path / "pretrained", ["negative", "positive"], texts)
    out = tmp_path / "run"
    config = write_config(tmp_path / "cfg.yaml", tiny_classification_config(sentiment_files["train"], sentiment_files["dev"], out))
    result = invoke("finetune", str(config), "~model.from_config", "~tokenizer.train", f"model.name_or_path={pretrained}")
    assert result.exit_code == 0, result.stderr[-3000:]
    assert "eval_accuracy" in json.loads(result.stdout)
    saved = yaml.safe_load((out / "llmtune.yaml").read_text())
    assert saved["model"]["from_config"] is None and saved["model"]["name_or_path"] == str(pretrained)
    assert saved["tokenizer"]["train"] is None
    # The run used the pretrained model's own tokenizer, not a newly trained one.
    vocab = AutoTokenizer.from_pretrained(out).get_vocab()
    assert vocab == AutoTokenizer.from_pretrained(pretrained).get_vocab() and "quokka" in vocab
