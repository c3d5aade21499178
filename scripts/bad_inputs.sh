#!/usr/bin/env bash
# Hostile and careless inputs (issue 18), each run through the CLI; prints the last lines of what
# grokscope says and its exit status. Run from the repository root: bash scripts/bad_inputs.sh [WORKDIR]
set +e
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src"
g() { echo "\$ grokscope $*"; python3 -m grokscope "$@" 2>&1 | grep -v "^\s*$" | tail -2 | cut -c1-260; echo "  (exit ${PIPESTATUS[0]})"; }
work="${1:-$(mktemp -d)}"; mkdir -p "$work"; cd "$work"
python3 -m grokscope train tiny --steps 20 --out base --quiet --set train.checkpoint.every=10 >/dev/null 2>&1
echo "[task]" > config.toml; echo "kind = 'modular'" >> config.toml; echo thesis > thesis.tex
g train tiny --steps 5 --out . --overwrite --quiet
ls thesis.tex
g train tiny --steps 5 --set 'name="../escape"' --quiet
g train tiny --steps 5 --set train.optimizer=sgd --set train.momentum=-1 --out base --overwrite --quiet
g train tiny --set train.weight_decay=inf --quiet
g train tiny --set train.momentum=nan --quiet
g train tiny --set train.state_every_s=-1 --quiet
g train tiny --set train.stop_at_test_loss=-1 --quiet
g train tiny --set seed=9223372036854775808 --quiet
g train tiny --set task.split_seed=9223372036854775808 --quiet
g train tiny --set model.d_model=1000000000000 --quiet
g train tiny --set task.p=10007 --quiet
g train tiny --set 'task.kind=["a"]' --quiet
g train /tmp --quiet
cp -r base nostate && rm -r nostate/state; g resume nostate --steps 40 --quiet
cp -r base neg && python3 - <<'PY'
import json
from safetensors.torch import load_file, save_file
from safetensors import safe_open
p="neg/state/state.safetensors"
t=load_file(p)
with safe_open(p,"pt") as f: info=json.loads(f.metadata()["grokscope_state"])
info["step"]=-5
save_file(t,p,metadata={"grokscope_state":json.dumps(info)})
PY
g resume neg --steps 40 --quiet
cp -r base junk && printf '\x00\xffjunk\n{"step": "x"}\n' >> junk/metrics.jsonl; g report junk --quiet
cp -r base zero && rm zero/checkpoints/step_0000020.safetensors && ln -s /dev/zero zero/checkpoints/step_0000020.safetensors; g analyze zero --quiet --no-figures
cp -r base cfgjunk && head -c 100 /dev/urandom > cfgjunk/config.toml; g resume cfgjunk --quiet
cp -r base meta && sed -i 's/^\[meta\]$/meta = 3\n[x]/' meta/config.toml; g report meta
cp -r base edited && sed -i 's/^lr = 0.005$/lr = 0.001/' edited/config.toml; g resume edited --steps 40 --quiet
echo x > afile; g train tiny --out afile --quiet; g train tiny --out afile/run --quiet
g probe base --hook blocks.0.hook_resid_post --label nope
g lens base --step ''
g pca base --of blocks.0.hook_resid_post --group-position 99
g embspace base --neurons 0
g demo --out afile --quiet
