//! `dexar eval`: attribution quality over a data set, per strategy, as a
//! table and as JSON (`dexar.eval/1`) or CSV.

mod data;
mod score;

use clap::Args;
use dexar_core::metrics::{Metric, MetricMeans, MetricSums};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::args::{LayerArgs, ModelArgs, PluginArgs, TopkArgs};
use crate::error::{CliError, CliResult};
use data::DataSource;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// `toy:N[:seed]` (N held-out scenes of the shapes world) or a directory
    /// with data.jsonl, images and optional masks (see docs/eval.md).
    #[arg(long, value_name = "SPEC")]
    pub data: String,
    /// Strategy to score (repeatable); default: every built-in and loaded plugin.
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<String>,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub topk: TopkArgs,
    /// Most tokens to generate for items without a reference answer.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_tokens: usize,
    /// Skip the perturbation (nPPL) metrics, which cost ~30 forward passes per item.
    #[arg(long)]
    pub no_perturbation: bool,
    /// Seed of the random perturbation order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Write results to FILE.json or FILE.csv.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Serialize)]
struct EvalJson {
    schema: &'static str,
    data: DataInfo,
    strategies: BTreeMap<String, StrategyJson>,
}

#[derive(Debug, Serialize)]
struct DataInfo {
    source: String,
    model: String,
    items: usize,
    skipped: usize,
    skipped_reasons: Vec<String>,
    unmatched_words: usize,
    layers_used: Vec<usize>,
    /// Stopped by Ctrl-C: the results cover the items scored until then.
    interrupted: bool,
    /// Strategies that failed on an item, left out of `strategies`, with the
    /// item and the reason.
    failed_strategies: BTreeMap<String, String>,
}

/// Object-word (per-token) segmentation metrics and sentence-level nPPL areas
/// at the top level; sentence-level segmentation under `sentence`.
#[derive(Debug, Serialize)]
struct StrategyJson {
    #[serde(flatten)]
    metrics: MetricMeans,
    sentence: MetricMeans,
}

pub fn run(args: &EvalArgs) -> CliResult<()> {
    let source = DataSource::parse(&args.data)?;
    if let Some(out) = &args.out {
        check_out_file(out)?;
    }
    let topk = args.topk.validated()?;
    if args.max_tokens == 0 {
        return Err(CliError::usage("--max-tokens must be at least 1"));
    }
    let registry = args.plugins.load()?;
    let mut names = args.strategies.clone();
    if names.is_empty() {
        names = dexar_core::BUILTIN_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend(registry.list().into_iter().map(|p| p.name));
    }
    let strategies = crate::strategies::select(&names, topk, &registry)?;
    let model = args.model.open()?;
    let items = data::load(&source)?;
    let interrupted = interrupt_flag();
    let layers = args.layers.layers(model.num_layers());
    let scorer = score::Scorer {
        ckpt: &model.ckpt,
        strategies: &strategies,
        layers: layers.clone(),
        max_tokens: args.max_tokens,
        perturb: !args.no_perturbation,
        seed: args.seed,
        cancel: &interrupted,
    };
    let bar = crate::progress::bar(items.len as u64, "items");
    let warn = |message: &str| bar.suspend(|| crate::stdio::warn(message));
    let mut word_sums: Vec<MetricSums> = strategies.iter().map(|_| MetricSums::new()).collect();
    let mut sentence_sums: Vec<MetricSums> = strategies.iter().map(|_| MetricSums::new()).collect();
    let mut failed: Vec<Option<String>> = vec![None; strategies.len()];
    let mut skipped = items.skipped.clone();
    let mut unmatched = 0;
    let mut scored = 0;
    for (i, item) in items.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        bar.inc(1);
        let item = match item {
            Ok(item) => item,
            Err(reason) => {
                warn(&format!("skipped {reason}"));
                skipped.push(reason);
                continue;
            }
        };
        let skip: Vec<bool> = failed.iter().map(Option::is_some).collect();
        let scores = match scorer.score(&item, i as u64, &skip) {
            // An answer cut short by Ctrl-C is not scored.
            _ if interrupted.load(Ordering::SeqCst) => break,
            Ok(scores) => scores,
            Err(e) => {
                warn(&format!("skipped {}: {}", item.id, e.message));
                skipped.push(format!("{}: {}", item.id, e.message));
                continue;
            }
        };
        scored += 1;
        unmatched += scores.unmatched_words;
        for (k, s) in scores.per_strategy.iter().enumerate() {
            match s {
                _ if failed[k].is_some() => {}
                Ok(s) => {
                    for w in &s.words {
                        word_sums[k].add(w).map_err(internal)?;
                    }
                    sentence_sums[k].add(&s.sentence).map_err(internal)?;
                }
                Err(e) => {
                    let name = strategies[k].name();
                    warn(&format!(
                        "strategy `{name}` failed on {} and is left out of the results: {e}",
                        item.id
                    ));
                    failed[k] = Some(format!("{}: {e}", item.id));
                }
            }
        }
        bar.set_message(scores.answer);
    }
    bar.finish_and_clear();

    let mut results = BTreeMap::new();
    let mut failed_strategies = BTreeMap::new();
    for (k, s) in strategies.iter().enumerate() {
        if let Some(reason) = &failed[k] {
            failed_strategies.insert(s.name().to_string(), reason.clone());
            continue;
        }
        let mut metrics = word_sums[k].means();
        let sentence = sentence_sums[k].means();
        metrics.nppl_auc_most_first = sentence.nppl_auc_most_first;
        metrics.nppl_auc_least_first = sentence.nppl_auc_least_first;
        metrics.nppl_auc_random = sentence.nppl_auc_random;
        results.insert(s.name().to_string(), StrategyJson { metrics, sentence });
    }
    let interrupted = interrupted.load(Ordering::SeqCst);
    let doc = EvalJson {
        schema: "dexar.eval/1",
        data: DataInfo {
            source: source.describe(),
            model: model.label.clone(),
            items: scored,
            skipped: skipped.len(),
            skipped_reasons: skipped,
            unmatched_words: unmatched,
            layers_used: layers.collect(),
            interrupted,
            failed_strategies,
        },
        strategies: results,
    };
    // The file first: a closed stdout must not lose the results.
    if let Some(out) = &args.out {
        let bytes = if out.extension().is_some_and(|e| e == "csv") {
            to_csv(&doc).into_bytes()
        } else {
            serde_json::to_vec_pretty(&doc).map_err(internal)?
        };
        dexar_core::write_atomic(out, &bytes)
            .map_err(|e| CliError::usage(format!("--out {}: cannot write ({e})", out.display())))?;
    }
    let order: Vec<String> = strategies.iter().map(|s| s.name().to_string()).collect();
    print_table(&doc, &order)?;
    if interrupted {
        let kept = match &args.out {
            Some(out) => format!("the table above and {}", out.display()),
            None => "the table above".into(),
        };
        return Err(CliError::interrupted(format!(
            "interrupted after {scored} of {} items; {kept} hold the results so far",
            items.len
        )));
    }
    Ok(())
}

/// `--out FILE.json|FILE.csv`, checked before any work: the name, and that
/// its directory (created if missing) takes files.
fn check_out_file(out: &Path) -> CliResult<()> {
    match out.extension().and_then(|e| e.to_str()) {
        Some("json") | Some("csv") => {}
        _ => {
            return Err(CliError::usage(format!(
                "--out {}: use a .json or .csv file name",
                out.display()
            )))
        }
    }
    if out.is_dir() {
        return Err(CliError::usage(format!(
            "--out {}: is a directory; give a file name",
            out.display()
        )));
    }
    match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => crate::explain::prepare_out_dir(dir),
        _ => crate::explain::prepare_out_dir(Path::new(".")),
    }
}

/// A flag Ctrl-C sets (a second Ctrl-C ends the program at once).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        crate::stdio::warn(&format!("Ctrl-C cannot keep partial results ({e})"));
    }
    flag
}

fn internal(e: impl std::fmt::Display) -> CliError {
    CliError::internal(e.to_string())
}

const COLUMNS: [(Metric, &str); 6] = [
    (Metric::PointingGame, "pointing"),
    (Metric::Miou, "mIoU"),
    (Metric::Ap, "AP"),
    (Metric::NpplAucMostFirst, "nPPL most↑"),
    (Metric::NpplAucLeastFirst, "nPPL least↓"),
    (Metric::NpplAucRandom, "nPPL random"),
];

fn value(m: &MetricMeans, metric: Metric) -> Option<f64> {
    match metric {
        Metric::PointingGame => m.pointing_game,
        Metric::Miou => m.miou,
        Metric::Ap => m.ap,
        Metric::NpplAucMostFirst => m.nppl_auc_most_first,
        Metric::NpplAucLeastFirst => m.nppl_auc_least_first,
        Metric::NpplAucRandom => m.nppl_auc_random,
    }
}

fn print_table(doc: &EvalJson, order: &[String]) -> CliResult<()> {
    let d = &doc.data;
    outln!(
        "{} items from {} ({} skipped), layers {:?}",
        d.items,
        d.source,
        d.skipped,
        d.layers_used
    )?;
    out!("{:<18}", "strategy")?;
    for (_, h) in COLUMNS {
        out!(" {h:>12}")?;
    }
    outln!(" {:>7} {:>9}", "words", "sentences")?;
    for name in order {
        let Some(s) = doc.strategies.get(name) else {
            continue;
        };
        out!("{name:<18}")?;
        for (m, _) in COLUMNS {
            match value(&s.metrics, m) {
                Some(v) => out!(" {v:>12.4}")?,
                None => out!(" {:>12}", "-")?,
            }
        }
        outln!(" {:>7} {:>9}", s.metrics.count, s.sentence.count)?;
    }
    outln!("object-word pointing / mIoU / AP; sentence-level nPPL areas (most-relevant-first: higher is better; least-first: lower is better)")
}

fn to_csv(doc: &EvalJson) -> String {
    let mut out = String::from("strategy,level,metric,value,count\n");
    for (name, s) in &doc.strategies {
        for (level, m) in [("word", &s.metrics), ("sentence", &s.sentence)] {
            for metric in Metric::ALL {
                if let Some(v) = value(m, metric) {
                    out.push_str(&format!(
                        "{name},{level},{},{v},{}\n",
                        metric.key(),
                        m.count
                    ));
                }
            }
        }
    }
    out
}
