//! Secrets on their way to a host: decrypted from the vault for the secrets
//! a generation's host manifest names, and sent as a tar on the agent's stdin
//! to the host's tmpfs. A value is never on a command line, in a report or
//! in a log line; a host's copy is compared by hash only.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::agent::{Agent, Call, STEP_TIMEOUT};
use super::ssh::{Connection, SshError};
use crate::build::manifest::HostManifest;
use crate::model::{HostName, SiteName};
use crate::pack::{self, Entry};
use crate::secrets::{SecretError, SecretValue, Vault};

/// One secret for one host.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub name: String,
    pub owner: String,
    value: Arc<SecretValue>,
    /// blake3 of the value, as the host's `b3sum` prints it.
    hash: String,
}

/// Whether a dry run may generate missing values (it may not: it writes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Generate,
    Skip,
}

/// The values of a site's secrets for one deploy: each decrypted, or
/// generated, once however many hosts need it (one `age` run each).
pub struct Values<'a> {
    vault: &'a Vault,
    site: &'a SiteName,
    missing: Missing,
    /// Name to the value and its blake3; None for one a dry run skips.
    known: BTreeMap<HostName, Option<(Arc<SecretValue>, String)>>,
}

impl<'a> Values<'a> {
    pub fn new(vault: &'a Vault, site: &'a SiteName, missing: Missing) -> Values<'a> {
        Values {
            vault,
            site,
            missing,
            known: BTreeMap::new(),
        }
    }

    /// The secrets `manifest` names, with their values; generated ones that
    /// have no value yet get one (stored encrypted) unless `missing` says skip.
    pub fn for_host(&mut self, manifest: &HostManifest) -> Result<Vec<Delivery>, SecretError> {
        let mut deliveries = Vec::new();
        for s in &manifest.secrets {
            let known = match self.known.get(&s.name) {
                Some(known) => known.clone(),
                None => {
                    let known = self.value(&s.name, s.generate)?;
                    self.known.insert(s.name.clone(), known.clone());
                    known
                }
            };
            if let Some((value, hash)) = known {
                deliveries.push(Delivery {
                    name: s.name.to_string(),
                    owner: s.owner.clone(),
                    value,
                    hash,
                });
            }
        }
        Ok(deliveries)
    }

    fn value(
        &self,
        name: &HostName,
        generate: bool,
    ) -> Result<Option<(Arc<SecretValue>, String)>, SecretError> {
        let value = if generate && !self.vault.is_set(self.site, name) {
            match self.missing {
                Missing::Skip => return Ok(None),
                Missing::Generate => self.vault.get_or_generate(self.site, name)?.0,
            }
        } else {
            self.vault.get(self.site, name)?
        };
        let hash = blake3::hash(value.expose()).to_hex().to_string();
        Ok(Some((Arc::new(value), hash)))
    }
}

/// Delivering secrets to a host.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{host}: packing secrets: {source}")]
    Pack {
        host: String,
        #[source]
        source: pack::PackError,
    },
    #[error(transparent)]
    Ssh(#[from] SshError),
}

/// Whether the host lacks any of `deliveries` or holds another value.
/// `held` maps names to the hashes the host's `state` reported.
pub fn stale(deliveries: &[Delivery], held: &BTreeMap<String, String>) -> bool {
    deliveries
        .iter()
        .any(|d| held.get(&d.name) != Some(&d.hash))
}

/// Installs `deliveries` on the host (in the agent's `SECRETS`, which is
/// `SECRETS_DIR`), each replaced atomically.
pub async fn send(
    conn: &Connection,
    how: Agent<'_>,
    owner: &str,
    deliveries: &[Delivery],
) -> Result<(), SecretsError> {
    let mut entries: Vec<Entry> = deliveries
        .iter()
        .map(|d| Entry {
            path: d.name.clone(),
            contents: d.value.expose().to_vec(),
            mode: 0o600,
        })
        .collect();
    let tar = pack::tar(&entries).map(SecretValue::new);
    for e in &mut entries {
        e.contents.fill(0);
    }
    let tar = tar.map_err(|source| SecretsError::Pack {
        host: conn.target.host.clone(),
        source,
    })?;
    let call = Call::Secrets {
        owner,
        secrets: deliveries
            .iter()
            .map(|d| (d.name.as_str(), d.owner.as_str()))
            .collect(),
    };
    let argv = call.argv(how, &conn.target.root);
    conn.run("deliver secrets", &argv, tar.expose(), STEP_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(SecretsError::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agent_delivers_where_templates_look() {
        let line = format!("\nSECRETS={}\n", crate::render::SECRETS_DIR);
        assert!(super::super::AGENT.contains(&line));
    }
}
