//! `dexar eval`: attribution quality over a data set, per strategy, as a
//! table and as JSON (`dexar.eval/1`) or CSV.

mod data;
mod score;

use clap::Args;
use dexar_core::metrics::{Metric, MetricMeans, MetricSums};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
        match out.extension().and_then(|e| e.to_str()) {
            Some("json") | Some("csv") => {}
            _ => {
                return Err(CliError::usage(format!(
                    "--out {}: use a .json or .csv file name",
                    out.display()
                )))
            }
        }
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
    let ckpt = &model.ckpt;
    let loaded = data::load(&source)?;
    for s in &loaded.skipped {
        eprintln!("warning: skipped {s}");
    }
    let layers = args.layers.selection().layers(model.num_layers());
    let scorer = score::Scorer {
        ckpt,
        strategies: &strategies,
        layers: layers.clone(),
        max_tokens: args.max_tokens,
        perturb: !args.no_perturbation,
        seed: args.seed,
    };
    let bar = crate::progress::bar(loaded.items.len() as u64, "items");
    let mut word_sums: Vec<MetricSums> = strategies.iter().map(|_| MetricSums::new()).collect();
    let mut sentence_sums: Vec<MetricSums> = strategies.iter().map(|_| MetricSums::new()).collect();
    let mut skipped = loaded.skipped.clone();
    let mut unmatched = 0;
    let mut scored = 0;
    for (i, item) in loaded.items.iter().enumerate() {
        match scorer.score(item, i as u64) {
            Ok(scores) => {
                scored += 1;
                unmatched += scores.unmatched_words;
                for (k, s) in scores.per_strategy.iter().enumerate() {
                    for w in &s.words {
                        word_sums[k]
                            .add(w)
                            .map_err(|e| CliError::internal(e.to_string()))?;
                    }
                    sentence_sums[k]
                        .add(&s.sentence)
                        .map_err(|e| CliError::internal(e.to_string()))?;
                }
                bar.set_message(scores.answer);
            }
            Err(e) if e.code == 2 => {
                bar.suspend(|| eprintln!("warning: skipped {}: {}", item.id, e.message));
                skipped.push(format!("{}: {}", item.id, e.message));
            }
            Err(e) => return Err(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut results = BTreeMap::new();
    for (k, s) in strategies.iter().enumerate() {
        let mut metrics = word_sums[k].means();
        let sentence = sentence_sums[k].means();
        metrics.nppl_auc_most_first = sentence.nppl_auc_most_first;
        metrics.nppl_auc_least_first = sentence.nppl_auc_least_first;
        metrics.nppl_auc_random = sentence.nppl_auc_random;
        results.insert(s.name().to_string(), StrategyJson { metrics, sentence });
    }
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
        },
        strategies: results,
    };
    print_table(
        &doc,
        &strategies
            .iter()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>(),
    );
    if let Some(out) = &args.out {
        let bytes = if out.extension().is_some_and(|e| e == "csv") {
            to_csv(&doc).into_bytes()
        } else {
            serde_json::to_vec_pretty(&doc).map_err(|e| CliError::internal(e.to_string()))?
        };
        dexar_core::write_atomic(out, &bytes)
            .map_err(|e| CliError::usage(format!("--out {}: cannot write ({e})", out.display())))?;
    }
    Ok(())
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

fn print_table(doc: &EvalJson, order: &[String]) {
    let d = &doc.data;
    println!(
        "{} items from {} ({} skipped), layers {:?}",
        d.items, d.source, d.skipped, d.layers_used
    );
    print!("{:<18}", "strategy");
    for (_, h) in COLUMNS {
        print!(" {h:>12}");
    }
    println!(" {:>7} {:>9}", "words", "sentences");
    for name in order {
        let Some(s) = doc.strategies.get(name) else {
            continue;
        };
        print!("{name:<18}");
        for (m, _) in COLUMNS {
            match value(&s.metrics, m) {
                Some(v) => print!(" {v:>12.4}"),
                None => print!(" {:>12}", "-"),
            }
        }
        println!(" {:>7} {:>9}", s.metrics.count, s.sentence.count);
    }
    println!("object-word pointing / mIoU / AP; sentence-level nPPL areas (most-relevant-first: higher is better; least-first: lower is better)");
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
