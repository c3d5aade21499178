"""Length generalization: which positional encoding lets a small transformer add numbers longer than
any it saw (`grokscope lengths`)."""
