"""Start-up: `llmtune --help` loads no heavy library, and its text stays whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

# What `--help` and usage errors must not load: the ML stack, and rich (typer's help renderer, ~0.1 s).
# pydantic too for `llmtune --help`; below a command typer 0.29 itself imports it (it coerces the group's
# unset --help flag through a pydantic TypeAdapter), so there it is allowed.
HEAVY = ("torch", "transformers", "datasets", "evaluate", "accelerate", "rich", "pydantic")

# Runs the console-script entry point in a fresh interpreter and reports, on stderr's last line, the exit
# code and which heavy top-level packages ended up imported.
PROBE = (
    "import json, sys\n"
    "args, heavy = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))\n"
    "from llmtune.cli import main\n"
    "sys.argv = ['llmtune', *args]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code or 0\n"
    "heavy = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
    "sys.stderr.write('\\n' + json.dumps({'code': code, 'heavy': heavy}) + '\\n')\n"
)


def _probe(*args: str) -> tuple[dict, str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args)), json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )
    *before, last = proc.stderr.rstrip("\n").split("\n")
    return json.loads(last), proc.stdout, "\n".join(before)


@pytest.mark.parametrize(
    ("args", "allowed"),
    [(["--help"], []), (["finetune", "--help"], ["pydantic"]), (["evaluate", "--help"], ["pydantic"]), (["generate", "--help"], ["pydantic"])],
)
def test_help_imports_no_heavy_library(args: list[str], allowed: list[str]) -> None:
    report, stdout, _ = _probe(*args)
    assert report["code"] == 0
    assert set(report["heavy"]) <= set(allowed), report["heavy"]
    assert stdout.startswith("Usage: ")


def test_usage_error_imports_no_heavy_library_and_names_the_fix() -> None:
    report, stdout, stderr = _probe("finetune")
    assert report["code"] == 2
    assert set(report["heavy"]) <= {"pydantic"}, report["heavy"]
    assert stdout == ""
    assert "Missing argument 'config'" in stderr and "--help" in stderr


def test_top_level_help_lists_every_command_with_its_whole_summary() -> None:
    _, stdout, _ = _probe("--help")
    text = " ".join(stdout.split())
    for name, summary in [
        ("finetune", "Fine-tune a model (task: classification, causal-lm or seq2seq) and print its final metrics as JSON."),
        ("pretrain-mlm", "Pretrain a masked language model (from scratch or continued) and print its final metrics as JSON."),
        ("validate", "Check a config (and overrides) without loading a model; print the resolved config as JSON."),
        ("evaluate", "Evaluate a trained model without training; print the metrics as JSON (exit 3 if a gate fails)."),
        ("predict", "Classify texts with a trained model: one JSON line per input record, in input order."),
        ("generate", "Complete prompts with a causal LM; print one JSON line per returned sequence."),
    ]:
        assert f"{name} {summary}" in text
    # click's own summaries stop at ~45 characters with "..."; none may be cut.
    assert not [line for line in stdout.splitlines()[1:] if line.endswith("...")]


def _complete(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the console script as a shell's completion function does: the protocol is in the environment."""
    script = os.path.join(os.path.dirname(sys.executable), "llmtune")
    return subprocess.run([script], capture_output=True, text=True, env={**os.environ, **env}, check=False, timeout=60)


def test_show_completion_prints_a_script_that_completes_commands_and_options() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "llmtune")
    shown = subprocess.run([script, "--show-completion", "bash"], capture_output=True, text=True, check=True, timeout=60)
    assert "complete -o default -F _llmtune_completion llmtune" in shown.stdout and "_LLMTUNE_COMPLETE=complete_bash" in shown.stdout
    commands = _complete({"_LLMTUNE_COMPLETE": "complete_bash", "COMP_WORDS": "llmtune fine", "COMP_CWORD": "1"})
    assert commands.returncode == 0 and commands.stdout.split() == ["finetune"]
    options = _complete({"_LLMTUNE_COMPLETE": "complete_bash", "COMP_WORDS": "llmtune finetune cfg.yaml --ov", "COMP_CWORD": "3"})
    assert options.stdout.split() == ["--overwrite"]
    everything = _complete({"_LLMTUNE_COMPLETE": "complete_bash", "COMP_WORDS": "llmtune ", "COMP_CWORD": "1"})
    assert {"finetune", "pretrain-mlm", "tune", "validate", "evaluate", "predict", "generate"} <= set(everything.stdout.split())
