//! `images/<name>.toml`: a host role. What cloud-init sets up, the containers
//! it runs, the data it keeps and how to check that it is healthy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::{ContainerImage, HostName};
use super::values::{Arg, Package, Seconds, Text, Timezone};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(default)]
    pub description: Text,
    #[serde(default)]
    pub cloud_init: CloudInit,
    /// Present when the host runs containers: how to bring them up and down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<Compose>,
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Configuration files shipped in the compose bundle, rendered from templates.
    #[serde(default)]
    pub files: Vec<BundleFile>,
    /// Secrets the host needs at run time; templates only see their paths.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(default)]
    pub health: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// Debian packages to install on first boot.
    #[serde(default)]
    pub packages: Vec<Package>,
    /// Commands run once on first boot, each an argv list.
    #[serde(default)]
    pub runcmd: Vec<Vec<Arg>>,
    #[serde(default = "default_timezone")]
    pub timezone: Timezone,
}

fn default_timezone() -> Timezone {
    Timezone::constant("Etc/UTC")
}

/// An image without `[cloud_init]` gets the same time zone as one whose
/// table leaves it out (a derived default gave it an empty one).
impl Default for CloudInit {
    fn default() -> Self {
        CloudInit {
            packages: Vec::new(),
            runcmd: Vec::new(),
            timezone: default_timezone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// The compose project name.
    pub project: HostName,
    /// Run in the unpacked bundle to start the generation's containers.
    pub up: Vec<Arg>,
    /// Run in the unpacked bundle to stop them.
    pub down: Vec<Arg>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: HostName,
    /// Must be pinned: `registry/name:tag@sha256:<digest>`.
    pub image: ContainerImage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<Arg>>,
    /// `host:container` or `host:container/udp`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `host-path:container-path[:ro]`, or a bundle file `./path:container-path`.
    #[serde(default)]
    pub volumes: Vec<Arg>,
    #[serde(default)]
    pub environment: BTreeMap<String, Arg>,
    /// Secrets mounted read-only at `/run/secrets/<name>` in the container.
    #[serde(default)]
    pub secrets: Vec<HostName>,
    #[serde(default)]
    pub depends_on: Vec<HostName>,
    #[serde(default)]
    pub restart: Restart,
}

/// compose's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    No,
    Always,
    OnFailure,
    #[default]
    UnlessStopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// Path inside the bundle (`caddy/Caddyfile`).
    pub path: String,
    /// Template under `templates/compose/files/`.
    pub template: String,
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

fn default_file_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub name: HostName,
    /// sov generates the value when the operator has not set one.
    #[serde(default)]
    pub generate: bool,
    /// Owner of `/run/sov/secrets/<name>` on the host.
    #[serde(default = "default_owner")]
    pub owner: String,
}

fn default_owner() -> String {
    "root".to_string()
}

/// Data the host keeps across generations, backed up before each deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub paths: Vec<String>,
    /// Commands that stop the services writing the data (argv lists).
    #[serde(default)]
    pub stop: Vec<Vec<Arg>>,
    #[serde(default)]
    pub start: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: HostName,
    pub command: Vec<Arg>,
    #[serde(default = "default_health_timeout")]
    pub timeout: Seconds,
}

fn default_health_timeout() -> Seconds {
    Seconds::constant(10)
}
