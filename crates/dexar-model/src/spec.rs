//! Naming a model: the demo model bundled with dexar, a checkpoint directory,
//! or a Hugging Face id found in the local Hugging Face cache. Every front
//! end parses `--model` into a [`ModelSpec`] and loads it the same way.
//! dexar never downloads anything itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::checkpoint::{Checkpoint, MemoryCheckpoint};
use crate::error::{ModelError, Result};
use crate::options::LoadOptions;

/// Which model to load. It displays as users name it (`bundled`, a path,
/// `ORG/NAME@REV`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelSpec {
    /// The demo model compiled into dexar (`bundled`, `toy` or no `--model`).
    #[default]
    Bundled,
    /// A checkpoint directory.
    Dir(PathBuf),
    /// `ORG/NAME[@REVISION]`: a directory of that relative path if one
    /// exists, else the snapshot in the local Hugging Face cache.
    HfId {
        org: String,
        name: String,
        revision: Option<String>,
    },
}

/// The names of the bundled model a spec may use.
pub const BUNDLED_NAMES: [&str; 3] = ["bundled", "toy", "bundled:toy"];

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ModelError::Input(
                "empty model name; give a checkpoint directory, a Hugging Face id ORG/NAME or `bundled`".into(),
            ));
        }
        if BUNDLED_NAMES.contains(&s) {
            return Ok(Self::Bundled);
        }
        if !s.starts_with(['.', '/', '~']) {
            if let Some((org, name, revision)) = parse_hf_id(s) {
                return Ok(Self::HfId {
                    org: org.into(),
                    name: name.into(),
                    revision: revision.map(str::to_string),
                });
            }
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled => f.write_str("bundled"),
            Self::Dir(d) => write!(f, "{}", d.display()),
            Self::HfId {
                org,
                name,
                revision,
            } => {
                write!(f, "{org}/{name}")?;
                match revision {
                    Some(r) => write!(f, "@{r}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Where a spec points once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Bundled,
    Dir(PathBuf),
}

/// The environment the Hugging Face cache is found from (a value, so tests
/// can point it at a temporary cache).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    pub hf_hub_cache: Option<PathBuf>,
    pub hf_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl HubEnv {
    /// `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME` and `HOME` of this process.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            hf_hub_cache: var("HF_HUB_CACHE"),
            hf_home: var("HF_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
        }
    }

    /// The hub cache directories to search, in huggingface_hub's order of
    /// precedence (`HF_HUB_CACHE`, `HF_HOME/hub`, the XDG cache, then
    /// `~/.cache/huggingface/hub`), without repeats.
    pub fn cache_dirs(&self) -> Vec<PathBuf> {
        let candidates = [
            self.hf_hub_cache.clone(),
            self.hf_home.as_ref().map(|h| h.join("hub")),
            self.xdg_cache_home
                .as_ref()
                .map(|c| c.join("huggingface").join("hub")),
            self.home
                .as_ref()
                .map(|h| h.join(".cache").join("huggingface").join("hub")),
        ];
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in candidates.into_iter().flatten() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }
}

impl ModelSpec {
    /// Finds the model: the bundled one, a directory, or the snapshot of a
    /// Hugging Face id in the first cache directory of `env` that has it.
    pub fn resolve(&self, env: &HubEnv) -> Result<ModelSource> {
        match self {
            Self::Bundled => Ok(ModelSource::Bundled),
            Self::Dir(d) if d.is_dir() => Ok(ModelSource::Dir(d.clone())),
            Self::Dir(d) => Err(ModelError::Input(format!(
                "model directory {} does not exist (give a checkpoint directory as published on the Hugging Face Hub, LLaVA or Qwen-VL, a Hugging Face id like llava-hf/llava-1.5-7b-hf or Qwen/Qwen2-VL-2B-Instruct, or `bundled`)",
                d.display()
            ))),
            Self::HfId {
                org,
                name,
                revision,
            } => {
                let as_path = Path::new(org).join(name);
                if revision.is_none() && as_path.is_dir() {
                    return Ok(ModelSource::Dir(as_path));
                }
                resolve_in_cache(org, name, revision.as_deref(), &env.cache_dirs())
                    .map(ModelSource::Dir)
            }
        }
    }

    /// Resolves and loads the model; `bundled` provides the bundled model's
    /// files when the spec names it.
    pub fn load(
        &self,
        opts: &LoadOptions,
        bundled: impl FnOnce() -> MemoryCheckpoint<'static>,
    ) -> Result<Checkpoint> {
        match self.resolve(&HubEnv::from_process())? {
            ModelSource::Bundled => Checkpoint::from_memory(&bundled(), opts),
            ModelSource::Dir(dir) => Checkpoint::load(&dir, opts),
        }
    }
}

/// The snapshot directory of `org/name` at `revision` (a ref name such as
/// `main`, whose commit `refs/` records, or a commit hash) in the first of
/// `caches` that holds the repository.
fn resolve_in_cache(
    org: &str,
    name: &str,
    revision: Option<&str>,
    caches: &[PathBuf],
) -> Result<PathBuf> {
    let id = format!("{org}/{name}");
    let download = format!(
        "download it first with `huggingface-cli download {id}` (dexar does not use the network)"
    );
    let repo_name = format!("models--{org}--{name}");
    let Some(repo) = caches
        .iter()
        .map(|c| c.join(&repo_name))
        .find(|r| r.is_dir())
    else {
        let searched = if caches.is_empty() {
            "no cache directory: set HF_HOME or HOME".to_string()
        } else {
            let list: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
            format!("searched {}", list.join(", "))
        };
        return Err(ModelError::Input(format!(
            "{id} is not a directory and not in the local Hugging Face cache ({searched}); {download}"
        )));
    };
    let snapshots = repo.join("snapshots");
    let rev = revision.unwrap_or("main");
    // A ref name (refs/main) holds a commit hash; otherwise take it as the hash.
    let commit = match std::fs::read_to_string(repo.join("refs").join(rev)) {
        Ok(hash) => hash.trim().to_string(),
        Err(_) if snapshots.join(rev).is_dir() => rev.to_string(),
        Err(_) if revision.is_none() => only_snapshot(&snapshots).ok_or_else(|| {
            ModelError::Input(format!(
                "{id}: the Hugging Face cache {} has no refs/main and not exactly one snapshot; name a revision as {id}@HASH",
                repo.display()
            ))
        })?,
        Err(_) => {
            return Err(ModelError::Input(format!(
                "{id}: revision {rev} is not in the Hugging Face cache {}; {download}",
                repo.display()
            )))
        }
    };
    let dir = snapshots.join(&commit);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(ModelError::Input(format!(
            "{id}: the cached snapshot {} is missing (an interrupted download?); {download}",
            dir.display()
        )))
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

fn only_snapshot(snapshots: &Path) -> Option<String> {
    let entries: Vec<String> = std::fs::read_dir(snapshots)
        .ok()?
        .filter_map(std::result::Result::ok)
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

    /// A fake cache under `root/hub` with `llava-hf/tiny_1.5` at commit
    /// `abc` (refs/main) and `def`.
    fn cache() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("hub/models--llava-hf--tiny_1.5");
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/def")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        root
    }

    fn hf_home(root: &Path) -> HubEnv {
        HubEnv {
            hf_home: Some(root.to_path_buf()),
            ..HubEnv::default()
        }
    }

    fn resolve(spec: &str, env: &HubEnv) -> Result<PathBuf> {
        match spec.parse::<ModelSpec>()?.resolve(env)? {
            ModelSource::Dir(d) => Ok(d),
            ModelSource::Bundled => panic!("{spec} is not bundled"),
        }
    }

    #[test]
    fn parses_the_three_kinds() {
        for s in ["bundled", "toy", " bundled:toy "] {
            assert_eq!(s.parse::<ModelSpec>().unwrap(), ModelSpec::Bundled);
        }
        assert_eq!(
            "llava-hf/llava-1.5-7b-hf@v2".parse::<ModelSpec>().unwrap(),
            ModelSpec::HfId {
                org: "llava-hf".into(),
                name: "llava-1.5-7b-hf".into(),
                revision: Some("v2".into())
            }
        );
        for dir in ["./org/name", "/abs/model", "a/b/c", "model-dir", "~/m"] {
            assert_eq!(
                dir.parse::<ModelSpec>().unwrap(),
                ModelSpec::Dir(PathBuf::from(dir))
            );
        }
        assert!(matches!(
            " ".parse::<ModelSpec>(),
            Err(ModelError::Input(_))
        ));
        for s in ["bundled", "org/name@v1", "some/dir/x"] {
            assert_eq!(s.parse::<ModelSpec>().unwrap().to_string(), s);
        }
        assert_eq!(ModelSpec::default(), ModelSpec::Bundled);
        assert_eq!(
            ModelSpec::Bundled.resolve(&HubEnv::default()).unwrap(),
            ModelSource::Bundled
        );
    }

    #[test]
    fn resolves_ids_from_hf_home() {
        let root = cache();
        let env = hf_home(root.path());
        let snap = |c: &str| {
            root.path()
                .join("hub/models--llava-hf--tiny_1.5/snapshots")
                .join(c)
        };
        assert_eq!(resolve("llava-hf/tiny_1.5", &env).unwrap(), snap("abc"));
        assert_eq!(resolve("llava-hf/tiny_1.5@def", &env).unwrap(), snap("def"));
        let e = resolve("llava-hf/tiny_1.5@zzz", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("revision zzz"), "{e}");
        let e = resolve("llava-hf/llava-1.5-7b-hf", &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("huggingface-cli download llava-hf/llava-1.5-7b-hf"),
            "{e}"
        );
        assert!(
            e.contains(&format!("searched {}", root.path().join("hub").display())),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn searches_every_cache_directory_in_order() {
        let root = cache();
        let home = tempfile::tempdir().unwrap();
        let hub = home.path().join(".cache/huggingface");
        std::fs::create_dir_all(&hub).unwrap();
        std::fs::rename(root.path().join("hub"), hub.join("hub")).unwrap();
        // HF_HOME is set but empty; the model is found under ~/.cache.
        let env = HubEnv {
            hf_home: Some(root.path().to_path_buf()),
            home: Some(home.path().to_path_buf()),
            ..HubEnv::default()
        };
        let got = resolve("llava-hf/tiny_1.5", &env).unwrap();
        assert!(got.ends_with("snapshots/abc"), "{got:?}");
        let all = HubEnv {
            hf_hub_cache: Some("/hub-cache".into()),
            hf_home: Some("/hf-home".into()),
            xdg_cache_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            all.cache_dirs(),
            [
                PathBuf::from("/hub-cache"),
                "/hf-home/hub".into(),
                "/xdg/huggingface/hub".into(),
                "/home/u/.cache/huggingface/hub".into()
            ]
        );
        let e = resolve("llava-hf/other", &all).unwrap_err().to_string();
        assert!(
            e.contains("searched /hub-cache, /hf-home/hub, /xdg/huggingface/hub, /home/u/.cache/huggingface/hub"),
            "{e}"
        );
        let e = resolve("llava-hf/other", &HubEnv::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cache directory"), "{e}");
    }

    #[test]
    fn single_snapshot_without_refs() {
        let root = cache();
        let repo = root.path().join("hub/models--llava-hf--tiny_1.5");
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        let env = hf_home(root.path());
        assert!(resolve("llava-hf/tiny_1.5", &env)
            .unwrap_err()
            .to_string()
            .contains("not exactly one snapshot"));
        std::fs::remove_dir(repo.join("snapshots/def")).unwrap();
        assert_eq!(
            resolve("llava-hf/tiny_1.5", &env).unwrap(),
            repo.join("snapshots/abc")
        );
    }

    #[test]
    fn directories_and_non_ids() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let none = HubEnv::default();
        assert_eq!(resolve(&d, &none).unwrap(), dir.path().to_path_buf());
        let e = resolve("./no/such/dir", &none).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(parse_hf_id("a/b/c"), None);
        assert_eq!(parse_hf_id("/abs"), None);
        assert_eq!(
            parse_hf_id("org/name@v1"),
            Some(("org", "name", Some("v1")))
        );
    }
}
