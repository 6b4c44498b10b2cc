//! `dexar explain`: one image, one prompt, an answer (generated or given),
//! per-token and sentence heatmaps for every chosen strategy, written as
//! `explain.json` and PNG overlays. The writing ([`write_explanation`]) is
//! shared with `dexar replay`, which explains recorded traces.

use clap::{ArgGroup, Args};
use dexar_core::maps::weighted_global_sum;
use dexar_core::{
    minmax, write_atomic, Grid, HeadScores, RegionView, StepTrace, Strategy, TokenMap,
    BUILTIN_NAMES,
};
use dexar_model::{generate_traced, GenerationSettings, Mode};
use dexar_plugin::host::PluginRegistry;
use dexar_render::Colormap;
use dexar_session::LoadedImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::args::{LayerArgs, ModelArgs, PluginArgs, SamplingArgs, TopkArgs};
use crate::error::{CliError, CliResult};
use crate::output::{
    ExplainJson, GlobalOutput, ModelInfo, PromptInfo, RegionInfo, Settings, StrategyOutput,
    TokenInfo, SCHEMA,
};
use crate::strategies;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("prompt_text").required(true).args(["prompt", "raw_prompt"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image to ask about (PNG, JPEG, GIF, BMP, WebP, TIFF). Default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// User prompt, wrapped in the model's chat template (or --template);
    /// PaliGemma: a task prefix such as `caption en` or `answer en QUESTION`.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Prompt used as is; must contain exactly one `<image>` marker (Qwen-VL:
    /// or `<|image_pad|>`; `<image>` stands for the whole vision block;
    /// PaliGemma: BOS after it and a newline at the end are added, as its
    /// processor does).
    #[arg(long, value_name = "TEXT")]
    pub raw_prompt: Option<String>,
    /// A single-turn chat template for --prompt, `{prompt}` replaced by the
    /// prompt (default: the model's own, for LLaVA-1.5
    /// `USER: <image>\n{prompt} ASSISTANT:`).
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Explain this answer (teacher forcing) instead of generating one.
    #[arg(long, value_name = "TEXT")]
    pub target: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What explain writes and how: the strategies, explain.json, the overlays
/// (shared by `dexar explain` and `dexar replay`).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Strategy to compute (repeatable); dexar and dexar-unfiltered are always included.
    /// Default: every built-in (dexar, dexar-unfiltered, raw-attention, grad-x-attn).
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<String>,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub topk: TopkArgs,
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
    #[arg(
        long,
        value_name = "A",
        default_value_t = 0.6,
        allow_negative_numbers = true
    )]
    pub alpha: f32,
    /// Skip the PNG overlays (JSON only).
    #[arg(long)]
    pub no_png: bool,
    /// Images split into regions (SmolVLM): which overlays to write: the
    /// tiles' maps composed at their boxes (`token_NNN.png`), the global
    /// view's (`token_NNN.global.png`), or both. No effect on one-region images.
    #[arg(long, value_name = "VIEW", default_value = "all")]
    pub region: String,
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

/// The checked output options, plugins loaded and strategies chosen.
pub struct Output {
    pub colormap: Colormap,
    pub region: RegionView,
    pub topk: usize,
    /// The plugins (their libraries stay loaded while their strategies run).
    pub plugins: PluginRegistry,
    pub strategies: Vec<Arc<dyn Strategy>>,
}

impl OutputArgs {
    /// Checks the options and loads the plugins (before any heavy work).
    pub fn prepare(&self) -> CliResult<Output> {
        let colormap: Colormap = self.colormap.parse().map_err(|_| {
            CliError::usage(format!(
                "--colormap: unknown colormap `{}`; use {}",
                self.colormap,
                Colormap::NAMES.join(", ")
            ))
        })?;
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(CliError::usage("--alpha must be between 0 and 1"));
        }
        let region: RegionView = self
            .region
            .parse()
            .map_err(|e| CliError::usage(format!("--region: {e}")))?;
        let topk = self.topk.validated()?;
        let registry = self.plugins.load()?;
        let strategies = strategies::select(&self.strategies, topk, &registry)?;
        Ok(Output {
            colormap,
            region,
            topk,
            plugins: registry,
            strategies,
        })
    }
}

impl Output {
    /// Refuses, as a usage error, a plugin that cannot see an image of
    /// `regions` regions (an ABI 1.0 plugin on SmolVLM's tiles): a wrong
    /// choice of strategy for this image, known before anything is computed.
    pub fn check_regions(&self, regions: usize) -> CliResult<()> {
        for s in &self.strategies {
            if let Some(why) = self
                .plugins
                .get(s.name())
                .and_then(|p| p.cannot_see(regions))
            {
                return Err(CliError::usage(format!("--strategy {}: {why}", s.name())));
            }
        }
        Ok(())
    }
}

/// An answer's traces (restricted to the layers used) and what
/// explain.json says of where they came from.
pub struct Explained<'a> {
    pub model: ModelInfo,
    pub settings: Settings,
    pub prompt: PromptInfo,
    pub traces: &'a [StepTrace],
    pub answer: &'a str,
    /// The image as the model saw it, enlarged for display.
    pub view: &'a image::RgbImage,
    pub grid: Grid,
}

/// One strategy's maps of every token and its sentence map.
struct StrategyMaps {
    name: String,
    maps: Vec<TokenMap>,
    sentence: Vec<f32>,
}

pub fn run(args: &ExplainArgs) -> CliResult<()> {
    let output = args.output.prepare()?;
    args.sampling.validate()?;
    let opts = args.model.load_options()?;
    prepare_out_dir(&args.output.out)?;

    let model = dexar_session::open_model(&args.model.model, &opts)?;
    let ckpt = &model.ckpt;
    let image = match &args.image {
        Some(p) => LoadedImage::open(ckpt, p)?,
        None => LoadedImage::bundled_default(ckpt)?,
    };
    let features = image.features()?;
    output.check_regions(features.layout.len().max(1))?;
    let prompt = match (&args.prompt, &args.raw_prompt) {
        (Some(p), _) => {
            if p.trim().is_empty() {
                return Err(CliError::usage(
                    "--prompt is empty; ask something about the image",
                ));
            }
            if p.contains(dexar_model::IMAGE_MARKER) {
                return Err(CliError::usage("--prompt must not contain <image>; the template places the image (use --raw-prompt for full control)"));
            }
            match &args.template {
                Some(t) => ckpt
                    .prepare_templated(t, p, features)
                    .map_err(|e| CliError::usage(format!("--template: {e}")))?,
                None => ckpt.prepare_chat(&[], p, features)?,
            }
        }
        (None, Some(raw)) => ckpt.prepare_prompt(raw, features)?,
        (None, None) => return Err(CliError::usage("give --prompt or --raw-prompt")),
    };
    let mode = match &args.target {
        Some(t) => {
            let ids = ckpt.tokenizer.encode(t, false)?;
            if ids.is_empty() {
                return Err(CliError::usage(
                    "--target tokenizes to nothing; give a non-empty answer",
                ));
            }
            let unknown = ckpt.tokenizer.unknown_words(t);
            if !unknown.is_empty() {
                crate::stdio::warn(&format!(
                    "--target: the tokenizer does not know {}; explained as <unk>",
                    quoted(&unknown)
                ));
            }
            Mode::TeacherForced(ids)
        }
        None => Mode::Generate,
    };
    let layers = args.layers.layers(model.num_layers());
    let sampling = &args.sampling;
    let settings = GenerationSettings {
        max_tokens: sampling.max_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        seed: sampling.seed,
        layers: layers.clone(),
    };

    let total = match &mode {
        Mode::Generate => sampling.max_tokens,
        Mode::TeacherForced(t) => t.len(),
    };
    let bar = crate::progress::bar(total as u64, "tokens");
    let mut steps: Vec<StepTrace> = Vec::new();
    let mut answer = String::new();
    let generation = generate_traced(
        ckpt,
        &prompt,
        features,
        &settings,
        &mode,
        &AtomicBool::new(false),
        &mut |step| {
            answer.push_str(&step.trace.token_text);
            bar.set_message(answer.replace('\n', " "));
            bar.inc(1);
            steps.push(step.trace);
            true
        },
    )?;
    bar.finish_and_clear();
    let explained = Explained {
        model: ModelInfo {
            path: ckpt.dir.display().to_string(),
            model_type: ckpt.model_type().into(),
            text_model_type: ckpt.text_config().model_type.clone(),
            num_layers: ckpt.text_config().num_hidden_layers,
            num_heads: ckpt.text_config().num_attention_heads,
            grid: [features.grid.height, features.grid.width],
        },
        settings: Settings {
            mode: Settings::mode(args.target.is_some()),
            layer_index: args.layers.layer_index,
            layers_used: layers.collect(),
            topk: output.topk,
            max_tokens: sampling.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            dtype: args.model.dtype.clone(),
            device: args.model.device.clone(),
            stop_reason: generation.stop.to_string(),
        },
        prompt: PromptInfo {
            text: prompt.text.clone(),
            input_ids: prompt.input_ids.clone(),
            image_span: [prompt.image_span().0, prompt.image_span().1],
            image: image.label.clone(),
        },
        traces: &steps,
        answer: &generation.text,
        view: &image.view,
        grid: features.grid,
    };
    write_explanation(&explained, &output, &args.output)
}

/// Writes explain.json (and the overlays, and the JSON copy) of `e` under
/// every chosen strategy, then prints a summary unless the JSON goes to
/// standard output.
pub fn write_explanation(e: &Explained, output: &Output, args: &OutputArgs) -> CliResult<()> {
    let (steps, topk, colormap) = (e.traces, output.topk, output.colormap);
    output.check_regions(steps.first().map_or(1, |st| st.regions.len()))?;
    // Strategies over the traces.
    let mut outputs: BTreeMap<String, StrategyOutput> = BTreeMap::new();
    let mut computed: Vec<StrategyMaps> = Vec::new();
    for s in &output.strategies {
        // A failing plugin strategy is reported and skipped; the others go on.
        let result = steps
            .iter()
            .map(|st| s.token_map(st))
            .collect::<Result<Vec<TokenMap>, _>>()
            .and_then(|maps| s.sentence_map(&maps).map(|sentence| (maps, sentence)));
        let (maps, sentence) = match result {
            Ok(r) => r,
            Err(e) if !BUILTIN_NAMES.contains(&s.name()) => {
                crate::stdio::warn(&format!("skipping strategy `{}`: {e}", s.name()));
                continue;
            }
            Err(e) => return Err(CliError::internal(e.to_string())),
        };
        let global = maps
            .iter()
            .any(|m| !m.regions.is_empty())
            .then(|| global_output(&maps));
        outputs.insert(
            s.name().to_string(),
            StrategyOutput {
                per_token: maps.iter().map(TokenMap::normalized).collect(),
                token_weights: maps.iter().map(|m| m.weight).collect(),
                sentence: sentence.clone(),
                global,
            },
        );
        computed.push(StrategyMaps {
            name: s.name().to_string(),
            maps,
            sentence,
        });
    }
    let dexar_maps = &computed[0].maps;
    let tokens: Vec<TokenInfo> = steps
        .iter()
        .zip(dexar_maps)
        .map(|(st, m)| TokenInfo {
            index: st.step,
            id: st.token_id,
            text: st.token_text.clone(),
            position: st.query_position + 1,
            weight: m.weight,
            no_visual_evidence: m.is_degenerate(),
        })
        .collect();
    let head_weights = steps
        .iter()
        .map(|st| HeadScores::compute(st, topk).weights)
        .collect();
    // The maps' grid: the model's, or the tiles composed for a split image.
    let grid = dexar_maps.first().map_or(e.grid, |m| m.grid);
    let mut model = e.model.clone();
    model.grid = [grid.height, grid.width];
    let doc = ExplainJson {
        schema: SCHEMA,
        model,
        settings: e.settings.clone(),
        prompt: e.prompt.clone(),
        tokens,
        strategies: outputs,
        head_weights,
        regions: steps
            .first()
            .map(|st| st.regions.iter().map(RegionInfo::of).collect())
            .unwrap_or_default(),
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|e| CliError::internal(e.to_string()))?;
    let names: Vec<&str> = computed.iter().map(|s| s.name.as_str()).collect();
    crate::explain_files::remove_previous_overlays(&args.out, &names).map_err(|e| {
        CliError::usage(format!(
            "--out {}: cannot remove the overlays of an earlier run ({e})",
            args.out.display()
        ))
    })?;
    let json_path = args.out.join("explain.json");
    write_atomic(&json_path, json.as_bytes()).map_err(|e| {
        CliError::usage(format!("--out: cannot write {} ({e})", json_path.display()))
    })?;
    match args.json.as_deref() {
        Some("-") => outln!("{json}")?,
        Some(p) => write_atomic(Path::new(p), json.as_bytes())
            .map_err(|e| CliError::usage(format!("--json {p}: cannot write ({e})")))?,
        None => {}
    }
    if !args.no_png {
        for s in &computed {
            let dir = args.out.join(&s.name);
            std::fs::create_dir_all(&dir).map_err(|e| {
                CliError::usage(format!("--out: cannot create {} ({e})", dir.display()))
            })?;
            for (i, m) in s.maps.iter().enumerate() {
                for (view, grid, raw) in m.view(output.region) {
                    save_overlay(
                        e.view,
                        &minmax(raw).0,
                        grid,
                        colormap,
                        args.alpha,
                        &dir.join(overlay_name(&format!("token_{i:03}"), view)),
                    )?;
                }
            }
            let split = s.maps.iter().any(|m| !m.regions.is_empty());
            let sentence_grid = s.maps.first().map_or(grid, |m| m.grid);
            if !split || output.region != RegionView::Global {
                save_overlay(
                    e.view,
                    &s.sentence,
                    sentence_grid,
                    colormap,
                    args.alpha,
                    &dir.join("sentence.png"),
                )?;
            }
            if split && output.region != RegionView::Tiles {
                if let Some(g) = doc.strategies.get(&s.name).and_then(|o| o.global.as_ref()) {
                    save_overlay(
                        e.view,
                        &g.sentence,
                        Grid::new(g.grid[0], g.grid[1]),
                        colormap,
                        args.alpha,
                        &dir.join("sentence.global.png"),
                    )?;
                }
            }
        }
    }
    if args.json.as_deref() != Some("-") {
        print_summary(&doc, e.answer, &args.out)?;
    }
    Ok(())
}

/// The overlay file of a map `stem` under a region view: the composed (or
/// only) map is `stem.png`, the global view's `stem.global.png`.
fn overlay_name(stem: &str, view: &str) -> String {
    if view == "global" {
        format!("{stem}.global.png")
    } else {
        format!("{stem}.png")
    }
}

/// The global views' maps of a split image's token maps, and their sentence map.
fn global_output(maps: &[TokenMap]) -> GlobalOutput {
    let grid = maps
        .iter()
        .find_map(|m| m.global().map(|(g, _)| g))
        .unwrap_or(Grid::new(0, 0));
    GlobalOutput {
        grid: [grid.height, grid.width],
        per_token: maps
            .iter()
            .map(|m| m.global().map(|(_, raw)| minmax(raw).0).unwrap_or_default())
            .collect(),
        sentence: minmax(&weighted_global_sum(maps)).0,
    }
}

/// `a`, `b` and `c` for messages.
pub fn quoted(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
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

fn print_summary(doc: &ExplainJson, answer: &str, out: &Path) -> CliResult<()> {
    outln!("answer: {}", answer.trim())?;
    outln!("tokens (δ = DEX-AR token weight; * = no visual evidence):")?;
    for t in &doc.tokens {
        let flag = if t.no_visual_evidence { " *" } else { "" };
        outln!(
            "  {:>3} {:<16} δ={:.4}{flag}",
            t.index,
            format!("{:?}", t.text),
            t.weight
        )?;
    }
    outln!(
        "wrote {} and overlays per strategy under {}",
        out.join("explain.json").display(),
        out.display()
    )
}
