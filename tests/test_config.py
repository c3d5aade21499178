"""Config loading, overrides and their error messages."""

import pytest

from grokscope.config import apply_overrides, dumps_toml, from_dict, parse_override
from grokscope.errors import GrokscopeError
from grokscope.presets import load_preset_or_file, preset_names, preset_summary


def _data(*overrides):
    return apply_overrides(load_preset_or_file("tiny"), list(overrides))


def test_presets_load_and_describe_themselves():
    assert {"mainline", "tiny"} <= set(preset_names())
    for name in preset_names():
        data = load_preset_or_file(name)
        if "task" in data:  # sweep specs may live beside run presets
            from_dict(data)
        assert preset_summary(name)
    main = from_dict(load_preset_or_file("mainline"))
    assert (main.task.p, main.task.frac_train, main.model.d_model, main.model.n_heads) == (113, 0.3, 128, 4)
    assert (main.train.lr, main.train.weight_decay, main.train.betas) == (1e-3, 1.0, [0.9, 0.98])


def test_overrides_are_typed_from_toml():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("model.layer_norm=true") == (["model", "layer_norm"], True)
    assert parse_override("train.betas=[0.9, 0.99]") == (["train", "betas"], [0.9, 0.99])
    assert parse_override("model.act=gelu") == (["model", "act"], "gelu")
    cfg = from_dict(_data("train.lr=2e-3", "task.p=37", "train.eval.every=7"))
    assert (cfg.train.lr, cfg.task.p, cfg.train.eval.every) == (2e-3, 37, 7)


def test_round_trip_through_toml():
    import tomllib

    cfg = from_dict(_data("train.stop_at_test_acc=0.99"))
    again = from_dict(tomllib.loads(dumps_toml(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown key `train.lrr` (did you mean `train.lr`?)"),
        (["bogus=1"], "unknown key `bogus`"),
        (["task.q=5"], "unknown key `task.q`"),
        (["train.lr=fast"], "`train.lr` must be float, got str"),
        (["train.steps=1.5"], "`train.steps` must be int"),
        (["model.layer_norm=1"], "`model.layer_norm` must be bool"),
        (["model.act=tanh"], "`model.act` must be one of relu, gelu"),
        (["train.optimizer=lion"], "must be one of adamw, adam, sgd"),
        (["train.lr=-1"], "train.lr must be > 0"),
        (["train.betas=[0.9]"], "train.betas must be two numbers"),
        (["task.kind=nope"], "unknown task.kind 'nope'"),
        (["train.eval=3"], "`train.eval` must be a table"),
        (["task.p=1"], "task.p must be >= 2"),
    ],
)
def test_bad_config_messages(overrides, message):
    with pytest.raises(GrokscopeError) as e:
        from_dict(_data(*overrides))
    assert message in str(e.value)


def test_bad_override_syntax():
    with pytest.raises(GrokscopeError, match="expected KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(GrokscopeError, match="is not a table"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=1"])


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(GrokscopeError, match="unknown preset 'nope'"):
        load_preset_or_file("nope")
    with pytest.raises(GrokscopeError, match="no such config file"):
        load_preset_or_file(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(GrokscopeError, match="not valid TOML"):
        load_preset_or_file(str(bad))
    with pytest.raises(GrokscopeError, match="missing \\[task\\]"):
        from_dict({"train": {"lr": 1.0}})
