//! End-to-end tests of `dexar export --html`: the page of a recorded
//! session, opened in a real headless Chromium (skipped, saying why, where
//! none is installed; .ci/run installs Debian's), shows the token's heatmap
//! over the image pixel for pixel as dexar draws it, switches strategies,
//! and colours the tokens; and the example session in sessions/ replays and
//! exports.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use dexar_tests::{arg as s, dexar_at, record_session, text};

/// Chromium, if this machine has it.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// A headless Chromium run on `url` with its own empty profile.
fn headless(browser: &Path, profile: &Path, args: &[&str], url: &str) -> Output {
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=900,600",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", s(profile)))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs")
}

#[test]
fn the_html_export_shows_token_heatmaps_in_a_real_browser() {
    let home = tempfile::tempdir().unwrap();
    let session = record_session(home.path(), "s.dexar");
    let page = home.path().join("page.html");
    let o = dexar_at(home.path())
        .args(["export", s(&session), "--html", s(&page)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));

    let Some(browser) = chromium() else {
        println!("skipped: no chromium on this machine (Debian: apt-get install chromium)");
        return;
    };
    // The expected pixels: the token's DEX-AR map over the recorded view.
    let recorded = dexar_session::Session::open(&session).unwrap();
    let turn = &recorded.turns[0];
    let view = dexar_session::image::enlarged(&recorded.conversations[0].image.model_view);
    let num_layers = recorded.header.model.num_layers;
    let trace = dexar_core::LayerSelection::default().restrict(&turn.steps[1], num_layers);
    let token_map = dexar_core::builtin_strategy("dexar", 1)
        .unwrap()
        .token_map(&trace)
        .unwrap();
    let map = token_map.normalized();
    let want = dexar_render::overlay(
        &view,
        &map,
        token_map.grid,
        dexar_render::Colormap::Inferno,
        0.6,
    )
    .unwrap();
    let url = |fragment: &str| format!("file://{}#{fragment}", s(&page));
    let shot = |name: &str, fragment: &str| {
        let png = home.path().join(name);
        let profile = tempfile::tempdir().unwrap();
        let o = headless(
            &browser,
            profile.path(),
            &[&format!("--screenshot={}", s(&png))],
            &url(fragment),
        );
        assert!(png.is_file(), "no screenshot: {}", text(&o.stderr));
        image::open(&png).unwrap().to_rgb8()
    };
    // Mean and worst channel difference over the view's area.
    let compare = |got: &image::RgbImage, want: &image::RgbImage| {
        let (w, h) = want.dimensions();
        let (mut sum, mut worst, mut n) = (0u64, 0u8, 0u64);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let d = got.get_pixel(x, y)[c].abs_diff(want.get_pixel(x, y)[c]);
                    sum += u64::from(d);
                    worst = worst.max(d);
                    n += 1;
                }
            }
        }
        (sum as f64 / n as f64, worst)
    };
    let token = shot("token.png", "c=0&t=0&k=1&s=dexar");
    let (mean, worst) = compare(&token, &want);
    assert!(
        mean < 2.0 && worst <= 24,
        "token map: mean {mean}, worst {worst}"
    );
    let plain = shot("plain.png", "k=none");
    let (mean, _) = compare(&plain, &view);
    assert!(mean < 2.0, "plain image: mean {mean}");
    let (mean, _) = compare(&plain, &want);
    assert!(mean > 10.0, "the overlay changes the picture: mean {mean}");
    let other = shot("raw.png", "c=0&t=0&k=1&s=raw-attention");
    let (mean, _) = compare(&other, &want);
    assert!(
        mean > 2.0,
        "the strategy switch changes the map: mean {mean}"
    );

    // The page's own state, as the script left it: ready, the token shown,
    // tokens coloured by weight.
    let profile = tempfile::tempdir().unwrap();
    let dom = text(&headless(&browser, profile.path(), &["--dump-dom"], &url("k=2")).stdout);
    assert!(dom.contains("data-ready=\"1\""), "{dom}");
    assert!(dom.contains("data-shown=\"0/0/2/dexar\""), "{dom}");
    assert!(dom.contains("class=\"tok sel\""), "{dom}");
    assert!(dom.contains("background: rgba("), "{dom}");
}

#[test]
fn the_example_session_replays_every_turn_and_exports() {
    let example = dexar_tests::workspace().join("sessions/example.dexar");
    let size = std::fs::metadata(&example).unwrap().len();
    assert!(size < 2 * 1024 * 1024, "{size} bytes");
    let session = dexar_session::Session::open(&example).unwrap();
    assert!(session.warning.is_none());
    assert_eq!(session.header.model.label, "bundled:toy");
    let home = tempfile::tempdir().unwrap();
    for turn in 1..=session.turns.len() {
        let out = home.path().join(format!("turn{turn}"));
        let turn = turn.to_string();
        let o = dexar_at(home.path())
            .args(["replay", s(&example), "--turn", &turn, "--out", s(&out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(out.join("dexar/sentence.png").is_file());
    }
    let page = home.path().join("example.html");
    let o = dexar_at(home.path())
        .args(["export", s(&example), "--html", s(&page)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("4 turns"), "{}", text(&o.stdout));
}
