"""TensorBoard event files without TensorFlow.

``torch.utils.tensorboard`` imports the ``tensorboard`` package, which imports TensorFlow when it
is installed (the workspace installs it for lstm-textgen): about a minute and a gigabyte of RAM
on a small CPU, and CUDA error lines on machines without a GPU. Lightning's ``TensorBoardLogger``
uses ``torch.utils.tensorboard`` whenever ``tensorboard`` is installed. The writers here use
tensorboardX, which writes the same event files from its own protobufs and never imports
TensorFlow; TensorBoard reads them as usual.
"""

from __future__ import annotations

import os
from typing import Any


def summary_writer(log_dir: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A ``tensorboardX.SummaryWriter`` for ``log_dir`` (``add_scalar``, ``add_histogram``, ...).

    Args:
        log_dir: where the event files go.
        **kwargs: more ``SummaryWriter`` arguments (e.g. ``flush_secs``).

    Returns:
        The writer; ``close()`` it when done.
    """
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(log_dir), **kwargs)


def tensorboard_logger(save_dir: str | os.PathLike[str], name: str = "", **kwargs: Any) -> Any:
    """Lightning's ``TensorBoardLogger`` writing through tensorboardX (no TensorFlow import).

    Same directory layout (``save_dir/name/version_N``) and arguments; ``default_hp_metric``
    defaults to False (its hparams summary would import ``torch.utils.tensorboard``) and
    ``log_graph`` is not supported.

    Args:
        save_dir: the logs' root folder.
        name: the experiment's subfolder ("" for none).
        **kwargs: ``TensorBoardLogger``'s other arguments (``version``, ``prefix``, ...) and
            ``SummaryWriter``'s.

    Returns:
        A ``lightning.pytorch.loggers.TensorBoardLogger`` subclass instance.

    Raises:
        ValueError: ``log_graph=True``.
    """
    from lightning.fabric.utilities.logger import _convert_params
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.loggers.logger import rank_zero_experiment
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    class TFFreeTensorBoardLogger(TensorBoardLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            if self._experiment is not None:
                return self._experiment
            if self.root_dir:
                self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = summary_writer(self.log_dir, **self._kwargs)
            return self._experiment

        @rank_zero_only  # as the base class's: other ranks do nothing
        def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
            # Kept for hparams.yaml (written by save()); the TensorBoard hparams plugin's summary
            # would need torch.utils.tensorboard, hence TensorFlow.
            self.hparams.update(_convert_params(params))
            if metrics:
                self.log_metrics(metrics if isinstance(metrics, dict) else {"hp_metric": metrics}, step)

    kwargs.setdefault("default_hp_metric", False)
    if kwargs.get("log_graph"):
        raise ValueError("log_graph needs torch.utils.tensorboard (TensorFlow); not supported here")
    return TFFreeTensorBoardLogger(os.fspath(save_dir), name=name, **kwargs)
