"""grokscope: train small transformers on algorithmic tasks and explain what they learned."""

__version__ = "0.1.0"

#: Version of the run-folder layout; bumped when a run folder written earlier can no longer be read.
RUN_FORMAT_VERSION = 1
