#!/usr/bin/env bash
# Quick start: install what is missing, start the hosted storage domain on a
# fresh disk image, and mount its export with guest-driver. Ctrl-C unmounts.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh quickstart
exec cargo xtask quickstart "$@"
