//! `dexar explain`: one image, one prompt, an answer (generated or given),
//! per-token and sentence heatmaps for every chosen strategy, written as
//! `explain.json` and PNG overlays.

use candle_core::{DType, Device};
use clap::{ArgGroup, Args};
use dexar_core::{layer_range, HeadScores, TokenMap, BUILTIN_NAMES};
use dexar_model::{
    apply_template, generate_traced, Checkpoint, GenerationSettings, LoadOptions, Mode, TracedStep,
    DEFAULT_TEMPLATE,
};
use dexar_render::Colormap;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::error::{CliError, CliResult};
use crate::output::{
    write_atomic, ExplainJson, ModelInfo, PromptInfo, Settings, StrategyOutput, TokenInfo, SCHEMA,
};
use crate::strategies;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("prompt_text").required(true).args(["prompt", "raw_prompt"])))]
pub struct ExplainArgs {
    /// Checkpoint directory in llava-hf layout (config.json, model.safetensors
    /// or a sharded index, tokenizer.json, preprocessor_config.json).
    /// Default: the model bundled in the binary.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Image to ask about (PNG, JPEG, GIF, BMP, WebP, TIFF). Default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// User prompt, wrapped in the chat template (see --template).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Prompt used as is; must contain exactly one `<image>` marker.
    #[arg(long, value_name = "TEXT")]
    pub raw_prompt: Option<String>,
    /// Chat template for --prompt; `{prompt}` is replaced by the prompt.
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_TEMPLATE)]
    pub template: String,
    /// Explain this answer (teacher forcing) instead of generating one.
    #[arg(long, value_name = "TEXT")]
    pub target: Option<String>,
    /// Most tokens to generate.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tokens: usize,
    /// First decoder layer used; negative counts from the end (-10: last ten), clamped to 0.
    #[arg(long, value_name = "K", default_value_t = -10, allow_negative_numbers = true)]
    pub layer_index: i64,
    /// Strategy to compute (repeatable); dexar and dexar-unfiltered are always included.
    /// Default: every built-in (dexar, dexar-unfiltered, raw-attention, grad-x-attn).
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<String>,
    /// Load an attribution plugin (a shared library; repeatable). Its strategy
    /// is then available to --strategy by name. Plugins in the directories of
    /// DEXAR_PLUGIN_PATH (colon-separated) are loaded too.
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// Load plugins even if their file or directory is writable by group or others.
    #[arg(long)]
    pub allow_insecure_plugins: bool,
    /// k of DEX-AR's top-k head scores (1 as in the paper).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub topk: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f64,
    /// Random seed for sampling.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Weights precision: f32, f16 or bf16 (gradients are always accumulated in f32).
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
    pub dtype: String,
    /// cpu, or cuda / cuda:N (needs a build with --features cuda).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Output directory for explain.json and the PNG overlays (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the JSON to this path; `-` is standard output.
    #[arg(long, value_name = "PATH")]
    pub json: Option<String>,
    /// Colormap of the overlays: inferno, viridis or turbo.
    #[arg(long, value_name = "NAME", default_value = "inferno")]
    pub colormap: String,
    /// Opacity of the heatmap over the image, 0 to 1.
    #[arg(long, value_name = "A", default_value_t = 0.6)]
    pub alpha: f32,
    /// Skip the PNG overlays (JSON only).
    #[arg(long)]
    pub no_png: bool,
}

pub fn parse_dtype(s: &str) -> CliResult<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(CliError::usage(format!(
            "--dtype: unknown dtype `{s}`; use f32, f16 or bf16"
        ))),
    }
}

pub fn parse_device(s: &str) -> CliResult<Device> {
    let ordinal = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => {
                return Err(CliError::usage(format!(
                    "--device: unknown device `{s}`; use cpu, cuda or cuda:N"
                )))
            }
        },
    };
    Device::new_cuda(ordinal).map_err(|e| {
        CliError::usage(format!("--device {s}: CUDA is not available ({e}); build with `--features cuda` on a machine with an NVIDIA GPU"))
    })
}

/// Makes sure `dir` exists and is writable before any work is done.
pub fn prepare_out_dir(dir: &Path) -> CliResult<()> {
    let fail = |e: std::io::Error| {
        CliError::usage(format!(
            "--out {}: cannot write there ({e}); choose a writable directory",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".dexar-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

pub fn run(args: &ExplainArgs) -> CliResult<()> {
    let colormap: Colormap = args.colormap.parse().map_err(|_| {
        CliError::usage(format!(
            "--colormap: unknown colormap `{}`; use {}",
            args.colormap,
            Colormap::NAMES.join(", ")
        ))
    })?;
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(CliError::usage("--alpha must be between 0 and 1"));
    }
    if args.topk == 0 {
        return Err(CliError::usage("--topk must be at least 1"));
    }
    if args.max_tokens == 0 {
        return Err(CliError::usage("--max-tokens must be at least 1"));
    }
    if !(args.temperature >= 0.0 && args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(CliError::usage(
            "--temperature must be >= 0 and --top-p in (0, 1]",
        ));
    }
    let registry = strategies::load_plugins(&args.plugins, args.allow_insecure_plugins)?;
    let strategies = strategies::select(&args.strategies, args.topk, Some(&registry))?;
    let opts = LoadOptions {
        device: parse_device(&args.device)?,
        dtype: parse_dtype(&args.dtype)?,
    };
    prepare_out_dir(&args.out)?;

    let ckpt = match &args.model {
        Some(dir) => Checkpoint::load(dir, &opts)?,
        None => crate::bundled::checkpoint(&opts)?,
    };
    let cfg = &ckpt.config;
    let (image_label, img) = match &args.image {
        Some(p) => (p.display().to_string(), dexar_model::load_image(p)?),
        None => {
            let (name, img) = crate::bundled::default_image();
            (format!("bundled:{name}"), img)
        }
    };
    let features = dexar_model::encode_image(&ckpt, &img)?;
    let text = match (&args.prompt, &args.raw_prompt) {
        (Some(p), _) => {
            if p.contains(dexar_model::IMAGE_MARKER) {
                return Err(CliError::usage("--prompt must not contain <image>; the template places the image (use --raw-prompt for full control)"));
            }
            apply_template(&args.template, p)
                .map_err(|e| CliError::usage(format!("--template: {e}")))?
        }
        (None, Some(raw)) => raw.clone(),
        (None, None) => return Err(CliError::usage("give --prompt or --raw-prompt")),
    };
    let prompt = ckpt
        .tokenizer
        .prepare(&text, cfg.image_token_index, cfg.num_image_tokens())?;
    let mode = match &args.target {
        Some(t) => {
            let ids = ckpt.tokenizer.encode(t, false)?;
            if ids.is_empty() {
                return Err(CliError::usage(
                    "--target tokenizes to nothing; give a non-empty answer",
                ));
            }
            Mode::TeacherForced(ids)
        }
        None => Mode::Generate,
    };
    let layers = layer_range(args.layer_index, cfg.text.num_hidden_layers);
    let settings = GenerationSettings {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        layers: layers.clone(),
    };

    let total = match &mode {
        Mode::Generate => args.max_tokens,
        Mode::TeacherForced(t) => t.len(),
    };
    let bar = progress_bar(total as u64);
    let mut steps: Vec<TracedStep> = Vec::new();
    let mut answer = String::new();
    let generation = generate_traced(
        &ckpt,
        &prompt,
        &features,
        &settings,
        &mode,
        &AtomicBool::new(false),
        &mut |step| {
            answer.push_str(&step.trace.token_text);
            bar.set_message(answer.replace('\n', " "));
            bar.inc(1);
            steps.push(step);
            true
        },
    )?;
    bar.finish_and_clear();

    // Strategies over the traces.
    let mut outputs: BTreeMap<String, StrategyOutput> = BTreeMap::new();
    let mut maps_by_strategy: Vec<(String, Vec<TokenMap>, Vec<f32>)> = Vec::new();
    for s in &strategies {
        // A failing plugin strategy is reported and skipped; the others go on.
        let result = steps
            .iter()
            .map(|st| s.token_map(&st.trace))
            .collect::<Result<Vec<TokenMap>, _>>()
            .and_then(|maps| s.sentence_map(&maps).map(|sentence| (maps, sentence)));
        let (maps, sentence) = match result {
            Ok(r) => r,
            Err(e) if !BUILTIN_NAMES.contains(&s.name()) => {
                eprintln!(
                    "warning: skipping strategy `{}`: {}",
                    s.name(),
                    crate::error::one_line(&e.to_string())
                );
                continue;
            }
            Err(e) => return Err(CliError::internal(e.to_string())),
        };
        outputs.insert(
            s.name().to_string(),
            StrategyOutput {
                per_token: maps.iter().map(TokenMap::normalized).collect(),
                token_weights: maps.iter().map(|m| m.weight).collect(),
                sentence: sentence.clone(),
            },
        );
        maps_by_strategy.push((s.name().to_string(), maps, sentence));
    }
    let dexar_maps = &maps_by_strategy[0].1;
    let tokens: Vec<TokenInfo> = steps
        .iter()
        .zip(dexar_maps)
        .map(|(st, m)| TokenInfo {
            index: st.trace.step,
            id: st.trace.token_id,
            text: st.trace.token_text.clone(),
            position: st.trace.query_position + 1,
            weight: m.weight,
            no_visual_evidence: m.is_degenerate(),
        })
        .collect();
    let head_weights = steps
        .iter()
        .map(|st| HeadScores::compute(&st.trace, args.topk).weights)
        .collect();
    let doc = ExplainJson {
        schema: SCHEMA,
        model: ModelInfo {
            path: ckpt.dir.display().to_string(),
            model_type: "llava".into(),
            text_model_type: cfg.text.model_type.clone(),
            num_layers: cfg.text.num_hidden_layers,
            num_heads: cfg.text.num_attention_heads,
            grid: [cfg.grid().height, cfg.grid().width],
        },
        settings: Settings {
            mode: if args.target.is_some() {
                "teacher-forced"
            } else {
                "generate"
            },
            layer_index: args.layer_index,
            layers_used: layers.collect(),
            topk: args.topk,
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            dtype: args.dtype.clone(),
            device: args.device.clone(),
            stop_reason: format!("{:?}", generation.stop).to_lowercase(),
        },
        prompt: PromptInfo {
            text: prompt.text.clone(),
            input_ids: prompt.input_ids.clone(),
            image_span: [prompt.image_span.0, prompt.image_span.1],
            image: image_label,
        },
        tokens,
        strategies: outputs,
        head_weights,
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|e| CliError::internal(e.to_string()))?;
    let json_path = args.out.join("explain.json");
    write_atomic(&json_path, json.as_bytes()).map_err(|e| {
        CliError::usage(format!("--out: cannot write {} ({e})", json_path.display()))
    })?;
    match args.json.as_deref() {
        Some("-") => println!("{json}"),
        Some(p) => write_atomic(Path::new(p), json.as_bytes())
            .map_err(|e| CliError::usage(format!("--json {p}: cannot write ({e})")))?,
        None => {}
    }
    if !args.no_png {
        let view = display_view(&ckpt, &img);
        for (name, maps, sentence) in &maps_by_strategy {
            let dir = args.out.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| {
                CliError::usage(format!("--out: cannot create {} ({e})", dir.display()))
            })?;
            for (i, m) in maps.iter().enumerate() {
                save_overlay(
                    &view,
                    &m.normalized(),
                    m.grid,
                    colormap,
                    args.alpha,
                    &dir.join(format!("token_{i:03}.png")),
                )?;
            }
            save_overlay(
                &view,
                sentence,
                cfg.grid(),
                colormap,
                args.alpha,
                &dir.join("sentence.png"),
            )?;
        }
    }
    if args.json.as_deref() != Some("-") {
        print_summary(&doc, &generation.text, &args.out);
    }
    Ok(())
}

/// The model's view of the image (resized, cropped), enlarged for display.
pub(crate) fn display_view(ckpt: &Checkpoint, img: &image::DynamicImage) -> image::RgbImage {
    let view = ckpt.processor.model_view(img);
    let side = view.width().min(view.height()).max(1);
    if side >= 256 {
        return view;
    }
    let scale = 256u32.div_ceil(side);
    image::imageops::resize(
        &view,
        view.width() * scale,
        view.height() * scale,
        image::imageops::FilterType::CatmullRom,
    )
}

fn save_overlay(
    view: &image::RgbImage,
    map: &[f32],
    grid: dexar_core::Grid,
    colormap: Colormap,
    alpha: f32,
    path: &Path,
) -> CliResult<()> {
    let img = dexar_render::overlay(view, map, grid, colormap, alpha)
        .map_err(|e| CliError::internal(e.to_string()))?;
    dexar_render::save_png_atomic(path, &img).map_err(|e| CliError::usage(format!("--out: {e}")))
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {pos}/{len} tokens [{elapsed}] {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn print_summary(doc: &ExplainJson, answer: &str, out: &Path) {
    println!("answer: {}", answer.trim());
    println!("tokens (δ = DEX-AR token weight; * = no visual evidence):");
    for t in &doc.tokens {
        let flag = if t.no_visual_evidence { " *" } else { "" };
        println!(
            "  {:>3} {:<16} δ={:.4}{flag}",
            t.index,
            format!("{:?}", t.text),
            t.weight
        );
    }
    println!(
        "wrote {} and overlays per strategy under {}",
        out.join("explain.json").display(),
        out.display()
    );
}
