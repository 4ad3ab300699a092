//! Backups of the hosts' declared data: one encrypted, deduplicating restic
//! repository per site under `<state>/backups/<site>/repo`, each snapshot a
//! host's data as one tar stream, tagged with site, host, the generation
//! that was live and the deploy that took it. An index beside the repository
//! keeps each snapshot's size and added bytes, and tells `sov gc` which
//! generations backups still need.

pub mod restic;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::settings::Retention;
use crate::model::{HostName, SiteName};
use crate::secrets::{SecretError, Vault};
pub use restic::Restic;

/// The secret that opens a site's repository (generated on first use).
const PASSWORD_SECRET: &str = "backup-password";

/// The name of the secret that opens a site's repository.
pub fn password_secret() -> HostName {
    HostName::try_from(PASSWORD_SECRET.to_string()).expect("backup-password is a valid name")
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("restic is needed for backups: install Debian's `restic` package")]
    NoRestic,
    #[error(
        "the backup repository's password is wrong: the secret `backup-password` does not open it"
    )]
    WrongPassword,
    #[error("restic could not {what}: {message}")]
    Restic { what: &'static str, message: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("no backup `{id}` in site {site}{hint}")]
    UnknownBackup {
        site: String,
        id: String,
        hint: String,
    },
    #[error("site {0} has no backups yet")]
    NoBackups(String),
    #[error("backup {id} belongs to generation {generation} of site {site}, which the store no longer has: nothing was touched")]
    LostGeneration {
        site: String,
        id: String,
        generation: u64,
    },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BackupError {
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            BackupError::UnknownBackup { .. } | BackupError::NoBackups(_)
        ) || matches!(self, BackupError::Secret(e) if e.is_input())
    }
}

/// What a snapshot is of, as its tags say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    pub site: String,
    pub host: String,
    /// The site generation that was live on the host.
    pub generation: u64,
    /// The deploy (or `sov backup` run) that took it.
    pub deploy: String,
}

impl Tags {
    pub fn site_tag(site: &str) -> String {
        format!("site={site}")
    }

    pub fn to_restic(&self) -> Vec<String> {
        vec![
            Tags::site_tag(&self.site),
            format!("host={}", self.host),
            format!("generation={}", self.generation),
            format!("deploy={}", self.deploy),
        ]
    }

    /// The tags sov wrote, or None for a snapshot sov did not take.
    pub fn from_restic(tags: &[String]) -> Option<Tags> {
        let get = |key: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Tags {
            site: get("site")?,
            host: get("host")?,
            generation: get("generation")?.parse().ok()?,
            deploy: get("deploy")?,
        })
    }
}

/// One backup, as `sov backups` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// restic's snapshot id.
    pub id: String,
    pub short_id: String,
    /// When restic took it (RFC 3339).
    pub time: String,
    #[serde(flatten)]
    pub tags: Tags,
    /// Bytes of the host's data stream.
    pub size: Option<u64>,
    /// Bytes it added to the repository.
    pub added: Option<u64>,
}

/// What the index keeps of a backup sov took: restic lists the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// The id restic's summary gives (the short one).
    pub id: String,
    #[serde(flatten)]
    pub tags: Tags,
    pub size: u64,
    pub added: u64,
}

/// A site's repository, its password from the vault.
pub struct Repository {
    pub site: SiteName,
    pub restic: Restic,
    dir: PathBuf,
    /// Hosts backed up in parallel record into one index.
    index: std::sync::Mutex<()>,
    /// The snapshots as opening the repository listed them, for the first
    /// `list` (a backup or a forget makes it stale).
    listed: std::sync::Mutex<Option<Vec<restic::ResticSnapshot>>>,
}

impl Repository {
    /// Opens (creating on first use) the repository of `site`; fails before
    /// anything else is done if restic is missing or the password is wrong.
    pub fn open(state: &Path, vault: &Vault, site: &SiteName) -> Result<Repository, BackupError> {
        restic::available()?;
        let (password, _) = vault.get_or_generate(site, &password_secret())?;
        let dir = site_dir(state, site.as_str());
        let restic = Restic::new(dir.join("repo"), password);
        let listed = restic.open_or_init(&Tags::site_tag(site.as_str()))?;
        Ok(Repository {
            site: site.clone(),
            restic,
            dir,
            index: std::sync::Mutex::new(()),
            listed: std::sync::Mutex::new(Some(listed)),
        })
    }

    /// Every backup of the site, oldest first.
    pub fn list(&self) -> Result<Vec<Backup>, BackupError> {
        let index = read_index(&self.dir)?;
        let listed = self.listed.lock().ok().and_then(|mut l| l.take());
        let snapshots = match listed {
            Some(s) => s,
            None => self.restic.snapshots(&Tags::site_tag(self.site.as_str()))?,
        };
        let mut backups: Vec<Backup> = snapshots
            .into_iter()
            .filter_map(|s| {
                let tags = Tags::from_restic(&s.tags)?;
                // restic's summary gives the short id.
                let known = index.iter().find(|b| s.id.starts_with(&b.id));
                Some(Backup {
                    size: known.map(|b| b.size),
                    added: known.map(|b| b.added),
                    id: s.id,
                    short_id: s.short_id,
                    time: s.time,
                    tags,
                })
            })
            .collect();
        backups.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(backups)
    }

    /// The backup `id` names (a prefix of a snapshot id), or the backups of
    /// the newest deploy when `id` is None.
    pub fn select(&self, id: Option<&str>) -> Result<Vec<Backup>, BackupError> {
        let all = self.list()?;
        let Some(id) = id else {
            let newest = all
                .last()
                .ok_or_else(|| BackupError::NoBackups(self.site.to_string()))?;
            let deploy = newest.tags.deploy.clone();
            return Ok(all
                .into_iter()
                .filter(|b| b.tags.deploy == deploy)
                .collect());
        };
        let found: Vec<Backup> = all.into_iter().filter(|b| b.id.starts_with(id)).collect();
        if found.len() == 1 {
            return Ok(found);
        }
        let hint = if found.is_empty() {
            self.other_site(id)
                .map(|site| format!(": it is a backup of site {site}"))
                .unwrap_or_else(|| format!(": see `sov backups {}`", self.site))
        } else {
            format!(
                ": `{id}` names {} backups, give more of the id",
                found.len()
            )
        };
        Err(BackupError::UnknownBackup {
            site: self.site.to_string(),
            id: id.to_string(),
            hint,
        })
    }

    /// The site whose index lists `id`, when it is another one.
    fn other_site(&self, id: &str) -> Option<String> {
        let backups = self.dir.parent()?;
        fs::read_dir(backups)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path() != self.dir)
            .find_map(|e| {
                read_index(&e.path())
                    .ok()?
                    .iter()
                    .find(|b| b.id.starts_with(id))
                    .map(|b| b.tags.site.clone())
            })
    }

    /// Records a new backup in the index.
    pub fn record(&self, backup: Taken) -> Result<(), BackupError> {
        self.forget_listing();
        let _guard = self.index.lock();
        let mut index = read_index(&self.dir)?;
        index.retain(|b| b.id != backup.id);
        index.push(backup);
        write_index(&self.dir, &index)
    }

    /// Applies the retention policy to each host's backups (restic forget
    /// and prune), then keeps the index to the snapshots that remain.
    pub fn forget(&self, policy: &Retention) -> Result<(), BackupError> {
        let keep = [
            ("--keep-last", policy.keep_last),
            ("--keep-daily", policy.keep_daily),
            ("--keep-weekly", policy.keep_weekly),
            ("--keep-monthly", policy.keep_monthly),
        ];
        let site_tag = Tags::site_tag(self.site.as_str());
        let mut args: Vec<String> = vec![
            "forget".into(),
            "--json".into(),
            "--tag".into(),
            site_tag,
            "--group-by".into(),
            "host".into(),
            "--prune".into(),
        ];
        for (flag, n) in keep {
            if n > 0 {
                args.push(flag.into());
                args.push(n.to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.forget_listing();
        let said = self.restic.run("forget old backups", &args)?;
        // What forget keeps is what remains; listing it again would cost
        // another run of restic.
        let live: BTreeSet<String> = match restic::kept(&said) {
            Some(kept) => kept,
            None => self.list()?.into_iter().map(|b| b.id).collect(),
        };
        let _guard = self.index.lock();
        let mut index = read_index(&self.dir)?;
        index.retain(|b| live.iter().any(|id| id.starts_with(&b.id)));
        write_index(&self.dir, &index)
    }

    fn forget_listing(&self) {
        if let Ok(mut listed) = self.listed.lock() {
            *listed = None;
        }
    }

    /// `restic check`, reading back `subset` of the data (`10%`).
    pub fn verify(&self, subset: &str) -> Result<String, BackupError> {
        let out = self.restic.run(
            "check the repository",
            &["check", &format!("--read-data-subset={subset}")],
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// A name for one deploy or backup run, for the `deploy=` tag: its UTC
/// start time and process id.
pub fn run_name(kind: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{kind}-{secs}-{}", std::process::id())
}

/// Generations that kept backups of `site` belong to: `sov gc` keeps them.
pub fn pinned_generations(state: &Path, site: &str) -> Result<BTreeSet<u64>, BackupError> {
    Ok(read_index(&site_dir(state, site))?
        .into_iter()
        .map(|b| b.tags.generation)
        .collect())
}

/// Where a site's backups live: `repo/` (restic's) and `index.json`.
fn site_dir(state: &Path, site: &str) -> PathBuf {
    state.join("backups").join(site)
}

fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.json")
}

fn read_index(dir: &Path) -> Result<Vec<Taken>, BackupError> {
    let path = index_path(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BackupError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(BackupError::Io { path, source }),
    }
}

/// Replaces the index atomically.
fn write_index(dir: &Path, index: &[Taken]) -> Result<(), BackupError> {
    let path = index_path(dir);
    let tmp = dir.join(format!(".index.{}.tmp", std::process::id()));
    let io = |source| BackupError::Io {
        path: path.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(index).unwrap_or_default();
    bytes.push(b'\n');
    fs::create_dir_all(dir).map_err(io)?;
    fs::write(&tmp, bytes).map_err(io)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::Tags;

    #[test]
    fn tags_round_trip_through_restic() {
        let tags = Tags {
            site: "fra1".into(),
            host: "www".into(),
            generation: 7,
            deploy: "deploy-20261121T190000Z-42".into(),
        };
        assert_eq!(Tags::from_restic(&tags.to_restic()), Some(tags));
        assert_eq!(Tags::from_restic(&["other".into()]), None);
    }
}
