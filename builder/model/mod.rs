//! The stack as the user wrote it: sites, images and stack-wide settings,
//! loaded with positions and checked for meaning before anything is built.

pub mod diag;
pub mod image;
pub mod input;
pub mod load;
pub mod names;
pub mod rdata;
pub mod settings;
pub mod site;
pub mod source;
mod validate;
pub mod values;
pub mod zones;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use diag::{Diagnostic, Diagnostics};
pub use image::Image;
pub use names::{Domain, HostName, ImageName, Mac, SiteName, VlanName};
pub use settings::Settings;
pub use site::{Host, Site, Vlan};
pub use source::Source;

/// A parsed file with the text it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub source: Source,
    pub value: T,
}

/// The whole stack repository, parsed and validated.
#[derive(Debug, Clone)]
pub struct Stack {
    pub root: PathBuf,
    pub settings: Loaded<Settings>,
    pub sites: BTreeMap<SiteName, Loaded<Site>>,
    pub images: BTreeMap<ImageName, Loaded<Image>>,
}

impl Stack {
    /// Loads `sites/` and `images/` under `root` and checks them; every
    /// problem found is in the error, none is written anywhere.
    pub fn load(root: impl Into<PathBuf>) -> Result<Stack, Diagnostics> {
        let stack = load::load(root.into())?;
        let problems = validate::validate(&stack);
        if problems.is_empty() {
            Ok(stack)
        } else {
            Err(problems.into_sorted())
        }
    }

    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.get(name).map(|s| &s.value)
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.get(name).map(|i| &i.value)
    }

    /// Whether any host of `site` runs an image that declares data to back up.
    pub fn keeps_data(&self, site: &Site) -> bool {
        site.hosts.iter().any(|h| {
            self.image(h.image.as_str())
                .is_some_and(|i| i.data.is_some())
        })
    }
}
