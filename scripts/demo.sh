#!/usr/bin/env bash
# Install everything and run ptcopy's main job:
#
#   sudo bash scripts/demo.sh [--dir DIR [--keep]]
#
# For now (the engine is done; the FUSE data path, the daemon and the CLI come next) the main job
# is a short tour of the engine on small file-backed volumes: python -m ptcopy.demo. It runs in a
# temporary directory and cleans up after itself; arguments are passed on to it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash "$REPO/scripts/setup.sh"
echo
exec "$REPO/.venv/bin/python" -m ptcopy.demo "$@"
