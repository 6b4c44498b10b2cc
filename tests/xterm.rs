//! Checked in a real terminal emulator, not only by escape sequences: xterm
//! as a VT340 (sixel) under Xvfb, keys typed with xdotool, screenshots taken
//! with ImageMagick's `import`, and the heatmap's pixels looked for where
//! the layout puts them. Each test skips, saying why, where those tools are
//! missing (`.ci/run` installs them).

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

const TOOLS: [&str; 4] = ["Xvfb", "xterm", "xdotool", "import"];
const WAIT: Duration = Duration::from_secs(90);

/// The tools missing from PATH, if any.
fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

macro_rules! skip_without_x {
    () => {
        if let Some(missing) = missing_tools() {
            eprintln!("skipped: {missing} not installed (Debian: xvfb xterm xdotool imagemagick)");
            return;
        }
    };
}

/// An X server of our own, stopped when dropped.
struct Display {
    name: String,
    server: Child,
}

impl Display {
    fn start(slot: u32) -> Display {
        let base = 100 + (std::process::id() % 200) * 4;
        for n in base + slot..base + slot + 40 {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                continue;
            }
            let name = format!(":{n}");
            let server = Command::new("Xvfb")
                .args([&name, "-screen", "0", "1280x900x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb starts");
            let socket = format!("/tmp/.X11-unix/X{n}");
            let start = Instant::now();
            while !Path::new(&socket).exists() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Display { name, server };
        }
        panic!("no free X display number");
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("DISPLAY", &self.name)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// An xterm running `command` (a shell line) on `display`.
struct Xterm<'a> {
    display: &'a Display,
    window: String,
    child: Child,
}

impl<'a> Xterm<'a> {
    fn start(display: &'a Display, cols: u16, rows: u16, command: &str, home: &Path) -> Self {
        let title = format!("dexar-test-{}", std::process::id());
        let child = Command::new("xterm")
            .args(["-ti", "vt340", "-title", &title, "-geometry"])
            .arg(format!("{cols}x{rows}+0+0"))
            .args([
                "-xrm",
                "XTerm*allowTitleOps: false",
                "-e",
                "sh",
                "-c",
                command,
            ])
            .env("DISPLAY", &display.name)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env_remove("DEXAR_GRAPHICS")
            .env_remove("TMUX")
            .env_remove("COLORTERM")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm starts");
        let window = display
            .run("xdotool", &["search", "--sync", "--name", &title])
            .lines()
            .next()
            .expect("the xterm window")
            .to_string();
        display.run("xdotool", &["windowfocus", "--sync", &window]);
        Xterm {
            display,
            window,
            child,
        }
    }

    fn type_line(&self, text: &str) {
        self.display
            .run("xdotool", &["type", "--delay", "15", "--", text]);
        self.key("Return");
    }

    fn key(&self, key: &str) {
        self.display.run("xdotool", &["key", key]);
    }

    fn screenshot(&self) -> RgbImage {
        let file = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
        let path = file.path().to_str().unwrap().to_string();
        // A busy X server now and then refuses one; try a few times.
        for _ in 0..5 {
            let status = Command::new("import")
                .args(["-window", &self.window, &path])
                .env("DISPLAY", &self.display.name)
                .stderr(Stdio::null())
                .status()
                .expect("import runs");
            if status.success() {
                if let Ok(img) = image::open(&path) {
                    return img.to_rgb8();
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("import could not take the xterm window (did dexar exit?)");
    }

    /// Waits until dexar has drawn text in the top rows (the REPL's banner,
    /// the TUI's frame): keys typed earlier would reach the terminal query.
    fn wait_until_drawn(&self) {
        self.wait_for("dexar to start", |s| {
            let top = s.height().min(40);
            (0..top)
                .flat_map(|y| (0..s.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| luminance(s.get_pixel(x, y)) < 160.0)
                .count()
                > 100
        });
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Screenshots until `ok` holds; the last one either way.
    fn wait_for(&self, what: &str, ok: impl Fn(&RgbImage) -> bool) -> RgbImage {
        let start = Instant::now();
        loop {
            let shot = self.screenshot();
            if ok(&shot) {
                return shot;
            }
            if start.elapsed() > WAIT {
                let keep = std::env::temp_dir()
                    .join(format!("dexar-xterm-{}.png", what.replace([' ', '/'], "-")));
                let _ = shot.save(&keep);
                panic!(
                    "timed out waiting for {what}; last screenshot: {}",
                    keep.display()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Xterm<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pixel of a picture, not of the white background or black text.
fn pictured(p: &Rgb<u8>) -> bool {
    let [r, g, b] = p.0;
    let (hi, lo) = (r.max(g).max(b), r.min(g).min(b));
    (40..235).contains(&hi) || hi - lo > 60
}

/// The share of pictured pixels in a rectangle of the screenshot.
fn share(shot: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    let (x1, y1) = (x1.min(shot.width()), y1.min(shot.height()));
    let mut n = 0u64;
    let mut hit = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            n += 1;
            hit += u64::from(pictured(shot.get_pixel(x, y)));
        }
    }
    if n == 0 {
        0.0
    } else {
        hit as f64 / n as f64
    }
}

fn luminance(p: &Rgb<u8>) -> f64 {
    let [r, g, b] = p.0.map(f64::from);
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// Pixel size of a cell, from the window (2-pixel borders) and its cells.
fn cell_size(shot: &RgbImage, cols: u32, rows: u32) -> (u32, u32) {
    ((shot.width() - 4) / cols, (shot.height() - 4) / rows)
}

fn dexar() -> String {
    dexar_tests::dexar_bin().to_str().unwrap().to_string()
}

fn tiny_llava() -> PathBuf {
    dexar_tests::fixtures().join("tiny-llava")
}

/// The per-token maps `dexar explain` writes for `prompt` (row-major).
fn explained_maps(prompt: &str, max_tokens: &str) -> (Vec<Vec<f64>>, (usize, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let out = dexar_tests::run(&[
        "explain",
        "--model",
        tiny_llava().to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        max_tokens,
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("explain.json")).unwrap()).unwrap();
    let grid = &json["model"]["grid"];
    let grid = (
        grid[0].as_u64().unwrap() as usize,
        grid[1].as_u64().unwrap() as usize,
    );
    let maps = json["strategies"]["dexar"]["per_token"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    (maps, grid)
}

#[test]
fn the_tui_draws_the_heatmap_in_its_pane_with_sixel() {
    skip_without_x!();
    let (maps, (gh, gw)) = explained_maps("What is in the image?", "8");
    let last = maps.last().expect("an answer").clone();
    let display = Display::start(0);
    let home = tempfile::tempdir().unwrap();
    let (cols, rows) = (110u32, 36u32);
    let command = format!(
        "{} tui --model {} --max-tokens 8",
        dexar(),
        tiny_llava().display()
    );
    let xterm = Xterm::start(&display, cols as u16, rows as u16, &command, home.path());
    xterm.wait_until_drawn();
    xterm.key("slash");
    xterm.type_line("What is in the image?");
    let shot = xterm.wait_for("the TUI heatmap", |s| {
        let (cw, ch) = cell_size(s, cols, rows);
        let x0 = 2 + 55 * cw;
        share(s, x0, 2 + 3 * ch, x0 + 30 * cw, 2 + 15 * ch) > 0.95
    });
    let (cw, ch) = cell_size(&shot, cols, rows);
    assert_eq!((cw, ch), (6, 13), "xterm's default font");
    let px = |col: u32| 2 + col * cw;
    let py = |row: u32| 2 + row * ch;
    // The layout: the image pane is the right 55 % (its border at column
    // 49), the picture fills its width but the 9 columns of the colour bar
    // (49 columns, so 23 rows for a square image in 6x13 cells) from row 1;
    // the bar's colours are at columns 106-107.
    let (x0, y0, x1, y1) = bounding_box(&shot, px(46), py(1), px(104), py(33));
    let near = |got: u32, want: u32, tolerance: u32| got.abs_diff(want) <= tolerance;
    assert!(
        near(x0, px(50), cw) && near(x1, px(100), cw),
        "picture columns {x0}-{x1}"
    );
    assert!(
        near(y0, py(1), 2) && near(y1, py(24), ch),
        "picture rows {y0}-{y1}"
    );
    let inside = share(&shot, x0, y0, x1, y1);
    assert!(inside > 0.97, "the picture has holes ({inside:.3})");
    let left = share(&shot, px(2), py(12), px(40), py(25));
    assert!(
        left < 0.02,
        "pixels of a picture in the conversation pane ({left:.3})"
    );
    let below = share(&shot, x0, y1 + ch, x1, py(32));
    assert!(below < 0.02, "the picture runs past its rows ({below:.3})");
    // The colour bar: bright at the top, dark at the bottom.
    let top = shot.get_pixel(px(106) + 3, py(2) + 3);
    let bottom = shot.get_pixel(px(106) + 3, py(30) + 3);
    assert!(
        luminance(top) > 200.0 && luminance(bottom) < 40.0,
        "{top:?} {bottom:?}"
    );
    let (pic_x, pic_y, pic_w, pic_h) = (x0, y0, x1 - x0, y1 - y0);
    // Where the model looked: the map's brightest patch is brighter on
    // screen than its darkest (the heatmap is blended over the image).
    let patch = |i: usize| {
        let (r, c) = (i / gw, i % gw);
        let x = pic_x + ((c as f64 + 0.5) / gw as f64 * f64::from(pic_w)) as u32;
        let y = pic_y + ((r as f64 + 0.5) / gh as f64 * f64::from(pic_h)) as u32;
        luminance(shot.get_pixel(x, y))
    };
    let argmax = (0..last.len())
        .max_by(|a, b| last[*a].total_cmp(&last[*b]))
        .unwrap();
    let argmin = (0..last.len())
        .min_by(|a, b| last[*a].total_cmp(&last[*b]))
        .unwrap();
    assert!(
        patch(argmax) > patch(argmin) + 30.0,
        "brightest patch {argmax} {:.0}, darkest {argmin} {:.0}",
        patch(argmax),
        patch(argmin)
    );
    xterm.key("q");
}

/// The picture in a region: the longest run of columns mostly pictured,
/// then the longest run of rows almost all pictured across them (border
/// lines and text are a pixel or a glyph wide, pictures are wide runs).
fn bounding_box(shot: &RgbImage, rx0: u32, ry0: u32, rx1: u32, ry1: u32) -> (u32, u32, u32, u32) {
    let (rx1, ry1) = (rx1.min(shot.width()), ry1.min(shot.height()));
    let cols: Vec<bool> = (rx0..rx1)
        .map(|x| share(shot, x, ry0, x + 1, ry1) > 0.5)
        .collect();
    let (c0, c1) = longest_run(&cols);
    let (x0, x1) = (rx0 + c0, rx0 + c1);
    let rows: Vec<bool> = (ry0..ry1)
        .map(|y| share(shot, x0, y, x1, y + 1) > 0.9)
        .collect();
    let (r0, r1) = longest_run(&rows);
    assert!(x1 > x0 && r1 > r0, "no picture in the region");
    (x0, ry0 + r0, x1, ry0 + r1)
}

/// [start, end) of the longest run of `true`.
fn longest_run(v: &[bool]) -> (u32, u32) {
    let (mut best, mut start) = ((0, 0), None);
    for (i, &b) in v.iter().chain([false].iter()).enumerate() {
        match (b, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s > best.1 - best.0 {
                    best = (s, i);
                }
                start = None;
            }
            _ => {}
        }
    }
    (best.0 as u32, best.1 as u32)
}

/// Rows of the screenshot crossing a picture: a run of 30 pictured pixels
/// (coloured text has no such runs).
fn picture_rows(shot: &RgbImage) -> Vec<u32> {
    (0..shot.height())
        .filter(|&y| {
            let mut run = 0;
            (0..shot.width()).any(|x| {
                run = if pictured(shot.get_pixel(x, y)) {
                    run + 1
                } else {
                    0
                };
                run >= 30
            })
        })
        .collect()
}

#[test]
fn the_repl_shows_and_compares_inline_a_third_of_the_screen_high() {
    skip_without_x!();
    let display = Display::start(1);
    let home = tempfile::tempdir().unwrap();
    let (cols, rows) = (100u32, 36u32);
    let command = format!("{} --model {}", dexar(), tiny_llava().display());
    let xterm = Xterm::start(&display, cols as u16, rows as u16, &command, home.path());
    xterm.wait_until_drawn();
    xterm.type_line("What is in the image?");
    std::thread::sleep(Duration::from_secs(2));
    xterm.type_line("/show 1");
    let shot = xterm.wait_for("the /show picture", |s| picture_rows(s).len() > 100);
    let (_, ch) = cell_size(&shot, cols, rows);
    let shown = picture_rows(&shot);
    let height = shown.last().unwrap() - shown.first().unwrap() + 1;
    // A third of 36 rows: 12 rows of 13 px, not the whole terminal.
    assert!(
        height <= 12 * ch + 2 && height >= 8 * ch,
        "{height} px high"
    );
    xterm.type_line("/compare dexar raw-attention 1");
    let shot = xterm.wait_for("the /compare pictures", |s| picture_rows(s).len() > 2 * 100);
    // Two pictures side by side: on the rows of the second one, pictured
    // pixels left and right of a gap.
    let lower: Vec<u32> = picture_rows(&shot)
        .into_iter()
        .filter(|&y| y > shown.last().unwrap() + 2 * ch)
        .collect();
    let y = lower[lower.len() / 2];
    let run: Vec<bool> = (0..shot.width())
        .map(|x| pictured(shot.get_pixel(x, y)))
        .collect();
    let starts = run.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(run[0]);
    assert!(
        starts >= 2,
        "one picture where /compare should show two (row {y})"
    );
    xterm.type_line("/quit");
}

#[test]
fn sixel_passes_through_tmux() {
    skip_without_x!();
    if !Command::new("sh")
        .args(["-c", "command -v tmux"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: tmux not installed");
        return;
    }
    let display = Display::start(2);
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("tmux.sock");
    // The tmux server outlives its xterm: stop it however the test ends.
    struct Server(PathBuf);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-S", self.0.to_str().unwrap(), "kill-server"])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _server = Server(socket.clone());
    let command = format!(
        "tmux -S {} -f /dev/null new-session '{} --model {} --graphics sixel --size 30x10'",
        socket.display(),
        dexar(),
        tiny_llava().display()
    );
    let xterm = Xterm::start(&display, 100, 36, &command, home.path());
    xterm.wait_until_drawn();
    xterm.type_line("What is in the image?");
    std::thread::sleep(Duration::from_secs(2));
    xterm.type_line("/show 1");
    xterm.wait_for("a sixel picture through tmux", |s| {
        picture_rows(s).len() > 60
    });
}
