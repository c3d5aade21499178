"""Training: the loop, optimizers and schedules; it writes through `grokscope.run.Run`."""

from grokscope.train.loop import Interrupted, TrainResult, resume, train

__all__ = ["Interrupted", "TrainResult", "resume", "train"]
