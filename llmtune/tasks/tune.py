"""`llmtune tune`: hyperparameter search over a training config's `search.space`, with Optuna.

Each trial is the config with the trial's values applied as `key=value` overrides and `search:` removed, trained
in this process by its task module's `run(cfg)` (staging folder, manifest, model card and all), into
`<output_dir>/trial-NNN`. Optuna itself is used directly (not `Trainer.hyperparameter_search`), so that a trial
is an ordinary llmtune run and the study lives in a real database:

- The study is `<output_dir>/study.db` (SQLite through Optuna's RDBStorage, study name "llmtune"), written by
  Optuna as each trial starts and ends, so a killed study (kill -9 included) continues with `--resume`.
- Repeatable: before each trial the sampler is a TPESampler seeded with `seed` + the number of finished trials,
  so the same config samples the same values, and a resumed study the values an uninterrupted one would have.
  A trial the killed process was running is marked FAIL and its values are tried again first.
- Pruning (`search.pruning`): a Trainer callback reports every evaluation during training to Optuna's
  MedianPruner and stops a trial that is worse than the median of the earlier trials at the same step.
- Failures: a trial that raises (out of memory for one batch size, a NaN metric) is marked FAIL and the study
  goes on; `MAX_CONSECUTIVE_FAILURES` failures in a row stop it (exit 1), since then every trial is likely to
  fail. A mistake of the user's (bad data: UserError) stops it at once (exit 2).
- Output-directory rules as for a training run: a non-empty output_dir needs --overwrite (or --resume). With
  --overwrite the new study runs in `<output_dir>.incomplete` and replaces the old one only once complete.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune import runs
from llmtune.errors import LlmtuneError, UserError
from llmtune.tasks import registry

if TYPE_CHECKING:
    import optuna

    from llmtune.config.schema import RunConfig

logger = logging.getLogger(__name__)

STUDY_NAME = "llmtune"
STUDY_DB = "study.db"
BEST_CONFIG = "best.yaml"
# The MedianPruner prunes only once this many trials have finished: with fewer, "the median of earlier trials" is
# one or two runs' noise. Optuna's default is 5, a quarter of a 20-trial study that could never be pruned; 2 suits
# the small studies llmtune runs on one machine.
PRUNER_STARTUP_TRIALS = 2
# This many failed trials in a row stop the study: one failure is a bad point of the space, three a broken setup.
MAX_CONSECUTIVE_FAILURES = 3
PLOTS = ("optimization_history.png", "slice.png", "param_importances.png")


class StudyFailed(LlmtuneError):
    """The study stopped on repeated trial failures (exit 1)."""


@dataclass
class TuneJob:
    """What `llmtune tune` runs: the validated base config and how to rebuild it for each trial.

    Attributes:
        command: the training command of the config (finetune, pretrain-mlm).
        path: the config file.
        overrides: the command line's overrides (applied to every trial before its own values).
        cfg: the validated config (`cfg.search` set; cfg.overwrite / cfg.resume are tune's flags).
        trials: the number of finished trials wanted (--trials, else search.trials).
    """

    command: str
    path: Path
    overrides: list[str]
    cfg: RunConfig
    trials: int

    @property
    def output_dir(self) -> Path:
        """Where the study ends up: training.output_dir."""
        return Path(self.cfg.training["output_dir"]).absolute()


def load(path: str | Path, overrides: list[str] | None, trials: int | None, command: str | None, overwrite: bool, resume: bool) -> TuneJob:
    """Load and check a tune config: the training config, its `search:` section and every search-space value.

    Args:
        path: the config file.
        overrides: key.path=value overrides.
        trials: --trials (None: search.trials).
        command: --for (None: inferred from the config's keys, as `llmtune validate` does).
        overwrite: --overwrite.
        resume: --resume.

    Raises:
        UserError: not a training config, no `search:` section, run under several processes.
        ConfigError: every problem of the config and its search space.
    """
    from llmtune.config import infer_command, load_config, read_yaml
    from llmtune.config.search import search_problems
    from llmtune.errors import ConfigError
    from llmtune.modeling import launch_world_size

    command = command or infer_command(read_yaml(path).data)
    if command not in registry.training_commands():
        raise UserError(
            f"tune searches over a training config, and {path} is taken for a {command} config; pass --for finetune or "
            "--for pretrain-mlm."
        )
    if launch_world_size() > 1:
        raise UserError(
            "tune runs its trials one after another in one process; run it without torchrun / accelerate launch "
            "(a trial of several processes is not supported)."
        )
    cfg = load_config(command, path, overrides, flags={"overwrite": overwrite, "resume": resume})
    if cfg.search is None:
        raise UserError(
            f"{path}: tune needs a search: section naming what to search, e.g.\n"
            "search:\n  metric: eval_loss\n  space:\n    training.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}"
        )
    problems = search_problems(command, path, overrides, cfg)
    if problems:
        raise ConfigError(problems, source=str(path))
    return TuneJob(command, Path(path), list(overrides or []), cfg, trials or cfg.search.trials)


def study_folder(output_dir: Path, overwrite: bool, resume: bool) -> tuple[Path, bool]:
    """Where the study works, decided before any work (the output-directory rules of `llmtune.runs.check_output_dir`).

    Returns:
        The folder that holds (or will hold) study.db, and whether it is the staging folder, swapped into
        `output_dir` once the study is complete: a new study over a non-empty output_dir (--overwrite), or the
        resumed study of one. A new study of an empty or missing output_dir works there directly.

    Raises:
        UserError: both flags, an unwritable location, a non-empty output_dir or an interrupted study and neither
            flag, --resume with no study to continue.
    """
    staging = runs.staging_dir(output_dir)
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other: pick one.")
    runs.check_writable(output_dir, "training.output_dir", "dir")
    runs.recover_interrupted_swap(output_dir)
    if resume:
        if (staging / STUDY_DB).is_file():
            return staging, True
        if (output_dir / STUDY_DB).is_file():
            return output_dir, False
        raise UserError(f"--resume: no {STUDY_DB} in {output_dir} (or {staging}) to continue. Run without --resume to start a study.")
    if staging.exists() and not overwrite:
        raise UserError(
            f"training.output_dir: {staging} holds an interrupted run of {output_dir}. Pass --resume to continue it, or "
            "--overwrite to discard it and start over."
        )
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise UserError(
                f"training.output_dir: {output_dir} is not empty. Pass --overwrite to replace it (once the new study is "
                "complete), --resume to continue the study in it, or set training.output_dir=another/dir."
            )
        return staging, True
    return output_dir, False


def _pruning_callback(trial: optuna.Trial, metric: str) -> Any:
    """A Trainer callback reporting each evaluation during training to the trial, and pruning it when Optuna says so."""
    import optuna
    from transformers import TrainerCallback

    class ReportToOptuna(TrainerCallback):
        def __init__(self) -> None:
            self.reported: set[int] = set()

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> Any:
            value = (metrics or {}).get(metric)
            # The final evaluations after training (validation again, test_*) come at the last step: nothing to prune.
            if value is None or state.global_step in self.reported or state.global_step >= state.max_steps:
                return control
            self.reported.add(state.global_step)
            trial.report(float(value), state.global_step)
            if trial.should_prune():
                logger.info("trial %d pruned at step %d: %s = %.4g", trial.number, state.global_step, metric, value)
                raise optuna.TrialPruned(f"pruned at step {state.global_step}")
            return control

    return ReportToOptuna()


def _evaluates_during_training(cfg: RunConfig) -> bool:
    """Whether the run evaluates before it ends (training.eval_strategy steps or epoch): the pruner's only input."""
    strategy = cfg.setup.args.eval_strategy
    return str(getattr(strategy, "value", strategy)) != "no"


def _trial_config(job: TuneJob, params: dict[str, Any], output_dir: Path, on_this_machine: bool = True) -> Any:
    """The config of one trial: the tune config, its overrides, `search:` removed, the trial's values and output_dir."""
    from llmtune.config import load_config

    values = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    overrides = [*job.overrides, "~search", *values, f"training.output_dir={json.dumps(str(output_dir))}"]
    return load_config(job.command, job.path, overrides, on_this_machine=on_this_machine, flags={"overwrite": False, "resume": False})


def _remove_trial(folder: Path) -> None:
    """Remove a pruned or failed trial's folder and its staging folder (they hold no usable model)."""
    for path in (folder, runs.staging_dir(folder)):
        shutil.rmtree(path, ignore_errors=True)


def _line(job: TuneJob, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = trial.value if trial.values else None
    line = {
        "trial": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "metric": job.cfg.search.metric,
        "value": value if value is None or math.isfinite(value) else None,
        # Where the trial's model is once the study is complete (a pruned or failed trial keeps none).
        "output_dir": str(job.output_dir / f"trial-{trial.number:03d}") if trial.state.name == "COMPLETE" else None,
    }
    if trial.user_attrs.get("error"):
        line["error"] = trial.user_attrs["error"]
    return line


def _print(job: TuneJob, study: optuna.Study, number: int, stdout: Any) -> None:
    trial = study.get_trials(deepcopy=False)[number]
    stdout.write(json.dumps(_line(job, trial), ensure_ascii=False) + "\n")
    stdout.flush()


def _open_study(job: TuneJob, folder: Path, resume: bool) -> optuna.Study:
    """Create (or, resuming, load and check) the study in `folder`/study.db."""
    import optuna

    from llmtune.manifest import config_differences

    search = job.cfg.search
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / STUDY_DB}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS) if search.pruning else optuna.pruners.NopPruner()
    # What the trials were run with, minus what may change between invocations (trials, output_dir).
    config = job.cfg.model_dump(mode="json")
    config["search"].pop("trials")
    config["training"].pop("output_dir")
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=search.direction, pruner=pruner, load_if_exists=resume)
    if not resume:
        study.set_user_attr("config", config)
        return study
    saved = study.user_attrs.get("config", {})
    diffs = config_differences(saved, config)
    if diffs:
        lines = "\n".join(f"  - {key}: {json.dumps(a)} in the study, {json.dumps(b)} now" for key, a, b in diffs)
        raise UserError(
            f"--resume: this config cannot continue the study in {folder}; it differs from the one its trials ran with in:\n"
            f"{lines}\nResume with the same config (--trials may change), or start a new study (--overwrite, or another "
            "training.output_dir)."
        )
    return study


def _recover(job: TuneJob, study: optuna.Study, folder: Path) -> None:
    """Resuming: the trials a killed process left RUNNING are marked FAIL, their folders removed, their values queued again."""
    from optuna.trial import TrialState

    # Optuna has no public call to end another process's trial; its storage is what Study.tell uses too.
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        logger.warning("trial %d was running when the study stopped: marking it FAIL and trying its values again first", trial.number)
        storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: the process running it stopped; its values were tried again")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        _remove_trial(folder / f"trial-{trial.number:03d}")
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _run_trial(job: TuneJob, study: optuna.Study, folder: Path) -> tuple[int, BaseException | None]:
    """Ask Optuna for the next trial, train it, tell Optuna how it ended.

    Returns:
        The trial number and, for a failed trial, its exception.

    Raises:
        UserError: a mistake of the user's inside the trial (bad data): the study stops.
    """
    import optuna
    from optuna.trial import TrialState

    search = job.cfg.search
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    # Seeded anew before each trial, from what the study has done so far: a resumed study samples what an
    # uninterrupted one would (a sampler's own random state is not stored in the database).
    study.sampler = optuna.samplers.TPESampler(seed=job.cfg.seed + finished)
    trial = study.ask({key: spec.distribution() for key, spec in search.space.items()})
    trial_dir = folder / f"trial-{trial.number:03d}"
    logger.info("trial %d: %s", trial.number, json.dumps(trial.params))
    try:
        cfg = _trial_config(job, trial.params, trial_dir)
        if search.pruning and _evaluates_during_training(cfg):
            cfg.setup.callbacks.append(_pruning_callback(trial, search.metric))
        metrics = registry.task_for_config(cfg).load().run(cfg)
    except optuna.TrialPruned:
        _remove_trial(trial_dir)
        study.tell(trial, state=TrialState.PRUNED)
        return trial.number, None
    except UserError as exc:
        _remove_trial(trial_dir)
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        raise UserError(f"trial {trial.number} ({json.dumps(trial.params)}): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - one trial's failure (e.g. out of memory) is recorded and the study goes on
        logger.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
        _remove_trial(trial_dir)
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
        return trial.number, exc
    value = metrics.get(search.metric)
    if value is None or not math.isfinite(value):
        # Validated against what the run reports, so missing means e.g. f1_weighted of a two-label run.
        _remove_trial(trial_dir)
        reason = f"{search.metric} is {value}" if search.metric in metrics else f"the run did not report {search.metric}"
        trial.set_user_attr("error", reason)
        study.tell(trial, state=TrialState.FAIL)
        if search.metric not in metrics:
            raise UserError(f"search.metric: {reason}; it reported {', '.join(k for k in metrics if k.startswith('eval_'))}. Choose one of those.")
        return trial.number, ValueError(reason)
    study.tell(trial, value)
    return trial.number, None


def _plots(study: optuna.Study, folder: Path) -> list[str]:
    """The metric over trials, per parameter and (more than one parameter) the parameters' importances, as PNGs."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from llmtune.plots import _pyplot

    plt = _pyplot()
    written = []
    several = len(study.best_trial.params) > 1
    makers = [("optimization_history.png", optuna_plots.plot_optimization_history), ("slice.png", optuna_plots.plot_slice)]
    if several:
        makers.append(("param_importances.png", optuna_plots.plot_param_importances))
    for name, make in makers:
        # Optuna marks its matplotlib plots experimental, and warns when few trials make importances equal: noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                axes = make(study)
            except Exception as exc:  # noqa: BLE001 - a picture that cannot be drawn (too few trials) is not a failed study
                logger.warning("no %s: %s", name, exc)
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.get_figure()
            figure.set_size_inches(max(6.4, 4.2 * len(study.best_trial.params)) if name == "slice.png" else 6.4, 4.8)
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    return written


def _write_best(job: TuneJob, study: optuna.Study, folder: Path) -> dict[str, Any]:
    """best.yaml (the best trial's resolved config, search: removed, output_dir <output_dir>/best) and the plots."""
    from llmtune.config.loader import dump_yaml

    best = study.best_trial
    cfg = _trial_config(job, best.params, job.output_dir / "best", on_this_machine=False)
    data = cfg.model_dump(mode="json")
    data.pop("search", None)
    dump_yaml(data, folder / BEST_CONFIG)
    _plots(study, folder)
    return {"best_trial": best.number, "value": best.value, "params": best.params, "best_config": str(job.output_dir / BEST_CONFIG)}


def run(job: TuneJob, stdout: Any) -> dict[str, Any]:
    """Run (or continue) the study until `job.trials` trials have finished; one JSON line per trial on `stdout`.

    Returns:
        The best trial's summary (also printed last): best_trial, value, params, best_config.

    Raises:
        UserError: output-directory rules, a study that cannot be resumed with this config, a user mistake in a trial.
        StudyFailed: `MAX_CONSECUTIVE_FAILURES` trials failed in a row, or no trial completed.
    """
    import optuna
    from optuna.trial import TrialState

    cfg = job.cfg
    folder, swap = study_folder(job.output_dir, cfg.overwrite, cfg.resume)
    existed = folder.exists()
    if not cfg.resume:
        if swap:
            runs.prepare_staging(job.output_dir, None)
        else:
            shutil.rmtree(runs.staging_dir(job.output_dir), ignore_errors=True)  # --overwrite: a stale interrupted study
            folder.mkdir(parents=True, exist_ok=True)
    logger.info("study %s in %s: %s %s over %d trials", STUDY_NAME, folder / STUDY_DB, cfg.search.direction, cfg.search.metric, job.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # llmtune logs each trial itself; stdout carries the results
    if cfg.search.pruning and not _evaluates_during_training(cfg):
        logger.info("no pruning: training.eval_strategy is no, so a trial reports nothing before it ends (set eval_strategy: steps)")
    study = _open_study(job, folder, cfg.resume)
    if cfg.resume:
        _recover(job, study, folder)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished():
            _print(job, study, trial.number, stdout)
    failures: list[BaseException] = []
    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) < job.trials:
        try:
            number, error = _run_trial(job, study, folder)
        except UserError:
            if not cfg.resume and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                # A mistake found by the first trial of a new study (bad data): leave the disk as it was, as a
                # training command does, instead of a study of one failed trial that --resume would only repeat.
                shutil.rmtree(folder)
                if existed:
                    folder.mkdir()
            raise
        _print(job, study, number, stdout)
        failures = [*failures, error] if error is not None else []
        if len(failures) >= MAX_CONSECUTIVE_FAILURES:
            raise StudyFailed(
                f"{len(failures)} trials failed in a row, the last with {type(error).__name__}: {error}. The study is kept in "
                f"{folder}; fix the cause (or narrow search.space) and continue it with --resume."
            )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise StudyFailed(f"no trial completed (all pruned or failed); the study is kept in {folder} (see {STUDY_DB}).")
    best = _write_best(job, study, folder)
    if swap:
        runs.swap_into_place(folder, job.output_dir)
    logger.info("best trial %d: %s = %.6g with %s; config in %s", best["best_trial"], cfg.search.metric, best["value"], json.dumps(best["params"]), best["best_config"])
    stdout.write(json.dumps(best, ensure_ascii=False) + "\n")
    stdout.flush()
    return best
