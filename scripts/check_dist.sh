#!/usr/bin/env bash
# Build the sdist and the wheel into a temporary directory, check them with
# twine, and make sure the wheel ships what the package needs at run time:
# the Lua scripts of the Redis limiter, the key dashboard's templates and
# static files, and the py.typed marker.
# Needs `build` and `twine` in the current Python: pip install build twine
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

"$python" -m build --outdir "$out" . >"$out/build.log" 2>&1 || {
  cat "$out/build.log" >&2
  echo "check_dist: the build failed" >&2
  exit 1
}
"$python" -m twine check --strict "$out"/*.whl "$out"/*.tar.gz

wheel=$(ls "$out"/*.whl)
sdist=$(ls "$out"/*.tar.gz)
"$python" - "$wheel" "$sdist" src/keystile <<'PY'
import pathlib, sys, tarfile, zipfile

wheel, sdist, package = sys.argv[1:]
src = pathlib.Path(package)
names = set(zipfile.ZipFile(wheel).namelist())
wanted = {"keystile/py.typed", "keystile/__about__.py"}
for folder, pattern in [("lua", "*.lua"), ("dashboard/templates", "*.html"), ("dashboard/static", "*")]:
    found = {f"keystile/{folder}/{p.name}" for p in (src / folder).glob(pattern)}
    if not found:
        sys.exit(f"check_dist: no {pattern} files found under {src / folder}")
    wanted |= found
for needed in ("dashboard.css", "dashboard.js"):
    if f"keystile/dashboard/static/{needed}" not in wanted:
        sys.exit(f"check_dist: src/keystile/dashboard/static/{needed} is missing")
missing = sorted(wanted - names)
if missing:
    sys.exit(f"check_dist: the wheel lacks {', '.join(missing)}")
stray = sorted(n for n in names if n.startswith(("tests/", "docs/", "scripts/")))
if stray:
    sys.exit(f"check_dist: the wheel carries {', '.join(stray[:5])}")
with tarfile.open(sdist) as tar:
    members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
for needed in ("pyproject.toml", "README.md", "src/keystile/py.typed"):
    if needed not in members:
        sys.exit(f"check_dist: the sdist lacks {needed}")
print(f"check_dist: ok: {pathlib.Path(wheel).name} ({len(names)} files), {pathlib.Path(sdist).name}")
PY
