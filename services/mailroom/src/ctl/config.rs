//! `mailroom ctl config`: the contexts file's contexts, which one is current, switching it, and
//! the file itself with its secrets redacted. Asks no service.
//!
//! The file (`$MAILROOM_CTL_CONFIG`, else `$XDG_CONFIG_HOME/mailroom/ctl.yaml`, else
//! `~/.config/mailroom/ctl.yaml`) is described in [`super::context`].

use clap::Subcommand;
use serde_json::json;

use super::context::{ConfigFile, ContextError};
use crate::output::{Format, Rows};

/// The contexts file: `$MAILROOM_CTL_CONFIG`, else `$XDG_CONFIG_HOME/mailroom/ctl.yaml`, else
/// `~/.config/mailroom/ctl.yaml`. Each context under `contexts:` has `endpoints:` (identity,
/// access, mailboxes, sync, invitations), `tls:` (ca-file, cert-file, key-file, relative to
/// the file; server-name, checked instead of the endpoints' host), `client-id` and one of
/// `client-secret-file`, `client-secret-env` or `client-secret`. Flags and environment
/// variables override the context, though the context's secret is not sent to an identity
/// endpoint they replace (see --allow-endpoint-override).
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// The contexts in the file, the current one marked.
    GetContexts,
    /// Make a context the current one (rewrites `current-context`, keeping the rest).
    UseContext {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// The current context's name (`--context`/MAILROOM_CONTEXT, else the file's).
    CurrentContext,
    /// The whole file (YAML unless `-o json`), inline secrets redacted.
    View,
}

/// What the command prints.
pub fn run(
    mut file: ConfigFile,
    cmd: ConfigCommand,
    requested: Option<&str>,
    format: Format,
) -> anyhow::Result<String> {
    Ok(match cmd {
        ConfigCommand::GetContexts if !file.exists && format == Format::Table => {
            format!(
                "no contexts: {} does not exist (see `mailroom ctl config --help`)",
                file.shown()
            )
        }
        ConfigCommand::GetContexts => {
            let current = file.select(requested).ok().flatten().map(|s| s.name);
            let mut rows = Rows::new("contexts", vec!["current", "name", "identity", "client_id"]);
            rows.rows = file
                .config
                .contexts
                .iter()
                .map(|(name, context)| {
                    vec![
                        json!(current == Some(name.as_str())),
                        json!(name),
                        json!(context.endpoints.identity),
                        json!(context.client_id),
                    ]
                })
                .collect();
            rows.render(format)
        }
        ConfigCommand::UseContext { name } => {
            file.use_context(&name)?;
            let rows = Rows::one(
                vec!["current_context", "file"],
                vec![json!(name), json!(file.shown())],
            );
            match format {
                Format::Table => format!("switched to context `{name}` in {}", file.shown()),
                Format::Json | Format::Yaml => rows.render(format),
            }
        }
        ConfigCommand::CurrentContext => {
            let selected = file
                .select(requested)?
                .ok_or_else(|| ContextError::NoCurrent { path: file.shown() })?;
            match format {
                Format::Table => selected.name.to_owned(),
                Format::Json | Format::Yaml => {
                    format.document(&json!({ "current_context": selected.name }))
                }
            }
        }
        ConfigCommand::View => {
            let value = serde_json::to_value(file.redacted())?;
            match format {
                Format::Json => format.document(&value),
                Format::Table | Format::Yaml => Format::Yaml.document(&value),
            }
        }
    })
}
