#!/usr/bin/env bash
# Idempotent set-up of a fresh clone: nothing needs to be installed by hand.
#   .venv              the project (requirements/requirements.lock + loopline itself, editable)
#   .venv-labelstudio  the Label Studio server (its pins conflict with Prefect's, so it lives apart)
#   .venv-kserve       kserve's SDK, for checking rendered InferenceServices (its protobuf pin conflicts)
# Each venv is built once per lock hash in a cache outside the clone ($LOOPLINE_VENV_CACHE, default
# ~/.cache/loopline/venvs) and copied into the clone with hard links; a fresh machine builds it from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=${LOOPLINE_VENV_CACHE:-$HOME/.cache/loopline/venvs}
PYTHON=${LOOPLINE_PYTHON:-$(command -v python3.11 || command -v python3)}
mkdir -p "$CACHE"

quiet_pip() {  # drop the noise of find-links folders that do not exist on this machine
  { grep -v '^WARNING: Location' || true; } >&2
}

lock_key() {  # hash of the lock file and the interpreter version
  { cat "$1"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16
}

build_cached() {  # name lockfile -> prints the cached venv path, building it if missing
  local name=$1 lock=$2 key dir
  key=$(lock_key "$lock")
  dir="$CACHE/$name-$key"
  if [[ ! -f "$dir/.complete" ]]; then
    echo "setup: building $name venv from $lock (a few minutes, once per lock)" >&2
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade "pip>=24" 2>&1 | quiet_pip
    "$dir/bin/python" -m pip install --quiet -r "$lock" 2>&1 | quiet_pip
    touch "$dir/.complete"
  fi
  echo "$dir"
}

materialize() {  # cached_dir target: copy (hard links when possible) and rewrite the absolute paths
  local cached=$1 target=$2 key
  key=$(basename "$cached")
  if [[ -f "$target/.lock-key" && "$(cat "$target/.lock-key")" == "$key" ]]; then
    return 0
  fi
  echo "setup: installing $key into $target" >&2
  rm -rf "$target" "$target.tmp"
  cp -al "$cached" "$target.tmp" 2>/dev/null || { rm -rf "$target.tmp"; cp -a "$cached" "$target.tmp"; }
  # Scripts carry the venv's absolute path in their shebang; sed -i writes new files (links stay intact).
  grep -rlI --null "$cached" "$target.tmp/bin" "$target.tmp/pyvenv.cfg" 2>/dev/null \
    | xargs -0 -r sed -i "s#$cached#$ROOT/$(basename "$target")#g"
  mv "$target.tmp" "$target"
  echo "$key" > "$target/.lock-key"
}

project=$(build_cached loopline requirements/requirements.lock)
materialize "$project" .venv
if ! .venv/bin/python -c 'import loopline, sys; sys.exit(0 if loopline.__file__.startswith(sys.argv[1]) else 1)' "$ROOT/src" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | quiet_pip
fi

migrated_database() {  # cached_dir: an empty Label Studio database with every migration applied, built
  # once per Label Studio install, so a new data dir starts in seconds instead of migrating (~30 s)
  local dir=$1 tmp
  [[ -f "$dir/migrated-db.sqlite3" ]] && return 0
  echo "setup: migrating an empty Label Studio database (once per Label Studio install)" >&2
  tmp=$(mktemp -d)
  HOME=$tmp LABEL_STUDIO_BASE_DATA_DIR=$tmp/data DJANGO_DB=sqlite SENTRY_DSN= FRONTEND_SENTRY_DSN= \
    LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false "$dir/bin/python" -c \
    'from label_studio.server import _setup_env, _apply_database_migrations; _setup_env(); _apply_database_migrations()' \
    >"$tmp/migrate.log" 2>&1 || { cat "$tmp/migrate.log" >&2; exit 1; }
  mv "$tmp/data/label_studio.sqlite3" "$dir/migrated-db.sqlite3.tmp"
  mv "$dir/migrated-db.sqlite3.tmp" "$dir/migrated-db.sqlite3"
  rm -rf "$tmp"
}

labelstudio=$(build_cached labelstudio requirements/labelstudio.lock)
migrated_database "$labelstudio"
materialize "$labelstudio" .venv-labelstudio
[[ -f .venv-labelstudio/migrated-db.sqlite3 ]] || cp "$labelstudio/migrated-db.sqlite3" .venv-labelstudio/

materialize "$(build_cached kserve requirements/kserve.lock)" .venv-kserve

echo "setup: ready (.venv, .venv-labelstudio, .venv-kserve)" >&2
