# Sourced by bin/run and bin/test: make .venv with Python 3.11 and install pinned requirements.
# Re-installs only when a requirements file changed, so a warm start skips pip entirely.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bootstrap() {
  local requirements="$1"
  local python="${PYTHON:-python3.11}"
  command -v "$python" >/dev/null 2>&1 || python=python3
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "groundwork: error: Python 3.11 is required (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "groundwork: creating .venv"
    "$python" -m venv .venv
  fi
  local stamp
  stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
  if [ ! -f "$stamp" ]; then
    echo "groundwork: installing $requirements (the first time compiles llama-cpp-python: about 6 minutes)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" 2> >(grep -v "is ignored: it is neither" >&2)
    touch "$stamp"
  fi
}
