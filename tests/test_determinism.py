"""Same config + seed = same model: tokenizers trained in separate processes, and whole runs, are bit-identical.

Each training happens in its own Python process on purpose: the WordPiece bug this guards against came
from a hash order that is random per process, so repeating it inside one process would not show it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv

# Trains a tokenizer on the lines of a text file in a fresh interpreter and saves it with save_pretrained.
TRAIN_SCRIPT = """
import sys
from llmtune.config.schema import TokenizerTrainSection
from llmtune.modeling import train_tokenizer
corpus, kind, vocab_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
texts = open(corpus, encoding="utf-8").read().splitlines()
spec = TokenizerTrainSection(type=kind, vocab_size=vocab_size, min_frequency=1, lowercase=kind == "wordpiece")
train_tokenizer(spec, iter(texts), 64).save_pretrained(out)
"""


def train_in_subprocess(corpus: Path, kind: str, vocab_size: int, out: Path) -> dict[str, bytes]:
    """Train in a new interpreter; return every saved file's bytes by name."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, str(corpus), kind, str(vocab_size), str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 SST-2 sentences: enough words for merges with tied counts (each tie was broken differently per process)."""
    lines = (REPO / "data" / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:601]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_tokenizer_files_are_byte_identical_across_processes(kind: str, corpus: Path, tmp_path: Path) -> None:
    runs = [train_in_subprocess(corpus, kind, 500, tmp_path / f"tok{i}") for i in range(2)]
    assert set(runs[0]) >= {"tokenizer.json", "tokenizer_config.json"}
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        for name in runs[0]:
            assert other[name] == runs[0][name], f"{kind}: {name} differs between two processes"


def test_wordpiece_alphabet_limit_is_cut_the_same_way_in_every_process(tmp_path: Path) -> None:
    """More distinct characters than the alphabet limit (1000), all equally frequent: the cut is a tie each time."""
    import json

    # Yi syllables: letters without case or decomposition, so normalization keeps all 1165 of them.
    chars = [chr(c) for c in range(0xA000, 0xA48D)]
    words = [chars[i] + chars[(i + 1) % len(chars)] + chars[(i + 2) % len(chars)] for i in range(len(chars))]
    corpus = tmp_path / "yi.txt"
    corpus.write_text("\n".join(" ".join(words[i : i + 8]) for i in range(0, len(words), 8)) + "\n", encoding="utf-8")
    runs = [train_in_subprocess(corpus, "wordpiece", 3000, tmp_path / f"tok{i}") for i in range(2)]
    assert runs[1] == runs[0]
    vocab = json.loads(runs[0]["tokenizer.json"])["model"]["vocab"]
    single = sorted(token for token in vocab if len(token) == 1)
    # Every character is counted 3 times; the tie is broken by code point: the first 1000 are kept.
    assert single == chars[:1000]


def test_wordpiece_alphabet_keeps_the_most_frequent_characters_and_numbers_pieces_in_order() -> None:
    from collections import Counter

    from llmtune.modeling import wordpiece_alphabet

    alphabet, pieces = wordpiece_alphabet(Counter({"abc": 5, "ca": 2, "d": 1, "eb": 1}), limit=4)
    # counts: a 7, b 6, c 7, d 1, e 1 -> keep a, b, c and (tie d/e by code point) d
    assert alphabet == ["a", "b", "c", "d"]
    # inner characters: b, c (abc), a (ca), b (eb); e is first only and dropped anyway
    assert pieces == ["##a", "##b", "##c"]


@pytest.mark.slow  # ~20-35 s on 2 cores; the README test command (CI) runs slow tests
def test_two_finetune_runs_give_identical_tokenizer_and_weights(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(96, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(32, seed=2))
    outs, metrics = [], []
    for name in ("a", "b"):
        out = tmp_path / name
        config = write_config(tmp_path / f"{name}.yaml", tiny_classification_config(train, dev, out))
        metrics.append(stdout_json(run_cli("finetune", str(config))))
        outs.append(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    first, second = load_file(outs[0] / "model.safetensors"), load_file(outs[1] / "model.safetensors")
    assert first.keys() == second.keys() and first
    for key in first:
        assert first[key].dtype == second[key].dtype and first[key].shape == second[key].shape, key
        assert torch.equal(first[key], second[key]), f"tensor {key} differs between two runs"
    assert metrics[0]["eval_loss"] == metrics[1]["eval_loss"]
