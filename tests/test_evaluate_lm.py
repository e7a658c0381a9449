"""`llmtune evaluate` for masked LMs (fixed-mask perplexity) and generation against references (BLEU, chrF, ROUGE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import run_cli, sentiment_rows, tiny_gpt2_dir
from llmtune.cli import app
from llmtune.config import ConfigError, infer_command, load_config
from llmtune.evaluation.generation import metric_names as generation_names
from llmtune.evaluation.generation import prompt_reference_pairs
from llmtune.evaluation.masked_lm import metric_names as lm_names
from llmtune.tasks import evaluate as evaluate_task
from test_pretrain_mlm import corpus, mlm_config


def _evaluate(**raw: object) -> dict:
    return evaluate_task.run(load_config("evaluate", None, base=raw))


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT pretrained by llmtune (in-process, one epoch): its directory has llmtune.yaml and metrics.json."""
    from llmtune.tasks import pretrain_mlm

    tmp = tmp_path_factory.mktemp("mlm")
    raw = mlm_config(corpus(tmp / "corpus.txt", 200, seed=3), tmp / "run")
    raw["training"].update(num_train_epochs=1, save_strategy="no")
    pretrain_mlm.run(load_config("pretrain-mlm", None, base=raw))
    return tmp / "run"


def test_masked_lm_reproduces_the_pretrain_runs_perplexity_through_the_cli(mlm_run: Path) -> None:
    trained = json.loads((mlm_run / "metrics.json").read_text())
    proc = run_cli("evaluate", "--model", str(mlm_run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads(proc.stdout)
    assert first["kind"] == "masked-lm"  # from BertForMaskedLM
    # Same seed, same carved-out validation rows, same masks: the run's own figure, not merely close to it.
    assert first["eval_perplexity"] == trained["eval_perplexity"]
    assert first["eval_scored_tokens"] == trained["eval_scored_tokens"] > 20
    assert first["eval_token_accuracy"] == trained["eval_token_accuracy"]
    assert first["masking"] == first["metrics_info"]["eval_perplexity"]["masking"]
    assert first["masking"]["probability"] == 0.15 and first["masking"]["seed"] == 0  # from the run's llmtune.yaml

    # Again, in-process and with other batches: identical, not approximately equal.
    again = _evaluate(model={"name_or_path": str(mlm_run)}, eval={"batch_size": 5})
    assert again["eval_perplexity"] == first["eval_perplexity"]
    assert set(again["metrics_info"]) == set(lm_names(None)) == {k for k in again if k.startswith("eval_")}

    # mlm: in the evaluate config overrides the run's masking (more masked tokens); a new seed gives new masks.
    more = _evaluate(model={"name_or_path": str(mlm_run)}, mlm={"probability": 0.4})
    assert more["masking"]["probability"] == 0.4 and more["eval_scored_tokens"] > 2 * first["eval_scored_tokens"]
    other_seed = _evaluate(model={"name_or_path": str(mlm_run)}, seed=1)
    assert other_seed["eval_perplexity"] != first["eval_perplexity"]


def test_masked_lm_gate_on_a_generation_metric_is_a_usage_error(mlm_run: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--model", str(mlm_run), "--fail-under", "bleu=10"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "unknown metric in --fail-under bleu: a masked-lm evaluation reports eval_perplexity" in result.stderr


@pytest.fixture(scope="module")
def generation(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny untrained GPT-2 and prompt/reference rows, some with one reference, some with two."""
    tmp = tmp_path_factory.mktemp("generation")
    texts = [text for text, _ in sentiment_rows(12, seed=4)]
    rows = []
    for i, text in enumerate(texts[:6]):
        words = text.split()
        rest = " ".join(words[3:])
        rows.append({"prompt": " ".join(words[:3]), "answer": rest if i % 2 else [rest, text]})
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model = tiny_gpt2_dir(tmp / "model", texts)
    base = ["evaluate", "--model", str(model), "eval.kind=generation", f"data.validation_file={data}", "data.reference_column=answer",
            "generation.max_new_tokens=8"]
    return {"model": model, "data": data, "rows": rows, "tmp": tmp, "cli": base}


def test_generation_bleu_chrf_and_rouge_equal_the_reference_packages(generation: dict) -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    out = generation["tmp"] / "eval"
    result = _evaluate(
        model={"name_or_path": str(generation["model"])},
        data={"validation_file": str(generation["data"]), "reference_column": "answer"},
        eval={"kind": "generation", "batch_size": 4},
        generation={"max_new_tokens": 8},
        output_dir=str(out),
    )
    lines = (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert [(w["prompt"], w["reference"]) for w in written] == [(r["prompt"], r["answer"]) for r in generation["rows"]]
    completions = [w["completion"] for w in written]
    assert all(w["completion_tokens"] == 8 for w in written)
    # sacreBLEU's streams: the i-th reference of every prompt, None where a prompt has fewer.
    refs = [[w["reference"]] if isinstance(w["reference"], str) else w["reference"] for w in written]
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(2)]
    bleu, chrf = sacrebleu.corpus_bleu(completions, streams), sacrebleu.corpus_chrf(completions, streams)
    assert result["eval_bleu"] == pytest.approx(bleu.score) and result["eval_bleu"] > 0
    assert result["eval_chrf"] == pytest.approx(chrf.score) and result["eval_chrf"] > 0
    # ROUGE: rouge-score's own F-measures, best reference per prompt, mean over prompts, x 100.
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        best = [max(scorer.score(ref, c)[key].fmeasure for ref in r) for c, r in zip(completions, refs)]
        assert result[f"eval_{key}"] == pytest.approx(100 * sum(best) / len(best))
    assert result["eval_rouge1"] > 0
    info = result["metrics_info"]
    assert "ROUGE-2" in info["eval_rouge2"]["definition"] and info["eval_rouge2"]["use_stemmer"] is False
    assert info["eval_bleu"]["signature"].startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp")
    assert info["eval_chrf"]["signature"].startswith("nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no")
    assert info["eval_bleu"]["generation"]["max_new_tokens"] == 8 and info["eval_bleu"]["generation"]["do_sample"] is False
    assert set(info) == set(generation_names(None)) == {k for k in result if k.startswith("eval_")}
    assert result["eval_truncated_rate"] == 1.0 and result["num_examples"] == 6
    assert result["files"] == [str(out / "metrics.json"), str(out / "generations.jsonl")]
    assert json.loads((out / "metrics.json").read_text()) == result


def test_generation_gates_and_errors_through_the_cli(generation: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    gated = runner.invoke(app, [*generation["cli"], "--fail-under", "eval_bleu=100.5", "--fail-under", "chrf=0"])
    assert gated.exit_code == 3, gated.stderr
    metrics = json.loads(gated.stdout)  # printed before the gate fails
    assert "1 of 2 gates failed" in gated.stderr
    assert f"eval_bleu = {metrics['eval_bleu']:.6g} is below 100.5 (--fail-under)" in gated.stderr
    assert "files" not in metrics  # no output_dir: only the metrics

    unknown = runner.invoke(app, [*generation["cli"], "--fail-over", "perplexity=10"])
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert "a generation evaluation reports eval_bleu, eval_chrf" in unknown.stderr

    no_column = runner.invoke(app, [a for a in generation["cli"] if not a.startswith("data.reference_column")])
    assert no_column.exit_code == 2 and "data.reference_column: column 'reference' not found" in no_column.stderr

    bad_key = runner.invoke(app, [*generation["cli"], "generation.max_new_token=4"])
    assert bad_key.exit_code == 2 and "Did you mean 'max_new_tokens'?" in bad_key.stderr


def test_evaluate_config_with_mlm_or_generation_keys_is_an_evaluate_config(tmp_path: Path) -> None:
    assert infer_command({"model": {}, "eval": {"kind": "generation"}, "generation": {}}) == "evaluate"
    assert infer_command({"model": {}, "eval": {}, "mlm": {}}) == "evaluate"
    with pytest.raises(ConfigError, match="num_return_sequences"):
        load_config("evaluate", None, base={"model": {"name_or_path": "m"}, "generation": {"num_return_sequences": 2, "do_sample": True}})


def test_generation_rows_without_a_reference_name_the_file_line(tmp_path: Path) -> None:
    """A file's row is named by its line; a split carved out of train (shuffled) keeps its row number."""
    from llmtune.config.schema import EvalDataSection
    from llmtune.data import load_splits
    from llmtune.errors import DataError

    path = tmp_path / "dev.jsonl"
    path.write_text('{"prompt": "a", "reference": "b"}\n\n{"prompt": "c", "reference": ""}\n', encoding="utf-8")
    data = EvalDataSection(validation_file=str(path))
    with pytest.raises(DataError, match=rf"data.validation_file: {path}, line 3: no usable reference in 'reference'"):
        prompt_reference_pairs(load_splits(data), data, "validation")
    carved = EvalDataSection(train_file=str(path), validation_split=0.5)
    splits = load_splits(carved)
    splits["validation"] = splits["train"]
    with pytest.raises(DataError, match=r"data.validation_file: row 2: no usable reference"):
        prompt_reference_pairs(splits, carved, "validation")
