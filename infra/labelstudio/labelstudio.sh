#!/usr/bin/env bash
# Install, start and stop a local Label Studio 1.23 (see labelstudio.py for the details).
#   labelstudio.sh install | start [--dir DIR] [--port P] | stop --dir DIR | status --dir DIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LABELLOOP_CACHE:-$HOME/.cache/labelloop}"
# The helper is standard-library only: any Python 3.11+ runs it; prefer Label Studio's own venv.
if [[ -x "$cache/ls-venv/bin/python" ]]; then
  python="$cache/ls-venv/bin/python"
else
  python="$(command -v python3)"
fi
exec "$python" "$here/labelstudio.py" "$@"
