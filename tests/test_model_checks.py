"""The config-time model checks (llmtune.config.model_checks) and the run-time embedding check in load_model.

The bad-input matrix (test_bad_inputs.py) holds one row per refused config; these tests cover what the
matrix cannot: configs that must still pass, the offline note, and the run-time side of resizing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import TINY_BERT, sentiment_rows, tiny_classification_config, write_config, write_tsv
from llmtune.config import load_config
from llmtune.errors import ConfigError, UserError


@pytest.fixture()
def files(tmp_path: Path) -> dict:
    return {
        "train": write_tsv(tmp_path / "train.tsv", sentiment_rows(24, seed=1)),
        "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(8, seed=2)),
        "tmp": tmp_path,
    }


def _config(files: dict, **changes: object) -> dict:
    cfg = tiny_classification_config(files["train"], files["dev"], files["tmp"] / "run")
    cfg.update(changes)
    return cfg


def _model_dir(path: Path, **fields: object) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**TINY_BERT, "vocab_size": 120, "architectures": ["BertForMaskedLM"], **fields}))
    return path


def test_max_length_equal_to_the_positions_passes(files: dict) -> None:
    path = write_config(files["tmp"] / "c.yaml", _config(files))
    assert load_config("finetune", path, ["data.max_length=64"]).data.max_length == 64
    with pytest.raises(ConfigError, match=r"data.max_length \(command-line override\): 65 tokens"):
        load_config("finetune", path, ["data.max_length=65"])


def test_every_problem_is_listed_once_together(files: dict) -> None:
    """Training values, model shape and data length: one error listing all of them."""
    path = write_config(files["tmp"] / "c.yaml", _config(files))
    with pytest.raises(ConfigError) as caught:
        load_config("finetune", path, ["training.per_device_train_batch_size=0", "data.max_length=100", "model.from_config.num_attention_heads=5"])
    problems = caught.value.problems
    assert len(problems) == 3
    assert [p.split(" ")[0] for p in problems] == ["training.per_device_train_batch_size", "data.max_length", "model.from_config.hidden_size"]


def test_an_unreachable_hub_model_skips_the_model_checks_with_a_note(files: dict, caplog: pytest.LogCaptureFixture) -> None:
    """Offline, a Hub id's config.json cannot be read at validate time; the run itself reports the model."""
    cfg = _config(files, model={"name_or_path": "some-org/not-in-the-cache"})
    cfg.pop("tokenizer")
    with caplog.at_level(logging.WARNING, logger="llmtune"):
        loaded = load_config("finetune", write_config(files["tmp"] / "c.yaml", cfg), ["data.max_length=100000"])
    assert loaded.data.max_length == 100000
    assert "'some-org/not-in-the-cache' is not a local directory" in caplog.text and "were skipped" in caplog.text


def test_a_local_dir_without_config_json_is_a_problem(files: dict) -> None:
    (files["tmp"] / "empty").mkdir()
    cfg = _config(files, model={"name_or_path": str(files["tmp"] / "empty")})
    cfg.pop("tokenizer")
    with pytest.raises(ConfigError, match="model.name_or_path .*cannot read the config.json"):
        load_config("finetune", write_config(files["tmp"] / "c.yaml", cfg))


def test_resize_embeddings_allows_a_new_vocabulary_for_training_only(files: dict) -> None:
    model = _model_dir(files["tmp"] / "model")
    cfg = _config(files, model={"name_or_path": str(model)})  # keeps tokenizer.train
    path = write_config(files["tmp"] / "c.yaml", cfg)
    with pytest.raises(ConfigError, match="tokenizer.train"):
        load_config("finetune", path)
    assert load_config("finetune", path, ["model.resize_embeddings=true"]).model.resize_embeddings is True
    for command, extra in (("generate", []), ("evaluate", [f"data.validation_file={files['dev']}"])):
        with pytest.raises(ConfigError, match="model.resize_embeddings is for training commands"):
            load_config(command, None, [f"model.name_or_path={model}", "model.resize_embeddings=true", *extra])


def test_a_causal_lm_may_generate_and_bert_configs_without_architectures_are_judged_by_type(files: dict) -> None:
    gpt2 = files["tmp"] / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "architectures": ["GPT2LMHeadModel"]}))
    assert load_config("generate", None, [f"model.name_or_path={gpt2}"]).model.name_or_path == str(gpt2)
    # No architectures: bert has a causal-LM class (BertLMHeadModel), so the type alone does not refuse it.
    bert = _model_dir(files["tmp"] / "bert", architectures=None)
    assert load_config("generate", None, [f"model.name_or_path={bert}"])


def _tiny_masked_lm(path: Path, vocab_size: int) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=vocab_size, **{k: v for k, v in TINY_BERT.items() if k != "model_type"})).save_pretrained(path)
    return path


def test_load_model_checks_the_trained_tokenizer_length(tmp_path: Path) -> None:
    """At run time the actual tokenizer length decides: refused unless model.resize_embeddings, and then the old rows are kept."""
    import torch
    from transformers import AutoModelForMaskedLM

    from llmtune.config.schema import ModelSection, TokenizerTrainSection
    from llmtune.modeling import load_model, train_tokenizer

    tokenizer = train_tokenizer(TokenizerTrainSection(vocab_size=200, min_frequency=1), [t for t, _ in sentiment_rows(64)], 32)
    saved = _tiny_masked_lm(tmp_path / "mlm", vocab_size=40)
    assert len(tokenizer) > 40
    with pytest.raises(UserError, match=rf"tokenizer: {len(tokenizer)} tokens, but .* has 40 embedding rows"):
        load_model(AutoModelForMaskedLM, ModelSection(name_or_path=str(saved)), tokenizer)
    resized = load_model(AutoModelForMaskedLM, ModelSection(name_or_path=str(saved), resize_embeddings=True), tokenizer)
    rows = resized.get_input_embeddings().weight
    assert rows.shape[0] == len(tokenizer)
    original = AutoModelForMaskedLM.from_pretrained(saved).get_input_embeddings().weight
    assert torch.equal(rows[:40], original)

    with pytest.raises(UserError, match=r"model.from_config.vocab_size: 50 embedding rows, but the tokenizer has"):
        load_model(AutoModelForMaskedLM, ModelSection(from_config={**TINY_BERT, "vocab_size": 50}), tokenizer)
