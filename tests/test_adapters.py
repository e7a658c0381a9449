"""LoRA adapter dirs at inference: `evaluate`, `predict` and `generate` give on an adapter dir what they give on its merged dir.

The adapter dirs are built directly with peft (`conftest.lora_adapter_dir`) as a LoRA run writes them: the
PEFT adapter, the model's config.json and the tokenizer files, the merged model beside them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import (
    REPO,
    invoke,
    lora_adapter_dir,
    sentiment_rows,
    tiny_classification_config,
    tiny_classifier_dir,
    tiny_gpt2_dir,
    write_config,
    write_tsv,
)
from llmtune.modeling import is_adapter_dir

LABELS = ["negative", "neutral", "positive"]
PROMPTS = ["the film was", "a very", "boring and", "good"]


def _lines(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _json(result) -> dict:
    (line,) = _lines(result)
    return line


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-label BERT classifier base, a LoRA adapter dir on it (head in modules_to_save), the merged dir and a dev file."""
    tmp = tmp_path_factory.mktemp("lora-cls")
    rows = [(text, LABELS[i % 3]) for i, (text, _) in enumerate(sentiment_rows(24, seed=3))]
    base = tiny_classifier_dir(tmp / "base", LABELS, [t for t, _ in rows])
    adapter = lora_adapter_dir(tmp / "run", base, "SEQ_CLS", merged_dir=tmp / "run" / "merged")
    return {"base": base, "adapter": adapter, "merged": adapter / "merged", "dev": write_tsv(tmp / "dev.tsv", rows), "rows": rows}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GPT-2 base, a causal-LM LoRA adapter dir on it, the merged dir and a dev text file."""
    tmp = tmp_path_factory.mktemp("lora-gpt2")
    texts = [text for text, _ in sentiment_rows(24, seed=4)]
    (tmp / "dev.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    base = tiny_gpt2_dir(tmp / "base", texts)
    adapter = lora_adapter_dir(tmp / "run", base, "CAUSAL_LM", merged_dir=tmp / "run" / "merged")
    return {"base": base, "adapter": adapter, "merged": adapter / "merged", "dev": tmp / "dev.txt"}


def _predict(model: Path, texts: list[str]) -> list[dict]:
    return _lines(invoke("predict", "--model", str(model), "--input", "-", "--batch-size", "4", stdin="\n".join(texts) + "\n"))


def test_adapter_dir_is_recognised_by_its_adapter_config(classifier: dict) -> None:
    assert is_adapter_dir(classifier["adapter"]) and is_adapter_dir(str(classifier["adapter"]))
    assert not is_adapter_dir(classifier["merged"]) and not is_adapter_dir(classifier["base"])
    assert not is_adapter_dir("gpt2")  # a Hub id


def test_predict_on_the_adapter_dir_equals_the_merged_dir_and_differs_from_the_base(classifier: dict) -> None:
    texts = [text for text, _ in classifier["rows"]]
    adapter, merged, base = (_predict(classifier[k], texts) for k in ("adapter", "merged", "base"))
    assert [r["label"] for r in adapter] == [r["label"] for r in merged]
    for a, m in zip(adapter, merged):
        assert set(a["probabilities"]) == set(LABELS) == set(m["probabilities"])
        for label in LABELS:
            assert a["probabilities"][label] == pytest.approx(m["probabilities"][label], abs=1e-5)
    # The adapter (LoRA on query/value, the head from modules_to_save) really changed the model.
    largest = max(abs(a["probabilities"][label] - b["probabilities"][label]) for a, b in zip(adapter, base) for label in LABELS)
    assert largest > 1e-2


def test_predict_on_the_adapter_dir_equals_peft_on_the_base(classifier: dict) -> None:
    """Independent value: peft's own PeftModel on the base model, unmerged, one text at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = [text for text, _ in classifier["rows"]][:6]
    tokenizer = AutoTokenizer.from_pretrained(classifier["adapter"])
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(classifier["base"]), classifier["adapter"]).eval()
    with torch.no_grad():
        expected = [torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0], -1).tolist() for text in texts]
    for row, probs in zip(_predict(classifier["adapter"], texts), expected):
        assert [row["probabilities"][label] for label in LABELS] == pytest.approx(probs, abs=1e-5)


def test_evaluate_classification_on_adapter_and_merged_dirs(classifier: dict) -> None:
    args = [f"data.validation_file={classifier['dev']}", "data.text_column=sentence", "data.max_length=32"]
    adapter = _json(invoke("evaluate", "--model", str(classifier["adapter"]), *args))
    merged = _json(invoke("evaluate", "--model", str(classifier["merged"]), *args))
    assert adapter["kind"] == merged["kind"] == "classification"  # eval.kind: auto read the adapter dir's config.json
    assert adapter["model"] == str(classifier["adapter"])
    assert adapter["num_examples"] == merged["num_examples"] == len(classifier["rows"])
    assert adapter["eval_loss"] == pytest.approx(merged["eval_loss"], abs=1e-5)
    assert adapter["eval_accuracy"] == merged["eval_accuracy"]
    assert adapter["confusion_matrix"] == merged["confusion_matrix"]


def test_evaluate_a_training_config_on_its_adapter_dir(classifier: dict, tmp_path: Path) -> None:
    """`llmtune evaluate TRAIN_CONFIG --model ADAPTER_DIR`: the config's task (classification) matches the adapter dir's head."""
    config = write_config(tmp_path / "train.yaml", tiny_classification_config(classifier["dev"], classifier["dev"], tmp_path / "out"))
    adapter = _json(invoke("evaluate", str(config), "--model", str(classifier["adapter"])))
    merged = _json(invoke("evaluate", str(config), "--model", str(classifier["merged"])))
    assert adapter["kind"] == "classification" and adapter["num_examples"] == len(classifier["rows"])
    assert adapter["eval_loss"] == pytest.approx(merged["eval_loss"], abs=1e-5)


def _generate(model: Path, *extra: str) -> list[str]:
    rows = _lines(invoke("generate", "--model", str(model), "--input", "-", "generation.max_new_tokens=8", *extra, stdin="\n".join(PROMPTS) + "\n"))
    assert len(rows) == len(PROMPTS)
    return [row["completion"] for row in rows]


def test_generate_and_perplexity_on_a_causal_lm_adapter_dir_equal_the_merged_dir(gpt2: dict) -> None:
    adapter, merged, base = (_generate(gpt2[k]) for k in ("adapter", "merged", "base"))
    assert adapter == merged
    assert adapter != base

    args = [f"data.validation_file={gpt2['dev']}", "data.max_length=16"]
    scores = {k: _json(invoke("evaluate", "--model", str(gpt2[k]), *args)) for k in ("adapter", "merged", "base")}
    assert scores["adapter"]["kind"] == "causal-lm"
    assert scores["adapter"]["eval_scored_tokens"] == scores["merged"]["eval_scored_tokens"]
    assert scores["adapter"]["eval_perplexity"] == pytest.approx(scores["merged"]["eval_perplexity"], rel=1e-5)
    assert abs(scores["adapter"]["eval_perplexity"] - scores["base"]["eval_perplexity"]) > 1e-3


def test_generate_on_a_seq2seq_adapter_dir_equals_the_merged_dir(tmp_path: Path) -> None:
    from test_generate_seq2seq import tiny_bart_dir

    lines = (REPO / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()[:500]
    base = tiny_bart_dir(tmp_path / "base", lines)
    adapter = lora_adapter_dir(tmp_path / "run", base, "SEQ_2_SEQ_LM", merged_dir=tmp_path / "run" / "merged")
    outputs = {name: _generate(path) for name, path in (("adapter", adapter), ("merged", adapter / "merged"), ("base", base))}
    assert outputs["adapter"] == outputs["merged"]
    assert outputs["adapter"] != outputs["base"]


def test_an_adapter_dir_without_peft_says_how_to_install_it(classifier: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError, as when it is not installed
    result = invoke("predict", "--model", str(classifier["adapter"]), "--input", "-", stdin="a good film\n")
    assert result.exit_code == 2 and result.stdout == ""
    assert "pip install peft" in result.stderr and "merged/" in result.stderr and str(classifier["adapter"]) in result.stderr
    assert "Traceback" not in result.stderr
    # The merged dir is a plain model folder: it needs no peft.
    assert len(_predict(classifier["merged"], ["a good film"])) == 1


def test_a_base_whose_head_differs_gets_the_adapters_head(tmp_path: Path) -> None:
    """A run that put a 3-label head on a 2-label base: the base's head is dropped, the adapter's (modules_to_save) used."""
    texts = [text for text, _ in sentiment_rows(12, seed=6)]
    base = tiny_classifier_dir(tmp_path / "base", ["no", "yes"], texts)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {name: i for i, name in enumerate(LABELS)}}
    adapter = lora_adapter_dir(tmp_path / "run", base, "SEQ_CLS", merged_dir=tmp_path / "run" / "merged", ignore_mismatched_sizes=True, **labels)
    rows, merged = _predict(adapter, texts), _predict(adapter / "merged", texts)
    assert all(set(row["probabilities"]) == set(LABELS) for row in rows)
    assert [row["probabilities"] for row in rows] == [pytest.approx(row["probabilities"], abs=1e-5) for row in merged]


def test_evaluate_a_masked_lm_adapter_dir_equals_the_merged_dir(tmp_path: Path) -> None:
    """pretrain-mlm's LoRA output (peft task_type None): the fixed-mask perplexity is the merged model's."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    texts = [text for text, _ in sentiment_rows(40, seed=7)]
    (tmp_path / "dev.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), texts, 32)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, architectures=["BertForMaskedLM"])
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapter = lora_adapter_dir(tmp_path / "run", tmp_path / "base", "MASKED_LM", merged_dir=tmp_path / "run" / "merged")
    args = [f"data.validation_file={tmp_path / 'dev.txt'}", "data.max_length=32"]
    scores = {name: _json(invoke("evaluate", "--model", str(path), *args)) for name, path in
              (("adapter", adapter), ("merged", adapter / "merged"), ("base", tmp_path / "base"))}
    assert scores["adapter"]["kind"] == "masked-lm"
    assert scores["adapter"]["eval_scored_tokens"] == scores["merged"]["eval_scored_tokens"] > 0
    assert scores["adapter"]["eval_perplexity"] == pytest.approx(scores["merged"]["eval_perplexity"], rel=1e-5)
    assert abs(scores["adapter"]["eval_perplexity"] - scores["base"]["eval_perplexity"]) > 1e-3
