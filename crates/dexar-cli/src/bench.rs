//! `dexar bench`: the cost of explaining every token, incremental (KV cache +
//! local backward) against the naive reference (full recompute + autograd per
//! layer, what the reference wrapper does), measured in one run on one model.

use clap::Args;
use dexar_model::{generate_traced, naive_step, GenerationSettings, LoadOptions, Mode};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Checkpoint directory; default: the bundled model.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Image; default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// Prompt (wrapped in the default chat template).
    #[arg(long, value_name = "TEXT", default_value = "describe the image")]
    pub prompt: String,
    /// Tokens to explain.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub tokens: usize,
    /// First decoder layer used (as in explain).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub layer_index: i64,
    /// Repetitions; the fastest is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// Instead of --model: a randomly initialised LLaVA-1.5-shaped model of
    /// LAYERSxHIDDEN decoder (e.g. 8x512) with a 24x24 patch grid (576 image
    /// tokens), to see how the two paths scale at realistic sequence lengths.
    #[arg(long, value_name = "LAYERSxHIDDEN", conflicts_with = "model")]
    pub synthetic: Option<String>,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.tokens == 0 || args.repeat == 0 {
        return Err(CliError::usage("--tokens and --repeat must be at least 1"));
    }
    let opts = LoadOptions::default();
    let ckpt = match (&args.model, &args.synthetic) {
        (Some(dir), _) => dexar_model::Checkpoint::load(dir, &opts)?,
        (None, Some(spec)) => synthetic_checkpoint(spec)?,
        (None, None) => crate::bundled::checkpoint(&opts)?,
    };
    let img = match &args.image {
        Some(p) => dexar_model::load_image(p)?,
        None => crate::bundled::default_image().1,
    };
    let cfg = &ckpt.config;
    let features = dexar_model::encode_image(&ckpt, &img)?;
    let prompt = ckpt.prepare_chat(dexar_model::DEFAULT_TEMPLATE, &args.prompt)?;
    let layers = dexar_core::layer_range(args.layer_index, cfg.text.num_hidden_layers);

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
        &features,
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
    let max = cfg.text.max_position_embeddings;
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
            &features,
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
                prompt.image_span,
                &features,
                layers.clone(),
                Some(token),
            )?;
            ids.push(token);
        }
        best_naive = best_naive.min(t0.elapsed().as_secs_f64());
    }
    let n = answer.len() as f64;
    let ratio = best_naive / best_incremental;
    println!(
        "model {} ({} layers, {} heads, {} image tokens), prompt {} tokens, {} explained tokens, layers {:?}",
        ckpt.dir.display(),
        cfg.text.num_hidden_layers,
        cfg.text.num_attention_heads,
        cfg.num_image_tokens(),
        prompt.input_ids.len(),
        answer.len(),
        layers
    );
    println!(
        "incremental (KV cache + local backward): {:>9.2} ms/token",
        best_incremental / n * 1e3
    );
    println!(
        "naive (full recompute + autograd):        {:>9.2} ms/token",
        best_naive / n * 1e3
    );
    println!(
        "speed-up: {ratio:.1}x (best of {} runs, same process)",
        args.repeat
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "schema": "dexar.bench/1",
            "model": ckpt.dir.display().to_string(),
            "prompt_tokens": prompt.input_ids.len(),
            "explained_tokens": answer.len(),
            "layers": layers.collect::<Vec<_>>(),
            "incremental_ms_per_token": best_incremental / n * 1e3,
            "naive_ms_per_token": best_naive / n * 1e3,
            "speedup": ratio,
        });
        crate::output::write_atomic(path, doc.to_string().as_bytes()).map_err(|e| {
            CliError::usage(format!("--json {}: cannot write ({e})", path.display()))
        })?;
    }
    Ok(())
}

/// A LLaVA-1.5-shaped checkpoint with random weights (std 0.02) and the
/// bundled tokenizer: for timing only.
fn synthetic_checkpoint(spec: &str) -> CliResult<dexar_model::Checkpoint> {
    let bad = || {
        CliError::usage(format!(
            "--synthetic {spec}: expected LAYERSxHIDDEN, e.g. 8x512 (hidden a multiple of 64)"
        ))
    };
    let (l, h) = spec.split_once('x').ok_or_else(bad)?;
    let (layers, hidden): (usize, usize) =
        (l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if layers == 0 || hidden == 0 || hidden % 64 != 0 || layers > 64 || hidden > 8192 {
        return Err(bad());
    }
    let bundled = crate::bundled::checkpoint(&LoadOptions::default())?;
    let tokenizer = bundled.tokenizer.clone();
    let image_token = bundled.config.image_token_index;
    let config = serde_json::json!({
        "model_type": "llava",
        "image_token_index": image_token,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 256, "intermediate_size": 1024,
                          "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 336, "patch_size": 14},
        "text_config": {"model_type": "llama", "hidden_size": hidden, "intermediate_size": hidden * 8 / 3,
                        "num_hidden_layers": layers, "num_attention_heads": hidden / 64,
                        "vocab_size": tokenizer.vocab_size(), "max_position_embeddings": 2048,
                        "tie_word_embeddings": true},
    });
    let config = dexar_model::LlavaConfig::from_value(&config)
        .map_err(|e| CliError::internal(format!("{e:?}")))?;
    let device = candle_core::Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device);
    let model = dexar_model::LlavaModel::load(vb, &config)
        .map_err(|e| CliError::internal(e.to_string()))?;
    for var in varmap.all_vars() {
        let noise =
            candle_core::Tensor::randn(0f32, 0.02, var.shape(), &device).and_then(|t| var.set(&t));
        noise.map_err(|e| CliError::internal(e.to_string()))?;
    }
    Ok(dexar_model::Checkpoint {
        dir: PathBuf::from(format!("synthetic:{spec}")),
        processor: dexar_model::ImageProcessor::clip(336),
        config,
        tokenizer,
        model,
    })
}
