"""``anorefine train`` and ``anorefine predict`` (and the ``train.py``/``predict.py`` shims): Hydra
config in, one run out; bad input exits with one line.

A job whose folder already holds results.json for the same resolved config is skipped. A failing
job writes ``failure.json`` (error and traceback); in a multirun it then returns so the sweep goes
on, and ``anorefine.sweep.SweepCallback`` reports it at the end. Under DDP only rank zero writes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from anorefine.config import TrainerConfig, is_multiprocess, register_configs
from anorefine.errors import AnorefineError

#: The exit status of every bad-input error (a config value, a missing file): one line on stderr.
BAD_INPUT = 2
#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
log = logging.getLogger(__name__)
DDP_IN_MULTIRUN = (
    "trainer=ddp in a multirun needs its processes started by the cluster, one per GPU "
    "(hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node equal to gpus_per_node): "
    "Lightning would start the others by re-running the whole sweep. Otherwise run one GPU per job"
)


def one_line(error: BaseException) -> str:
    """A composition error as one line: the key and what is wrong with it (or the options there are)."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if "Config search path:" in lines:  # an unknown option: name the ones there are
        lines = lines[: lines.index("Config search path:")]
    head = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
    key = getattr(cause, "full_key", None)
    text = head[0] if head else type(cause).__name__
    if len(head) > 1 and head[1].startswith("Available options"):
        text += f"; use one of: {', '.join(head[2:])}"
    elif len(head) > 1:
        text += f"; {head[1]}"
    text = text.replace("In 'train': ", "")
    return f"{key}: {text}" if key else text


def main_with_one_line_errors(main: Callable[[], None]) -> None:
    """Run a ``hydra.main`` function; a config that does not compose exits with one line and status 2.
    ``-v`` is short for ``verbose=true``.

    Hydra is told to re-raise (``HYDRA_FULL_ERROR``) so that its multi-line composition report can be
    replaced; errors inside a run are reported by ``train`` itself.
    """
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv = [("verbose=true" if arg in ("-v", "--verbose") else arg) for arg in sys.argv]
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(BAD_INPUT)


def check_ddp_launch(trainer: TrainerConfig, mode: RunMode | None) -> None:
    """Refuse DDP (``trainer.strategy``) in a multirun whose jobs would have to start their own processes."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if mode != RunMode.MULTIRUN or not is_multiprocess(trainer):
        return
    if not ("LOCAL_RANK" in os.environ or SLURMEnvironment.detect()):
        raise AnorefineError(DDP_IN_MULTIRUN)


def check_single_run(hydra_cfg: Any) -> None:
    """Refuse a sweep preset (``experiment=NAME``) started without ``-m``: it would run one default job."""
    params = hydra_cfg.sweeper.get("params")
    if hydra_cfg.mode == RunMode.RUN and params:
        name = hydra_cfg.runtime.choices.get("experiment", "NAME")
        raise AnorefineError(
            f"experiment={name} is a sweep over {', '.join(params)}: "
            f"run it with python train.py -m experiment={name}"
        )


def train(cfg: DictConfig) -> None:
    """Run the experiment the composed config describes, in Hydra's run directory."""
    from anorefine import console
    from anorefine.assembly import is_rank_zero  # torch and Lightning: after composition
    from anorefine.run import run_experiment
    from anorefine.sweep import clear_failure, is_finished, write_failure

    console.configure(cfg.verbose)
    hydra_cfg = HydraConfig.get()
    try:
        check_single_run(hydra_cfg)
    except AnorefineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(BAD_INPUT)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if is_finished(run_dir, cfg):
        print(f"skipped: {run_dir} already holds results.json for this config", flush=True)
        return
    try:
        check_ddp_launch(cfg.trainer, hydra_cfg.mode)
        if cfg.mode == "predict":
            from anorefine.inspection import run_inspection
            from anorefine.onnx_engine import score_folder  # predict.engine=onnx: the exported graph
            from anorefine.watch import watch_folder

            if not cfg.predict.watch:
                (score_folder if cfg.predict.engine == "onnx" else run_inspection)(cfg, run_dir)
            # predict.watch=DIR: a stop signal (Ctrl-C, SIGTERM) ends it after its summary
            elif watch_folder(cfg, run_dir):
                sys.exit(INTERRUPTED)
            return
        run_experiment(cfg, run_dir, overrides)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished categories are kept in {run_dir}; run the same command "
            f"(with hydra.run.dir={run_dir}) to go on from there",
            file=sys.stderr,
        )
        sys.exit(INTERRUPTED)
    except Exception as error:
        failure = write_failure(run_dir, error, cfg, overrides) if is_rank_zero() else "not written"
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("job failed (%s): %s; the sweep goes on", failure, error)
            return
        if isinstance(error, AnorefineError | OmegaConfBaseException):  # bad input: a value, a file
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(BAD_INPUT)
        raise
    if is_rank_zero():
        clear_failure(run_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    """Compose the config (``conf/train.yaml``, or another root with ``--config-name``) and run it."""
    train(cfg)


def run_train(argv: list[str]) -> None:
    """``anorefine train [overrides]``: one run, or a sweep with ``-m``."""
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    main_with_one_line_errors(hydra_main)


def run_predict(argv: list[str]) -> None:
    """``anorefine predict predict.images=DIR [overrides]``: ``conf/predict.yaml``, inspection mode."""
    run_train(["--config-name", "predict", *argv])
