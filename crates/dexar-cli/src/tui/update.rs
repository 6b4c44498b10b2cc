//! Keys and mouse clicks to state changes: pure, so tests drive the TUI
//! without a terminal. What only the event loop can do comes back as an
//! [`Effect`].

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use dexar_core::LayerSelection;

use super::app::{App, Effect, Focus};

/// Applies one terminal event; `steps` is how many answer tokens there are.
pub fn update(app: &mut App, steps: usize, event: &Event) -> Option<Effect> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_event(app, steps, key),
        Event::Mouse(mouse) => {
            mouse_event(app, steps, mouse);
            None
        }
        Event::Paste(text) if app.focus == Focus::Input => {
            app.input.extend(text.chars().filter(|c| !c.is_control()));
            None
        }
        _ => None,
    }
}

fn key_event(app: &mut App, steps: usize, key: &KeyEvent) -> Option<Effect> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return match &mut app.live {
            Some(live) => {
                live.stopping = true;
                Some(Effect::Stop)
            }
            None => Some(Effect::Quit),
        };
    }
    if app.help {
        app.help = false;
        return None;
    }
    match app.focus {
        Focus::Input => input_key(app, key),
        Focus::Heads => heads_key(app, key),
        Focus::Answer => answer_key(app, steps, key),
    }
}

fn input_key(app: &mut App, key: &KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Esc => app.focus = Focus::Answer,
        KeyCode::Enter => return send(app),
        KeyCode::Backspace => {
            app.input.pop();
        }
        KeyCode::Char(c) if !c.is_control() => app.input.push(c),
        _ => {}
    }
    None
}

/// The typed question, unless an answer is still coming.
fn send(app: &mut App) -> Option<Effect> {
    let question = app.input.trim().to_string();
    if question.is_empty() {
        app.message = Some("type a question about the image first".into());
        return None;
    }
    if app.live.is_some() {
        app.message = Some("an answer is still coming: wait for it, or Ctrl-C stops it".into());
        return None;
    }
    app.input.clear();
    app.focus = Focus::Answer;
    app.selected = None;
    app.probe = None;
    app.message = None;
    Some(Effect::Ask(question))
}

fn heads_key(app: &mut App, key: &KeyEvent) -> Option<Effect> {
    let slots = app.layer_range().len().max(1);
    let heads = app.num_heads.max(1);
    let (slot, head) = &mut app.head;
    match key.code {
        KeyCode::Left | KeyCode::Char('h') => *head = head.saturating_sub(1),
        KeyCode::Right | KeyCode::Char('l') => *head = (*head + 1).min(heads - 1),
        KeyCode::Up | KeyCode::Char('k') => *slot = slot.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => *slot = (*slot + 1).min(slots - 1),
        KeyCode::Esc | KeyCode::Char('H') | KeyCode::Tab => app.focus = Focus::Answer,
        KeyCode::Char('p') => return probe(app),
        KeyCode::Char('?') => app.help = true,
        KeyCode::Char('q') => return Some(Effect::Quit),
        _ => {}
    }
    None
}

fn answer_key(app: &mut App, steps: usize, key: &KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Left | KeyCode::Char('h') => step_token(app, steps, -1),
        KeyCode::Right | KeyCode::Char('l') => step_token(app, steps, 1),
        KeyCode::Home => app.selected = (steps > 0).then_some(0),
        KeyCode::End => app.selected = None,
        KeyCode::Up | KeyCode::Char('k') => move_layers(app, -1),
        KeyCode::Down | KeyCode::Char('j') => move_layers(app, 1),
        KeyCode::Tab => app.strategy = app.next_strategy(&app.strategy),
        KeyCode::BackTab => {
            if let Some(other) = &app.compare {
                app.compare = Some(app.next_strategy(other));
            }
        }
        KeyCode::Char('s') => app.sentence = !app.sentence,
        KeyCode::Char('g') => app.region = app.region.next(),
        KeyCode::Char('c') => {
            app.compare = match app.compare {
                Some(_) => None,
                None => Some(app.next_strategy(&app.strategy)),
            }
        }
        KeyCode::Char('H') => {
            if app.sentence {
                app.message = Some("heads belong to one token: leave the sentence map (s)".into());
            } else {
                app.focus = Focus::Heads;
                app.compare = None;
                let slots = app.layer_range().len().max(1);
                app.head.0 = app.head.0.min(slots - 1);
            }
        }
        KeyCode::Char('p') => return probe(app),
        KeyCode::Char('/') | KeyCode::Char('i') => app.focus = Focus::Input,
        KeyCode::Enter if !app.input.trim().is_empty() => return send(app),
        KeyCode::Enter => app.focus = Focus::Input,
        KeyCode::Char('?') => app.help = true,
        KeyCode::Char('q') => return Some(Effect::Quit),
        KeyCode::Esc => {
            app.probe = None;
            app.message = None;
        }
        _ => {}
    }
    None
}

fn probe(app: &mut App) -> Option<Effect> {
    if app.live.is_some() {
        app.message = Some("probe once the answer is complete".into());
        return None;
    }
    if app.sentence {
        app.message = Some("a probe is about one token: leave the sentence map (s)".into());
        return None;
    }
    Some(Effect::Probe)
}

/// Moves the selection by `delta` tokens; past the newest token it follows
/// the newest again.
fn step_token(app: &mut App, steps: usize, delta: i64) {
    let Some(current) = app.token(steps) else {
        return;
    };
    let next = current as i64 + delta;
    app.sentence = false;
    app.selected = if next >= steps as i64 {
        None
    } else {
        Some(next.max(0) as usize)
    };
}

/// Moves the first layer of the maps by `delta`, keeping at least one layer.
fn move_layers(app: &mut App, delta: i64) {
    let start = app.layer_range().start as i64;
    let last = app.num_layers.saturating_sub(1) as i64;
    let start = (start + delta).clamp(0, last);
    app.layers = LayerSelection::new(start);
    let slots = app.layer_range().len().max(1);
    app.head.0 = app.head.0.min(slots - 1);
}

fn mouse_event(app: &mut App, steps: usize, mouse: &MouseEvent) {
    match mouse.kind {
        MouseEventKind::Down(MouseButton::Left) => {
            if let Some(token) = app.screen.token_at(mouse.column, mouse.row) {
                app.selected = Some(token);
                app.sentence = false;
                if app.focus == Focus::Input {
                    app.focus = Focus::Answer;
                }
            }
        }
        MouseEventKind::ScrollUp => step_token(app, steps, -1),
        MouseEventKind::ScrollDown => step_token(app, steps, 1),
        _ => {}
    }
}
