# Sourced by test.sh and demo.sh: create .venv and install opsctl with its dev extras, once per
# change of pyproject.toml or constraints.txt (a stamp file keeps cached runs fast).
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.opsctl-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # the distribution was called `opsctl` before (a PyPI name that is another project's): drop it
  .venv/bin/python -m pip uninstall -q -y opsctl >/dev/null 2>&1 || true
  rm -rf src/opsctl.egg-info
  # uv (from PyPI, into the venv) installs the same pinned set from its cache in ~4 s where pip
  # takes ~50 s (most of a cached CI run's set-up); pip remains the way when uv cannot be had
  echo "setup: installing opsctl and its dependencies into .venv..." >&2
  if .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9" >/dev/null 2>&1 \
      && .venv/bin/uv pip install -q --python .venv/bin/python -e ".[dev]" -c constraints.txt; then
    :
  else
    echo "setup: uv unavailable, installing with pip (the first time takes a minute or two)..." >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
    # one line per package as pip gets to it (progress), warnings about unused index locations dropped
    .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e ".[dev]" -c constraints.txt 2>&1 \
      | grep --line-buffered -E "^(Collecting|Installing collected|Successfully installed|ERROR)" \
      | sed -u -e 's/^Collecting /  collecting /' -e 's/ (from .*//' >&2 || true
  fi
  .venv/bin/python -c "import opsctl, typer, psycopg, redis, kafka, boto3, kubernetes, moto" \
    || { echo "setup: installing opsctl into .venv failed" >&2; exit 1; }
  .venv/bin/python scripts/compile-bytecode.py || true  # as pip does (see the script)
  echo "$want" > "$stamp"
  echo "setup: done (.venv/bin/opsctl)" >&2
fi
