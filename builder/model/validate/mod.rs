//! Checks of meaning that the types alone cannot express: every problem of
//! a run is collected, each pointing at the value it is about.

mod dns;
mod images;
mod network;
mod refs;

use super::source::Step;
use super::{Diagnostics, Source, Stack};

/// Collects problems against one source file.
pub(super) struct Report<'a> {
    source: &'a Source,
    problems: &'a mut Diagnostics,
}

impl<'a> Report<'a> {
    pub(super) fn new(source: &'a Source, problems: &'a mut Diagnostics) -> Self {
        Report { source, problems }
    }

    pub(super) fn at(&mut self, path: &[Step<'_>], message: impl Into<String>) {
        self.problems.push(self.source.at(path, message));
    }
}

pub fn validate(stack: &Stack) -> Diagnostics {
    let mut problems = Diagnostics::default();
    settings(stack, &mut problems);
    for loaded in stack.sites.values() {
        let mut report = Report::new(&loaded.source, &mut problems);
        network::check(&loaded.value, &mut report);
        refs::check(stack, &loaded.value, &mut report);
    }
    dns::check(stack, &mut problems);
    for loaded in stack.images.values() {
        let mut report = Report::new(&loaded.source, &mut problems);
        images::check(&loaded.value, &mut report);
    }
    problems
}

fn settings(stack: &Stack, problems: &mut Diagnostics) {
    let settings = &stack.settings;
    let mut report = Report::new(&settings.source, problems);
    if settings.value.dns.nameservers.is_empty() {
        report.at(
            crate::path!["dns", "nameservers"],
            "expected at least one name server for the public zones",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, region) in settings.value.regions.iter().enumerate() {
        if !seen.insert(&region.name) {
            report.at(
                crate::path!["regions", i, "name"],
                format!("region `{}` is declared twice", region.name),
            );
        }
    }
}
