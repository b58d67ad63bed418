#!/usr/bin/env bash
# The test command: install what is missing, then run every check CI runs
# (format, lints, no_std builds, unit/model/crash/end-to-end tests, short
# fuzz runs, and the Xen boot test under QEMU).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec cargo xtask test "$@"
