"""Training: the loop, optimizers, evaluation, and the run folder it writes."""

from grokscope.train.loop import Interrupted, TrainResult, resume, train
from grokscope.train.run_folder import RunFolder

__all__ = ["Interrupted", "RunFolder", "TrainResult", "resume", "train"]
