"""Devices and precision: `train.device`, `train.precision = auto`, device-free run folders."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from grokscope import devices
from grokscope.cli import main
from grokscope.config import from_dict
from grokscope.devices import native_bf16, resolve_device, resolve_precision
from grokscope.errors import GrokscopeError
from grokscope.run import Run
from grokscope.train import resume, train
from tests.conftest import make_config

AVX2 = lambda: {"capability": "AVX2", "avx512_bf16": False, "amx": False}  # noqa: E731
AVX512 = lambda: {"capability": "AVX512", "avx512_bf16": False, "amx": False}  # noqa: E731
AVX512_BF16 = lambda: {"capability": "AVX512", "avx512_bf16": True, "amx": False}  # noqa: E731
AMX = lambda: {"capability": "AVX512", "avx512_bf16": True, "amx": True}  # noqa: E731
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "features, native", [(AVX2, False), (AVX512, False), (AVX512_BF16, True), (AMX, True)]
)
def test_auto_takes_bf16_only_where_the_cpu_runs_it_natively(features, native):
    assert native_bf16(CPU, features) is native
    chosen = resolve_precision("auto", CPU, features)
    assert chosen.used == ("bf16" if native else "fp32")
    assert chosen.asked == "auto"
    if not native:  # the note names why: no AVX-512-BF16 / AMX on this capability
        assert "AVX-512-BF16" in chosen.why and features()["capability"] in chosen.why


def test_explicit_precisions_are_kept_and_emulated_bf16_is_said():
    assert resolve_precision("fp32", CPU, AMX).used == "fp32"
    slow = resolve_precision("bf16", CPU, AVX2)
    assert slow.used == "bf16" and slow.emulated and "emulated" in slow.why and "15x" in slow.why
    assert slow.worth_a_note
    native = resolve_precision("bf16", CPU, AMX)
    assert not native.emulated and not native.worth_a_note and "emulated" not in native.why
    assert resolve_precision("auto", CPU, AVX2).worth_a_note  # a choice made for the user is said
    assert resolve_precision("tf32", CPU, AVX2).used == "fp32"  # TF32 is a CUDA setting


def test_the_context_of_each_precision():
    x = torch.randn(4, 4)
    with resolve_precision("bf16", CPU, AVX2).context(CPU):
        assert (x @ x).dtype == torch.bfloat16
    with resolve_precision("auto", CPU, AVX2).context(CPU):
        assert (x @ x).dtype == torch.float32


def test_this_machine_decides_from_what_torch_reports():
    f = devices.cpu_features()
    assert f["capability"] == torch.backends.cpu.get_cpu_capability()
    expected = "bf16" if (f["avx512_bf16"] or f["amx"]) else "fp32"
    assert resolve_precision("auto", CPU).used == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "", 3])
def test_a_bad_device_name_is_a_config_error(name):
    with pytest.raises(GrokscopeError, match="train.device"):
        make_config("tiny", f"train.device={name!r}" if isinstance(name, str) else "train.device=3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_an_absent_device_is_one_message_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(GrokscopeError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda:1")
    assert main(["train", "tiny", "--out", str(tmp_path / "r"), "--device", "cuda", "--quiet"]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_auto_is_the_cpu_here_and_the_folder_records_what_was_used(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = make_config("tiny", "train.steps=30", "train.precision=auto")
    assert config.train.device == "auto"
    result = train(config, tmp_path / "r", progress=False)
    run = result.run
    (entry,) = run.meta()["trained_with"]
    assert entry["from_step"] == 0
    assert entry["device"].startswith("cpu (") and entry["precision"] == resolve_precision("auto", CPU).used
    _, info = run.load_state()
    assert info["device"] == entry["device"] and info["precision"] == entry["precision"]


class _OnAnotherDevice:
    """Stands in for a tensor living on an accelerator: only `.detach().to("cpu")` gives its data
    (what `devices.to_cpu` must call before anything is written)."""

    def __init__(self, data: torch.Tensor):
        self.data, self.device = data, torch.device("meta")

    def detach(self):
        return self

    def to(self, device):
        assert torch.device(device).type == "cpu", device
        return self.data.clone()


def test_checkpoints_and_state_from_another_device_are_written_as_cpu_safetensors(tmp_path):
    config = make_config("tiny", "train.steps=1")
    run = Run.create(tmp_path / "r", config, {"train_idx": __import__("numpy").arange(3)})
    weights = {"embed.W_E": torch.randn(3, 2)}
    run.save_checkpoint(5, {k: _OnAnotherDevice(v) for k, v in weights.items()})
    run.save_state({k: _OnAnotherDevice(v) for k, v in weights.items()}, {"step": 5})
    with safe_open(run.checkpoint_path(5), "pt") as f:
        assert torch.equal(f.get_tensor("embed.W_E"), weights["embed.W_E"])
        assert f.get_tensor("embed.W_E").device.type == "cpu"
    tensors, info = run.load_state()
    assert torch.equal(tensors["embed.W_E"], weights["embed.W_E"]) and info["step"] == 5


def test_resume_elsewhere_works_says_it_is_not_bit_exact_and_records_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    train(make_config("tiny", "train.steps=20", "train.threads=1"), out, progress=False)
    capsys.readouterr()
    # the same resume, as if this CPU were another device: the note, and a new trained_with entry
    monkeypatch.setattr("grokscope.train.loop.describe", lambda device: "cuda:0 (a GPU)")
    resume(out, steps=40, progress=False)
    said = capsys.readouterr().out
    assert "not bit-exact" in said and "cuda:0 (a GPU)" in said
    history = Run.open(out).meta()["trained_with"]
    assert [h["from_step"] for h in history] == [0, 20]
    assert history[-1]["device"] == "cuda:0 (a GPU)"
    # and the same device again is silent and adds nothing
    resume(out, steps=60, progress=False)
    assert "bit-exact" not in capsys.readouterr().out
    assert len(Run.open(out).meta()["trained_with"]) == 2


def test_a_resume_on_the_same_device_says_nothing_and_the_device_may_change_in_the_config(tmp_path, capsys):
    out = tmp_path / "r"
    train(make_config("tiny", "train.steps=20", "train.threads=1"), out, progress=False)
    text = (out / "config.toml").read_text().replace('device = "auto"', 'device = "cpu"')
    (out / "config.toml").write_text(text)
    capsys.readouterr()
    resume(out, steps=30, progress=False)  # train.device is free to change: not a config edit
    assert "bit-exact" not in capsys.readouterr().out
    assert Run.open(out).config.train.device == "cpu"


def test_a_preset_that_wants_speed_asks_for_auto():
    from grokscope.presets import load_preset_or_file

    config = from_dict(load_preset_or_file("mainline_fast"))
    assert config.train.precision == "auto"


@pytest.mark.parametrize(
    "verb",
    [
        ["analyze"],
        ["probe", "--hook", "blocks.0.hook_resid_post", "--label", "a"],
        ["lens"],
        ["pca"],
        ["eval"],
    ],
)
def test_analysis_verbs_take_a_device(verb, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "r"
    train(make_config("tiny", "train.steps=20"), out, progress=False)
    assert main([verb[0], str(out), *verb[1:], "--device", "cuda:3"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("layers", [2])
def test_the_forward_creates_nothing_on_the_cpu_when_the_model_is_elsewhere(layers):
    """The model on the `meta` device (shapes only: mixing it with a CPU tensor is an error, as
    with a GPU): forward and float64 loss for every positional encoding. An encoding that reads a
    value (`.item()`, which meta cannot give) is checked up to that point."""
    from grokscope.model.positional import offset_generator, position_ids
    from grokscope.registry import POSITIONAL
    from grokscope.run import build
    from grokscope.scoring import token_losses

    for pos in POSITIONAL.names():
        preset = "five_digit_addition" if "abacus" in pos else "tiny"
        task, model = build(make_config(preset, f"model.pos={pos!r}", f"model.n_layers={layers}"))
        batch = task.train_batch(0, 8, 0)
        ids = position_ids(model, batch, offset_generator(0, 0))
        on = batch.to("meta")
        model.to("meta")
        try:
            logits = model(
                on.tokens, positions=task.loss_positions, pos_ids=None if ids is None else ids.to("meta")
            )
            token_losses(logits, on.targets).sum().backward()
        except RuntimeError as e:
            assert "cannot be called on meta tensors" in str(e), f"model.pos = {pos}: {e}"
