"""Extra Lightning callbacks from the ``callbacks`` config group (``conf/callbacks/``).

Each entry of ``cfg.callbacks`` is ``name: {_target_: <class path>, <keyword>: <value>, ...}``,
built with ``hydra.utils.instantiate``; an entry set to ``null`` is switched off. They are
appended to the callbacks fisc always builds itself (checkpoints, ``last.ckpt``, the resume
check, skipped images, progress bar, run media), which are what make a run resumable and are not
configurable here. Everything is built when the config is checked, before the run dir is touched,
so a bad ``_target_`` or keyword stops the launch with the entry's key in the message.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from fisc.train.errors import ConfigError

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig) -> list:
    """The ``callbacks`` group's callbacks, in config order; raises :class:`ConfigError` naming
    the entry (``callbacks.<name>``) when one cannot be built or is no Lightning callback."""
    spec = cfg.get("callbacks")
    if spec is None:
        return []
    if not isinstance(spec, DictConfig):
        raise ConfigError(
            f"callbacks must map names to {{_target_: <class>, ...}} entries, got {spec!r}"
        )
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from pytorch_lightning import Callback
    from pytorch_lightning.callbacks import ModelSummary

    summary_off = cfg.get("trainer", {}).get("enable_model_summary") is False
    built = []
    for name, entry in spec.items():
        key = f"callbacks.{name}"
        if entry is None:  # `callbacks.<name>=null` switches a default callback off
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ConfigError(f"{key}: needs a _target_ (the callback's class path), got {entry!r}")
        try:
            callback = instantiate(entry)
        except InstantiationException as e:  # no such class or module, a wrong keyword, ...
            raise ConfigError(f"{key}: cannot build {entry._target_}: {e}") from e
        if not isinstance(callback, Callback):
            raise ConfigError(
                f"{key}: {entry._target_} built a {type(callback).__name__}, not a "
                "pytorch_lightning.Callback (the `pytorch_lightning` package, not `lightning`)"
            )
        if summary_off and isinstance(callback, ModelSummary):
            # Lightning refuses a ModelSummary when the trainer disables summaries: the flag wins
            log.info("%s skipped: trainer.enable_model_summary is false", key)
            continue
        built.append(callback)
    return built
