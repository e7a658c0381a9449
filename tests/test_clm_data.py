"""The causal-LM data path: fixed-length packed blocks, padding-free rows, the padded fallback, the datasets cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli, stdout_json, write_config
from test_causal_lm import TINY_GPT2, tiny_causal_config

SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"
BLOCK = 32


def texts(n: int = 2500) -> list[str]:
    """More documents than one 1000-row map batch, of uneven lengths, so batch boundaries fall inside blocks."""
    lines = [line for line in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [" ".join(lines[i : i + 1 + i % 4]) for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tok = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=300, min_frequency=1), texts(), 64)
    tok.pad_token = tok.eos_token
    return tok


def gpt2(tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        # GPT-2's 0.02 init makes attention near-uniform and every check weak; 0.3 makes rows matter.
                        initializer_range=0.3)
    return GPT2LMHeadModel(config).eval()


def encode(tokenizer, packing: bool, rows: list[str] | None = None):
    from datasets import Dataset, DatasetDict

    from llmtune.config.schema import DataSection
    from llmtune.data import tokenize_for_lm

    data = DataSection(train_file="x.txt", max_length=BLOCK, packing=packing)
    splits = DatasetDict(train=Dataset.from_dict({"text": rows if rows is not None else texts()}))
    return tokenize_for_lm(splits, tokenizer, data, packing=packing, add_eos=True, labels=True)["train"]


def test_packed_blocks_are_one_stream_cut_into_fixed_length_blocks(tokenizer) -> None:
    import pyarrow as pa

    packed = encode(tokenizer, packing=True)
    # The reference: every document + EOS, concatenated across the whole split, cut every BLOCK tokens.
    stream = [t for doc in texts() for t in tokenizer(doc + tokenizer.eos_token)["input_ids"]]
    assert len(stream) > 3 * 1000  # several map batches' worth, so cross-batch blocks are exercised
    expected = [stream[i : i + BLOCK] for i in range(0, len(stream), BLOCK)]
    assert len(packed) == len(expected) and len(expected[-1]) < BLOCK  # the remainder is one block, kept
    pad = BLOCK - len(expected[-1])
    rows = packed[:]
    assert rows["input_ids"][:-1] == expected[:-1]
    assert rows["input_ids"][-1] == expected[-1] + [tokenizer.pad_token_id] * pad
    assert rows["attention_mask"][-1] == [1] * len(expected[-1]) + [0] * pad
    assert rows["labels"][-1] == expected[-1] + [-100] * pad
    assert rows["labels"][:-1] == expected[:-1]  # real EOS tokens are targets (pad = EOS for GPT-2)
    assert all(sum(mask) == BLOCK for mask in rows["attention_mask"][:-1])
    # Stored as Arrow fixed-size lists: a batch is a slice of one array, read as a 2-D tensor.
    for name in ("input_ids", "attention_mask", "labels"):
        assert pa.types.is_fixed_size_list(packed.data.schema.field(name).type), name
    assert tuple(packed.with_format("torch")[:16]["input_ids"].shape) == (16, BLOCK)


def test_packed_batch_gives_the_padding_collator_loss(tokenizer) -> None:
    import torch
    from transformers import default_data_collator

    from llmtune.tasks.causal_lm import CausalLMCollator

    packed = encode(tokenizer, packing=True).with_format("torch")
    model = gpt2(tokenizer)
    last = len(packed) - 1
    for picked in ([0, 1, 2, 3, last], [last]):
        rows = [packed[i] for i in picked]
        new = default_data_collator(rows)
        # The collator of the previous data path, on the same token rows without their padding.
        old = CausalLMCollator(tokenizer)([{"input_ids": r["input_ids"][r["attention_mask"] == 1].tolist()} for r in rows])
        assert new["input_ids"].shape == (len(picked), BLOCK) and new["input_ids"].dtype == torch.long
        assert int((new["labels"] != -100).sum()) == int((old["labels"] != -100).sum())
        with torch.no_grad():
            assert float(model(**new).loss) == pytest.approx(float(model(**old).loss), abs=1e-6, rel=1e-6)


def test_flattened_rows_score_like_padded_rows(tokenizer) -> None:
    import torch
    from transformers import DataCollatorWithFlattening

    from llmtune.lm import causal_preprocess
    from llmtune.tasks.causal_lm import CausalLMCollator, flattening_collator, flattening_problem

    rows = encode(tokenizer, packing=False, rows=texts(40)).select(range(12))
    lengths = [len(ids) for ids in rows["input_ids"]]
    assert len(set(lengths)) >= 3  # rows of different lengths, so padding would be needed
    features = [{"input_ids": ids} for ids in rows["input_ids"]]
    model = gpt2(tokenizer)
    flat_collator = flattening_collator(model)
    assert flattening_problem(model, flat_collator) is None
    flat = flat_collator(features)
    padded = CausalLMCollator(tokenizer)(features)
    assert flat["input_ids"].shape == (1, sum(lengths))  # no padding at all
    with torch.no_grad():
        flat_out = model(**flat)
        padded_out = model(**padded)
    # Same tokens scored (every token but each row's first), same per-token mean loss: no row saw another.
    flat_stats = causal_preprocess(flat_out.logits, flat["labels"]).sum(0)
    padded_stats = causal_preprocess(padded_out.logits, padded["labels"]).sum(0)
    assert int(flat_stats[1]) == int(padded_stats[1]) == sum(lengths) - len(lengths)
    assert float(flat_stats[0]) == pytest.approx(float(padded_stats[0]), rel=1e-5)
    assert float(flat_out.loss) == pytest.approx(float(padded_out.loss), rel=1e-5)

    # transformers' collator as it is: GPT-2 builds a KV cache (use_cache defaults to on) and masking_utils
    # then ignores the packed rows, so each row attends to the ones before it. The probe catches that.
    plain = DataCollatorWithFlattening(return_tensors="pt")
    with torch.no_grad():
        leaky = float(model(**plain(features)).loss)
    assert abs(leaky - float(padded_out.loss)) > 1e-3
    assert "lets flattened rows see each other" in flattening_problem(model, plain)


def test_models_without_packed_masks_are_padded_and_grouped_by_length(tokenizer) -> None:
    from transformers import MambaConfig, MambaForCausalLM

    from llmtune.config.schema import DataSection
    from llmtune.tasks.causal_lm import CausalLMCollator, batching, flattening_collator, flattening_problem

    mamba = MambaForCausalLM(MambaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, state_size=4))
    assert "takes no position_ids" in flattening_problem(mamba, flattening_collator(mamba))
    cfg = type("Cfg", (), {"data": DataSection(train_file="x.txt", packing=False), "training": {"output_dir": "x"}})()
    collator, defaults = batching(cfg, mamba, tokenizer, {})
    assert isinstance(collator, CausalLMCollator) and defaults == {"train_sampling_strategy": "group_by_length"}
    assert collator.pad_to_multiple_of is None  # rounding to 8 only pays on CUDA tensor cores; this is a CPU
    collator, defaults = batching(cfg, gpt2(tokenizer), tokenizer, {})
    assert type(collator).__name__ == "FlatteningCollator" and defaults == {}


def causal_config(train: Path, out: Path, **data: object) -> dict:
    """`tiny_causal_config` cut to two steps of 8 rows, logging every step."""
    config = tiny_causal_config(train, out, **data)
    config["training"].update(max_steps=2, per_device_train_batch_size=8, logging_steps=1)
    del config["training"]["learning_rate"]
    return config


def cache_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("cache-*.arrow")}


@pytest.mark.slow  # two CLI runs, ~60 s on the shared 2-core machine
def test_second_run_reuses_the_cached_tokens_and_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    train = tmp_path / "train.txt"
    train.write_text("\n".join(SHAKESPEARE.read_text(encoding="utf-8").splitlines()[:1200]) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "c.yaml", causal_config(train, tmp_path / "run"))
    # -v: datasets' progress bars (hidden by default) show which steps ran.
    first_proc = run_cli("-v", "finetune", str(config))
    first = stdout_json(first_proc)
    assert "tokenizing (train)" in first_proc.stderr and "packing" in first_proc.stderr
    files = cache_files(cache)
    # paragraphs, the validation split, tokenizing and packing of both splits all left cache files.
    assert len(files) >= 5, files
    proc = run_cli("-v", "finetune", str(config), "--overwrite")
    second = stdout_json(proc)
    assert cache_files(cache) == files  # no new file, none rewritten: nothing was tokenized or packed again
    assert "tokenizing (train)" not in proc.stderr and "packing" not in proc.stderr
    assert second["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-6)


def test_unpacked_rows_train_padding_free_and_score_every_row_on_its_own(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    lines = [line for line in SHAKESPEARE.read_text(encoding="utf-8").splitlines()[:600] if line.strip()]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "run"
    proc = run_cli("finetune", str(write_config(tmp_path / "c.yaml", causal_config(train, out, packing=False))))
    metrics = stdout_json(proc)
    assert "padding-free batches" in proc.stderr
    # The validation rows, tokenized as the run did: each scores all its tokens but the first, none more.
    tokenizer = AutoTokenizer.from_pretrained(out)
    from llmtune.config import load_config
    from llmtune.data import load_splits, with_validation

    cfg = load_config("finetune", tmp_path / "c.yaml")
    validation = with_validation(load_splits(cfg.data), cfg.data, cfg.seed)["validation"]
    lengths = [min(len(tokenizer(t + tokenizer.eos_token)["input_ids"]), 64) for t in validation["text"]]
    assert metrics["eval_scored_tokens"] == sum(lengths) - len(lengths)
