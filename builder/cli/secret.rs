//! `sov secret set` and `sov secret list`.

use std::path::Path;

use super::print::{self, SecretRow};
use super::CliError;
use crate::build::BuildError;
use crate::model::Stack;
use crate::secrets::{self, SecretError, SecretValue, Vault};

pub fn set(root: &Path, vault: &Vault, site: &str, name: &str) -> Result<(), CliError> {
    let stack = Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let (site, declared) = secrets::declared(&stack, site)?;
    let Some((name, _)) = declared.iter().find(|(n, _)| n.as_str() == name) else {
        return Err(SecretError::Undeclared {
            site: site.to_string(),
            name: name.to_string(),
            known: declared
                .keys()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    };
    let value = read_secret(name.as_str())?;
    vault.set(&site, name, &value)?;
    print::secret_stored(name, &site, vault.identity());
    Ok(())
}

/// The value on stdin; read without echo when stdin is a terminal.
fn read_secret(name: &str) -> Result<SecretValue, CliError> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    let mut value = Vec::new();
    if stdin.is_terminal() {
        print::secret_prompt(name);
        value = rpassword::read_password()
            .map_err(CliError::Stdin)?
            .into_bytes();
    } else {
        stdin
            .lock()
            .read_to_end(&mut value)
            .map_err(CliError::Stdin)?;
    }
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    let value = SecretValue::new(value);
    if value.expose().is_empty() {
        return Err(SecretError::Empty(name.to_string()).into());
    }
    Ok(value)
}

pub fn list(root: &Path, vault: &Vault, site: &str, json: bool) -> Result<(), CliError> {
    let stack = Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let (site, declared) = secrets::declared(&stack, site)?;
    let rows: Vec<SecretRow> = declared
        .into_iter()
        .map(|(name, d)| SecretRow {
            state: if vault.is_set(&site, &name) {
                "set"
            } else if d.generate {
                "generated-on-deploy"
            } else {
                "missing"
            },
            name: name.to_string(),
            hosts: d.hosts,
        })
        .collect();
    print::secrets(&rows, json)
}
