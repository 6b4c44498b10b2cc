//! `dexar export FILE --html OUT.html`: a recorded session as one
//! self-contained web page (dexar-render's [`session_html`]), its maps
//! computed here from the recorded traces, with no model.

use clap::Args;
use dexar_core::{StepTrace, TokenMap, BUILTIN_NAMES};
use dexar_render::{session_html, Colormap, HtmlConversation, HtmlMaps, HtmlSession, HtmlTurn};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::args::{LayerArgs, PluginArgs, TopkArgs};
use crate::error::{CliError, CliResult};
use crate::sessions::open_session;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A session file (`dexar sessions` lists the recorded ones).
    #[arg(value_name = "FILE")]
    pub session: PathBuf,
    /// The page to write: one HTML file with everything inlined.
    #[arg(long, value_name = "OUT.html")]
    pub html: PathBuf,
    /// Strategy the page can switch to (repeatable); dexar and
    /// dexar-unfiltered are always included. Default: every built-in.
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<String>,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub topk: TopkArgs,
}

pub fn run(args: &ExportArgs) -> CliResult<()> {
    let topk = args.topk.validated()?;
    let registry = args.plugins.load()?;
    let strategies = crate::strategies::select(&args.strategies, topk, &registry)?;
    let session = open_session(&args.session)?;
    let id = &session.header.model;
    let selection = args.layers.selection();
    let mut failed: Vec<String> = Vec::new();
    let mut conversations = Vec::new();
    for conv in &session.conversations {
        let mut turns = Vec::new();
        for &i in &conv.turns {
            let turn = &session.turns[i];
            if turn.steps.is_empty() {
                continue;
            }
            let traces: Vec<StepTrace> = turn
                .steps
                .iter()
                .map(|t| selection.restrict(t, id.num_layers))
                .collect();
            let mut maps = BTreeMap::new();
            for s in &strategies {
                let result = traces
                    .iter()
                    .map(|t| s.token_map(t))
                    .collect::<Result<Vec<TokenMap>, _>>()
                    .and_then(|m| s.sentence_map(&m).map(|sentence| (m, sentence)));
                match result {
                    Ok((m, sentence)) => {
                        maps.insert(
                            s.name().to_string(),
                            HtmlMaps {
                                tokens: m.iter().map(TokenMap::normalized).collect(),
                                weights: m.iter().map(|m| m.weight).collect(),
                                sentence,
                            },
                        );
                    }
                    // A failing plugin is left out of the page; the others go on.
                    Err(e) if !BUILTIN_NAMES.contains(&s.name()) => {
                        if !failed.contains(&s.name().to_string()) {
                            crate::stdio::warn(&format!(
                                "leaving out strategy `{}`: {e}",
                                s.name()
                            ));
                            failed.push(s.name().to_string());
                        }
                    }
                    Err(e) => return Err(CliError::internal(e.to_string())),
                }
            }
            turns.push(HtmlTurn {
                number: turn.record.turn,
                question: turn.record.question.clone(),
                target: turn.record.target.clone(),
                stop: turn.stop_name(),
                tokens: turn.steps.iter().map(|t| t.token_text.clone()).collect(),
                maps,
            });
        }
        conversations.push(HtmlConversation {
            label: conv.image.label.clone(),
            view: dexar_session::image::enlarged(&conv.image.model_view),
            grid: conv.image.grid,
            turns,
        });
    }
    let page = HtmlSession {
        title: format!(
            "dexar session {}",
            args.session
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        model: format!(
            "{} ({}, {} layers × {} heads, {})",
            id.label,
            id.text_model_type,
            id.num_layers,
            id.num_heads,
            dexar_core::layers::describe(&selection.layers(id.num_layers))
        ),
        created: session.header.created.clone(),
        strategies: strategies
            .iter()
            .map(|s| s.name().to_string())
            .filter(|n| !failed.contains(n))
            .collect(),
        conversations,
    };
    let html = session_html(&page, Colormap::Inferno, 0.6)
        .map_err(|e| CliError::internal(e.to_string()))?;
    dexar_core::write_atomic(&args.html, html.as_bytes()).map_err(|e| {
        CliError::usage(format!(
            "--html {}: cannot write it ({e})",
            args.html.display()
        ))
    })?;
    let turns: usize = page.conversations.iter().map(|c| c.turns.len()).sum();
    outln!(
        "wrote {} ({} turns, {} strategies, {:.1} KB)",
        args.html.display(),
        turns,
        page.strategies.len(),
        html.len() as f64 / 1024.0
    )
}
