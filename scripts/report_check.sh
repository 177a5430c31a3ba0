#!/usr/bin/env bash
# Render an lscape report in headless Chromium at 1280 and 800 px wide, to look at the screenshots:
# nothing may overflow the page, figures must be legible, no table may need sideways scrolling at
# 1280 px. Prints each table box wider than its space at 1280 px, and the flags the page shows.
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
# the table boxes laid out at 1280 px: scrollWidth > clientWidth means sideways scrolling
MEASURED="$(dirname "$REPORT")/.report-check-measure.html"
sed 's#</body>#<script>addEventListener("load",()=>{const p=document.createElement("pre");p.id="measured";p.textContent=[...document.querySelectorAll("div.scroll")].map(d=>d.querySelector("table").dataset.table+" "+d.scrollWidth+" "+d.clientWidth).join("\\n");document.body.append(p)})</script></body>#' \
  "$REPORT" > "$MEASURED"
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --user-data-dir="$profile" --window-size=1280,8000 \
  --virtual-time-budget=5000 --dump-dom "file://$(cd "$(dirname "$MEASURED")" && pwd)/$(basename "$MEASURED")" 2>/dev/null |
  sed -n '/<pre id="measured">/,/<\/pre>/p' | sed 's/<[^>]*>//g' |
  awk 'NF == 3 { if ($2 > $3) { print "too wide at 1280 px: table " $1 " (" $2 " > " $3 " px)"; bad = 1 } }
       END { if (!bad) print "no table scrolls sideways at 1280 px" }'
rm -rf "$profile" "$MEASURED"
echo "flags shown in the page:"
grep -o 'class="badge">\[[^]]*\]' "$REPORT" | sed 's/class="badge">//' | sort | uniq -c || echo "  none"
