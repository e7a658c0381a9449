"""Secrets never reach disk or stdout: tokens come from the environment, and llmtune writes or prints none.

A unique secret is put where a user would put a token (HF_TOKEN in the environment, `training.hub_token`
in a config file or an override); then every byte llmtune wrote (the whole output directory, checkpoints
and training_args.bin included) and both output streams are searched for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke, run_cli, sentiment_rows, stdout_json, tiny_classification_config, write_config, write_tsv

ENV_SECRET = "hf_EnvSecretOnlyInTheEnvironment0123456789"
CONFIG_SECRET = "hf_ConfigSecretPastedIntoAConfig987654321"


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret` (text or binary, e.g. pickled training_args.bin)."""
    needle = secret.encode()
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(32, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment_rows(8, seed=2))
    # Checkpoints every 2 steps (of 4): each one holds its own training_args.bin and trainer state.
    cfg = tiny_classification_config(train, dev, tmp_path / "run", max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=None)
    return {"tmp": tmp_path, "cfg": cfg, "out": tmp_path / "run"}


def test_a_token_in_the_environment_is_never_written_or_printed(setup: dict) -> None:
    config = write_config(setup["tmp"] / "cfg.yaml", setup["cfg"])
    proc = run_cli("finetune", str(config))
    stdout_json(proc)
    out = setup["out"]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "training_args.bin" in written and any(name.startswith("checkpoint-") for name in written), written
    assert files_holding(setup["tmp"], ENV_SECRET) == []
    assert ENV_SECRET not in proc.stdout and ENV_SECRET not in proc.stderr
    # TrainingArguments does not copy HF_TOKEN into hub_token: the pickled arguments hold no token at all.
    import torch

    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.hub_token is None

    validated = invoke("validate", str(config))
    assert validated.exit_code == 0 and ENV_SECRET not in validated.stdout + validated.stderr


@pytest.mark.parametrize("where", ["file", "override", "validate"])
def test_a_token_in_the_config_is_refused_without_echoing_it(setup: dict, where: str) -> None:
    cfg = setup["cfg"]
    if where == "file":
        cfg["training"]["hub_token"] = CONFIG_SECRET
    config = write_config(setup["tmp"] / "cfg.yaml", cfg)
    args = [str(config)] + ([f"training.hub_token={CONFIG_SECRET}"] if where != "file" else [])
    proc = invoke("validate" if where == "validate" else "finetune", *args)
    assert proc.exit_code == 2, proc.stderr[-2000:]
    assert "training.hub_token" in proc.stderr and "HF_TOKEN environment variable" in proc.stderr
    assert CONFIG_SECRET not in proc.stdout + proc.stderr and ENV_SECRET not in proc.stdout + proc.stderr
    assert not setup["out"].exists(), "nothing is written for a refused config"
    holding = files_holding(setup["tmp"], CONFIG_SECRET)
    assert holding == (["cfg.yaml"] if where == "file" else []), "only the user's own file holds the token"


def test_a_token_pasted_into_another_key_is_not_echoed(setup: dict) -> None:
    """In-process (the real CLI through CliRunner): messages echo bad values (`got ...`): one that looks like a token, or is HF_TOKEN's value, is hidden."""
    config = write_config(setup["tmp"] / "cfg.yaml", setup["cfg"])
    for value in (CONFIG_SECRET, ENV_SECRET):
        wrong_key = invoke("validate", str(config), f"data.max_length={value}")
        malformed = invoke("validate", str(config), f"training.hub_token:{value}")
        for proc, says in ((wrong_key, "data.max_length (command-line override)"), (malformed, "expected key.path=value")):
            assert proc.exit_code == 2
            assert says in proc.stderr and "<hidden token>" in proc.stderr, proc.stderr
            assert value not in proc.stdout + proc.stderr
