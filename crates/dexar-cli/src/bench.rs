//! `dexar bench`: the cost of explaining every token, incremental (KV cache +
//! local backward) against the naive reference (full recompute + autograd per
//! layer, what the reference wrapper does), measured in one run on one model.

use clap::Args;
use dexar_model::{generate_traced, naive_step, GenerationSettings, Mode, SyntheticSpec};
use dexar_session::LoadedImage;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::args::{LayerArgs, ModelArgs};
use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image; default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// Prompt (wrapped in the model's chat template).
    #[arg(long, value_name = "TEXT", default_value = "describe the image")]
    pub prompt: String,
    /// Tokens to explain.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub tokens: usize,
    #[command(flatten)]
    pub layers: LayerArgs,
    /// Repetitions; the fastest is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// Instead of --model: a randomly initialised model with a LAYERSxHIDDEN
    /// decoder (e.g. 8x512), LLaVA-1.5-shaped (a 24x24 patch grid, 576 image
    /// tokens) or, as qwen2-vl:8x512, Qwen2-VL-shaped (images resized to about
    /// 672x672 pixels, about 576 merged tokens, M-RoPE), to see how the two
    /// paths scale at realistic sequence lengths.
    #[arg(
        long,
        value_name = "[qwen2-vl:]LAYERSxHIDDEN",
        conflicts_with = "model"
    )]
    pub synthetic: Option<String>,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.tokens == 0 || args.repeat == 0 {
        return Err(CliError::usage("--tokens and --repeat must be at least 1"));
    }
    let opts = args.model.load_options()?;
    let ckpt = match &args.synthetic {
        Some(spec) => {
            let spec: SyntheticSpec = spec
                .parse()
                .map_err(|e| CliError::usage(format!("--synthetic: {e}")))?;
            let tokenizer = dexar_toy::load_bundled(&opts)?.tokenizer;
            dexar_model::synthetic_checkpoint(spec, tokenizer, &opts)?
        }
        None => dexar_session::open_model(&args.model.model, &opts)?.ckpt,
    };
    let image = match &args.image {
        Some(p) => LoadedImage::open(&ckpt, p)?,
        None => LoadedImage::bundled_default(&ckpt)?,
    };
    let features = image.features()?;
    let prompt = ckpt.prepare_chat(&[], &args.prompt, features)?;
    let layers = args.layers.layers(ckpt.text_config().num_hidden_layers);

    // The answer to explain: greedy, then padded with a fixed token so that
    // every run explains exactly --tokens tokens (teacher forcing).
    let settings = GenerationSettings {
        max_tokens: args.tokens,
        layers: layers.clone(),
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let mut answer = generate_traced(
        &ckpt,
        &prompt,
        features,
        &settings,
        &Mode::Generate,
        &cancel,
        &mut |_| true,
    )?
    .tokens;
    let filler = ckpt
        .tokenizer
        .encode(" the", false)?
        .last()
        .copied()
        .unwrap_or(0);
    answer.resize(args.tokens, filler);
    let max = ckpt.text_config().context_len();
    if prompt.input_ids.len() + answer.len() > max {
        return Err(CliError::usage(format!(
            "--tokens: the prompt plus {} tokens exceed the context of {max}",
            answer.len()
        )));
    }

    let mut best_incremental = f64::INFINITY;
    let mut best_naive = f64::INFINITY;
    for _ in 0..args.repeat {
        let t0 = Instant::now();
        let mode = Mode::TeacherForced(answer.clone());
        generate_traced(
            &ckpt,
            &prompt,
            features,
            &settings,
            &mode,
            &cancel,
            &mut |_| true,
        )?;
        best_incremental = best_incremental.min(t0.elapsed().as_secs_f64());

        let t0 = Instant::now();
        let mut ids = prompt.input_ids.clone();
        for &token in &answer {
            naive_step(
                &ckpt.model,
                &ids,
                prompt.input_ids.len(),
                &prompt.image_spans,
                features,
                layers.clone(),
                Some(token),
            )?;
            ids.push(token);
        }
        best_naive = best_naive.min(t0.elapsed().as_secs_f64());
    }
    let n = answer.len() as f64;
    let ratio = best_naive / best_incremental;
    // The file first: a closed stdout must not lose it.
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "schema": "dexar.bench/1",
            "model": ckpt.dir.display().to_string(),
            "prompt_tokens": prompt.input_ids.len(),
            "explained_tokens": answer.len(),
            "layers": layers.clone().collect::<Vec<_>>(),
            "incremental_ms_per_token": best_incremental / n * 1e3,
            "naive_ms_per_token": best_naive / n * 1e3,
            "speedup": ratio,
        });
        dexar_core::write_atomic(path, doc.to_string().as_bytes()).map_err(|e| {
            CliError::usage(format!("--json {}: cannot write ({e})", path.display()))
        })?;
    }
    outln!(
        "model {} ({} layers, {} heads, {} image tokens), prompt {} tokens, {} explained tokens, {}",
        ckpt.dir.display(),
        ckpt.text_config().num_hidden_layers,
        ckpt.text_config().num_attention_heads,
        features.num_tokens(),
        prompt.input_ids.len(),
        answer.len(),
        dexar_core::layers::describe(&layers)
    )?;
    outln!(
        "incremental (KV cache + local backward): {:>9.2} ms/token",
        best_incremental / n * 1e3
    )?;
    outln!(
        "naive (full recompute + autograd):        {:>9.2} ms/token",
        best_naive / n * 1e3
    )?;
    outln!(
        "speed-up: {ratio:.1}x (best of {} runs, same process)",
        args.repeat
    )?;
    Ok(())
}
