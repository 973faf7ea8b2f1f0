"""Every OmegaConf resolver the configs use, in one place, registered by one explicit call.

``register_resolvers()`` runs in ``anorefine.config.register_configs`` (every entry point, every
compose) and when ``anorefine.sweep`` is imported (Hydra's launcher workers import it as they unpickle
the sweep callback, before a job resolves its folder name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf


def _help() -> str:
    """conf/train.yaml ``hydra.help.template``: the options of every group (``anorefine.cli_help``)."""
    from anorefine.cli_help import help_text

    return help_text()


def _job_dir(override_dirname: str) -> str:
    """conf/train.yaml ``hydra.sweep.subdir``: a job's folder from its overrides (``run_folder``)."""
    from anorefine.run_folder import job_key

    return job_key(override_dirname)


def _neutral_keys() -> list[str]:
    """conf/train.yaml: the settings no job folder names (``anorefine.run_folder.NEUTRAL_KEYS``)."""
    from anorefine.run_folder import NEUTRAL_KEYS

    return list(NEUTRAL_KEYS)


def _musc_mask_rule(dataset: str) -> str:
    """conf/protocol/musc.yaml: MuSc's published mask rule on ``dataset`` (its class says)."""
    from anorefine.datasets import dataset_class

    return dataset_class(dataset).musc_mask_rule


def _musc_k_list(dataset: str) -> list[int]:
    """conf/experiment/paper_model/musc.yaml: MuSc's published RsCIN window sizes on ``dataset``."""
    from anorefine.datasets import dataset_class

    return list(dataset_class(dataset).musc_k_list)


#: Resolver name (as the YAML writes it) -> function.
RESOLVERS: dict[str, Callable[..., Any]] = {
    "anorefine.help": _help,
    "anorefine.job_dir": _job_dir,
    "anorefine.neutral_keys": _neutral_keys,
    "anorefine.musc_mask_rule": _musc_mask_rule,
    "anorefine.musc_k_list": _musc_k_list,
}


def register_resolvers() -> None:
    """Register every resolver of ``RESOLVERS`` (idempotent)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
