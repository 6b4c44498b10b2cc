//! The files `dexar explain` owns in its `--out` directory: `explain.json`
//! and, per strategy, `NAME/token_NNN.png` and `NAME/sentence.png` (and
//! `.global.png` twins for images split into regions). A new
//! run first removes the overlays an earlier run wrote there, so no map of an
//! earlier answer stays beside the new `explain.json`; files it does not own
//! stay untouched.

use std::collections::BTreeSet;
use std::path::Path;

/// Removes the overlays of the strategies listed in an earlier
/// `explain.json` in `out` and of `names` (those about to be written), then
/// their directories if left empty. Returns how many files were removed.
pub fn remove_previous_overlays(out: &Path, names: &[&str]) -> std::io::Result<usize> {
    let mut strategies: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    strategies.extend(previous_strategies(out));
    let mut removed = 0;
    for name in strategies {
        if !dexar_plugin::sdk::is_valid_name(&name) {
            continue;
        }
        let dir = out.join(&name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            if entry.file_type()?.is_file() && file.to_str().is_some_and(is_overlay_name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        // Only succeeds when nothing else is in there.
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(removed)
}

/// The strategy names of an earlier run's `explain.json`, if it reads.
fn previous_strategies(out: &Path) -> Vec<String> {
    let Ok(text) = dexar_core::read_regular_to_string(
        &out.join("explain.json"),
        dexar_core::files::MAX_TEXT_FILE,
    ) else {
        return Vec::new();
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("strategies")?
                .as_object()
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// `token_NNN.png` (three or more digits) or `sentence.png`, or the global
/// view's `token_NNN.global.png` / `sentence.global.png`.
fn is_overlay_name(name: &str) -> bool {
    let name = name.replace(".global.png", ".png");
    if name == "sentence.png" {
        return true;
    }
    name.strip_prefix("token_")
        .and_then(|rest| rest.strip_suffix(".png"))
        .is_some_and(|digits| digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_overlays_it_owns() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path();
        std::fs::write(
            o.join("explain.json"),
            r#"{"strategies": {"old-plugin": {}, "../escape": {}}}"#,
        )
        .unwrap();
        for dir in ["old-plugin", "dexar", "notes"] {
            std::fs::create_dir(o.join(dir)).unwrap();
        }
        for f in [
            "old-plugin/token_000.png",
            "old-plugin/sentence.png",
            "dexar/token_012.png",
            "dexar/token_1234.png",
            "dexar/mine.png",
            "notes/token_000.png",
        ] {
            std::fs::write(o.join(f), b"x").unwrap();
        }
        assert_eq!(remove_previous_overlays(o, &["dexar"]).unwrap(), 4);
        assert!(!o.join("old-plugin").exists(), "emptied and removed");
        assert!(o.join("dexar/mine.png").exists(), "not an overlay name");
        assert!(!o.join("dexar/token_012.png").exists());
        assert!(
            o.join("notes/token_000.png").exists(),
            "not a strategy of ours"
        );
        assert!(is_overlay_name("token_000.png") && !is_overlay_name("token_00.png"));
    }
}
