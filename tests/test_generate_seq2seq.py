"""`llmtune generate` (and `evaluate`'s generation kind) with an encoder-decoder model: a tiny BART saved to a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, invoke, run_cli

# Different lengths, so batches are padded.
PROMPTS = ["To be, or not", "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.", "A", "What light through yonder"]
MAX_NEW = 8


def tiny_bart_dir(path: Path, texts: list[str]) -> Path:
    """Save an untrained tiny BART (BartConfig d_model 32, 1+1 layers) with a byte-level BPE tokenizer trained on `texts`.

    The tokenizer is BART's shape: <s> X </s> around every input, <pad> for padding. Weights are drawn with a
    large init_std, so greedy decoding writes varied tokens instead of EOS at once.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    backend = ByteLevelBPETokenizer()
    backend.train_from_iterator(texts, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    backend.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    )
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, init_std=0.5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    )
    config.architectures = ["BartForConditionalGeneration"]
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (REPO / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()[:2000]
    return tiny_bart_dir(tmp_path_factory.mktemp("bart") / "model", lines)


def _rows(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def _direct(model_dir: Path, prompts: list[str], eos: int = 2, **generate_kwargs) -> list[dict]:
    """The independent value: transformers' own generate on each prompt alone (no padding), decoded whole."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    out = []
    for prompt in prompts:
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            sequence = model.generate(**encoded, max_new_tokens=MAX_NEW, **generate_kwargs)[0].tolist()
        generated = sequence[1:]  # after the decoder start token
        end = generated.index(eos) if eos in generated else None
        # EOS in the last place is forced_eos_token_id's doing (2 here): the limit ended the sequence.
        stopped = end is not None and (end < MAX_NEW - 1 or eos != 2)
        out.append(
            {
                "completion": tokenizer.decode(generated[:end], skip_special_tokens=True),
                "prompt_tokens": encoded["input_ids"].shape[1],
                "finish_reason": "stop" if stopped else "length",
                "completion_tokens": end if stopped else MAX_NEW,
            }
        )
    return out


def test_generate_equals_transformers_generate_on_each_prompt(bart_dir: Path) -> None:
    args = [f"--prompt={p}" for p in PROMPTS]
    rows = _rows(invoke("generate", "--model", str(bart_dir), *args, f"generation.max_new_tokens={MAX_NEW}", "batch_size=3"))
    expected = _direct(bart_dir, PROMPTS)
    assert [r["prompt"] for r in rows] == PROMPTS and [r["index"] for r in rows] == list(range(len(PROMPTS)))
    for row, want in zip(rows, expected):
        assert {k: row[k] for k in want} == want
    # The test data covers both ends: a sequence that hit the limit and a text that is not the prompt.
    assert any(r["finish_reason"] == "length" and r["completion_tokens"] == MAX_NEW for r in rows)
    assert all(r["completion"] and not r["completion"].startswith(r["prompt"]) for r in rows)


def test_eos_ends_the_completion_as_in_transformers(bart_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    # The token greedy decoding writes third for "ROMEO:", made the end of sequence: that output stops there.
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(bart_dir).eval(), AutoTokenizer.from_pretrained(bart_dir)
    eos = model.generate(**tokenizer("ROMEO:", return_tensors="pt"), max_new_tokens=MAX_NEW)[0].tolist()[1:][2]
    args = [f"--prompt={p}" for p in PROMPTS]
    rows = _rows(invoke("generate", "--model", str(bart_dir), *args, f"generation.max_new_tokens={MAX_NEW}", f"generation.eos_token_id={eos}"))
    expected = _direct(bart_dir, PROMPTS, eos=eos, eos_token_id=eos)
    for row, want in zip(rows, expected):
        assert {k: row[k] for k in want} == want
    assert rows[1]["finish_reason"] == "stop" and rows[1]["completion_tokens"] == 2


def test_batching_does_not_change_greedy_output(bart_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from llmtune.generation import build_generation_config, generate_texts

    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(bart_dir).eval(), AutoTokenizer.from_pretrained(bart_dir)
    tokenizer.padding_side = "left"  # whatever the caller's tokenizer says, an encoder gets right padding
    config = build_generation_config(model, tokenizer, {"max_new_tokens": MAX_NEW})
    batched = generate_texts(model, tokenizer, PROMPTS, config, batch_size=5)
    single = [generate_texts(model, tokenizer, [p], config, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert tokenizer.padding_side == "left"  # and it is left as the caller had it
    # Left padding would shift BART's learned positions: the output would change, which is why it is not used.
    import torch

    tokenizer.padding_side = "left"
    padded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        left = model.generate(**padded, generation_config=config)
    assert tokenizer.batch_decode(left, skip_special_tokens=True) != [s[0]["completion"] for s in single]


def test_stdin_streaming_gives_the_same_records(bart_dir: Path) -> None:
    flags = ["--model", str(bart_dir), f"generation.max_new_tokens={MAX_NEW}", "batch_size=2"]
    from_flags = _rows(invoke("generate", *flags, *[f"--prompt={p}" for p in ["ROMEO:", "To be, or not", "A"]]))
    proc = run_cli("generate", *flags, "--input", "-", stdin="ROMEO:\nTo be, or not\nA\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line) for line in proc.stdout.splitlines()] == from_flags


def test_sampling_seeds_and_several_sequences(bart_dir: Path) -> None:
    flags = ["--model", str(bart_dir), "--prompt", "ROMEO:", "--prompt", "A", f"generation.max_new_tokens={MAX_NEW}",
             "generation.do_sample=true", "generation.num_return_sequences=3"]
    first = _rows(invoke("generate", *flags, "seed=3"))
    assert [(r["index"], r["sequence"]) for r in first] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert _rows(invoke("generate", *flags, "seed=3")) == first
    assert _rows(invoke("generate", *flags, "seed=4")) != first
    assert len({r["completion"] for r in first}) > 1


def test_stop_strings_cut_the_decoded_output(bart_dir: Path) -> None:
    flags = ["--model", str(bart_dir), "--prompt", "ROMEO:", f"generation.max_new_tokens={MAX_NEW}"]
    full = _rows(invoke("generate", *flags))[0]["completion"]
    stop = full[2:4]
    row = _rows(invoke("generate", *flags, f"stop=[{json.dumps(stop)}]"))[0]
    assert row["completion"] == full[: full.index(stop)] and row["finish_reason"] == "stop"
    assert row["completion_tokens"] < MAX_NEW


def test_evaluate_generation_scores_the_decoded_outputs(bart_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": p, "reference": "ROMEO: what light"} for p in PROMPTS[:3]]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "eval"
    result = invoke("evaluate", "--model", str(bart_dir), "eval.kind=generation", f"data.validation_file={data}",
                    f"generation.max_new_tokens={MAX_NEW}", f"output_dir={out}")
    assert result.exit_code == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    written = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [w["completion"] for w in written] == [d["completion"] for d in _direct(bart_dir, PROMPTS[:3])]
    for key in ("eval_bleu", "eval_chrf", "eval_rouge1", "eval_rougeLsum"):
        assert isinstance(metrics[key], float)


def test_a_bart_classifier_cannot_generate(tmp_path: Path) -> None:
    model = tmp_path / "clf"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bart", "architectures": ["BartForSequenceClassification"], "d_model": 32}))
    result = invoke("generate", "--model", str(model), "--prompt", "hi")
    assert result.exit_code == 2 and result.stdout == ""
    assert "generate needs a causal language model" in result.stderr
    assert "or an encoder-decoder language model (T5, BART, Marian" in result.stderr
