"""Training: the loop, its schedules, the run directory and resume, the data feed, and distributed training.

:func:`train` (also ``vaekit.train``) turns a :class:`vaekit.config.Config` into a run directory; see
:mod:`vaekit.training.loop` for the loop, :mod:`vaekit.training.checkpoints` for the run directory and resume,
:mod:`vaekit.training.schedules` for the learning rate and KL weight, :mod:`vaekit.training.distributed` for
torchrun / DDP.
"""

from vaekit.training.loop import TrainResult, resolve_device, train

__all__ = ["TrainResult", "resolve_device", "train"]
