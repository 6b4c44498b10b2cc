#!/usr/bin/env bash
# Makes the README's picture of the TUI: `dexar tui` on the bundled model
# explaining an answer, in xterm as a VT340 (sixel) under Xvfb, keys typed
# with xdotool and the window taken with ImageMagick's import; the set-up of
# tests/xterm.rs. Needs: xvfb xterm xdotool imagemagick (Debian packages).
#
#   scripts/tui-screenshot.sh [OUT.png]     (default docs/tui-screenshot.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/tui-screenshot.png}
for tool in Xvfb xterm xdotool import; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing" >&2; exit 2; }
done
cargo build -q -p dexar-cli
bin=$PWD/target/debug/dexar
n=$((300 + $$ % 200))
Xvfb ":$n" -screen 0 1600x1000x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
home=$(mktemp -d)
trap 'kill "$xvfb" 2>/dev/null || true; rm -rf "$home"' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.1; done
export DISPLAY=":$n"
HOME=$home xterm -ti vt340 -title dexar-screenshot -geometry 118x34+0+0 \
    -fa 'DejaVu Sans Mono' -fs 10 -bg '#101014' -fg '#d8d8d8' \
    -e "$bin" tui --max-tokens 24 &
window=$(xdotool search --sync --name dexar-screenshot | head -1)
xdotool windowfocus --sync "$window"
sleep 3
xdotool key slash
xdotool type --delay 30 'describe the image'
xdotool key Return
sleep 4
# From the last token ("circle") back to "triangle".
for _ in 1 2 3 4; do xdotool key Left; sleep 0.3; done
sleep 2
import -window "$window" "$out"
xdotool key q
echo "wrote $out"
