#!/usr/bin/env bash
# Render an lscape report in headless Chromium at 1280 and 800 px wide, to look at the screenshots:
# nothing may overflow the page, figures must be legible, wide tables must scroll inside their box.
#   scripts/report_check.sh [REPORT.html] [OUTDIR]
# HEIGHT (default 8000) is the screenshot's height in px. Default report: the report of `make demo` (demo/report.html) if present, else a fresh report of
# sample_checkpoints/. Installs Debian's chromium when it is missing (needs root and apt).
set -euo pipefail
REPORT=${1:-}
OUT=${2:-report-check}
mkdir -p "$OUT"
if [ -z "$REPORT" ]; then
  if [ -f demo/report.html ]; then
    REPORT=demo/report.html
  else
    REPORT="$OUT/samples-report.html"
    lscape report sample_checkpoints/ --compare model.name --out "$REPORT" --quiet
  fi
fi
if ! command -v chromium >/dev/null; then
  apt-get update && apt-get install -y chromium
fi
URL="file://$(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT")"
for width in 1280 800; do
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
    --hide-scrollbars --screenshot="$OUT/report-$width.png" --window-size="$width,${HEIGHT:-8000}" "$URL" 2>/dev/null
  rm -rf "$profile"
  echo "screenshot: $OUT/report-$width.png ($width px wide)"
done
