#!/usr/bin/env bash
# The built web app (frontend/dist), shared by scripts/up.sh and scripts/images.sh.
# Usage: scripts/web-app.sh stale|build
#   stale  exits 0 when frontend/dist is missing or older than its sources
#   build  npm ci && npm run build (needs Node.js 20.19+ and npm)
set -euo pipefail
cd "$(dirname "$0")/../frontend"
case "${1:-}" in
  stale)
    [ -f dist/index.html ] || exit 0
    [ -n "$(find src index.html package.json package-lock.json vite.config.ts -newer dist/index.html -print -quit)" ]
    ;;
  build) npm ci --no-audit --no-fund && npm run build ;;
  *)
    echo "usage: $0 stale|build" >&2
    exit 2
    ;;
esac
