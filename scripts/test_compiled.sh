#!/usr/bin/env bash
# Run the test suite against the compiled build (docs/performance.md).
#
# Builds the sdist, then from it a wheel whose request-path modules mypyc
# compiles into C extensions (HATCH_BUILD_HOOK_ENABLE_MYPYC=1), installs
# that wheel with the test extras in a virtual environment of its own, and
# runs pytest there with KEYSTILE_BUILD=compiled, under which
# tests/test_compiled_build.py checks that the listed modules are compiled.
# The wheel is built from the unpacked sdist in a temporary directory, so no
# compiled module lands in src/, where the editable install would pick it up.
#
#   scripts/test_compiled.sh [pytest arguments]
#
# Needs a C compiler, the Python headers and `build` in $PYTHON (default
# python3); arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

if ! command -v "${CC:-cc}" >/dev/null; then
  echo "test_compiled: no C compiler (${CC:-cc}); mypyc needs one, and the Python headers" >&2
  exit 1
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

"$python" -m build --sdist --outdir "$out" . >"$out/sdist.log" 2>&1 || {
  cat "$out/sdist.log" >&2
  echo "test_compiled: the sdist did not build" >&2
  exit 1
}
HATCH_BUILD_HOOK_ENABLE_MYPYC=1 "$python" -m pip wheel -q --no-deps \
  --wheel-dir "$out" "$out"/*.tar.gz >"$out/wheel.log" 2>&1 || {
  cat "$out/wheel.log" >&2
  echo "test_compiled: the compiled wheel did not build" >&2
  exit 1
}
wheel=$(ls "$out"/*.whl)
echo "test_compiled: built $(basename "$wheel")"

"$python" -m venv "$out/venv"
"$out/venv/bin/pip" install -q "$wheel[test]"
KEYSTILE_BUILD=compiled "$out/venv/bin/python" -m pytest -p no:cacheprovider "$@"
