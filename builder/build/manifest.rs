//! Manifests: the list of a host's or a site's artifacts by kind, name,
//! object and derivation key. They are store objects themselves, and a site
//! generation is its site manifest.

use serde::{Deserialize, Serialize};

use crate::model::HostName;
use crate::render::Kind;
use crate::store::{Digest, ObjectName};

/// 2: an artifact's hash is read from its object name (`<hash>-<name>`), no
/// longer repeated beside it: every manifest a changed artifact sends to a
/// host is smaller.
pub const MANIFEST_FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub kind: String,
    pub name: String,
    /// `<hash>-<name>`, the hash being that of the object's fixed encoding.
    pub object: ObjectName,
    /// The derivation key: the hash of every input of the artifact.
    pub key: Digest,
}

impl ArtifactEntry {
    pub fn new(kind: Kind, object: ObjectName, key: Digest) -> Self {
        ArtifactEntry {
            kind: kind.as_str().to_string(),
            name: object.name().to_string(),
            object,
            key,
        }
    }
}

/// Everything one host holds in a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostManifest {
    pub format: u32,
    pub site: String,
    pub host: String,
    /// The activation script, also listed among the artifacts.
    pub activate: ObjectName,
    pub artifacts: Vec<ArtifactEntry>,
    /// The secrets the host needs at run time, by name: never a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretEntry>,
    /// The directories of data it keeps across generations, backed up
    /// before each deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
}

/// A secret a host needs: sov delivers it to `/run/sov/secrets/<name>`,
/// owned by `owner`, before activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    pub name: HostName,
    pub owner: String,
    /// sov generates a value when the operator has set none.
    pub generate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub manifest: ObjectName,
}

/// Everything a site generation consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteManifest {
    pub format: u32,
    pub site: String,
    /// Site-wide artifacts: firewall, switch, DHCP, zones.
    pub artifacts: Vec<ArtifactEntry>,
    pub hosts: Vec<HostEntry>,
}

/// Pretty JSON with a final newline: readable in `sov diff`, stable bytes.
pub fn encode<T: Serialize>(manifest: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl SiteManifest {
    /// Every object the generation needs, the manifests included, given a
    /// way to read host manifests.
    pub fn objects(&self, hosts: &[HostManifest]) -> Vec<ObjectName> {
        let mut all: Vec<ObjectName> = self.artifacts.iter().map(|a| a.object.clone()).collect();
        all.extend(self.hosts.iter().map(|h| h.manifest.clone()));
        for host in hosts {
            all.extend(host.artifacts.iter().map(|a| a.object.clone()));
        }
        all.sort();
        all.dedup();
        all
    }
}
