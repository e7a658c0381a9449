"""Beyond one process: `torchrun` and `accelerate launch` run one real DDP job on CPUs (gloo).

Each multi-process run is checked against one process: the same global batch must give the same
training loss, and the metrics it reports must be those of its saved model evaluated in one process.
Only rank 0 prints (one JSON line on stdout) and writes the output directory.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_BERT, invoke, sentiment_rows, stdout_json, write_config, write_tsv

# No dropout: with it every process draws its own masks and losses could not be compared across runs.
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
BERT = {**{k: v for k, v in TINY_BERT.items() if k != "model_type"}, **NO_DROPOUT}


def free_port() -> str:
    """A TCP port nobody listens on, so parallel test runs do not meet at the launchers' default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(*launcher: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """Run `<launcher> -m llmtune ARGS` (2 processes on this machine's CPUs) with the worktree on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "llmtune", *args], capture_output=True, text=True, cwd=tmp, env=env, timeout=300)


def torchrun(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m llmtune ARGS`."""
    return launch(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(), args=args, tmp=tmp)


def accelerate_launch(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 -m llmtune ARGS`: accelerate's torchrun launcher
    (`--multi_gpu` is its name for it; llmtune makes it DDP over gloo when there is no GPU)."""
    return launch(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(), args=args, tmp=tmp)


def one_json_line(proc: subprocess.CompletedProcess) -> dict:
    """The run's metrics: exactly one JSON line on stdout (rank 1 prints nothing), exit 0."""
    return stdout_json(proc)


def evaluate_saved(run: Path) -> dict:
    """`llmtune evaluate --model RUN` in this process (one process, the run's own data and seed)."""
    result = invoke("evaluate", "--model", str(run))
    assert result.exit_code == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def assert_written_once(run: Path, reported: dict, steps: int) -> None:
    """One output directory, written by rank 0: its metrics.json is the printed JSON, and the step count
    is that of one job sharding the data (independent copies would each take twice as many steps)."""
    assert json.loads((run / "metrics.json").read_text()) == reported
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == steps
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(run.glob("*.tmp")) and not list(run.glob("rank*"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A saved WordPiece tokenizer (every process loads the same one), sentiment TSVs and a text corpus."""
    from llmtune.config.schema import TokenizerTrainSection
    from llmtune.modeling import train_tokenizer

    tmp = tmp_path_factory.mktemp("ddp")
    train_rows, dev_rows = sentiment_rows(96, seed=1), sentiment_rows(32, seed=2)
    texts = [t for t, _ in train_rows + dev_rows]
    tokenizer = train_tokenizer(TokenizerTrainSection(type="wordpiece", vocab_size=200, min_frequency=1), texts, 32)
    tokenizer.save_pretrained(tmp / "tokenizer")
    (tmp / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {
        "tmp": tmp,
        "tokenizer": str(tmp / "tokenizer"),
        "train": write_tsv(tmp / "train.tsv", train_rows),
        "dev": write_tsv(tmp / "dev.tsv", dev_rows),
        "corpus": tmp / "corpus.txt",
    }


def classification(assets: dict, out: Path, batch: int) -> dict:
    return {
        "seed": 0,
        "model": {"from_config": {"model_type": "bert", **BERT, "classifier_dropout": 0.0}},
        "tokenizer": {"name_or_path": assets["tokenizer"]},
        "data": {"train_file": str(assets["train"]), "validation_file": str(assets["dev"]), "text_column": "sentence", "max_length": 32},
        "training": {
            "output_dir": str(out),
            "num_train_epochs": 1,
            "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
        "metrics": ["accuracy", "f1"],
    }


def test_torchrun_finetune_is_one_ddp_job_with_global_metrics(assets: dict) -> None:
    tmp = assets["tmp"]
    config = write_config(tmp / "cls.yaml", classification(assets, tmp / "cls-ddp", batch=8))
    proc = torchrun(["finetune", str(config)], tmp)
    ddp = one_json_line(proc)
    assert_written_once(tmp / "cls-ddp", ddp, steps=96 // (2 * 8))

    # One process, the same global batch (16). It is the issue's `accelerate launch --num_processes 2 --cpu`:
    # accelerate starts ONE process for --cpu (only mpirun gives more), and llmtune says so on stderr.
    write_config(tmp / "cls1.yaml", classification(assets, tmp / "cls-one", batch=16))
    single = launch(sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", args=["finetune", str(tmp / "cls1.yaml")], tmp=tmp)
    one = one_json_line(single)
    assert "accelerate launch --cpu runs ONE process" in single.stderr and "--multi_gpu --num_processes N" in single.stderr
    assert_written_once(tmp / "cls-one", one, steps=96 // 16)
    assert "runs ONE process" not in proc.stderr
    # DDP averages the two halves' gradients: the same updates, the same mean training loss (not doubled:
    # about 0.69 for two labels) and the same model as one process.
    assert 0.3 < ddp["train_loss"] < 1.0
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    for key in ("eval_loss", "eval_accuracy", "eval_f1"):
        assert ddp[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key

    # The reported eval metrics are the saved model's, gathered over both processes' halves of dev.tsv.
    again = evaluate_saved(tmp / "cls-ddp")
    assert again["num_examples"] == 32
    for key in ("eval_loss", "eval_accuracy", "eval_f1"):
        assert ddp[key] == pytest.approx(again[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow  # about 20 s; run by the README test command (CI)
def test_accelerate_launch_pretrain_mlm_reports_the_saved_models_perplexity(assets: dict) -> None:
    tmp = assets["tmp"]
    raw = {
        "seed": 0,
        "model": {"from_config": dict(BERT)},
        "tokenizer": {"name_or_path": assets["tokenizer"]},
        # 128 lines, 26 held out: 13 per process, one evaluation step (no padding rows).
        "data": {"train_file": str(assets["corpus"]), "validation_split": 0.2, "max_length": 16, "packing": False},
        "training": {
            "output_dir": str(tmp / "mlm-ddp"),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 13,
            "learning_rate": 2e-3,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    config = write_config(tmp / "mlm.yaml", raw)
    proc = accelerate_launch(["pretrain-mlm", str(config)], tmp)
    ddp = one_json_line(proc)
    train_rows = 128 - round(128 * 0.2)
    assert_written_once(tmp / "mlm-ddp", ddp, steps=math.ceil(train_rows / 16))

    again = evaluate_saved(tmp / "mlm-ddp")
    # Token-weighted stats gathered over both processes, duplicates dropped: every held-out token once.
    assert ddp["eval_scored_tokens"] == again["eval_scored_tokens"] > 20
    assert ddp["eval_perplexity"] == pytest.approx(again["eval_perplexity"], rel=1e-5)
    assert ddp["eval_token_accuracy"] == pytest.approx(again["eval_token_accuracy"], rel=1e-6)
    # One evaluation step: eval_loss is the global token mean (not twice it), i.e. log(perplexity).
    assert ddp["eval_loss"] == pytest.approx(again["eval_nll_per_token"], rel=1e-5)


ACCELERATE_CONFIGS = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed.yaml": "DEEPSPEED"}


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_shipped_accelerate_config_loads_with_accelerates_own_classes(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DistributedType, PrecisionType
    from accelerate.utils.constants import FSDP2_STATE_DICT_TYPE, FSDP_AUTO_WRAP_POLICY

    assert sorted(p.name for p in (REPO / "configs" / "accelerate").glob("*.yaml")) == sorted(ACCELERATE_CONFIGS)
    path = REPO / "configs" / "accelerate" / name
    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DistributedType[ACCELERATE_CONFIGS[name]]
    assert config.num_processes >= 2 and config.num_machines == 1 and config.machine_rank == 0 and not config.use_cpu
    assert config.mixed_precision in PrecisionType.list()
    text = path.read_text(encoding="utf-8")
    assert f"accelerate launch --config_file configs/accelerate/{name} -m llmtune" in text  # says how to use it

    # `accelerate launch` copies fsdp_config/deepspeed_config keys onto its own options and silently drops
    # the rest, so a misspelt key would do nothing: every key must be one of the launcher's options.
    options = vars(launch_command_parser().parse_args(["script.py"]))
    if name == "fsdp.yaml":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_version"] == 2 and set(fsdp) <= set(options), set(fsdp) - set(options)
        assert fsdp["fsdp_auto_wrap_policy"] in FSDP_AUTO_WRAP_POLICY
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT" in FSDP2_STATE_DICT_TYPE  # the final save is a normal model dir
    else:
        assert not config.fsdp_config
    if name == "deepspeed.yaml":
        deepspeed = config.deepspeed_config
        assert set(deepspeed) <= set(options), set(deepspeed) - set(options)
        assert deepspeed["zero_stage"] in (0, 1, 2, 3)
        assert {deepspeed["offload_optimizer_device"], deepspeed["offload_param_device"]} <= {"none", "cpu", "nvme"}
    else:
        assert not config.deepspeed_config
