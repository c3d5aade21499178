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


@dataclass
class InterventionOptions:
    """Which checkpoint, examples and counterfactual pairs an intervention reads."""

    step: str = "last"
    """Checkpoint: 'last' or a step (patch and circuit: also a comma list)."""
    set_name: str = "test"
    """Example set the examples (and the clean side of pairs) come from (train, test, ...)."""
    n: int = 1000
    """Cap on the examples (pairs) used."""
    pairs: str = ""
    """A JSONL file of your own pairs: {"clean": [...], "corrupt": [...]} per line."""
    operand: str = field(default="a", metadata={"choices": ("a", "b")})
    """Pairs: the operand changed (modular and addition)."""
    column: int = -1
    """Pairs (addition): the operand column changed, 0 = units; -1 = a random one."""
    carry_column: int = -1
    """Pairs (addition): the column whose incoming carry --carry-flip controls; -1 = the one above."""
    carry_flip: str = field(default="any", metadata={"choices": ("any", "yes", "no")})
    """Pairs (addition): the carry into --carry-column must flip (yes), must not (no), or either."""
    seed: int = 0
    """Seed of the pairs, reference draws and random controls."""
    device: str = "cpu"
    """Where the model runs: cpu (the default, and the tested path), auto, cuda, cuda:N or mps."""


@dataclass
class AblateOptions(InterventionOptions):
    """`ablate`: replace part of a hook's activation; change in loss, accuracy and exact match."""

    hook: list[str] = field(default_factory=list)
    """Hook to ablate (repeat for several, each ablated alone), e.g. blocks.0.attn.hook_z."""
    heads: str = ""
    """Heads to ablate (comma list); default all."""
    neurons: str = ""
    """Last-dimension units (neurons): comma list, 'key' or 'freq:K' (modular); default all."""
    positions: str = "all"
    """Positions ablated: 'all', 'loss' or a comma list."""
    directions: str = ""
    """Ablate a subspace: key_freqs, freqs:K,..., random:K or file:PATH (safetensors 'directions')."""
    method: str = field(default="mean", metadata={"choices": ("zero", "mean", "resample")})
    """Replacement: zero, mean over --reference, or resampled from --reference."""
    reference: str = "train"
    """Example set for mean and resample ablation."""
    controls: int = 5
    """Random parts of the same size ablated as a baseline (0: none)."""


@dataclass
class PatchOptions(InterventionOptions):
    """`patch`: activation patching (exact) and attribution patching over nodes and edges."""

    mode: str = field(default="both", metadata={"choices": ("denoising", "noising", "both")})
    """Denoising: clean into corrupted; noising: corrupted into clean."""
    exact: bool = True
    """Exact node patching at every (component, position) (attribution is always computed)."""
    edges: bool = True
    """Edge attribution, checked against exact edge patching."""


@dataclass
class CircuitOptions(InterventionOptions):
    """`circuit`: edge-level circuit discovery (attribution ranking, then ACDC-style pruning)."""

    threshold: float = 0.9
    """Faithfulness the circuit must keep (fraction of the clean-corrupt logit difference)."""
    prune: bool = True
    """After ranking, try removing each kept edge and keep it out if faithfulness stays."""
    random_circuits: int = 5
    """Random circuits of the same size drawn as a baseline."""
    all_checkpoints: bool = False
    """Node and edge attribution scores at every checkpoint (circuit formation), with the figure."""
    max_checkpoints: int = 200
    """Cap on the checkpoints read by --all-checkpoints (evenly spaced)."""
