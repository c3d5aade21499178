"""Evaluation of sequence tasks beyond the trainer's metrics: greedy generation, accuracy tables by
operand length and carry class, and their figures (`grokscope eval`, `grokscope data`)."""
