"""`llmtune evaluate TRAIN_CONFIG --model DIR`: a training config read as an evaluate config, and `metrics:`.

The models are tiny and untrained (random weights, saved like a trained output directory): what is under
test is which settings evaluate takes from the training config, not how good the model is. Each shipped
training config is checked against an evaluate config written out by hand with the same data section.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_BERT, invoke, run_cli, sentiment_rows, tiny_classifier_dir, tiny_gpt2_dir, write_config
from llmtune.config.schema import EvaluateConfig, FinetuneConfig, PretrainMLMConfig
from llmtune.config.training_view import training_only_keys

EVAL_ROWS = 40  # data.max_eval_samples: the shipped configs' validation sets hold hundreds of rows


def tiny_mlm_dir(path: Path, texts: list[str]) -> Path:
    """Save an untrained tiny BertForMaskedLM with a wordpiece tokenizer (64 positions)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tokenizer = train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), texts, 64)
    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **fields)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model per kind: a 2-label classifier, a GPT-2 with 128 positions (the Shakespeare config's
    data.max_length) and a masked LM."""
    tmp = tmp_path_factory.mktemp("models")
    texts = [text for text, _ in sentiment_rows(64, seed=5)]
    return {
        "classification": tiny_classifier_dir(tmp / "clf", ["negative", "positive"], texts),
        "causal-lm": tiny_gpt2_dir(tmp / "gpt2", texts, n_positions=128),
        "masked-lm": tiny_mlm_dir(tmp / "mlm", texts),
    }


def equivalent_evaluate_config(training_config: Path, model: Path, out: Path) -> Path:
    """The evaluate config a user would write by hand for what `training_config` trained: its seed, data
    (paths made absolute), metrics and mlm sections, and the model directory."""
    raw = yaml.safe_load(training_config.read_text(encoding="utf-8"))
    data = dict(raw["data"])
    for key in ("train_file", "validation_file", "test_file"):
        if key in data:
            data[key] = str((training_config.parent / data[key]).resolve())
    data["max_eval_samples"] = EVAL_ROWS
    config = {"seed": raw["seed"], "model": {"name_or_path": str(model)}, "data": data}
    config.update({key: raw[key] for key in ("metrics", "mlm") if key in raw})
    return write_config(out, config)


SHIPPED = [
    # config, kind, the keys evaluate says it ignores (in file order)
    ("configs/classification/sst2-quickstart.yaml", "classification", "model.from_config, tokenizer.train, training"),
    ("configs/classification/sst2-from-mlm.yaml", "classification", "model.name_or_path, training"),
    ("configs/causal-lm/shakespeare-quickstart.yaml", "causal-lm", "task, model.from_config, tokenizer.train, training"),
    ("configs/mlm/quickstart.yaml", "masked-lm", "model.from_config, tokenizer.train, training"),
]


@pytest.mark.parametrize(("config", "kind", "ignored"), SHIPPED, ids=[c.removeprefix("configs/").removesuffix(".yaml").replace("/", "-") for c, _, _ in SHIPPED])
def test_a_shipped_training_config_evaluates_the_model_given_by_model(
    config: str, kind: str, ignored: str, models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = models[kind]
    with caplog.at_level("INFO", logger="llmtune"):
        from_training = invoke("evaluate", config, "--model", str(model), f"data.max_eval_samples={EVAL_ROWS}")
    assert from_training.exit_code == 0, from_training.stderr[-3000:]
    result = json.loads(from_training.stdout)
    assert result["kind"] == kind and result["model"] == str(model)
    assert f"{config} is a {'pretrain-mlm' if kind == 'masked-lm' else 'finetune'} config: evaluate ignores its training-only keys {ignored} (the model is --model)" in caplog.text

    by_hand = invoke("evaluate", str(equivalent_evaluate_config(REPO / config, model, tmp_path / "eval.yaml")))
    assert by_hand.exit_code == 0, by_hand.stderr[-3000:]
    assert json.loads(by_hand.stdout) == result  # every metric, definition and count, not merely close
    if kind == "classification":
        # The training config's metrics: [accuracy, f1] choose what is reported (eval_loss always).
        assert {k for k in result if k.startswith("eval_")} == {"eval_loss", "eval_accuracy", "eval_f1"} == set(result["metrics_info"])
    if kind == "masked-lm":
        assert result["masking"]["probability"] == 0.15 and result["masking"]["seed"] == 42  # the config's mlm: and seed


def test_metrics_accuracy_reports_only_accuracy_and_loss_through_the_real_cli(models: dict[str, Path], tmp_path: Path) -> None:
    config = "configs/classification/sst2-quickstart.yaml"
    proc = run_cli("evaluate", config, "--model", str(models["classification"]), "metrics=[accuracy]", f"data.max_eval_samples={EVAL_ROWS}",
                   "--output-dir", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert {k for k in result if k.startswith("eval_")} == {"eval_loss", "eval_accuracy"} == set(result["metrics_info"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result
    # One line on stderr names what the training config had that evaluate does not read.
    lines = [line for line in proc.stderr.splitlines() if "training-only keys" in line]
    assert lines == [f"INFO llmtune: {config} is a finetune config: evaluate ignores its training-only keys model.from_config, tokenizer.train, training (the model is --model)"]

    # The same numbers as the full set (computed together, reported as chosen).
    full = invoke("evaluate", config, "--model", str(models["classification"]), "~metrics", f"data.max_eval_samples={EVAL_ROWS}")
    assert full.exit_code == 0, full.stderr[-3000:]
    everything = json.loads(full.stdout)
    assert {"eval_precision", "eval_recall", "eval_f1"} <= set(everything)
    assert everything["eval_accuracy"] == result["eval_accuracy"] and everything["eval_loss"] == result["eval_loss"]


def test_overrides_apply_to_the_evaluate_view(models: dict[str, Path]) -> None:
    """`eval.split=test data.test_file=...` on a training config: the same rows as a test split score the same."""
    base = ["evaluate", "configs/classification/sst2-quickstart.yaml", "--model", str(models["classification"]), f"data.max_eval_samples={EVAL_ROWS}"]
    validation = invoke(*base)
    as_test = invoke(*base, "eval.split=test", f"data.test_file={REPO / 'data' / 'sst2' / 'dev.tsv'}")
    assert validation.exit_code == 0 and as_test.exit_code == 0, as_test.stderr[-3000:]
    tested = json.loads(as_test.stdout)
    assert tested["split"] == "test" and {**tested, "split": "validation"} == json.loads(validation.stdout)


def test_generation_metrics_choose_among_bleu_chrf_and_rouge(models: dict[str, Path], tmp_path: Path) -> None:
    rows = [{"prompt": " ".join(text.split()[:3]), "reference": " ".join(text.split()[3:])} for text, _ in sentiment_rows(6, seed=6)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    base = ["evaluate", "--model", str(models["causal-lm"]), "eval.kind=generation", f"data.validation_file={data}", "generation.max_new_tokens=6"]
    full = invoke(*base)
    assert full.exit_code == 0, full.stderr[-3000:]
    everything = json.loads(full.stdout)
    chosen = invoke(*base, "metrics=[bleu, rouge]")
    assert chosen.exit_code == 0, chosen.stderr[-3000:]
    result = json.loads(chosen.stdout)
    expected = {"eval_bleu", "eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum", "eval_mean_completion_tokens", "eval_truncated_rate"}
    assert {k for k in result if k.startswith("eval_")} == expected == set(result["metrics_info"])
    assert {k: result[k] for k in expected} == {k: everything[k] for k in expected}


def test_training_only_keys_come_from_the_schemas() -> None:
    """What evaluate drops is what a training schema has and EvaluateConfig lacks, plus the shared sections' training keys."""
    finetune = {key for key in training_only_keys("finetune") if len(key) == 1}
    assert finetune == {(name,) for name in set(FinetuneConfig.model_fields) - set(EvaluateConfig.model_fields) - {"overwrite", "resume"}}
    assert ("task",) in finetune and ("training",) in finetune and ("metrics",) not in finetune  # evaluate reads metrics:
    mlm = {key for key in training_only_keys("pretrain-mlm") if len(key) == 1}
    assert mlm == {(name,) for name in set(PretrainMLMConfig.model_fields) - set(EvaluateConfig.model_fields) - {"overwrite", "resume"}}
    assert mlm == {("training",), ("peft",), ("search",)} and "mlm" in PretrainMLMConfig.model_fields  # evaluate reads mlm:
    assert {("model", "from_config"), ("tokenizer", "train"), ("model", "name_or_path")} <= set(training_only_keys("finetune"))
