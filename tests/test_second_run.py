"""A second run of the same config reuses the first one's work: its tokenizer (llmtune's cache) and its
tokenized data (the datasets cache), and gives the same files and metrics.

Behaviour, not time: the second run is made to fail if it trains a tokenizer, and must not add a single
Arrow file to the datasets cache (a `map` that runs again writes a new one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, invoke, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv

# The CLI, with tokenizer training refused when $FORBID_TOKENIZER_TRAINING is set.
WRAPPER = """
import os, sys
if os.environ.get("FORBID_TOKENIZER_TRAINING"):
    import llmtune.modeling
    def refuse(*args, **kwargs):
        raise AssertionError("the second run trained its tokenizer again")
    llmtune.modeling._train_backend = refuse
from llmtune.cli import main
sys.argv = ["llmtune", *sys.argv[1:]]
main()
"""


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], env=full_env, cwd=REPO, capture_output=True, text=True, timeout=600)


def arrow_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*.arrow")}


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_tsv(tmp_path / "train.tsv", sentiment_rows(96, seed=1)),
        "dev": write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, seed=2)),
    }


@pytest.mark.slow  # ~20-35 s on 2 cores; the README test command (CI) runs slow tests
def test_second_run_reuses_the_tokenizer_and_the_tokenized_data(tmp_path: Path, data: dict[str, Path]) -> None:
    # Fresh caches, so the first run is a real first run.
    env = {"LLMTUNE_CACHE_DIR": str(tmp_path / "llmtune-cache"), "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}
    runs = []
    for i in (1, 2):
        config = write_config(tmp_path / f"cfg{i}.yaml", tiny_classification_config(data["train"], data["dev"], tmp_path / f"run{i}", save_strategy="no"))
        before = arrow_files(tmp_path / "hf-datasets")
        proc = cli("finetune", str(config), env={**env, **({"FORBID_TOKENIZER_TRAINING": "1"} if i == 2 else {})})
        runs.append({"metrics": stdout_json(proc), "stderr": proc.stderr, "new_arrow": arrow_files(tmp_path / "hf-datasets") - before})

    assert "reusing the tokenizer" not in runs[0]["stderr"]
    assert "tokenizer.train: reusing the tokenizer trained on the same data and settings" in runs[1]["stderr"]
    assert len(list((tmp_path / "llmtune-cache" / "tokenizers").glob("*.json"))) == 1
    # The first run tokenized (new cache files); the second loaded every map result from them.
    assert runs[0]["new_arrow"] and runs[1]["new_arrow"] == set()
    # Same tokenizer files, byte for byte, and the same training.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "run1" / name).read_bytes() == (tmp_path / "run2" / name).read_bytes(), name
    assert runs[1]["metrics"]["train_loss"] == runs[0]["metrics"]["train_loss"]
    assert runs[1]["metrics"]["eval_accuracy"] == runs[0]["metrics"]["eval_accuracy"]


def _key(config: Path, *overrides: str) -> str:
    from llmtune.cache import tokenizer_key
    from llmtune.config import load_config

    return tokenizer_key(load_config("finetune", config, list(overrides)))


def test_the_cache_key_follows_what_the_tokenizer_is_trained_on(tmp_path: Path, data: dict[str, Path]) -> None:
    config = write_config(tmp_path / "cfg.yaml", tiny_classification_config(data["train"], data["dev"], tmp_path / "run"))
    key = _key(config)
    assert key is not None and _key(config) == key
    # Inputs of the tokenizer: each one changes the key.
    for override in ("tokenizer.train.vocab_size=300", "tokenizer.train.lowercase=false", "seed=1", "data.max_train_samples=50", "data.text_column=label"):
        assert _key(config, override) != key, override
    # Settings that do not change the text do not: a learning-rate or model-size search reuses one tokenizer.
    for override in ("training.learning_rate=3e-4", "training.num_train_epochs=3", "model.from_config.hidden_size=64", f"training.output_dir={tmp_path / 'other'}"):
        assert _key(config, override) == key, override
    # The same path with other content is other data.
    data["train"].write_text(data["train"].read_text(encoding="utf-8").replace("good", "fine"), encoding="utf-8")
    assert _key(config) != key
    # Without tokenizer.train there is nothing to cache.
    assert _key(config, "tokenizer.train=null", "tokenizer.name_or_path=bert-base-uncased", "model.from_config=null", "model.name_or_path=x") is None


def test_a_damaged_cache_entry_is_trained_again_and_replaced(tmp_path: Path, data: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from tokenizers import Tokenizer

    monkeypatch.setenv("LLMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path / "cfg.yaml", tiny_classification_config(data["train"], data["dev"], tmp_path / "run", save_strategy="no"))
    entry = tmp_path / "cache" / "tokenizers" / f"{_key(config)}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text('{"version": "1.0", "trunc', encoding="utf-8")
    with caplog.at_level("INFO", logger="llmtune"):
        result = invoke("finetune", str(config))
    assert result.exit_code == 0, result.output
    assert f"ignoring the cached tokenizer {entry}" in caplog.text
    assert Tokenizer.from_file(str(entry)).to_str() == Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json")).to_str()


def test_an_unwritable_cache_does_not_stop_the_run(tmp_path: Path, data: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be\n", encoding="utf-8")
    monkeypatch.setenv("LLMTUNE_CACHE_DIR", str(blocker))
    config = write_config(tmp_path / "cfg.yaml", tiny_classification_config(data["train"], data["dev"], tmp_path / "run", save_strategy="no"))
    with caplog.at_level("INFO", logger="llmtune"):
        result = invoke("finetune", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["eval_accuracy"] >= 0
    assert "could not cache the trained tokenizer" in caplog.text
    assert blocker.read_text(encoding="utf-8") == "a file where the cache folder would be\n"
