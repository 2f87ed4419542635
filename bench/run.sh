#!/usr/bin/env bash
# The benchmark in one command: builds the worker and the bench (release, or the dev profile
# with --dev for a quick check), then measures. Arguments after the options go to the bench, e.g.
#   bench/run.sh --cards 100000,1000000 --http-cards 420000
#   bench/run.sh --dev --cards 2000 --runs 1          (CI: proves it works, no timing claims)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--dev" ]; then
  profile=dev
  shift
fi
if [ "$profile" = release ]; then
  cargo build --release --bins
  exec target/release/bench "$@"
else
  cargo build --bins
  exec target/debug/bench "$@"
fi
