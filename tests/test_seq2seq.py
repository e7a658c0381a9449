"""`llmtune finetune` with `task: seq2seq`: a tiny BART from config, parallel text files, and its saved directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import check_model_card, REPO, invoke, run_cli, stdout_json, write_config

# A BART small enough to train a few steps in seconds on 2 CPU cores.
TINY_BART = {
    "model_type": "bart", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64,
}
# A toy "translation": each English word has one French word.
WORDS = {"the": "le", "cat": "chat", "dog": "chien", "eats": "mange", "sees": "voit", "big": "grand", "small": "petit",
         "red": "rouge", "house": "maison", "man": "homme", "runs": "court", "fish": "poisson"}


def toy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences of 3-6 words and their word-by-word translations, all starting with The / Le.

    The fixed first word is what a few steps of training learn first, so the tiny model writes
    something (an untrained one stops at once) and the reproduction check compares real text.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = ["the"] + rng.choices(list(WORDS)[1:], k=rng.randint(2, 5))
        pairs.append((" ".join(words).capitalize() + ".", " ".join(WORDS[w] for w in words).capitalize() + "."))
    return pairs


def write_parallel(folder: Path, stem: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """`stem.en` / `stem.fr`, one sentence per line; returns the {source, target} mapping a config takes."""
    (folder / f"{stem}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (folder / f"{stem}.fr").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return {"source": f"{stem}.en", "target": f"{stem}.fr"}


def tiny_seq2seq_config(folder: Path, **training: object) -> Path:
    """Parallel train files, a jsonl validation file and a tsv test file; a tiny BART with its own byte-level BPE."""
    train = write_parallel(folder, "train", toy_pairs(64, seed=1))
    with (folder / "dev.jsonl").open("w", encoding="utf-8") as handle:
        for source, target in toy_pairs(8, seed=2):
            handle.write(json.dumps({"source": source, "target": target}) + "\n")
    (folder / "test.tsv").write_text("source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in toy_pairs(6, seed=3)), encoding="utf-8")
    config = {
        "task": "seq2seq",
        "seed": 0,
        "model": {"from_config": dict(TINY_BART)},
        "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
        # Relative paths: they resolve against the config's folder.
        "data": {"train_file": train, "validation_file": "dev.jsonl", "test_file": "test.tsv", "max_source_length": 32, "max_target_length": 24},
        "generation": {"max_new_tokens": 12},
        "training": {
            "output_dir": str(folder / "run"), "max_steps": 40, "per_device_train_batch_size": 16, "learning_rate": 5e-3,
            "label_smoothing_factor": 0.1, "logging_steps": 4, "save_strategy": "no", "disable_tqdm": True, "use_cpu": True,
            **training,
        },
    }
    return write_config(folder / "cfg.yaml", config)


@pytest.mark.smoke("seq2seq")
def test_seq2seq_end_to_end(tmp_path: Path) -> None:
    """Train, score generated text, save; the directory loads with the Auto classes and reproduces the predictions."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    result = invoke("finetune", str(tiny_seq2seq_config(tmp_path)))
    assert result.exit_code == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    for split in ("eval", "test"):
        for name in ("bleu", "chrf", "gen_len", "loss"):
            assert isinstance(metrics[f"{split}_{name}"], float), (split, name, metrics)
        assert 0.0 <= metrics[f"{split}_bleu"] <= 100.0 and 0.0 <= metrics[f"{split}_chrf"] <= 100.0
        assert metrics["metrics_info"][f"{split}_bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
        assert metrics["metrics_info"][f"{split}_chrf"]["generation"]["max_new_tokens"] == 12
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["eval_bleu"] == metrics["eval_bleu"] and saved["metrics_info"] == metrics["metrics_info"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [source["key"] for source in manifest["data"]] == [
        "data.train_file.source", "data.train_file.target", "data.validation_file", "data.test_file"
    ]
    card = check_model_card(run, metrics, "llmtune generate")
    assert "AutoModelForSeq2SeqLM" in card and "corpus BLEU" in card and "(test data)" in card

    rows = [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    sources = [json.loads(line)["source"] for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == sources  # the data's order, though evaluation sorted rows by length
    assert len((run / "test_predictions.jsonl").read_text().splitlines()) == 6

    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    assert model.config.decoder_start_token_id == tokenizer.eos_token_id == model.config.forced_eos_token_id
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    # The saved tokenizer ends every text with EOS, as in training; the saved generation config is the one evaluation used.
    assert tokenizer("Le chat.")["input_ids"][-1] == tokenizer.eos_token_id
    assert model.generation_config.max_new_tokens == 12
    assert sum(bool(row["prediction"]) for row in rows) >= 4, rows  # it learnt to write something
    for row in rows[:4]:
        with torch.no_grad():
            ids = model.generate(**tokenizer([row["source"]], return_tensors="pt"))
        assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == row["prediction"]


def test_evaluate_and_generate_reproduce_a_seq2seq_runs_predictions(tmp_path: Path) -> None:
    """`llmtune evaluate --model RUN` picks the seq2seq kind from the architecture and reads the run's data (its
    llmtune.yaml): the outputs are training's validation predictions; the training config and parallel files work too."""
    config = tiny_seq2seq_config(tmp_path, max_steps=24)
    result = invoke("finetune", str(config))
    assert result.exit_code == 0, result.stderr[-3000:]
    trained = json.loads(result.stdout)
    run = tmp_path / "run"

    result = invoke("evaluate", "--model", str(run), "--output-dir", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.stderr[-3000:]
    scored = json.loads(result.stdout)
    assert scored["kind"] == "seq2seq" and scored["num_examples"] == 8
    predictions = [json.loads(line)["prediction"] for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    generations = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [row["completion"].strip() for row in generations] == predictions
    assert scored["eval_bleu"] == pytest.approx(trained["eval_bleu"], abs=1e-9)
    assert scored["eval_chrf"] == pytest.approx(trained["eval_chrf"], abs=1e-9)

    # llmtune generate on the run's directory, the sources on stdin: the same outputs again.
    sources = [json.loads(line)["source"] for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    result = invoke("generate", "--model", str(run), "--input", "-", "generation.max_new_tokens=12", stdin="".join(f"{t}\n" for t in sources))
    assert result.exit_code == 0, result.stderr[-3000:]
    assert [json.loads(line)["completion"].strip() for line in result.stdout.splitlines()] == predictions

    # The training config itself, on the train split: a {source, target} pair of text files, ROUGE chosen by metrics:.
    result = invoke("evaluate", str(config), "--model", str(run), "eval.split=train", "metrics=[bleu, rouge]")
    assert result.exit_code == 0, result.stderr[-3000:]
    on_train = json.loads(result.stdout)
    assert on_train["kind"] == "seq2seq" and on_train["num_examples"] == 64
    assert {"eval_bleu", "eval_rouge1", "eval_rougeLsum"} <= set(on_train) and "eval_chrf" not in on_train


def seq2seq_case(*overrides: str, files: dict[str, bytes | None] | None = None):
    """A bad-input case (tests/test_bad_inputs.py) over the tiny seq2seq config: `files` replaces (bytes) or deletes (None)
    some of its data files, then `llmtune finetune cfg.yaml OVERRIDES` runs."""

    def setup(tmp: Path) -> list[str]:
        config = tiny_seq2seq_config(tmp)
        for name, content in (files or {}).items():
            (tmp / name).unlink() if content is None else (tmp / name).write_bytes(content)
        return ["finetune", str(config), *overrides]

    return setup


def lines(pairs: list[tuple[str, str]], side: int) -> bytes:
    """One side of `pairs` as the bytes of a text file."""
    return "".join(pair[side] + "\n" for pair in pairs).encode()


@pytest.mark.slow
def test_quickstart_config_runs_on_a_slice(tmp_path: Path) -> None:
    """The shipped Multi30k quickstart, cut to 256 pairs and 4 steps: its data, tokenizer and model settings work together."""
    config = REPO / "configs" / "seq2seq" / "multi30k-en-fr-quickstart.yaml"
    overrides = ["data.max_train_samples=256", "data.max_eval_samples=16", "training.max_steps=4", "generation.max_new_tokens=8",
                 "training.save_strategy=no", f"training.output_dir={tmp_path / 'run'}"]
    metrics = stdout_json(run_cli("finetune", str(config), *overrides))
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 4
    assert set(metrics["metrics_info"]) == {"eval_bleu", "eval_chrf", "eval_gen_len", "eval_loss"}
    rows = (tmp_path / "run" / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(rows[0])
    assert first["source"] == (REPO / "data" / "multi30k-en-fr" / "val.en").read_text(encoding="utf-8").splitlines()[0]
    assert first["reference"] == (REPO / "data" / "multi30k-en-fr" / "val.fr").read_text(encoding="utf-8").splitlines()[0]
    assert len(rows) == 16


@pytest.mark.slow
def test_resume_continues_a_seq2seq_run_with_its_saved_tokenizer(tmp_path: Path) -> None:
    """--resume takes the checkpoint's tokenizer (EOS post-processor and <pad> already there) and goes on training."""
    from transformers import AutoTokenizer

    config = tiny_seq2seq_config(tmp_path, max_steps=8, save_strategy="steps", save_steps=4)
    first = invoke("finetune", str(config))
    assert first.exit_code == 0, first.stderr[-3000:]
    vocabulary = AutoTokenizer.from_pretrained(tmp_path / "run").get_vocab()
    # A subprocess: llmtune's log lines go to the real stderr, which CliRunner does not capture.
    proc = run_cli("finetune", str(config), "training.max_steps=12", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming with the tokenizer saved in" in proc.stderr
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 12
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert tokenizer.get_vocab() == vocabulary
    ids = tokenizer("Le chat.")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id  # one EOS, not one per resume



@pytest.mark.parametrize("init_std", [None, 0.02])
def test_a_bart_from_config_translates_each_source(tmp_path: Path, init_std: float | None) -> None:
    """Regression: a BART from config kept transformers' init_std 0.02 and wrote one output for every source.

    llmtune now starts BART-family weights at d_model ** -0.5: after the tiny config's 40 steps, its 8
    validation predictions differ. Setting init_std: 0.02 back in model.from_config (a value there wins
    over llmtune's) brings the one-sentence-for-all output back, which shows the check can fail.
    """
    config = tiny_seq2seq_config(tmp_path)
    overrides = [] if init_std is None else [f"model.from_config.init_std={init_std}"]
    result = invoke("finetune", str(config), *overrides)
    assert result.exit_code == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    predictions = [json.loads(line)["prediction"] for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8
    if init_std is None:
        assert saved["init_std"] == pytest.approx(TINY_BART["d_model"] ** -0.5)
        assert len(set(predictions)) >= 5, predictions
    else:
        assert saved["init_std"] == 0.02
        assert len(set(predictions)) == 1, predictions
