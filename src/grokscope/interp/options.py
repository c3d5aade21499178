"""Options of the interpretability studies: plain dataclasses (no torch), one per verb, so the CLI
builds its flags from them; every default and help text lives here once."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExampleOptions:
    """Which checkpoints and examples a probe or lens study reads."""

    step: str = "last"
    """Checkpoints: 'last', 'all', 'every:N', or a comma list of steps."""
    fit: str = "train"
    """Example set the probe or tuned lens is fitted on (train, test, sample:N, ...)."""
    score: str = "test"
    """Example set it is scored on."""
    max_examples: int = 5000
    """Cap on the examples of each set."""
    seed: int = 0
    """Seed of sampled example sets and control tasks."""
    device: str = "cpu"
    """Where the model runs: cpu (the default, and the tested path), auto, cuda, cuda:N or mps."""


@dataclass
class ProbeOptions(ExampleOptions):
    """`probe`: linear probes from hooks to a label, with baselines."""

    hook: list[str] = field(default_factory=list)
    """Hook names, e.g. blocks.0.hook_resid_mid (repeat --hook for several)."""
    label: str = ""
    """Label NAME or NAME.COLUMN (e.g. carry_out, carry_out.2, token.0)."""
    position: str = "all"
    """'all', 'loss', or a comma list of positions."""
    l2: float = 1e-3
    """L2 penalty on standardised features."""
    backend: str = field(default="torch", metadata={"choices": ("torch", "sklearn")})
    """Probe fitter: torch or sklearn."""
    baselines: bool = True
    """Also fit the hook_embed and control-task probes."""


@dataclass
class LensOptions(ExampleOptions):
    """`lens`: logit lens and tuned lens on residual-stream hooks."""

    hook: list[str] = field(default_factory=list)
    """Residual hooks (default: every resid_pre/mid/post)."""
    tuned: bool = True
    """Also fit and score the tuned lens."""


@dataclass
class PCAOptions:
    """`pca`: PCA of token representations across checkpoints (+ Fourier circles)."""

    of: str = "W_E"
    """W_E, or a hook name (mean activation per token)."""
    position: int = 0
    """Position the hook is read at."""
    group_position: int | None = None
    """Position whose token groups the examples (default: --position)."""
    step: str = "every:12"
    """Checkpoints: 'all', 'every:N', 'last', or a comma list."""
    basis: str = field(default="each", metadata={"choices": ("each", "final")})
    """PCA basis: each checkpoint's own ('each') or the final one's ('final')."""
    data: str = "test"
    """Example set for hook activations."""
    gif: bool = True
    """Also write the animation over checkpoints."""
    device: str = "cpu"
    """Where the model runs: cpu (the default, and the tested path), auto, cuda, cuda:N or mps."""


@dataclass
class EmbspaceOptions:
    """`embspace`: per-head QK/OV token tables and neuron token profiles (Dar et al. 2023)."""

    step: str = "last"
    """Checkpoint: 'last' or a step."""
    neurons: int = 32
    """Neurons shown (largest output norms)."""
