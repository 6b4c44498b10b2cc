#!/usr/bin/env bash
# Records sessions/example.dexar with the bundled demo model (f32 traces, so
# replays equal `dexar explain`). Run from anywhere; needs a built dexar.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f sessions/example.dexar
printf '%s\n' \
  'describe the image' \
  'what color is the circle ?' \
  'how many shapes ?' \
  '/image crates/dexar-toy/samples/two-shapes.png' \
  'where is the red circle ?' \
  | cargo run -q -- --graphics ascii --trace-dtype f32 --session sessions/example.dexar
