"""`llmtune generate` and llmtune.generation on a tiny GPT-2 saved to a model directory (no training needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, run_cli, write_config
from llmtune.cli import app

PROMPTS = ["To be, or not", "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.", "A"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny GPT-2 with a BPE tokenizer trained on Shakespeare, saved like a finetune run."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    out = tmp_path_factory.mktemp("gen") / "model"
    lines = (REPO / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()[:2000]
    tokenizer = train_tokenizer(TokenizerTrainSection(type="bpe", vocab_size=300, min_frequency=1), lines, 64)
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=eos, eos_token_id=eos)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def invoke(*args: str, stdin: str | None = None) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(app, ["generate", *args], input=stdin)
    rows = [json.loads(line) for line in result.stdout.splitlines()] if result.exit_code == 0 else []
    return result.exit_code, rows, result.stderr


def test_prompts_from_the_config_in_input_order(model_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "g.yaml", {"model": {"name_or_path": str(model_dir)}, "prompts": PROMPTS, "batch_size": 3, "generation": {"max_new_tokens": 6}})
    code, rows, err = invoke(str(cfg))
    assert code == 0, err
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and [r["prompt"] for r in rows] == PROMPTS
    for row in rows:
        assert set(row) == {"index", "sequence", "prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason"}
        assert row["sequence"] == 0 and 0 < row["completion_tokens"] <= 6 and row["prompt_tokens"] > 0
        assert row["finish_reason"] in {"stop", "length"}


def test_batched_greedy_equals_one_at_a_time(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.generation import build_generation_config, generate_texts

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    config = build_generation_config(model, tokenizer, {"max_new_tokens": 8})
    batched = generate_texts(model, tokenizer, PROMPTS, config, batch_size=4)
    single = [generate_texts(model, tokenizer, [p], config, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is None  # the caller's tokenizer is left as it was


def test_stop_strings_cut_the_completion(model_dir: Path) -> None:
    code, rows, _ = invoke("--model", str(model_dir), "--prompt", "ROMEO:", "generation.max_new_tokens=12")
    full = rows[0]["completion"]
    stop = full[3:5]  # a string greedy decoding is known to produce
    code, rows, err = invoke("--model", str(model_dir), "--prompt", "ROMEO:", "generation.max_new_tokens=12", f"stop=[{json.dumps(stop)}]")
    assert code == 0, err
    assert rows[0]["completion"] == full[: full.index(stop)] and rows[0]["finish_reason"] == "stop"


def test_jsonl_file_with_passthrough_fields_and_output_file(model_dir: Path, tmp_path: Path) -> None:
    records = [{"id": "a", "text": "ROMEO:", "completion": "reference"}, {"id": "b", "text": "To be"}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "sub" / "out.jsonl"
    args = ["--model", str(model_dir), "--input", str(src), "--output", str(out), "prompt_field=text"]
    code, summary, err = invoke(*args, "generation={num_beams: 3, num_return_sequences: 2, max_new_tokens: 5}")
    assert code == 0, err
    assert summary == [{"prompts": 2, "sequences": 4, "output": str(out)}]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index"], r["sequence"], r["id"]) for r in rows] == [(0, 0, "a"), (0, 1, "a"), (1, 0, "b"), (1, 1, "b")]
    assert rows[0]["input_completion"] == "reference" and rows[0]["prompt"] == "ROMEO:" and "text" not in rows[0]
    assert rows[0]["completion"] != rows[1]["completion"]  # two different beams
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temporary file left behind


def test_seeded_sampling_repeats_and_differs_by_seed(model_dir: Path) -> None:
    args = ["--model", str(model_dir), "--prompt", "ROMEO:", "generation={do_sample: true, top_k: 50, num_return_sequences: 3, max_new_tokens: 8}"]
    first, second, other = invoke(*args)[1], invoke(*args)[1], invoke(*args, "seed=7")[1]
    assert len(first) == 3 and first == second
    assert [r["completion"] for r in first] != [r["completion"] for r in other]


def test_stdin_pipe_through_the_real_cli(model_dir: Path) -> None:
    proc = run_cli("generate", "--model", str(model_dir), "--input", "-", "generation.max_new_tokens=4", stdin="ROMEO:\nTo be, or not\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["ROMEO:", "To be, or not"]
    assert "generated 2 prompts" in proc.stderr


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.txt", "ROMEO:\n\nJULIET:\n", "p.txt, line 2: empty prompt"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n', "p.jsonl, line 2: invalid JSON"),
        ("p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n', "p.jsonl, line 2: no field 'prompt'. Name the field with prompt_field=NAME (fields here: text)"),
        ("p.txt", "ROMEO:\n" + "word " * 80 + "\n", "p.txt, line 2: the prompt has"),
    ],
)
def test_bad_input_names_the_line(model_dir: Path, tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    code, _, err = invoke("--model", str(model_dir), "--input", str(tmp_path / name), "generation.max_new_tokens=10")
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_invalid_generation_settings_fail_before_the_model_loads(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    code, _, err = invoke("--model", missing, "--prompt", "x", "generation.num_return_sequences=3")
    assert code == 2 and "num_return_sequences" in err and "no-such-model" not in err
    code, _, err = invoke("--model", missing, "--prompt", "x", "generation.temprature=0.7")
    assert code == 2 and "Did you mean 'temperature'?" in err
    code, _, err = invoke("--prompt", "x")
    assert code == 2 and "--model" in err
