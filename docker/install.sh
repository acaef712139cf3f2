#!/usr/bin/env bash
# Install mmbot into a fresh virtualenv exactly as the container image does; the Dockerfile and
# .ci/image-check both run this script, so CI proves the image's own install commands.
#
#   docker/install.sh deps VENV   create VENV and install requirements.lock (hashes required)
#   docker/install.sh app VENV    build mmbot with the locked build backend and install it
#                                 into VENV with --no-deps, then drop the installer tools
#
# Two steps so that the image rebuilds the dependency layer only when the lock changes.
# PYTHON names the interpreter that creates the virtualenv (default: python3).
set -euo pipefail

usage() {
    echo "usage: $0 deps|app VENV" >&2
    exit 2
}
[ $# -eq 2 ] || usage
step=$1
venv=$2
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
pip_flags=(--quiet --no-input --disable-pip-version-check)

deps() {
    "$python" -m venv "$venv"
    # --require-hashes: a file that differs from the one locked is refused, and so is any
    # dependency missing from the lock. --only-binary: no package's build code runs here.
    "$venv/bin/python" -m pip install "${pip_flags[@]}" --require-hashes --only-binary=:all: \
        -r "$root/requirements.lock"
}

app() {
    local build
    build=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: $build is local to this function
    trap "rm -rf '$build'" EXIT

    # A separate virtualenv holds the locked build backend, so that neither an unpinned
    # setuptools fetched by build isolation nor the build tools themselves reach VENV.
    "$python" -m venv "$build/venv"
    "$build/venv/bin/python" -m pip install "${pip_flags[@]}" --require-hashes \
        --only-binary=:all: -r "$root/docker/build-requirements.lock"

    # setuptools builds inside the source tree (build/, *.egg-info); building a copy keeps the
    # checkout clean and leftovers of earlier builds out of the wheel.
    mkdir "$build/src"
    cp -R "$root/pyproject.toml" "$root/README.md" "$root/mmbot" "$root/strategies" "$build/src/"
    "$build/venv/bin/python" -m pip wheel "${pip_flags[@]}" --no-deps --no-build-isolation \
        --no-index --wheel-dir "$build/dist" "$build/src"

    "$venv/bin/python" -m pip install "${pip_flags[@]}" --no-deps --no-index "$build"/dist/*.whl
    # Every requirement of mmbot must already be satisfied by the lock.
    "$venv/bin/python" -m pip check
    # The daemon needs neither the installer nor setuptools at run time.
    "$venv/bin/python" -m pip uninstall "${pip_flags[@]}" --yes setuptools pip
}

case $step in
    deps) deps ;;
    app) app ;;
    *) usage ;;
esac
