"""Precision and kernels chosen for the machine (llmtune.hardware), and `training.torch_compile` on CPU.

The decision functions take the machine as an argument, so every kind of machine is tested here on a
CPU: "CUDA with bf16" (A100/H100), "CUDA without bf16" (V100/T4), MPS and CPU. The end-to-end tests
run on this (CPU) machine through the real CLI.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import REPO, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv
from llmtune import hardware
from llmtune.hardware import Machine

H100 = Machine("cuda", bf16=True, tf32=True, name="NVIDIA H100", cpus=16, processes=1)
T4 = Machine("cuda", bf16=False, tf32=False, name="Tesla T4", cpus=8, processes=1)
MPS = Machine("mps", name="Apple MPS", cpus=8)
CPU = Machine("cpu", cpus=2)


# --- the decision function on each kind of machine -----------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "precision", "defaults"),
    [
        (H100, "bf16", {"bf16": True, "tf32": True, "optim": "adamw_torch_fused", "dataloader_num_workers": 4}),
        (T4, "fp16", {"fp16": True, "optim": "adamw_torch_fused", "dataloader_num_workers": 4}),
        (MPS, "fp32", {"dataloader_pin_memory": False}),
        (CPU, "fp32", {"dataloader_pin_memory": False}),
    ],
    ids=["cuda-bf16", "cuda-no-bf16", "mps", "cpu"],
)
def test_auto_defaults_per_machine(machine: Machine, precision: str, defaults: dict) -> None:
    plan = hardware.plan({"output_dir": "x"}, machine)
    assert plan.precision == precision and plan.requested == "auto"
    assert plan.defaults == defaults
    assert plan.reason.startswith("auto: ")
    assert plan.record() == {"resolved": precision, "requested": "auto", "reason": plan.reason}
    assert plan.summary().startswith(f"precision: {precision} (auto: ")


def test_the_log_line_says_what_and_why() -> None:
    assert hardware.plan({}, H100).summary() == (
        "precision: bf16 (auto: NVIDIA H100 supports bf16); machine defaults: tf32=True, optim=adamw_torch_fused, dataloader_num_workers=4"
    )
    assert "fp16 with loss scaling" in hardware.plan({}, T4).reason


@pytest.mark.parametrize(
    ("training", "precision", "requested"),
    [
        ({"precision": "fp32"}, "fp32", "fp32"),
        ({"precision": "fp16"}, "fp16", "fp16"),
        ({"bf16": True}, "bf16", "bf16"),
        ({"fp16": True}, "fp16", "fp16"),
        # A config written before `precision` existed that says bf16: false asked for no mixed precision.
        ({"bf16": False}, "fp32", "fp32"),
        ({"precision": "auto", "fp16": False}, "fp32", "fp32"),
    ],
)
def test_explicit_keys_beat_auto_on_a_bf16_gpu(training: dict, precision: str, requested: str) -> None:
    plan = hardware.plan(training, H100)
    assert (plan.precision, plan.requested) == (precision, requested)
    assert plan.reason.startswith("set by training.")
    assert plan.defaults.get("bf16", False) == (precision == "bf16") and plan.defaults.get("fp16", False) == (precision == "fp16")


def test_workers_share_the_cores_between_processes() -> None:
    assert hardware.plan({}, Machine("cuda", bf16=True, cpus=16, processes=8)).defaults["dataloader_num_workers"] == 1
    assert "dataloader_num_workers" not in hardware.plan({}, Machine("cuda", bf16=True, cpus=8, processes=8)).defaults
    assert "tf32" not in hardware.plan({}, Machine("cuda", bf16=True, tf32=False, cpus=2)).defaults


@pytest.mark.parametrize(
    ("machine", "resumed", "precision"),
    [
        (H100, "fp32", "fp32"),  # a CPU run resumed on a GPU continues in fp32, as it started
        (H100, "fp16", "fp16"),
        (T4, "bf16", "bf16"),  # emulated on a T4, but the same run
        (CPU, "bf16", "fp32"),  # the CPU cannot: this machine's choice, and the reason says so
        (CPU, "fp32", "fp32"),
    ],
)
def test_auto_on_resume_keeps_the_runs_precision_where_the_machine_can(machine: Machine, resumed: str, precision: str) -> None:
    plan = hardware.plan({}, machine, resumed=resumed)
    assert plan.precision == precision
    assert ("cannot continue" in plan.reason) == (precision != resumed)


def test_contradictions_and_missing_gpu_are_named() -> None:
    where = lambda key: f"training.{key}"  # noqa: E731
    assert hardware.precision_problems({"bf16": True, "fp16": True}, where)[0].startswith("training.fp16: training.bf16 and training.fp16 are both true")
    assert hardware.precision_problems({"precision": "fp32", "bf16": True}, where) == [
        "training.bf16: bf16: true contradicts training.precision: fp32. Remove training.bf16 (training.precision decides), "
        "or set training.precision to the precision you want."
    ]
    assert hardware.precision_problems({"precision": "bf16", "bf16": True, "fp16": False}, where) == []
    for machine in (H100, T4):
        assert hardware.machine_problems({"bf16": True, "fp16_full_eval": True}, machine, where) == []
    assert hardware.machine_problems({"tf32": True}, T4, where)[0].startswith("training.tf32: TF32 matmuls need")
    problems = hardware.machine_problems({"precision": "bf16", "bf16_full_eval": True}, CPU, where)
    assert [p.split(":")[0] for p in problems] == ["training.precision", "training.bf16_full_eval"]
    # bf16 autocast on the CPU, asked for on purpose, is torch's and allowed; fp16 is not.
    assert hardware.machine_problems({"bf16": True, "use_cpu": True}, CPU, where) == []
    assert hardware.machine_problems({"fp16": True, "use_cpu": True}, CPU, where)


def test_user_keys_win_over_the_machine_defaults(tmp_path: Path) -> None:
    from llmtune.config import load_config
    from llmtune.runs import training_arguments

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(8))
    config = tiny_classification_config(train, train, tmp_path / "run", optim="adamw_torch", dataloader_num_workers=0)
    cfg = load_config("finetune", write_config(tmp_path / "cfg.yaml", config))
    args, _ = training_arguments(cfg, hardware.plan(cfg.training, T4))
    assert args.fp16 and not args.bf16  # the machine's precision lands...
    assert args.optim == "adamw_torch" and args.dataloader_num_workers == 0  # ...under the user's own keys


# --- the config check and --resume ---------------------------------------------------------------------


def test_validate_of_a_gpu_config_on_a_cpu_machine_passes_with_a_warning(tmp_path: Path) -> None:
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(8))
    config = write_config(tmp_path / "cfg.yaml", tiny_classification_config(train, train, tmp_path / "run", bf16=True, tf32=True))
    proc = run_cli("validate", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["training"]["bf16"] is True  # the config as written
    assert "WARNING llmtune: training.bf16 (line " in proc.stderr and "needs a GPU" in proc.stderr
    assert "WARNING llmtune: training.tf32 (line " in proc.stderr
    assert "valid finetune config" in proc.stderr
    # The same config, to train on this machine, is refused (tests/test_bad_inputs.py checks the CLI's exit 2).
    assert run_cli("finetune", str(config)).returncode == 2
    assert not (tmp_path / "run").exists()


def test_resume_under_auto_on_another_machine_is_not_a_config_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from llmtune.config import load_config, save_config
    from llmtune.errors import UserError
    from llmtune.manifest import check_resume

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(8))
    cfg = load_config("finetune", write_config(tmp_path / "cfg.yaml", tiny_classification_config(train, train, tmp_path / "run")))
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    save_config(cfg, checkpoint / "llmtune.yaml")
    (checkpoint / "manifest.json").write_text(json.dumps({"world_size": 1, "data": [], "dtype": "bf16"}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="llmtune"):
        check_resume(cfg, checkpoint)  # trained in bf16 on a GPU; this CPU continues in fp32
    assert "the run trained in bf16; this machine continues it in fp32" in caplog.text
    # `precision: auto` written out is the same config as leaving it out.
    check_resume(load_config("finetune", tmp_path / "cfg.yaml", ["training.precision=auto"]), checkpoint)
    (checkpoint / "manifest.json").write_text(json.dumps({"world_size": 1, "data": [], "dtype": "fp16"}), encoding="utf-8")
    (checkpoint / "scaler.pt").write_bytes(b"fp16 loss scaler state")
    with pytest.raises(UserError, match="fp16 loss-scaler state"):
        check_resume(cfg, checkpoint)


# --- end to end on this CPU --------------------------------------------------------------------------


def test_cpu_run_records_fp32_and_prints_no_pin_memory_warning(tmp_path: Path) -> None:
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(16, seed=2))
    out = tmp_path / "run"
    proc = run_cli("finetune", str(write_config(tmp_path / "cfg.yaml", tiny_classification_config(train, dev, out, max_steps=2))))
    stdout_json(proc)
    # torch's DataLoader warned on every CPU run before: "'pin_memory' argument is set as true but no accelerator is found".
    assert "'pin_memory' argument" not in proc.stderr and "no accelerator is found" not in proc.stderr
    # A fresh run has no interrupted run to discard (Trainer makes its empty output folder before llmtune stages it).
    assert "discarding the interrupted run" not in proc.stderr
    assert "INFO llmtune: precision: fp32 (auto: no GPU); machine defaults: dataloader_pin_memory=False; attention: sdpa" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "fp32"
    assert manifest["precision"] == {"resolved": "fp32", "requested": "auto", "reason": "auto: no GPU"}
    assert json.loads((out / "checkpoint-2" / "manifest.json").read_text())["precision"]["resolved"] == "fp32"


# --- training.torch_compile on CPU ---------------------------------------------------------------------

SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.slow
def test_torch_compile_classification_then_evaluate_and_predict_on_the_saved_dir(tmp_path: Path) -> None:
    """A compiled run trains, evaluates and saves a model that loads uncompiled (no `_orig_mod.` keys)."""
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(48, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(16, seed=2))
    out = tmp_path / "run"
    config = tiny_classification_config(train, dev, out, max_steps=3, torch_compile=True)
    metrics = stdout_json(run_cli("finetune", str(write_config(tmp_path / "cfg.yaml", config))))
    assert metrics["eval_loss"] > 0 and 0 <= metrics["eval_accuracy"] <= 1
    assert json.loads((out / "manifest.json").read_text())["precision"]["resolved"] == "fp32"
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()

    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert keys and not [k for k in keys if "_orig_mod" in k]
    evaluated = stdout_json(run_cli("evaluate", "--model", str(out)))
    assert evaluated["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    proc = run_cli("predict", "--model", str(out), "--input", "-", stdin="good great film\nbad dull plot\n")
    assert proc.returncode == 0, proc.stderr
    names = set(json.loads((out / "config.json").read_text())["id2label"].values())
    assert [json.loads(line)["label"] in names for line in proc.stdout.splitlines()] == [True, True]


@pytest.mark.slow
def test_torch_compile_causal_lm_matches_the_uncompiled_loss(tmp_path: Path) -> None:
    """Compiled and eager training of the same tiny GPT-2 on the same blocks give the same losses."""
    train = tmp_path / "train.txt"
    train.write_text("\n".join(SHAKESPEARE.read_text(encoding="utf-8").splitlines()[:400]) + "\n", encoding="utf-8")
    results = {}
    for compiled in (False, True):
        out = tmp_path / f"run-{compiled}"
        config = {
            "seed": 0,
            "task": "causal-lm",
            "model": {"from_config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}},
            "tokenizer": {"train": {"type": "bpe", "vocab_size": 300, "min_frequency": 1}},
            "data": {"train_file": str(train), "validation_split": 0.1, "max_length": 64},
            "training": {"output_dir": str(out), "max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
                         "logging_steps": 1, "disable_tqdm": True, "torch_compile": compiled},
        }
        results[compiled] = stdout_json(run_cli("finetune", str(write_config(tmp_path / f"cfg-{compiled}.yaml", config))))
        results[compiled]["log"] = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(results[True]["log"]) == 3
    assert results[True]["log"] == pytest.approx(results[False]["log"], rel=1e-3)
    assert results[True]["eval_loss"] == pytest.approx(results[False]["eval_loss"], rel=1e-3)
    generated = run_cli("generate", "--model", str(tmp_path / "run-True"), "--prompt", "ROMEO:", "generation.max_new_tokens=3")
    assert generated.returncode == 0 and json.loads(generated.stdout.splitlines()[0])["prompt"] == "ROMEO:", generated.stderr
