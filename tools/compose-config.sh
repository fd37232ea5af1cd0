#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine: `docker compose config` (the v2 plugin) when the
# machine has it, else Debian's docker-compose, installed on the spot when we may (root + apt).
set -euo pipefail
cd "$(dirname "$0")/.."
export NEO4J_PASSWORD="${NEO4J_PASSWORD:-compose-config-check}"
export KGREC_API_KEYS="${KGREC_API_KEYS:-compose-config-check}"
if docker compose version >/dev/null 2>&1; then
  exec docker compose -f docker-compose.yml config --quiet
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "compose-config: installing Debian's docker-compose to validate the compose file" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  else
    echo "compose-config: need 'docker compose' or 'docker-compose' (apt-get install docker-compose)" >&2
    exit 1
  fi
fi
exec docker-compose -f docker-compose.yml config --quiet
