"""Fuzzing what a user can type and what can happen to a run folder: random configs and random
damage, seeded (so a failure replays), the verbs run in-process. Every case must end in success or
in one clear message (exit 2), never a traceback, and a verb never changes files it was not asked
to change."""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
from pathlib import Path

import pytest

from grokscope.cli import main
from grokscope.config import dumps_toml
from grokscope.presets import load_preset_or_file

ODD_VALUES = [
    -1,
    0,
    1,
    2**63,
    -(2**63) - 1,
    10**12,
    0.5,
    -0.5,
    math.inf,
    -math.inf,
    math.nan,
    1e308,
    "",
    "x",
    "\u00e9\u00e9",
    True,
    [],
    [1, 2],
    ["a"],
    {},
    {"a": 1},
]


def _paths(data: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _paths(v, f"{prefix}{k}.")
        out.append(f"{prefix}{k}")
    return out


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
    node[last] = value


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _run_cli(argv: list[str], capsys) -> int:
    code = main(argv)  # any exception but a GrokscopeError escapes main and fails the test
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert (
            err.strip().startswith("grokscope:")
            and "\n" not in err.strip().split("grokscope: note:")[0].strip()
        )
    return code


@pytest.mark.parametrize("seed", range(int(os.environ.get("GROKSCOPE_FUZZ_SEEDS", 4))))
def test_random_configs_train_or_say_why(seed, tmp_path, capsys):
    rng = random.Random(seed)
    base = load_preset_or_file("tiny")
    base["train"].update({"steps": 3, "eval": {"every": 3, "dense_until": 0}, "checkpoint": {"every": 3}})
    keys = _paths(base) + ["task.unknown", "bogus", "model.d_model", "train.betas"]
    for case in range(15):
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        data = _deepcopy(data)
        for _ in range(rng.randint(1, 3)):
            _set(data, rng.choice(keys), rng.choice(ODD_VALUES))
        try:
            text = dumps_toml(data)
        except (TypeError, ValueError):
            continue  # TOML cannot hold it (e.g. nan inside some tables): not a file a user can write
        cfg = tmp_path / f"c{case}.toml"
        cfg.write_text(text)
        out = tmp_path / f"out{case}"
        _run_cli(["train", str(cfg), "--out", str(out), "--quiet"], capsys)
        outside = sorted(p.name for p in tmp_path.iterdir())
        assert all(n.startswith(("c", "out")) for n in outside), outside


def _deepcopy(data):
    import copy

    return copy.deepcopy(data)


DAMAGE = ["truncate", "junk", "delete", "to_dir", "dev_zero", "append_junk_line", "empty"]


def _damage(rng: random.Random, folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = rng.choice(files)
    how = rng.choice(DAMAGE)
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[: rng.randint(0, max(len(data) - 1, 0))])
    elif how == "junk":
        target.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
    elif how == "delete":
        target.unlink()
    elif how == "to_dir":
        target.unlink()
        target.mkdir()
    elif how == "dev_zero":
        target.unlink()
        os.symlink("/dev/zero", target)
    elif how == "append_junk_line":
        target.write_bytes(data + b'{"step": "x"}\n\xff\xfe\n')
    else:
        target.write_bytes(b"")
    return f"{how} {target.relative_to(folder)}"


VERBS = [
    ["analyze", "{d}", "--quiet", "--no-figures"],
    ["report", "{d}", "--quiet"],
    ["resume", "{d}", "--steps", "8", "--quiet"],
    ["pca", "{d}", "--no-gif"],
]
# what each verb may write into the folder
MAY_WRITE = {
    "analyze": ("analysis/",),
    "report": ("analysis/", "figures/", "report.html"),
    "pca": ("analysis/", "figures/"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    code = main(
        ["train", "tiny", "--out", str(out), "--quiet", "--steps", "4"]
        + [
            "--set",
            "train.eval.every=2",
            "--set",
            "train.eval.dense_until=0",
            "--set",
            "train.checkpoint.every=2",
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize("seed", range(int(os.environ.get("GROKSCOPE_FUZZ_SEEDS", 6))))
def test_damaged_run_folders_end_in_one_message(seed, pristine, tmp_path, capsys):
    rng = random.Random(100 + seed)
    for case in range(6):
        folder = tmp_path / f"r{case}"
        shutil.copytree(pristine, folder, symlinks=True)
        what = [_damage(rng, folder) for _ in range(rng.randint(1, 2))]
        verb = [a.format(d=folder) for a in rng.choice(VERBS)]
        before = _hashes(folder)
        code = _run_cli(verb, capsys)
        after = _hashes(folder)
        allowed = MAY_WRITE.get(verb[0], ())
        if verb[0] == "resume":
            allowed = (
                ()
                if code == 2
                else (
                    "checkpoints/",
                    "state/",
                    "metrics.jsonl",
                    "metrics.jsonl.damaged",
                    "split",
                    "config.toml",
                )
            )
        changed = [
            k
            for k in set(before) | set(after)
            if before.get(k) != after.get(k) and not k.startswith(allowed or ("\0",))
        ]
        assert not changed, (what, verb, changed)
