//! A session as one self-contained HTML page: the image the model saw, the
//! conversation with every answer token coloured by its weight, the token's
//! heatmap over the image on hover or click, the answer's sentence map, and
//! a switch between the strategies computed at export. No network: images
//! are inlined as data URIs, maps and the colormap as JSON, and a small
//! script draws the overlay exactly as [`crate::overlay`] does (PyTorch
//! bilinear upsampling, the same colours, a constant opacity).
//!
//! The page reads its initial selection from the URL fragment,
//! `#c=CONVERSATION&t=TURN&k=TOKEN|all|none&s=STRATEGY` (0-based indices),
//! so a link (or a headless browser) can open it on any map.

use base64::Engine;
use image::RgbImage;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::{png_bytes, Colormap, RenderError};

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct HtmlSession {
    pub title: String,
    /// E.g. `bundled:toy (llama, 3 layers x 4 heads)`.
    pub model: String,
    pub created: String,
    /// Strategy names, the first shown first.
    pub strategies: Vec<String>,
    pub conversations: Vec<HtmlConversation>,
}

#[derive(Debug, Clone)]
pub struct HtmlConversation {
    pub label: String,
    /// The image as the model saw it, as large as it is to be drawn.
    pub view: RgbImage,
    /// Heatmap grid `[height, width]` of the maps of this image.
    pub grid: [usize; 2],
    pub turns: Vec<HtmlTurn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HtmlTurn {
    pub number: usize,
    pub question: String,
    /// The given answer, for a teacher-forced turn.
    pub target: Option<String>,
    pub stop: String,
    pub tokens: Vec<String>,
    /// Per strategy.
    pub maps: BTreeMap<String, HtmlMaps>,
}

/// One strategy's maps of a turn, each in `[0, 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct HtmlMaps {
    pub tokens: Vec<Vec<f32>>,
    pub weights: Vec<f32>,
    pub sentence: Vec<f32>,
}

#[derive(Serialize)]
struct PageData<'a> {
    title: &'a str,
    model: &'a str,
    created: &'a str,
    alpha: f32,
    lut: Vec<[u8; 3]>,
    strategies: &'a [String],
    conversations: Vec<PageConversation<'a>>,
}

#[derive(Serialize)]
struct PageConversation<'a> {
    label: &'a str,
    image: String,
    grid: [usize; 2],
    turns: Vec<HtmlTurn>,
}

/// Four decimals are more than a colormap of 256 steps can show.
fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|x| {
            if x.is_finite() {
                (x * 1e4).round() / 1e4
            } else {
                0.0
            }
        })
        .collect()
}

fn rounded_turn(t: &HtmlTurn) -> HtmlTurn {
    let maps = t
        .maps
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                HtmlMaps {
                    tokens: m.tokens.iter().map(|v| rounded(v)).collect(),
                    weights: m.weights.clone(),
                    sentence: rounded(&m.sentence),
                },
            )
        })
        .collect();
    HtmlTurn { maps, ..t.clone() }
}

/// The page, one string of HTML with nothing to fetch.
pub fn session_html(
    session: &HtmlSession,
    colormap: Colormap,
    alpha: f32,
) -> Result<String, RenderError> {
    let mut conversations = Vec::with_capacity(session.conversations.len());
    for c in &session.conversations {
        let png = png_bytes(&c.view)?;
        conversations.push(PageConversation {
            label: &c.label,
            image: format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(png)
            ),
            grid: c.grid,
            turns: c.turns.iter().map(rounded_turn).collect(),
        });
    }
    let data = PageData {
        title: &session.title,
        model: &session.model,
        created: &session.created,
        alpha: alpha.clamp(0.0, 1.0),
        lut: (0..256).map(|i| colormap.rgb(i as f32 / 255.0)).collect(),
        strategies: &session.strategies,
        conversations,
    };
    // `<` only occurs inside JSON strings, where \u003c means the same; no
    // text of the session can then close the script element.
    let json = serde_json::to_string(&data)
        .map_err(|e| RenderError::Html(e.to_string()))?
        .replace('<', "\\u003c");
    Ok(TEMPLATE.replace("/*DATA*/", &json))
}

const TEMPLATE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>dexar session</title>
<style>
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; background: #fafafa; color: #222; }
  #side { position: fixed; top: 0; left: 0; padding: 0; width: var(--side); }
  #view { display: block; }
  #panel { padding: 8px 12px; }
  #caption { font-size: 13px; color: #444; min-height: 2.6em; }
  #bar { display: block; width: 100%; height: 10px; margin: 6px 0; }
  #main { margin-left: calc(var(--side) + 16px); padding: 12px 16px; max-width: 52em; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  .meta { color: #666; font-size: 13px; margin-bottom: 12px; }
  .conv { border-top: 1px solid #ddd; padding-top: 8px; margin-top: 12px; }
  .conv > .label { color: #666; font-size: 13px; }
  .q { font-weight: 600; margin-top: 10px; }
  .a { margin: 4px 0 2px; }
  .tok { cursor: pointer; border-radius: 3px; white-space: pre-wrap; }
  .tok.sel { outline: 2px solid #1565c0; }
  .whole { font-size: 12px; margin-left: 8px; cursor: pointer; color: #1565c0; border: 1px solid #1565c0; border-radius: 3px; padding: 0 4px; background: #fff; }
  .stop { color: #888; font-size: 12px; }
</style>
</head>
<body>
<div id="side">
  <canvas id="view" width="1" height="1"></canvas>
  <div id="panel">
    <label>strategy <select id="strategy"></select></label>
    <canvas id="bar" width="256" height="1"></canvas>
    <div id="caption"></div>
  </div>
</div>
<div id="main">
  <h1 id="title"></h1>
  <div class="meta" id="meta"></div>
  <div id="turns"></div>
</div>
<script id="data" type="application/json">/*DATA*/</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const view = document.getElementById("view");
const ctx = view.getContext("2d");
const pick = document.getElementById("strategy");
const bases = [];
let strategy = D.strategies[0];
let pinned = null;
let hovered = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// PyTorch bilinear upsampling (align_corners=False), as dexar-render does.
function taps(input, output) {
  const scale = input / output, out = [];
  for (let d = 0; d < output; d++) {
    const src = Math.max((d + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(src), input - 1);
    const i1 = Math.min(i0 + 1, input - 1);
    out.push([i0, i1, src - i0]);
  }
  return out;
}

function overlay(base, map, grid) {
  const img = new ImageData(new Uint8ClampedArray(base.data), base.width, base.height);
  if (!map) return img;
  const [gh, gw] = grid;
  const ys = taps(gh, img.height), xs = taps(gw, img.width);
  const a = D.alpha;
  for (let y = 0; y < img.height; y++) {
    const [y0, y1, wy] = ys[y];
    for (let x = 0; x < img.width; x++) {
      const [x0, x1, wx] = xs[x];
      const top = (1 - wx) * map[y0 * gw + x0] + wx * map[y0 * gw + x1];
      const bottom = (1 - wx) * map[y1 * gw + x0] + wx * map[y1 * gw + x1];
      const t = Math.min(Math.max((1 - wy) * top + wy * bottom, 0), 1);
      const colour = D.lut[Math.round(t * 255)];
      const at = 4 * (y * img.width + x);
      for (let c = 0; c < 3; c++) {
        img.data[at + c] = Math.round(a * colour[c] + (1 - a) * img.data[at + c]);
      }
    }
  }
  return img;
}

function current() { return hovered || pinned; }

function draw() {
  const sel = current();
  if (!sel || !bases[sel.c]) return;
  const base = bases[sel.c];
  if (view.width !== base.width || view.height !== base.height) {
    view.width = base.width; view.height = base.height;
    document.documentElement.style.setProperty("--side", base.width + "px");
  }
  const turn = D.conversations[sel.c].turns[sel.t];
  const maps = turn && turn.maps[strategy];
  let map = null, caption = "the image as the model saw it";
  if (maps && sel.k === "all") {
    map = maps.sentence;
    caption = "turn " + turn.number + ", whole answer (sentence map)";
  } else if (maps && sel.k !== "none") {
    map = maps.tokens[sel.k];
    caption = "turn " + turn.number + ", token " + sel.k + " " + JSON.stringify(turn.tokens[sel.k]) +
      " · weight " + maps.weights[sel.k].toFixed(4);
  }
  ctx.putImageData(overlay(base, map, D.conversations[sel.c].grid), 0, 0);
  document.getElementById("caption").textContent = strategy + " · " + caption;
  document.querySelectorAll(".tok.sel").forEach(e => e.classList.remove("sel"));
  if (typeof sel.k === "number") {
    const e = document.getElementById("tok-" + sel.c + "-" + sel.t + "-" + sel.k);
    if (e) e.classList.add("sel");
  }
  document.body.dataset.shown = [sel.c, sel.t, sel.k, strategy].join("/");
}

function colourTokens() {
  D.conversations.forEach((conv, c) => conv.turns.forEach((turn, t) => {
    const maps = turn.maps[strategy];
    if (!maps) return;
    const top = Math.max(...maps.weights, 0);
    maps.weights.forEach((w, k) => {
      const e = document.getElementById("tok-" + c + "-" + t + "-" + k);
      const level = top > 0 ? w / top : 0;
      const colour = D.lut[Math.round((0.35 + 0.65 * level) * 255)];
      e.style.background = level > 0 ? "rgba(" + colour.join(",") + "," + (0.25 + 0.75 * level) + ")" : "transparent";
      e.style.color = level > 0.6 ? "#000" : "#222";
    });
  }));
}

function build() {
  document.title = D.title;
  document.getElementById("title").textContent = D.title;
  document.getElementById("meta").textContent = D.model + " · recorded " + D.created;
  for (const name of D.strategies) pick.appendChild(new Option(name, name));
  pick.addEventListener("change", () => { strategy = pick.value; colourTokens(); draw(); });
  const bar = document.getElementById("bar").getContext("2d");
  D.lut.forEach((c, i) => { bar.fillStyle = "rgb(" + c.join(",") + ")"; bar.fillRect(i, 0, 1, 1); });
  const root = document.getElementById("turns");
  D.conversations.forEach((conv, c) => {
    const box = el("div", "conv");
    box.appendChild(el("div", "label", "conversation " + (c + 1) + " · image " + conv.label));
    conv.turns.forEach((turn, t) => {
      const q = turn.target === null ? turn.question : turn.question + " (given answer, teacher-forced)";
      box.appendChild(el("div", "q", turn.number + ". " + q));
      const a = el("div", "a");
      turn.tokens.forEach((text, k) => {
        const s = el("span", "tok", text);
        s.id = "tok-" + c + "-" + t + "-" + k;
        s.addEventListener("mouseenter", () => { hovered = {c, t, k}; draw(); });
        s.addEventListener("mouseleave", () => { hovered = null; draw(); });
        s.addEventListener("click", () => { pinned = {c, t, k}; hovered = null; draw(); });
        a.appendChild(s);
      });
      const whole = el("button", "whole", "whole answer");
      whole.addEventListener("click", () => { pinned = {c, t, k: "all"}; hovered = null; draw(); });
      a.appendChild(whole);
      a.appendChild(el("span", "stop", " " + turn.stop));
      box.appendChild(a);
    });
    root.appendChild(box);
  });
}

function fromFragment() {
  const f = new URLSearchParams(location.hash.slice(1));
  let c = D.conversations.length - 1, t = 0;
  while (c > 0 && D.conversations[c].turns.length === 0) c--;
  if (c >= 0) t = Math.max(D.conversations[c].turns.length - 1, 0);
  if (f.has("c")) c = Math.min(Math.max(parseInt(f.get("c"), 10) || 0, 0), D.conversations.length - 1);
  if (f.has("t")) t = Math.max(parseInt(f.get("t"), 10) || 0, 0);
  let k = f.get("k") || "all";
  if (k !== "all" && k !== "none") k = Math.max(parseInt(k, 10) || 0, 0);
  if (f.has("s") && D.strategies.includes(f.get("s"))) strategy = f.get("s");
  pick.value = strategy;
  pinned = {c, t, k};
}

build();
fromFragment();
colourTokens();
let pending = D.conversations.length;
D.conversations.forEach((conv, c) => {
  const img = new Image();
  img.onload = () => {
    const off = document.createElement("canvas");
    off.width = img.width; off.height = img.height;
    const o = off.getContext("2d");
    o.drawImage(img, 0, 0);
    bases[c] = o.getImageData(0, 0, img.width, img.height);
    if (--pending === 0) { draw(); document.body.dataset.ready = "1"; }
  };
  img.src = conv.image;
});
if (pending === 0) document.body.dataset.ready = "1";
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> HtmlSession {
        let mut maps = BTreeMap::new();
        maps.insert(
            "dexar".to_string(),
            HtmlMaps {
                tokens: vec![vec![0.0, 0.5, 1.0, 0.123456]],
                weights: vec![0.3],
                sentence: vec![1.0, 0.0, 0.0, 0.0],
            },
        );
        HtmlSession {
            title: "a </script><b>session</b>".into(),
            model: "bundled:toy".into(),
            created: "2025-01-01T00:00:00+00:00".into(),
            strategies: vec!["dexar".into()],
            conversations: vec![HtmlConversation {
                label: "x.png".into(),
                view: RgbImage::new(4, 4),
                grid: [2, 2],
                turns: vec![HtmlTurn {
                    number: 1,
                    question: "what?".into(),
                    target: None,
                    stop: "eos".into(),
                    tokens: vec![" a".into()],
                    maps,
                }],
            }],
        }
    }

    #[test]
    fn the_page_is_self_contained_and_its_data_cannot_close_the_script() {
        let html = session_html(&session(), Colormap::Inferno, 0.6).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("</script>").count(), 2, "only the page's own");
        assert!(html.contains("\\u003c/script>\\u003cb>session"));
        assert!(html.contains("data:image/png;base64,iVBOR"));
        assert!(html.contains("0.1235"), "maps rounded to 4 decimals");
        for remote in ["http://", "https://", "src=\"//", "@import"] {
            assert!(!html.contains(remote), "{remote}");
        }
        let start = html.find("application/json\">").unwrap() + 18;
        let end = html[start..].find("</script>").unwrap() + start;
        let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(data["lut"].as_array().unwrap().len(), 256);
        assert_eq!(
            data["lut"][255],
            serde_json::json!(Colormap::Inferno.rgb(1.0))
        );
        assert_eq!(data["title"], "a </script><b>session</b>");
    }
}
