//! `--model` / `/model`: a checkpoint directory, or a Hugging Face id found
//! in the local Hugging Face cache. dexar never downloads anything itself.

use std::path::{Path, PathBuf};

/// Where a model spec points: a directory as given, or the snapshot of a
/// Hugging Face id (`ORG/NAME`, optionally `ORG/NAME@REVISION`) in the cache.
///
/// `env` reads environment variables (`HF_HUB_CACHE`, `HF_HOME`,
/// `XDG_CACHE_HOME`) and `home` is the user's home directory; both are
/// parameters so tests can point them at a temporary cache.
pub fn resolve_model(
    spec: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<PathBuf, String> {
    let spec = spec.trim();
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    let Some((org, name, revision)) = parse_hf_id(spec) else {
        return Err(format!(
            "model directory {spec} does not exist (give a llava-hf checkpoint directory or a Hugging Face id like llava-hf/llava-1.5-7b-hf)"
        ));
    };
    let download = format!(
        "download it first with `huggingface-cli download {org}/{name}` (dexar does not use the network)"
    );
    let Some(cache) = hub_cache(env, home) else {
        return Err(format!(
            "{spec} is not a directory and no Hugging Face cache was found (set HF_HOME); {download}"
        ));
    };
    let repo = cache.join(format!("models--{org}--{name}"));
    if !repo.is_dir() {
        return Err(format!(
            "{spec} is not in the Hugging Face cache {}; {download}",
            cache.display()
        ));
    }
    let snapshots = repo.join("snapshots");
    let revision = revision.unwrap_or("main");
    // A ref name (refs/main) holds a commit hash; otherwise take it as the hash.
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(hash) => hash.trim().to_string(),
        Err(_) if snapshots.join(revision).is_dir() => revision.to_string(),
        Err(_) if revision == "main" => only_snapshot(&snapshots).ok_or_else(|| {
            format!(
                "{spec}: the Hugging Face cache {} has no refs/main and not exactly one snapshot; give a revision as {org}/{name}@HASH",
                repo.display()
            )
        })?,
        Err(_) => {
            return Err(format!(
                "{spec}: revision {revision} is not in the Hugging Face cache {}; {download}",
                repo.display()
            ))
        }
    };
    let dir = snapshots.join(&commit);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "{spec}: the cached snapshot {} is missing (an interrupted download?); {download}",
            dir.display()
        ))
    }
}

/// `ORG/NAME[@REV]` with Hugging Face's allowed characters, else `None`.
fn parse_hf_id(spec: &str) -> Option<(&str, &str, Option<&str>)> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) if !rev.is_empty() && !rev.contains('/') => (id, Some(rev)),
        Some(_) => return None,
        None => (spec, None),
    };
    let (org, name) = id.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (ok(org) && ok(name)).then_some((org, name, revision))
}

/// The hub cache directory, as huggingface_hub picks it.
fn hub_cache(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| home.map(|h| h.join(".cache").join("huggingface").join("hub")))
}

fn only_snapshot(snapshots: &Path) -> Option<String> {
    let entries: Vec<String> = std::fs::read_dir(snapshots)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match entries.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cache with `org/name` at commit `abc` (refs/main) and `def`.
    fn cache() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("hub/models--llava-hf--tiny_1.5");
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/def")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        root
    }

    #[test]
    fn resolves_ids_from_hf_home() {
        let root = cache();
        let hf_home = root.path().to_string_lossy().into_owned();
        let env = |k: &str| (k == "HF_HOME").then(|| hf_home.clone());
        let snap = |c: &str| {
            root.path()
                .join("hub/models--llava-hf--tiny_1.5/snapshots")
                .join(c)
        };
        assert_eq!(
            resolve_model("llava-hf/tiny_1.5", &env, None),
            Ok(snap("abc"))
        );
        assert_eq!(
            resolve_model("llava-hf/tiny_1.5@def", &env, None),
            Ok(snap("def"))
        );
        let e = resolve_model("llava-hf/tiny_1.5@zzz", &env, None).unwrap_err();
        assert!(e.contains("revision zzz"), "{e}");
        let e = resolve_model("llava-hf/llava-1.5-7b-hf", &env, None).unwrap_err();
        assert!(
            e.contains("huggingface-cli download llava-hf/llava-1.5-7b-hf"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn hub_cache_precedence_and_home_default() {
        let root = cache();
        let home = tempfile::tempdir().unwrap();
        let hub = home.path().join(".cache/huggingface");
        std::fs::create_dir_all(&hub).unwrap();
        std::fs::rename(root.path().join("hub"), hub.join("hub")).unwrap();
        let none = |_: &str| None;
        let got = resolve_model("llava-hf/tiny_1.5", &none, Some(home.path())).unwrap();
        assert!(got.ends_with("snapshots/abc"), "{got:?}");
        let env = |k: &str| match k {
            "HF_HUB_CACHE" => Some("/hub-cache".to_string()),
            "HF_HOME" => Some("/hf-home".to_string()),
            _ => None,
        };
        assert_eq!(hub_cache(&env, None), Some(PathBuf::from("/hub-cache")));
        let xdg = |k: &str| (k == "XDG_CACHE_HOME").then(|| "/xdg".to_string());
        assert_eq!(
            hub_cache(&xdg, None),
            Some(PathBuf::from("/xdg/huggingface/hub"))
        );
    }

    #[test]
    fn single_snapshot_without_refs() {
        let root = cache();
        let repo = root.path().join("hub/models--llava-hf--tiny_1.5");
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        let hf_home = root.path().to_string_lossy().into_owned();
        let env = |k: &str| (k == "HF_HOME").then(|| hf_home.clone());
        assert!(resolve_model("llava-hf/tiny_1.5", &env, None)
            .unwrap_err()
            .contains("not exactly one snapshot"));
        std::fs::remove_dir(repo.join("snapshots/def")).unwrap();
        assert_eq!(
            resolve_model("llava-hf/tiny_1.5", &env, None),
            Ok(repo.join("snapshots/abc"))
        );
    }

    #[test]
    fn directories_and_non_ids() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let d = dir.path().to_string_lossy().into_owned();
        assert_eq!(resolve_model(&d, &none, None), Ok(dir.path().to_path_buf()));
        let e = resolve_model("./no/such/dir", &none, None).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(parse_hf_id("a/b/c"), None);
        assert_eq!(parse_hf_id("/abs"), None);
        assert_eq!(
            parse_hf_id("org/name@v1"),
            Some(("org", "name", Some("v1")))
        );
    }
}
