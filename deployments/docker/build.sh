#!/usr/bin/env bash
# Build (and optionally push) a loopline image: deployments/docker/build.sh serve|train [--push REGISTRY]
# A thin wrapper over `loopline images build` (wheels downloaded on the host, tagged commit-lockhash).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/loopline images build "$@"
