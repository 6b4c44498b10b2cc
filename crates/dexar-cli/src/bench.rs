//! `dexar bench`: what each stage of explaining an answer costs, measured in
//! one process on one model: loading, prefill (vision tower, projector,
//! prompt), plain KV-cached decoding, the same decoding traced (plus the
//! local backward over the traced layers), and optionally the naive
//! reference path (full recompute + autograd per layer). See docs/bench.md.

use clap::Args;
use dexar_model::{
    generate_traced, naive_step, Checkpoint, GenerationSettings, ImageFeatures, Mode,
    PreparedPrompt, SyntheticSpec,
};
use std::ops::Range;
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
    /// Tokens to decode (and explain) per run.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub tokens: usize,
    #[command(flatten)]
    pub layers: LayerArgs,
    /// Repetitions; the fastest of each stage is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// Threads of candle's CPU kernels (matrix products, element-wise
    /// operations); default: one per core.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Also time the naive reference path (a full forward and one autograd
    /// backward per layer for every token; slow on long prompts).
    #[arg(long)]
    pub naive: bool,
    /// Instead of --model: a randomly initialised model with a LAYERSxHIDDEN
    /// decoder (e.g. 8x1024), LLaVA-1.5-shaped (a 24x24 patch grid, 576 image
    /// tokens) or, as qwen2-vl:8x512, Qwen2-VL-shaped (images resized to about
    /// 672x672 pixels, about 576 merged tokens, M-RoPE), to see how the
    /// stages scale at realistic sequence lengths.
    #[arg(
        long,
        value_name = "[qwen2-vl:]LAYERSxHIDDEN",
        conflicts_with = "model"
    )]
    pub synthetic: Option<String>,
    /// With --synthetic (LLaVA shape): also write the model as a llava-hf
    /// checkpoint directory, which `--model DIR` and transformers load
    /// (scripts/bench_vs_torch.py times both on it).
    #[arg(long, value_name = "DIR", requires = "synthetic")]
    pub save_checkpoint: Option<PathBuf>,
    /// Write the result as JSON (schema dexar.bench/2) to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The fastest time of each stage over the repetitions, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Best {
    prefill: f64,
    plain: f64,
    traced: f64,
    naive: f64,
}

impl Best {
    fn new() -> Self {
        Self {
            prefill: f64::INFINITY,
            plain: f64::INFINITY,
            traced: f64::INFINITY,
            naive: f64::INFINITY,
        }
    }
}

/// One model, image and prompt to time.
struct Workload<'a> {
    ckpt: &'a Checkpoint,
    image: &'a image::DynamicImage,
    prompt: &'a PreparedPrompt,
    answer: Vec<u32>,
    layers: Range<usize>,
}

impl Workload<'_> {
    /// Teacher-forced decoding of the answer with `layers` traced (none:
    /// plain decoding); (prefill ms, steps ms, trace bytes of all steps).
    fn decode(
        &self,
        features: &ImageFeatures,
        layers: Range<usize>,
    ) -> CliResult<(f64, f64, usize)> {
        let settings = GenerationSettings {
            max_tokens: self.answer.len(),
            layers,
            ..Default::default()
        };
        let mut bytes = 0;
        let generation = generate_traced(
            self.ckpt,
            self.prompt,
            features,
            &settings,
            &Mode::TeacherForced(self.answer.clone()),
            &AtomicBool::new(false),
            &mut |step| {
                bytes += (step.trace.grads.len() + step.trace.attn.len()) * size_of::<f32>();
                true
            },
        )?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Ok((
            ms(generation.times.prefill),
            ms(generation.times.steps),
            bytes,
        ))
    }

    /// One repetition of every stage, interleaved so that a load on the
    /// machine affects them alike.
    fn run_once(&self, naive: bool, best: &mut Best, trace_bytes: &mut usize) -> CliResult<()> {
        let t0 = Instant::now();
        let features = self.ckpt.encode_image(self.image)?;
        let encode_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (prefill, plain, _) = self.decode(&features, 0..0)?;
        best.prefill = best.prefill.min(encode_ms + prefill);
        best.plain = best.plain.min(plain);
        let (_, traced, bytes) = self.decode(&features, self.layers.clone())?;
        best.traced = best.traced.min(traced);
        *trace_bytes = bytes;
        if naive {
            let t0 = Instant::now();
            let mut ids = self.prompt.input_ids.clone();
            for &token in &self.answer {
                naive_step(
                    &self.ckpt.model,
                    &ids,
                    self.prompt.input_ids.len(),
                    &self.prompt.image_spans,
                    &features,
                    self.layers.clone(),
                    Some(token),
                )?;
                ids.push(token);
            }
            best.naive = best.naive.min(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    }
}

/// The process's peak resident set size in bytes (Linux: VmHWM).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sets the number of threads of the CPU kernels; before any of them runs
/// (candle reads RAYON_NUM_THREADS, rayon's global pool is built on first use).
fn set_threads(threads: Option<usize>) -> CliResult<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        return Err(CliError::usage("--threads must be at least 1"));
    }
    // Only this thread runs at this point; nothing reads the environment concurrently.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    Ok(())
}

pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.tokens == 0 || args.repeat == 0 {
        return Err(CliError::usage("--tokens and --repeat must be at least 1"));
    }
    set_threads(args.threads)?;
    let opts = args.model.load_options()?;
    let load_start = Instant::now();
    let ms_since = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let (ckpt, load_ms) = match &args.synthetic {
        Some(spec) => {
            let spec: SyntheticSpec = spec
                .parse()
                .map_err(|e| CliError::usage(format!("--synthetic: {e}")))?;
            let tokenizer = dexar_toy::load_bundled(&opts)?.tokenizer;
            let model = dexar_model::synthetic_model(spec, tokenizer, &opts)?;
            let load_ms = ms_since(load_start);
            if let Some(dir) = &args.save_checkpoint {
                model
                    .save(dir, dexar_toy::bundled().tokenizer_json)
                    .map_err(|e| CliError::usage(format!("--save-checkpoint: {e}")))?;
            }
            (model.ckpt, load_ms)
        }
        None => {
            let ckpt = dexar_session::open_model(&args.model.model, &opts)?.ckpt;
            (ckpt, ms_since(load_start))
        }
    };
    let image = match &args.image {
        Some(p) => dexar_model::load_image(p)?,
        None => dexar_toy::default_image().1,
    };
    ckpt.processor
        .check_image_size(image.width(), image.height())
        .map_err(|m| CliError::usage(format!("--image: {m}")))?;
    let features = ckpt.encode_image(&image)?;
    let prompt = ckpt.prepare_chat(&[], &args.prompt, &features)?;
    let layers = args.layers.layers(ckpt.text_config().num_hidden_layers);

    // The answer: greedy, then padded with a fixed token so that every run
    // decodes exactly --tokens tokens (teacher forcing). This first run also
    // warms up the allocator and the kernels.
    let settings = GenerationSettings {
        max_tokens: args.tokens,
        layers: 0..0,
        ..Default::default()
    };
    let mut answer = generate_traced(
        &ckpt,
        &prompt,
        &features,
        &settings,
        &Mode::Generate,
        &AtomicBool::new(false),
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

    let work = Workload {
        ckpt: &ckpt,
        image: &image,
        prompt: &prompt,
        answer,
        layers: layers.clone(),
    };
    let mut best = Best::new();
    let mut trace_bytes = 0;
    for _ in 0..args.repeat {
        work.run_once(args.naive, &mut best, &mut trace_bytes)?;
    }
    let n = work.answer.len() as f64;
    let plain = best.plain / n;
    let traced = best.traced / n;
    let naive = args.naive.then_some(best.naive / n);
    let threads = dexar_model::cpu_threads();
    let rss = peak_rss_bytes();
    let trace_per_token = trace_bytes / work.answer.len();
    // The file first: a closed stdout must not lose it.
    if let Some(path) = &args.json {
        let mut doc = serde_json::json!({
            "schema": "dexar.bench/2",
            "model": ckpt.dir.display().to_string(),
            "dtype": args.model.dtype,
            "device": args.model.device,
            "threads": threads,
            "prompt_tokens": prompt.input_ids.len(),
            "image_tokens": features.num_tokens(),
            "explained_tokens": work.answer.len(),
            "layers": layers.clone().collect::<Vec<_>>(),
            "repeat": args.repeat,
            "load_ms": load_ms,
            "prefill_ms": best.prefill,
            "plain_ms_per_token": plain,
            "traced_ms_per_token": traced,
            "traced_over_plain": traced / plain,
            "peak_rss_bytes": rss,
            "trace_bytes_per_token": trace_per_token,
        });
        if let Some(naive) = naive {
            doc["naive_ms_per_token"] = naive.into();
        }
        dexar_core::write_atomic(path, doc.to_string().as_bytes()).map_err(|e| {
            CliError::usage(format!("--json {}: cannot write ({e})", path.display()))
        })?;
    }
    let cfg = ckpt.text_config();
    outln!(
        "model {} ({} layers x {}, {} heads, {} image tokens), {} {}, {threads} threads",
        ckpt.dir.display(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        features.num_tokens(),
        args.model.dtype,
        args.model.device,
    )?;
    outln!(
        "prompt {} tokens, {} tokens decoded, traced: {}; best of {} runs",
        prompt.input_ids.len(),
        work.answer.len(),
        dexar_core::layers::describe(&layers),
        args.repeat
    )?;
    outln!("load:               {load_ms:>10.1} ms")?;
    outln!("prefill:            {:>10.1} ms", best.prefill)?;
    outln!("plain decoding:     {plain:>10.2} ms/token")?;
    outln!(
        "traced decoding:    {traced:>10.2} ms/token ({:.2}x plain)",
        traced / plain
    )?;
    if let Some(naive) = naive {
        outln!(
            "naive (recompute):  {naive:>10.2} ms/token ({:.1}x traced)",
            naive / traced
        )?;
    }
    outln!(
        "trace:              {:>10.1} KiB/token",
        trace_per_token as f64 / 1024.0
    )?;
    if let Some(rss) = rss {
        outln!(
            "peak RSS:           {:>10.1} MiB",
            rss as f64 / (1024.0 * 1024.0)
        )?;
    }
    Ok(())
}
