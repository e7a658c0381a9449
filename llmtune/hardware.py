"""The machine a run trains on, and the training settings llmtune picks for it.

One table, applied UNDER the user's `training:` keys (an explicit key always wins):

| machine                         | precision (auto)   | tf32 | optim             | pin_memory | workers     |
|---------------------------------|--------------------|------|-------------------|------------|-------------|
| CUDA GPU with bf16 (Ampere+)    | bf16               | on   | adamw_torch_fused | on         | up to 4     |
| CUDA GPU without bf16 (V100/T4) | fp16 (loss scaling)| off  | adamw_torch_fused | on         | up to 4     |
| Apple MPS                       | fp32               | -    | Trainer's default | off        | 0           |
| CPU                             | fp32               | -    | Trainer's default | off        | 0           |

Attention needs nothing here: transformers 5 loads every model with SDPA when it supports it and falls
back to eager otherwise (`PreTrainedModel.get_correct_attn_implementation`); passing
`attn_implementation="sdpa"` would only turn that fallback into an error.

The decision functions take the machine as a `Machine` so tests can feed "CUDA with bf16", "CUDA
without bf16", "MPS" or "CPU" on any machine; `detect()` reads the real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
Precision = Literal["auto", "bf16", "fp16", "fp32"]

# Settings only a GPU can honour: on a machine without one, `llmtune validate` warns and training refuses them.
GPU_PRECISION_KEYS = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval")
# Data-loading workers per training process on CUDA: enough to keep collation off the training
# process's critical path, few enough that 8 processes on one machine do not oversubscribe it.
MAX_WORKERS = 4


@dataclass(frozen=True)
class Machine:
    """What the device a run trains on can do: the facts llmtune's defaults depend on.

    Attributes:
        device: "cuda", "mps" or "cpu" (training.use_cpu and multi-CPU launches count as "cpu").
        bf16: a CUDA device with native bf16 (compute capability 8.0+, Ampere or newer).
        tf32: TF32 matmuls are available (the same Ampere+ test transformers applies to `tf32: true`).
        name: the device's name, for the log line.
        cpus: CPU cores, shared by the data-loading workers of every process on the machine.
        processes: training processes on this machine (torchrun / accelerate launch).
    """

    device: str
    bf16: bool = False
    tf32: bool = False
    name: str = ""
    cpus: int = 1
    processes: int = 1


@dataclass(frozen=True)
class Plan:
    """What llmtune chose for a run on a machine.

    Attributes:
        precision: the resolved precision: bf16, fp16 or fp32.
        requested: what the config asked for: auto, bf16, fp16 or fp32.
        reason: why, in words (logged, and recorded in manifest.json).
        defaults: TrainingArguments values for this machine, applied under the user's `training:`.
    """

    precision: str
    requested: str
    reason: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, str]:
        """The manifest's `precision` entry."""
        return {"resolved": self.precision, "requested": self.requested, "reason": self.reason}

    def summary(self) -> str:
        """The one INFO line a training run logs about its machine settings."""
        kernels = ", ".join(f"{k}={v}" for k, v in self.defaults.items() if k not in ("bf16", "fp16"))
        return f"precision: {self.precision} ({self.reason})" + (f"; machine defaults: {kernels}" if kernels else "")


def detect(use_cpu: bool = False) -> Machine:
    """The machine this process trains on.

    Args:
        use_cpu: `training.use_cpu`: train on the CPU even where there is a GPU.
    """
    import torch
    from transformers.utils import is_torch_tf32_available

    from llmtune.modeling import launch_world_size, launched_on_cpus

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    processes = int(local) if local.isdigit() and int(local) > 0 else launch_world_size()
    if use_cpu or launched_on_cpus():
        return Machine("cpu", cpus=cpus, processes=processes)
    if torch.cuda.is_available():
        # Without emulation: torch reports bf16 on a V100/T4 too, where it is emulated and slower than fp16.
        return Machine(
            "cuda",
            bf16=torch.cuda.is_bf16_supported(including_emulation=False),
            tf32=is_torch_tf32_available(),
            name=torch.cuda.get_device_name(),
            cpus=cpus,
            processes=processes,
        )
    if torch.backends.mps.is_available():
        return Machine("mps", name="Apple MPS", cpus=cpus, processes=processes)
    return Machine("cpu", cpus=cpus, processes=processes)


def requested_precision(training: dict[str, Any]) -> tuple[str, str | None]:
    """What `training:` asks for, and the key that asks it (None for auto).

    `training.precision` decides when it is not auto; otherwise an explicit `bf16`/`fp16` key does
    (so configs written before `precision` existed keep their meaning), `false` included: a config that
    says `bf16: false` asked for no mixed precision, and gets fp32 rather than a guess.
    """
    precision = training.get("precision") or "auto"
    if precision != "auto":
        return precision, "training.precision"
    if training.get("bf16"):
        return "bf16", "training.bf16"
    if training.get("fp16"):
        return "fp16", "training.fp16"
    for key in ("bf16", "fp16"):
        if key in training:
            return "fp32", f"training.{key}"
    return "auto", None


def precision_problems(training: dict[str, Any], where: Callable[[str], str]) -> list[str]:
    """Contradictions between `training.precision`, `bf16` and `fp16`, whatever the machine.

    Args:
        training: the `training:` mapping (values coerced).
        where: how to name a `training:` key in a message (with its line), e.g. "training.bf16 (line 12)".
    """
    if training.get("bf16") and training.get("fp16"):
        return [
            f"{where('fp16')}: training.bf16 and training.fp16 are both true; a run has one precision. Keep one, or remove "
            "both and let training.precision: auto pick (bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU)."
        ]
    precision = training.get("precision") or "auto"
    if precision == "auto":
        return []
    problems = []
    for key in ("bf16", "fp16"):
        if key in training and bool(training[key]) != (precision == key):
            problems.append(
                f"{where(key)}: {key}: {str(bool(training[key])).lower()} contradicts training.precision: {precision}. "
                f"Remove training.{key} (training.precision decides), or set training.precision to the precision you want."
            )
    return problems


def machine_problems(training: dict[str, Any], machine: Machine, where: Callable[[str], str]) -> list[str]:
    """Settings in `training:` this machine cannot honour (bf16/fp16 or tf32 without a GPU).

    bf16 with an explicit `training.use_cpu: true` is allowed: that is torch's CPU autocast, asked for on purpose.

    Returns:
        One message per key, naming it and the fix (empty on a machine that can run the config).
    """
    problems = []
    if machine.device == "cpu":
        precision, key = requested_precision(training)
        cpu_bf16 = training.get("use_cpu") is True and precision == "bf16"
        if precision in ("bf16", "fp16") and not cpu_bf16:
            fix = "Set training.precision: auto" if key == "training.precision" else f"Remove {key} (training.precision: auto then picks"
            fix += " (fp32 here, bf16 or fp16 on a GPU)" if key == "training.precision" else " fp32 here, bf16 or fp16 on a GPU)"
            problems.append(
                f"{where(key.split('.')[1])}: {precision} mixed precision needs a GPU, and this machine has none (training "
                f"would run on the CPU). {fix}, or run on a GPU"
                + (" (for bf16 autocast on the CPU on purpose, also set training.use_cpu: true)." if precision == "bf16" else ".")
            )
        for eval_key in ("bf16_full_eval", "fp16_full_eval"):
            if training.get(eval_key):
                problems.append(f"{where(eval_key)}: needs a GPU, and this machine has none. Remove training.{eval_key}, or run on a GPU.")
    if training.get("tf32") and not machine.tf32:
        problems.append(
            f"{where('tf32')}: TF32 matmuls need an NVIDIA GPU of the Ampere generation or newer, and this machine has "
            f"{machine.name or 'no GPU'}. Remove training.tf32 (llmtune turns TF32 on by itself where it is supported)."
        )
    return problems


def plan(training: dict[str, Any], machine: Machine, resumed: str | None = None) -> Plan:
    """Decide precision, TF32, optimizer and data loading for a run of `training:` on `machine`.

    Args:
        training: the user's `training:` mapping; its keys are never overridden (they go over `Plan.defaults`).
        machine: from `detect()`, or a fake one in tests.
        resumed: the precision the resumed run trained with (its manifest's dtype), or None. Under
            `precision: auto` a resume keeps it where this machine can, so it continues the same run.

    Returns:
        The plan; `defaults` holds only what differs from TrainingArguments' own defaults on this machine.
    """
    requested, key = requested_precision(training)
    gpu = machine.device == "cuda"
    if requested != "auto":
        precision, reason = requested, f"set by {key}"
    elif resumed == "fp32" or (resumed in ("bf16", "fp16") and gpu):
        # bf16 on a GPU without native bf16 still runs (emulated): continuing the run matters more.
        precision, reason = resumed, f"auto: kept from the resumed run on {machine.device}"
    elif gpu and machine.bf16:
        precision, reason = "bf16", f"auto: {machine.name or 'the CUDA device'} supports bf16"
    elif gpu:
        precision, reason = "fp16", f"auto: {machine.name or 'the CUDA device'} has no native bf16; fp16 with loss scaling"
    else:
        precision, reason = "fp32", f"auto: {'Apple MPS' if machine.device == 'mps' else 'no GPU'}"
    if requested == "auto" and resumed is not None and resumed != precision:
        reason += f" (the resumed run trained in {resumed}, which this machine cannot continue)"

    defaults: dict[str, Any] = {}
    if precision in ("bf16", "fp16"):
        defaults[precision] = True
    if gpu:
        if machine.tf32:
            defaults["tf32"] = True
        # transformers already defaults to it from torch 2.8; llmtune supports torch from 2.4.
        defaults["optim"] = "adamw_torch_fused"
        workers = max(0, min(MAX_WORKERS, machine.cpus // max(machine.processes, 1) - 1))
        if workers:
            # Not persistent: transformers caches the persistent eval loader under "eval" for ANY dataset
            # passed to evaluate(), so the test split would be evaluated on the validation loader.
            defaults["dataloader_num_workers"] = workers
    else:
        # Pinned memory only speeds host-to-GPU copies; without a GPU torch warns on every DataLoader.
        defaults["dataloader_pin_memory"] = False
    return Plan(precision=precision, requested=requested, reason=reason, defaults=defaults)
