//! The TUI without a terminal: keys drive the state, frames are drawn into
//! a `TestBackend` and read back cell by cell.

use std::sync::atomic::AtomicBool;

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use dexar_core::LayerSelection;
use dexar_model::{LoadOptions, ModelSpec};
use dexar_render::term::{half_block_colours, CellPixels, Graphics, Terminal};
use dexar_render::Colormap;
use dexar_session::{AppState, LoadedImage, Selection, Settings};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};

use super::app::{App, Effect, Focus, Live};
use super::derived::Derived;
use super::draw::{draw, View};
use super::update::update;

fn state() -> AppState {
    let model = dexar_session::open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
    let image = LoadedImage::bundled_default(&model.ckpt).unwrap();
    let settings = Settings {
        max_tokens: 6,
        layers: LayerSelection::new(0),
        ..Settings::default()
    };
    let mut s = AppState::new(model, image, settings, Default::default());
    let ask = s.prepare_ask("describe the image", None).unwrap();
    let outcome = s.stream(&ask, &AtomicBool::new(false), &mut |_| {});
    let recorded = s.record(ask, outcome);
    assert!(recorded.tokens >= 3, "{recorded:?}");
    s
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl_c() -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
}

fn blocks() -> Derived {
    Derived::new(Terminal {
        graphics: Graphics::Truecolor,
        cell: Some(CellPixels::default()),
        tmux: false,
    })
}

/// Draws one frame of `cols x rows`; the screen comes back into `app`.
fn frame(app: &mut App, state: &AppState, derived: &mut Derived, cols: u16, rows: u16) -> Buffer {
    let mut term = ratatui::Terminal::new(TestBackend::new(cols, rows)).unwrap();
    let mut screen = None;
    term.draw(|f| screen = Some(draw(f, &View { app, state }, derived)))
        .unwrap();
    app.screen = screen.unwrap();
    term.backend().buffer().clone()
}

fn row_text(buf: &Buffer, y: u16) -> String {
    (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()
}

fn screen_text(buf: &Buffer) -> String {
    (0..buf.area.height)
        .map(|y| row_text(buf, y) + "\n")
        .collect()
}

/// Where `needle` starts on screen.
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    (0..buf.area.height).find_map(|y| {
        let row = row_text(buf, y);
        row.find(needle)
            .map(|i| (row[..i].chars().count() as u16, y))
    })
}

fn luminance([r, g, b]: [u8; 3]) -> f32 {
    0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b)
}

#[test]
fn keys_drive_the_state_without_a_terminal() {
    let s = state();
    let mut app = App::new(&s);
    let n = s.answer.as_ref().unwrap().steps.len();
    assert_eq!(app.token(n), Some(n - 1), "follows the newest token");
    update(&mut app, n, &key(KeyCode::Left));
    assert_eq!(app.selected, Some(n - 2));
    update(&mut app, n, &key(KeyCode::Char('h')));
    assert_eq!(app.token(n), Some(n - 3));
    update(&mut app, n, &key(KeyCode::Home));
    update(&mut app, n, &key(KeyCode::Left));
    assert_eq!(app.selected, Some(0));
    update(&mut app, n, &key(KeyCode::End));
    assert_eq!(app.selected, None);
    // Past the newest token: follow it again.
    update(&mut app, n, &key(KeyCode::Right));
    assert_eq!(app.selected, None);

    // ↑/↓ move the first layer within the model's three.
    assert_eq!(app.layer_range(), 0..3);
    update(&mut app, n, &key(KeyCode::Down));
    assert_eq!(app.layer_range(), 1..3);
    for _ in 0..5 {
        update(&mut app, n, &key(KeyCode::Down));
    }
    assert_eq!(app.layer_range(), 2..3);
    update(&mut app, n, &key(KeyCode::Up));
    assert_eq!(app.layer_range(), 1..3);

    // Tab cycles the strategies, c compares with the next, s the sentence map.
    assert_eq!(app.strategy, "dexar");
    update(&mut app, n, &key(KeyCode::Tab));
    assert_eq!(app.strategy, "dexar-unfiltered");
    update(&mut app, n, &key(KeyCode::Char('c')));
    assert_eq!(app.compare.as_deref(), Some("raw-attention"));
    update(&mut app, n, &key(KeyCode::BackTab));
    assert_eq!(app.compare.as_deref(), Some("grad-x-attn"));
    update(&mut app, n, &key(KeyCode::Char('c')));
    assert_eq!(app.compare, None);
    update(&mut app, n, &key(KeyCode::Char('s')));
    assert!(app.sentence);
    assert_eq!(update(&mut app, n, &key(KeyCode::Char('p'))), None);
    assert!(app.message.as_deref().unwrap().contains("sentence map"));
    update(&mut app, n, &key(KeyCode::Esc));
    assert_eq!(app.message, None);
    update(&mut app, n, &key(KeyCode::Char('s')));

    // H: the heads grid, arrows move, clamped to 2 slots x 4 heads.
    update(&mut app, n, &key(KeyCode::Char('H')));
    assert_eq!(app.focus, Focus::Heads);
    assert!(app.showing_head());
    for _ in 0..9 {
        update(&mut app, n, &key(KeyCode::Right));
        update(&mut app, n, &key(KeyCode::Down));
    }
    assert_eq!(app.head, (1, app.num_heads - 1));
    assert_eq!(
        update(&mut app, n, &key(KeyCode::Char('p'))),
        Some(Effect::Probe)
    );
    update(&mut app, n, &key(KeyCode::Esc));
    assert_eq!(app.focus, Focus::Answer);

    // Typing a question; Enter sends it, Esc leaves the input.
    assert_eq!(update(&mut app, n, &key(KeyCode::Enter)), None);
    assert_eq!(app.focus, Focus::Input);
    for c in "q how many?".chars() {
        update(&mut app, n, &key(KeyCode::Char(c)));
    }
    update(&mut app, n, &key(KeyCode::Backspace));
    update(&mut app, n, &Event::Paste("\x1b[2J ok".into()));
    assert_eq!(app.input, "q how many[2J ok");
    update(&mut app, n, &key(KeyCode::Esc));
    assert_eq!(app.focus, Focus::Answer);
    update(&mut app, n, &key(KeyCode::Char('/')));
    assert_eq!(
        update(&mut app, n, &key(KeyCode::Enter)),
        Some(Effect::Ask("q how many[2J ok".into()))
    );
    assert!(app.input.is_empty() && app.focus == Focus::Answer);

    // While an answer comes: Ctrl-C stops it, a second question waits.
    app.live = Some(Live {
        question: "x".into(),
        steps: Vec::new(),
        started: std::time::Instant::now(),
        stopping: false,
    });
    assert_eq!(update(&mut app, n, &ctrl_c()), Some(Effect::Stop));
    assert!(app.live.as_ref().unwrap().stopping);
    app.input = "again".into();
    assert_eq!(update(&mut app, n, &key(KeyCode::Enter)), None);
    assert!(app.message.as_deref().unwrap().contains("still coming"));
    assert_eq!(update(&mut app, n, &key(KeyCode::Char('p'))), None);
    app.live = None;
    update(&mut app, n, &key(KeyCode::Char('?')));
    assert!(app.help);
    // Any key closes the help, even q.
    assert_eq!(update(&mut app, n, &key(KeyCode::Char('q'))), None);
    assert!(!app.help);
    assert_eq!(
        update(&mut app, n, &key(KeyCode::Char('q'))),
        Some(Effect::Quit)
    );
    assert_eq!(update(&mut app, n, &ctrl_c()), Some(Effect::Quit));
}

#[test]
fn every_pane_is_drawn_where_the_layout_puts_it() {
    let s = state();
    let mut app = App::new(&s);
    let mut derived = blocks();
    let steps = &s.answer.as_ref().unwrap().steps;
    let t = steps.len() - 1;
    let buf = frame(&mut app, &s, &mut derived, 100, 32);
    let text = screen_text(&buf);
    assert!(text.contains(" conversation "), "{text}");
    assert!(text.contains("you: describe the image"), "{text}");
    let title = format!("dexar · token {t} ");
    assert!(
        text.contains(&title) && text.contains("layers 0-2"),
        "{text}"
    );
    assert!(text.contains(&format!("heads · token {t}")), "{text}");
    assert!(text.contains("tok/s") && text.contains("model bundled:toy"));
    assert!(text.contains("graphics blocks"), "{text}");
    assert!(
        text.contains("←/→ token") && text.contains("q quit"),
        "{text}"
    );

    // The newest token is highlighted where the conversation put it.
    let (_, x, y, _) = *app
        .screen
        .tokens
        .iter()
        .find(|(tok, ..)| *tok == t)
        .expect("the token is on screen");
    assert!(buf[(x, y)].modifier.contains(Modifier::REVERSED));

    // The image pane (right 55 %): a picture whose bright cells are where
    // the map's maximum is, and its colour bar from max down to min.
    let shown = s.shown("dexar", &Selection::Token(t)).unwrap();
    let pane_x = 45;
    let (mut x0, mut y0, mut x1, mut y1) = (u16::MAX, u16::MAX, 0, 0);
    for y in 0..buf.area.height {
        for x in pane_x..buf.area.width - 9 {
            let c = &buf[(x, y)];
            if c.symbol() != " " && half_block_colours(c.symbol(), c.fg, c.bg).is_some() {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    assert!(x1 > x0 + 10 && y1 > y0 + 5, "no picture in {text}");
    let g = shown.grid;
    let cell_of = |i: usize| {
        let (gy, gx) = ((i / g.width) as f32 + 0.5, (i % g.width) as f32 + 0.5);
        let x = x0 + ((gx / g.width as f32) * f32::from(x1 - x0 + 1)) as u16;
        let y = y0 + ((gy / g.height as f32) * f32::from(y1 - y0 + 1)) as u16;
        let c = &buf[(x, y)];
        let (up, down) = half_block_colours(c.symbol(), c.fg, c.bg).unwrap();
        (luminance(up) + luminance(down)) / 2.0
    };
    let argmax = (0..g.len())
        .max_by(|a, b| shown.map01[*a].total_cmp(&shown.map01[*b]))
        .unwrap();
    let argmin = (0..g.len())
        .min_by(|a, b| shown.map01[*a].total_cmp(&shown.map01[*b]))
        .unwrap();
    assert!(cell_of(argmax) > cell_of(argmin) + 20.0);
    let (bx, by) = find(&buf, &crate::repl::number(shown.raw_max)).expect("max label");
    let [r, g1, b] = Colormap::Inferno.rgb(1.0);
    assert_eq!(buf[(buf.area.width - 4, by + 1)].bg, Color::Rgb(r, g1, b));
    assert!(bx > x1);
    let [r, g1, b] = Colormap::Inferno.rgb(0.0);
    let bottom = (by + 2..buf.area.height)
        .rev()
        .find(|&y| buf[(buf.area.width - 4, y)].bg == Color::Rgb(r, g1, b));
    assert!(bottom.is_some(), "no bottom of the colour bar");

    // The heads grid: the head of largest w is the brightest cell.
    let scores = derived.heads(&s, &app, steps, t).unwrap().clone();
    let (hx, hy) = find(&buf, "L0").expect("heads rows");
    let best = (0..scores.weights.len())
        .max_by(|a, b| scores.weights[*a].total_cmp(&scores.weights[*b]))
        .unwrap();
    let (slot, head) = (best / scores.num_heads, best % scores.num_heads);
    let cell = &buf[(hx + 5 + 2 * head as u16, hy + slot as u16)];
    let [r, g1, b] = Colormap::Inferno.rgb(1.0);
    assert_eq!(cell.bg, Color::Rgb(r, g1, b));
}

#[test]
fn heads_compare_sentence_probe_and_help_draw() {
    let s = state();
    let mut app = App::new(&s);
    let mut derived = blocks();
    let n = s.answer.as_ref().unwrap().steps.len();
    update(&mut app, n, &key(KeyCode::Char('H')));
    update(&mut app, n, &key(KeyCode::Right));
    let text = screen_text(&frame(&mut app, &s, &mut derived, 110, 30));
    assert!(
        text.contains("head G_v · token") && text.contains("head 1 w="),
        "{text}"
    );
    update(&mut app, n, &key(KeyCode::Esc));
    update(&mut app, n, &key(KeyCode::Char('c')));
    let text = screen_text(&frame(&mut app, &s, &mut derived, 110, 30));
    assert!(text.contains(" dexar · token") && text.contains(" dexar-unfiltered · token"));
    update(&mut app, n, &key(KeyCode::Char('s')));
    let text = screen_text(&frame(&mut app, &s, &mut derived, 110, 30));
    assert!(text.contains("whole answer"), "{text}");
    update(&mut app, n, &key(KeyCode::Char('s')));
    app.probe = Some(s.probe(1, "dexar").map_err(|e| e.to_string()));
    let text = screen_text(&frame(&mut app, &s, &mut derived, 110, 30));
    assert!(
        text.contains("probe of token 1") && text.contains("50 % "),
        "{text}"
    );
    app.probe = None;
    app.help = true;
    let text = screen_text(&frame(&mut app, &s, &mut derived, 110, 30));
    assert!(text.contains("keys (any key closes)") && text.contains("compare two strategies"));
}

#[test]
fn too_small_says_so_and_recovers_when_it_grows() {
    let s = state();
    let mut app = App::new(&s);
    let mut derived = blocks();
    let text = screen_text(&frame(&mut app, &s, &mut derived, 40, 10));
    assert!(text.contains("terminal too small (40x10)"), "{text}");
    assert!(app.screen.tokens.is_empty());
    let text = screen_text(&frame(&mut app, &s, &mut derived, 80, 20));
    assert!(text.contains(" conversation "), "{text}");
}

#[test]
fn a_click_selects_the_token_under_it() {
    let s = state();
    let mut app = App::new(&s);
    let mut derived = blocks();
    let n = s.answer.as_ref().unwrap().steps.len();
    frame(&mut app, &s, &mut derived, 100, 30);
    let (tok, x, y, _) = app.screen.tokens[1];
    let click = Event::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    });
    update(&mut app, n, &click);
    assert_eq!(app.selected, Some(tok));
    let buf = frame(&mut app, &s, &mut derived, 100, 30);
    assert!(screen_text(&buf).contains(&format!("dexar · token {tok} ")));
}

#[test]
fn a_strategy_failing_on_one_token_says_so_and_the_rest_works() {
    let mut s = state();
    // A trace the strategy refuses, for token 1 only.
    s.answer.as_mut().unwrap().steps[1].grads.truncate(3);
    let mut app = App::new(&s);
    let mut derived = blocks();
    app.selected = Some(1);
    let text = screen_text(&frame(&mut app, &s, &mut derived, 100, 30));
    assert!(text.contains("no map for this selection"), "{text}");
    app.selected = Some(0);
    let text = screen_text(&frame(&mut app, &s, &mut derived, 100, 30));
    assert!(text.contains("dexar · token 0 "), "{text}");
    let _ = Rect::default();
}

/// A SmolVLM answer about an image split into 2x2 tiles and a global view.
fn split_state() -> AppState {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dexar-model/tests/fixtures");
    let spec = ModelSpec::Dir(fixtures.join("tiny-smolvlm"));
    let model = dexar_session::open_model(&spec, &LoadOptions::default()).unwrap();
    let image = LoadedImage::open(&model.ckpt, &fixtures.join("images/smol-square.png")).unwrap();
    let settings = Settings {
        max_tokens: 3,
        layers: LayerSelection::new(0),
        ..Settings::default()
    };
    let mut s = AppState::new(model, image, settings, Default::default());
    let ask = s.prepare_ask("What is in the image?", None).unwrap();
    let outcome = s.stream(&ask, &AtomicBool::new(false), &mut |_| {});
    s.record(ask, outcome);
    s
}

#[test]
fn g_cycles_the_region_views_of_a_split_image() {
    let s = split_state();
    let mut app = App::new(&s);
    let mut derived = blocks();
    let n = s.answer.as_ref().unwrap().steps.len();
    let text = screen_text(&frame(&mut app, &s, &mut derived, 120, 30));
    assert!(text.contains("g region"), "the key is on screen:\n{text}");
    assert!(text.contains("· tiles | global view"), "{text}");
    for (view, title) in [
        (dexar_core::RegionView::Tiles, "· tiles · layers"),
        (dexar_core::RegionView::Global, "· global view · layers"),
        (dexar_core::RegionView::All, "· tiles | global view"),
    ] {
        update(&mut app, n, &key(KeyCode::Char('g')));
        assert_eq!(app.region, view);
        let text = screen_text(&frame(&mut app, &s, &mut derived, 120, 30));
        assert!(text.contains(title), "{view:?}:\n{text}");
    }
}
