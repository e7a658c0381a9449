"""Every shipped config validates, and the generated config reference is up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from llmtune.config import infer_command, load_config, read_yaml

# configs/accelerate/ holds `accelerate launch` configs, checked in tests/test_distributed.py.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "accelerate")


def test_there_are_shipped_configs() -> None:
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_validates(path: Path) -> None:
    command = infer_command(read_yaml(path).data)
    cfg = load_config(command, path)
    for key in ("train_file", "validation_file", "test_file"):
        value = getattr(getattr(cfg, "data", None), key, None)
        if value is not None and getattr(cfg.data, "hub", None) is None:
            # task: seq2seq's parallel text files are a {source, target} pair of files.
            files = [value.source, value.target] if hasattr(value, "source") else [value]
            for file in files:
                assert Path(file).is_file(), f"{path}: data.{key} points to a missing file {file}"


def test_config_reference_is_generated_from_the_schema() -> None:
    import subprocess
    import sys

    generated = subprocess.run([sys.executable, "scripts/config_reference.py"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert (REPO / "docs" / "config.md").read_text() == generated, "run: python scripts/config_reference.py > docs/config.md"
