//! A probe's result as a small table, the same in the REPL (`/probe N`) and
//! the TUI (`p`).

use dexar_session::Probe;

/// The table's lines, without colour, at most 47 columns wide but the first
/// and last.
pub fn probe_lines(probe: &Probe) -> Vec<String> {
    let o = probe.original;
    let token = format!("{:?}", probe.token_text);
    let mut lines = vec![
        format!(
            "probe of token {} {token}: the {} map's top patches removed (set to the image mean), the answer re-scored",
            probe.token, probe.map_label
        ),
        format!(
            "{:<11}{:>8}{:>8}  {:>9}{:>9}",
            "removed", "p map", "p rand", "PPL map", "PPL rand"
        ),
        format!(
            "{:<11}{:>8.4}{:>8}  {:>9.3}{:>9}",
            "nothing", o.token_prob, "", o.perplexity, ""
        ),
    ];
    for row in &probe.rows {
        lines.push(format!(
            "{:<11}{:>8.4}{:>8.4}  {:>9.3}{:>9.3}",
            format!("{:.0} % {}", row.fraction * 100.0, row.cells),
            row.by_map.token_prob,
            row.random.token_prob,
            row.by_map.perplexity,
            row.random.perplexity
        ));
    }
    lines.push(format!(
        "p: probability of {token}; PPL: the answer's perplexity; rand: as many random patches (seed {}). A faithful map lowers p and raises PPL more than random patches do.",
        probe.seed
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_session::{ProbeRow, Rescored};

    #[test]
    fn one_row_per_fraction_under_the_original() {
        let r = |p, ppl| Rescored {
            token_prob: p,
            perplexity: ppl,
        };
        let probe = Probe {
            token: 2,
            token_text: " red".into(),
            map_label: "dexar".into(),
            original: r(0.9, 1.5),
            rows: vec![ProbeRow {
                fraction: 0.1,
                cells: 57,
                by_map: r(0.25, 3.0),
                random: r(0.875, 1.625),
            }],
            seed: 2,
        };
        let lines = probe_lines(&probe);
        assert!(lines[0].starts_with("probe of token 2 \" red\": the dexar map's top patches"));
        assert!(lines[2].contains("nothing") && lines[2].contains("0.9000"));
        let row = &lines[3];
        assert!(row.starts_with("10 % 57 ") && row.len() <= 47, "{row}");
        for v in ["0.2500", "0.8750", "3.000", "1.625"] {
            assert!(row.contains(v), "{row}");
        }
        assert_eq!(lines.len(), 5);
    }
}
