#!/usr/bin/env bash
# Build the one-file zipapp: deploy/build-pyz.sh OUTPUT   (`make dist` runs it for dist/agora.pyz).
# PYTHON: the interpreter with shiv installed (the project's .venv). The zipapp holds that
# interpreter's compiled wheels (orjson, pyzmq, pydantic-core…), so it runs on the same platform
# and Python minor version only.
set -euo pipefail
out=${1:?usage: deploy/build-pyz.sh OUTPUT}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "$(dirname "$out")"
rm -rf "$root/build" "$out"  # setuptools' in-tree build dir would keep modules deleted since
"$python" -m shiv --compressed --reproducible --python '/usr/bin/env python3' \
    --console-script agora --output-file "$out" --quiet "$root"
rm -rf "$root/build"
