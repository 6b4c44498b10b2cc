//! Drawing a frame from the state: the conversation, the image with the map
//! (or two, compared), the heads grid, the input, status and key lines, and
//! the help and probe boxes. Nothing here changes the state; what the mouse
//! needs to know comes back as a [`Screen`].

use dexar_render::term::{fit_with, CellSize};
use dexar_render::Colormap;
use dexar_session::{AppState, Shown};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Focus, Screen};
use super::conversation::{first_visible, lay_out, Item, Kind};
use super::derived::{Derived, MapKey, What};

/// The smallest terminal the layout fits.
pub const MIN_COLS: u16 = 60;
pub const MIN_ROWS: u16 = 16;

/// Columns of the colour bar and its labels.
const BAR_COLS: u16 = 9;

/// Everything a frame draws from.
pub struct View<'a> {
    pub app: &'a App,
    pub state: &'a AppState,
}

pub fn draw(frame: &mut Frame, view: &View, derived: &mut Derived) -> Screen {
    let area = frame.area();
    if area.width < MIN_COLS || area.height < MIN_ROWS {
        let text = format!(
            "terminal too small ({}x{}): the TUI needs {MIN_COLS}x{MIN_ROWS}; make the window bigger, or q quits",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return Screen::default();
    }
    let [main, input, status, keys] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
    let slots = view.app.layer_range().len() as u16;
    let heads_rows = (slots + 2).clamp(3, left.height / 2);
    let [conversation, heads] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(heads_rows)]).areas(left);

    let steps = view.app.steps(view.state);
    derived.sync(view.app.answer_id);
    let screen = draw_conversation(frame, view, derived, conversation);
    draw_heads(frame, view, derived, heads);
    draw_images(frame, view, derived, right);
    draw_input(frame, view.app, input);
    draw_status(frame, view, derived, steps.len(), status);
    draw_keys(frame, view.app, keys);
    if let Some(probe) = &view.app.probe {
        draw_probe(frame, probe, left);
    }
    if view.app.help {
        draw_help(frame, left);
    }
    screen
}

fn bordered(title: impl Into<Line<'static>>, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn draw_conversation(frame: &mut Frame, view: &View, derived: &mut Derived, area: Rect) -> Screen {
    let (app, state) = (view.app, view.state);
    let block = bordered(" conversation ", app.focus == Focus::Answer);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let steps = app.steps(state);
    // Earlier turns as text; the current question and its answer's tokens.
    let (earlier, question) = match &app.live {
        Some(live) => (&state.turns[..], Some(live.question.as_str())),
        None if state.answer.is_some() => match state.turns.split_last() {
            Some((last, earlier)) => (earlier, Some(last.user.as_str())),
            None => (&state.turns[..], None),
        },
        None => (&state.turns[..], None),
    };
    let mut labels = Vec::new();
    for turn in earlier {
        labels.push((Kind::Question, format!("you: {}\n", turn.user)));
        labels.push((Kind::Earlier, format!("{}\n\n", turn.assistant)));
    }
    if let Some(q) = question {
        labels.push((Kind::Question, format!("you: {q}\n")));
    }
    let mut items: Vec<Item> = labels
        .iter()
        .map(|(kind, text)| Item { kind: *kind, text })
        .collect();
    items.extend(steps.iter().enumerate().map(|(i, s)| Item {
        kind: Kind::Token(i),
        text: &s.token_text,
    }));
    if items.is_empty() {
        let hint = "ask a question about the image: press / (or i), type it, Enter";
        frame.render_widget(
            Paragraph::new(hint)
                .style(Style::default().fg(Color::DarkGray))
                .wrap(Wrap { trim: true }),
            inner,
        );
        return Screen::default();
    }
    let lines = lay_out(&items, inner.width);
    let weights = derived.weights(state, app, steps).to_vec();
    let max_w = weights.iter().copied().fold(0.0f32, f32::max);
    let current = if app.sentence {
        None
    } else {
        app.token(steps.len())
    };
    let focus_line = current.and_then(|t| {
        lines
            .iter()
            .position(|l| l.iter().any(|p| p.kind == Kind::Token(t)))
    });
    let first = first_visible(lines.len(), usize::from(inner.height), focus_line);
    let mut screen = Screen::default();
    let mut rows = Vec::new();
    for (dy, line) in lines
        .iter()
        .skip(first)
        .take(usize::from(inner.height))
        .enumerate()
    {
        let spans: Vec<Span> = line
            .iter()
            .map(|p| {
                let style = match p.kind {
                    Kind::Question => Style::default().fg(Color::Cyan),
                    Kind::Earlier => Style::default().fg(Color::Gray),
                    Kind::Token(t) => {
                        screen
                            .tokens
                            .push((t, inner.x + p.x, inner.y + dy as u16, p.width()));
                        let rel = if max_w > 0.0 {
                            weights.get(t).copied().unwrap_or(0.0) / max_w
                        } else {
                            0.0
                        };
                        let mut style = match crate::repl::token_rgb(rel) {
                            Some([r, g, b]) => Style::default().fg(Color::Rgb(r, g, b)),
                            None => Style::default().fg(Color::DarkGray),
                        };
                        if current == Some(t) || app.sentence {
                            style = style.add_modifier(Modifier::REVERSED);
                        }
                        style
                    }
                };
                Span::styled(p.text.clone(), style)
            })
            .collect();
        rows.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(rows), inner);
    screen
}

fn map_key(app: &App, what: What, strategy: &str, steps: usize) -> MapKey {
    MapKey {
        what,
        strategy: strategy.to_string(),
        layers: app.layers,
        region: app.region,
        steps,
    }
}

/// The map(s) the image pane shows: the main one, and the compared one.
fn main_what(app: &App, steps: usize) -> Option<What> {
    if app.sentence {
        return (steps > 0).then_some(What::Sentence);
    }
    let t = app.token(steps)?;
    Some(if app.showing_head() {
        What::Head(t, app.head.0, app.head.1)
    } else {
        What::Token(t)
    })
}

fn draw_images(frame: &mut Frame, view: &View, derived: &mut Derived, area: Rect) {
    let app = view.app;
    let steps = app.steps(view.state);
    let Some(what) = main_what(app, steps.len()) else {
        let block = bordered(" image ", false);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = format!(
            "{} · the map of the selected token shows here",
            view.state.image.label
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    };
    let main = map_key(app, what.clone(), &app.strategy, steps.len());
    match (&app.compare, &what) {
        (Some(other), What::Token(_) | What::Sentence) => {
            let [a, b] =
                Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
            let other = map_key(app, what.clone(), other, steps.len());
            draw_map(frame, view, derived, &main, a);
            draw_map(frame, view, derived, &other, b);
        }
        _ => draw_map(frame, view, derived, &main, area),
    }
}

/// One map over the image: a title naming it, the picture, a colour bar.
fn draw_map(frame: &mut Frame, view: &View, derived: &mut Derived, key: &MapKey, area: Rect) {
    let steps = view.app.steps(view.state);
    let range = view.app.layer_range();
    let layers = format!("layers {}-{}", range.start, range.end.saturating_sub(1));
    let shown = derived.map(view.state, steps, key);
    let title = match &shown {
        Ok(s) => format!(" {} · {} · {layers} ", s.strategy, s.title),
        Err(_) => format!(" {} · {layers} ", key.strategy),
    };
    let block = bordered(title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let shown = match shown {
        Ok(s) => s,
        Err(message) => {
            let text = format!("no map for this selection: {message}");
            frame.render_widget(
                Paragraph::new(text)
                    .style(Style::default().fg(Color::Red))
                    .wrap(Wrap { trim: true }),
                inner,
            );
            return;
        }
    };
    if inner.width <= BAR_COLS + 2 || inner.height < 3 {
        return;
    }
    let [picture_area, bar_area] =
        Layout::horizontal([Constraint::Min(2), Constraint::Length(BAR_COLS)]).areas(inner);
    let picture_area = Rect {
        height: picture_area
            .height
            .saturating_sub(u16::from(shown.degenerate)),
        ..picture_area
    };
    let img = &view.state.image.view;
    let cells = fit_with(
        img.width(),
        img.height(),
        CellSize::new(picture_area.width, picture_area.height),
        derived.cell(),
    );
    if let Some(picture) = derived.picture(img, key, &shown, cells) {
        let x = picture_area.x + (picture_area.width - cells.cols) / 2;
        picture.render(
            Rect::new(x, picture_area.y, cells.cols, cells.rows),
            frame.buffer_mut(),
        );
    }
    draw_colour_bar(frame, &shown, bar_area);
    if shown.degenerate {
        let note = Rect::new(inner.x, inner.bottom() - 1, inner.width, 1);
        frame.render_widget(
            Paragraph::new("no visual evidence: the map is constant")
                .style(Style::default().fg(Color::DarkGray)),
            note,
        );
    }
}

/// A vertical inferno bar, max at the top and min at the bottom, labelled
/// with the map's range before normalisation.
fn draw_colour_bar(frame: &mut Frame, shown: &Shown, area: Rect) {
    if area.height < 3 {
        return;
    }
    let buf = frame.buffer_mut();
    let label = |v: f32| {
        format!(
            "{:>width$}",
            crate::repl::number(v),
            width = usize::from(BAR_COLS - 1)
        )
    };
    buf.set_stringn(
        area.x + 1,
        area.y,
        label(shown.raw_max),
        usize::from(BAR_COLS - 1),
        Style::default(),
    );
    let bottom = area.bottom() - 1;
    buf.set_stringn(
        area.x + 1,
        bottom,
        label(shown.raw_min),
        usize::from(BAR_COLS - 1),
        Style::default(),
    );
    let bar_rows = area.height - 2;
    for dy in 0..bar_rows {
        let t = 1.0 - f32::from(dy) / f32::from(bar_rows.saturating_sub(1).max(1));
        let [r, g, b] = Colormap::Inferno.rgb(t);
        for dx in [area.right() - 3, area.right() - 2] {
            if let Some(cell) = buf.cell_mut((dx, area.y + 1 + dy)) {
                cell.set_char(' ').set_bg(Color::Rgb(r, g, b));
            }
        }
    }
}

fn draw_heads(frame: &mut Frame, view: &View, derived: &mut Derived, area: Rect) {
    let (app, state) = (view.app, view.state);
    let steps = app.steps(state);
    let focused = app.focus == Focus::Heads;
    let Some(t) = app.token(steps.len()).filter(|_| !app.sentence) else {
        let block = bordered(" heads ", focused);
        frame.render_widget(block, area);
        return;
    };
    let title = format!(" heads · token {t} · w per layer × head (H) ");
    let block = bordered(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(scores) = derived.heads(state, app, steps, t).cloned() else {
        return;
    };
    let max_w = scores.weights.iter().copied().fold(0.0f32, f32::max);
    let label_cols = 5u16;
    let heads = scores.num_heads as u16;
    let cell_w = if heads * 2 <= inner.width.saturating_sub(label_cols) {
        2
    } else {
        1
    };
    let buf = frame.buffer_mut();
    for (slot, layer) in scores.layers.iter().enumerate() {
        let y = inner.y + slot as u16;
        if y >= inner.bottom() {
            break;
        }
        buf.set_stringn(
            inner.x,
            y,
            format!("L{layer:<3}"),
            usize::from(label_cols),
            Style::default(),
        );
        for head in 0..scores.num_heads {
            let x = inner.x + label_cols + head as u16 * cell_w;
            if x + cell_w > inner.right() {
                break;
            }
            let w = scores.weights[slot * scores.num_heads + head];
            let rel = if max_w > 0.0 { w / max_w } else { 0.0 };
            let [r, g, b] = Colormap::Inferno.rgb(rel);
            let cursor = focused && app.head == (slot, head);
            for dx in 0..cell_w {
                if let Some(cell) = buf.cell_mut((x + dx, y)) {
                    cell.set_bg(Color::Rgb(r, g, b));
                    if cursor {
                        cell.set_char(if dx == 0 { '[' } else { ']' })
                            .set_fg(Color::White)
                            .set_style(Style::default().add_modifier(Modifier::BOLD));
                    } else {
                        cell.set_char(' ');
                    }
                }
            }
        }
    }
}

fn draw_input(frame: &mut Frame, app: &App, area: Rect) {
    let line = if app.focus == Focus::Input {
        frame.set_cursor_position((
            area.x + 5 + super::conversation::text_width(&app.input).min(area.width - 6),
            area.y,
        ));
        Line::from(vec![
            Span::styled("ask> ", Style::default().fg(Color::Yellow)),
            Span::raw(app.input.clone()),
        ])
    } else if app.input.is_empty() {
        Line::styled(
            "ask> (/ or i to type a question about the image)",
            Style::default().fg(Color::DarkGray),
        )
    } else {
        Line::styled(
            format!("ask> {}", app.input),
            Style::default().fg(Color::DarkGray),
        )
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_status(frame: &mut Frame, view: &View, derived: &Derived, tokens: usize, area: Rect) {
    let app = view.app;
    if let Some(message) = &app.message {
        frame.render_widget(
            Paragraph::new(message.as_str()).style(Style::default().fg(Color::Red)),
            area,
        );
        return;
    }
    let (elapsed, how) = match (&app.live, &app.finished) {
        (Some(live), _) => (
            live.started.elapsed(),
            if live.stopping {
                "stopping…"
            } else {
                "answering…"
            }
            .to_string(),
        ),
        (None, Some(f)) => (
            f.elapsed,
            f.stop.map_or("failed".into(), |s| stop_text(s).into()),
        ),
        (None, None) => (std::time::Duration::ZERO, "ready".into()),
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        tokens as f64 / secs
    } else {
        0.0
    };
    let text = format!(
        "{tokens} tokens · {rate:.1} tok/s · {how} · graphics {} · model {}",
        derived.terminal.graphics, view.state.identity.label
    );
    frame.render_widget(Paragraph::new(text), area);
}

fn stop_text(stop: dexar_model::StopReason) -> &'static str {
    use dexar_model::StopReason::*;
    match stop {
        Eos => "end of answer",
        MaxTokens => "reached the token limit",
        TargetEnd => "target explained",
        ContextFull => "context full",
        Cancelled => "stopped by Ctrl-C, partial answer kept",
    }
}

fn draw_keys(frame: &mut Frame, app: &App, area: Rect) {
    let keys = match app.focus {
        Focus::Input => "Enter send · Esc leave the input · Ctrl-C quit",
        Focus::Heads => "q quit · ? help · ←/→ head · ↑/↓ layer · p probe · H/Esc back",
        Focus::Answer => {
            "q quit · ? help · ←/→ token · ↑/↓ layers · Tab strategy · s sentence · c compare · g region · H heads · p probe · / ask"
        }
    };
    frame.render_widget(
        Paragraph::new(keys).style(Style::default().fg(Color::DarkGray)),
        area,
    );
}

/// Every key, in a box over the conversation.
pub const HELP: &[(&str, &str)] = &[
    (
        "←/→ h/l",
        "previous / next token (past the last: follow the newest)",
    ),
    ("Home/End", "first token / follow the newest"),
    ("↑/↓ k/j", "first layer of the maps: earlier / later"),
    ("Tab", "next strategy (built-ins, then loaded plugins)"),
    ("Shift-Tab", "next strategy on the right, when comparing"),
    (
        "s",
        "the sentence map (the whole answer), or back to one token",
    ),
    ("c", "compare two strategies side by side"),
    (
        "g",
        "an image split into tiles: both maps, the tiles', the global view's",
    ),
    (
        "H",
        "heads: w per layer × head; ←/→ ↑/↓ show one head's G_v",
    ),
    (
        "p",
        "probe: remove the map's top 10/20/50 %, re-score the answer",
    ),
    (
        "/ or i",
        "type a question; Enter sends it, Esc leaves the input",
    ),
    (
        "mouse",
        "click a token to select it; the wheel steps tokens",
    ),
    (
        "Ctrl-C",
        "stop the answer (the partial answer stays); else quit",
    ),
    ("Esc", "close the probe or a message"),
    ("q", "quit (back to the REPL after /view)"),
];

fn popup(area: Rect, height: u16) -> Rect {
    let height = height.min(area.height);
    Rect::new(area.x, area.bottom() - height, area.width, height)
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let rows: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<10}"), Style::default().fg(Color::Yellow)),
                Span::raw(*what),
            ])
        })
        .collect();
    // The whole column: entries wrap on narrow screens.
    let rect = popup(area, area.height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(rows)
            .wrap(Wrap { trim: false })
            .block(bordered(" keys (any key closes) ", true)),
        rect,
    );
}

fn draw_probe(frame: &mut Frame, probe: &Result<dexar_session::Probe, String>, area: Rect) {
    let lines: Vec<Line> = match probe {
        Ok(p) => crate::probe_report::probe_lines(p)
            .into_iter()
            .map(Line::from)
            .collect(),
        Err(e) => vec![Line::styled(
            format!("probe failed: {e}"),
            Style::default().fg(Color::Red),
        )],
    };
    // The whole column: the first and last lines wrap on narrow screens.
    let rect = popup(area, area.height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(bordered(" probe (Esc closes) ", true)),
        rect,
    );
}
