//! Generation off the UI thread: a worker runs `generate_traced` and sends
//! each step over a channel as soon as its token is known; the caller's
//! thread sees it at once. A shared cancel flag (a Ctrl-C handler sets it)
//! stops the worker after the step in flight; what was generated stays usable.

use dexar_core::StepTrace;
use dexar_model::{
    generate_traced, Checkpoint, Generation, GenerationSettings, ImageFeatures, Mode,
    PreparedPrompt,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Test hook: sleep this many milliseconds after each token, so tests can
/// watch tokens stream and interrupt an answer half-way on any machine.
pub const STEP_DELAY_ENV: &str = "DEXAR_DEBUG_STEP_DELAY_MS";

enum Event {
    Step(Box<StepTrace>),
    Done(Result<Generation, String>),
}

/// What one generation produced: the steps that streamed (also when it was
/// cancelled or failed half-way) and how it ended.
pub struct Outcome {
    pub steps: Vec<StepTrace>,
    /// How it ended, or why it failed (one line).
    pub result: Result<Generation, String>,
    pub elapsed: Duration,
}

/// Runs one traced generation on a worker thread, calling `on_step` on this
/// thread for every step as it arrives. Returns when the worker is done.
pub fn generate(
    ckpt: &Checkpoint,
    prompt: &PreparedPrompt,
    features: &ImageFeatures,
    settings: &GenerationSettings,
    mode: &Mode,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&StepTrace),
) -> Outcome {
    let delay = std::env::var(STEP_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Event>();
    let mut steps = Vec::new();
    let mut result = Err("generation ended without a result".to_string());
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let step_tx = tx.clone();
            let generation = generate_traced(
                ckpt,
                prompt,
                features,
                settings,
                mode,
                cancel,
                &mut |step| {
                    if step_tx.send(Event::Step(Box::new(step.trace))).is_err() {
                        return false;
                    }
                    if let Some(d) = delay {
                        sleep_unless_cancelled(d, cancel);
                    }
                    !cancel.load(Ordering::Relaxed)
                },
            );
            let _ = tx.send(Event::Done(
                generation.map_err(|e| dexar_core::one_line(&e.to_string())),
            ));
        });
        // The channel closes when the worker ends, even if it panicked.
        for event in rx {
            match event {
                Event::Step(trace) => {
                    on_step(&trace);
                    steps.push(*trace);
                }
                Event::Done(r) => result = r,
            }
        }
        if let Err(panic) = worker.join() {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            result = Err(format!("generation failed unexpectedly ({what})"));
        }
    });
    let elapsed = start.elapsed();
    tracing::debug!(
        tokens = steps.len(),
        ms = elapsed.as_millis() as u64,
        "generation finished"
    );
    Outcome {
        steps,
        result,
        elapsed,
    }
}

fn sleep_unless_cancelled(total: Duration, cancel: &AtomicBool) {
    let end = Instant::now() + total;
    while !cancel.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_model::{LoadOptions, StopReason};

    fn setup() -> (Checkpoint, PreparedPrompt, ImageFeatures) {
        let ckpt = dexar_toy::load_bundled(&LoadOptions::default()).unwrap();
        let (_, img) = dexar_toy::default_image();
        let features = ckpt.encode_image(&img).unwrap();
        let prompt = ckpt
            .prepare_chat(&[], "What is in the image?", &features)
            .unwrap();
        (ckpt, prompt, features)
    }

    #[test]
    fn streams_every_step_then_finishes() {
        let (ckpt, prompt, features) = setup();
        let settings = GenerationSettings {
            max_tokens: 3,
            layers: 0..ckpt.text_config().num_hidden_layers,
            ..GenerationSettings::default()
        };
        let mut seen = Vec::new();
        let out = generate(
            &ckpt,
            &prompt,
            &features,
            &settings,
            &Mode::Generate,
            &AtomicBool::new(false),
            &mut |s| seen.push(s.step),
        );
        let g = out.result.unwrap();
        assert_eq!(seen, (0..out.steps.len()).collect::<Vec<_>>());
        assert_eq!(g.tokens.len(), out.steps.len());
    }

    #[test]
    fn a_set_cancel_flag_stops_at_once() {
        let (ckpt, prompt, features) = setup();
        let settings = GenerationSettings {
            max_tokens: 50,
            layers: 0..1,
            ..GenerationSettings::default()
        };
        let out = generate(
            &ckpt,
            &prompt,
            &features,
            &settings,
            &Mode::Generate,
            &AtomicBool::new(true),
            &mut |_| {},
        );
        assert_eq!(out.result.unwrap().stop, StopReason::Cancelled);
        assert!(out.steps.is_empty());
    }
}
