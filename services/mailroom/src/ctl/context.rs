//! `ctl` contexts: one YAML file naming, per deployment, where its five services answer, the
//! TLS to use with them and the operator credential to sign in with; which context is current;
//! and how a chosen context is read (secrets from a file or an environment variable, paths
//! relative to the file), redacted for display and switched.
//!
//! The file: `$MAILROOM_CTL_CONFIG`, else `$XDG_CONFIG_HOME/mailroom/ctl.yaml`, else
//! `~/.config/mailroom/ctl.yaml`. The context: `--context`/`MAILROOM_CONTEXT`, else the file's
//! `current-context`, else none (the local services of `mailroom dev`). Flags and environment
//! variables override what the context says, field by field (but see [`super::outbound`] for
//! where the context's secret is not sent).
//!
//! ```yaml
//! current-context: prod
//! contexts:
//!   prod:
//!     endpoints:
//!       identity: https://identity.mailroom.example:50051
//!       access: https://access.mailroom.example:50052
//!       mailboxes: https://mailboxes.mailroom.example:50053
//!       sync: https://sync.mailroom.example:50054
//!       invitations: https://invitations.mailroom.example:50055
//!     tls:
//!       ca-file: prod/ca.crt          # relative to this file; ~/ works too
//!       cert-file: prod/tls.crt       # a client certificate, for mutual TLS
//!       key-file: prod/tls.key
//!       server-name: mailroom.example # every service's certificate is checked against it
//!     client-id: operator
//!     client-secret-file: prod/operator.secret   # or client-secret-env: VAR, or client-secret
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Names the contexts file instead of the default place.
pub const CONFIG_ENV: &str = "MAILROOM_CTL_CONFIG";
/// Chooses a context instead of the file's `current-context` (as `--context` does).
pub const CONTEXT_ENV: &str = "MAILROOM_CONTEXT";
/// What `config view` shows instead of an inline secret.
pub const REDACTED: &str = "REDACTED";

/// The contexts file as written.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CtlConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, CtlContext>,
}

/// One deployment as `ctl` reaches it.
#[derive(Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CtlContext {
    #[serde(default)]
    pub endpoints: ContextEndpoints,
    #[serde(default, skip_serializing_if = "ContextTls::is_empty")]
    pub tls: ContextTls,
    /// The service client to sign in as (the operator's, usually `operator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The secret itself (discouraged: keep the file private, or use one of the two below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// A file holding the secret (its trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
}

impl std::fmt::Debug for CtlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtlContext")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| REDACTED),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .finish()
    }
}

/// Each service's gRPC endpoint; one left out is the flag's or environment's, else local.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitations: Option<String>,
}

/// PEM files for `https://` endpoints.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ContextTls {
    /// The CA the services' certificates chain to (else the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for services that require mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name every service's certificate is checked against instead of its endpoint's
    /// host: for `https://localhost:…` through a port-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl ContextTls {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A contexts file that cannot be used; each names the file and the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot find the ctl contexts file: set {CONFIG_ENV}, XDG_CONFIG_HOME or HOME")]
    NoPath,
    // (The causes below are in the message, not sources: `{:#}` would print them twice.)
    #[error("cannot read the ctl contexts file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a valid ctl contexts file: {message} (keys: current-context; contexts.NAME.endpoints.identity|access|mailboxes|sync|invitations, .tls.ca-file|cert-file|key-file|server-name, .client-id, .client-secret-file|client-secret-env|client-secret)")]
    Parse { path: String, message: String },
    #[error(
        "{path}: {key} names the context `{name}`, which is not under `contexts` (known: {known})"
    )]
    NoSuchContext {
        path: String,
        key: String,
        name: String,
        known: String,
    },
    #[error("{path}: no current context: choose one with `mailroom ctl config use-context NAME`, --context or {CONTEXT_ENV}")]
    NoCurrent { path: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
    #[error("{origin}: the TLS server name must be a host name or address as the services' certificate names it, without scheme, port or path (e.g. identity.mailroom.example)")]
    ServerName { origin: String },
    #[error("{origin}: {error}")]
    Tls {
        origin: String,
        error: mailroom_clients::TlsFileError,
    },
    #[error("cannot write the ctl contexts file {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// Where the contexts file is, from the environment `var` reads; `None` without any home.
pub fn config_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(path) = set(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    let base = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("mailroom").join("ctl.yaml"))
}

/// The contexts file: where it is (when known), and what it says (empty when it is missing).
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    pub exists: bool,
    pub config: CtlConfig,
}

/// The context a command runs in.
#[derive(Debug)]
pub struct Selected<'a> {
    pub name: &'a str,
    pub context: &'a CtlContext,
    file: &'a ConfigFile,
}

impl ConfigFile {
    /// Reads the file at `path`; a missing file is an empty one.
    pub fn load(path: Option<PathBuf>) -> Result<Self, ContextError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: Some(path),
                    exists: false,
                    config: CtlConfig::default(),
                })
            }
            Err(error) => {
                return Err(ContextError::Read {
                    path: path.display().to_string(),
                    error,
                })
            }
        };
        let config = parse(&text).map_err(|message| ContextError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        Ok(Self {
            path: Some(path),
            exists: true,
            config,
        })
    }

    /// The file's name for messages.
    pub fn shown(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("(no ctl contexts file: {CONFIG_ENV}, XDG_CONFIG_HOME and HOME unset)"),
        }
    }

    /// The context asked for (`--context`/`MAILROOM_CONTEXT`), else the current one, else none.
    pub fn select(&self, requested: Option<&str>) -> Result<Option<Selected<'_>>, ContextError> {
        let (name, key) = match (requested, &self.config.current_context) {
            (Some(name), _) => (name, format!("--context/{CONTEXT_ENV}")),
            (None, Some(name)) => (name.as_str(), "current-context".to_owned()),
            (None, None) => return Ok(None),
        };
        match self.config.contexts.get_key_value(name) {
            Some((name, context)) => Ok(Some(Selected {
                name,
                context,
                file: self,
            })),
            None => Err(ContextError::NoSuchContext {
                path: self.shown(),
                key,
                name: name.to_owned(),
                known: self.known(),
            }),
        }
    }

    fn known(&self) -> String {
        if self.config.contexts.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.config.contexts.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// A path the file names: `~/` is the home folder, a relative one is next to the file.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if let Ok(rest) = path.strip_prefix("~") {
            if let Some(home) = std::env::var_os("HOME") {
                return Path::new(&home).join(rest);
            }
        }
        match self.path.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }

    /// The file's contexts with every inline secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> CtlConfig {
        let mut config = self.config.clone();
        for context in config.contexts.values_mut() {
            if context.client_secret.is_some() {
                context.client_secret = Some(REDACTED.into());
            }
        }
        config
    }

    /// Makes `name` the current context, keeping the rest of the file (comments included).
    pub fn use_context(&mut self, name: &str) -> Result<(), ContextError> {
        let path = self.path.clone().ok_or(ContextError::NoPath)?;
        if !self.config.contexts.contains_key(name) {
            return Err(ContextError::NoSuchContext {
                path: self.shown(),
                key: "use-context".into(),
                name: name.to_owned(),
                known: self.known(),
            });
        }
        let shown = self.shown();
        let read_error = |error| ContextError::Read {
            path: shown.clone(),
            error,
        };
        let text = std::fs::read_to_string(&path).map_err(read_error)?;
        let updated = with_current_context(&text, name).ok_or_else(|| ContextError::Invalid {
            path: shown.clone(),
            key: "current-context".into(),
            message: "cannot be set in place; write `current-context: NAME` at the top of the file by hand".into(),
        })?;
        replace_file(&path, updated.as_bytes()).map_err(|error| ContextError::Write {
            path: shown.clone(),
            error,
        })?;
        self.config.current_context = Some(name.to_owned());
        Ok(())
    }
}

/// Replaces the file at `path` (through a symbolic link, the file it points to) with
/// `contents`: written to a new file of an unguessable name beside it, private from the start
/// and given the original's permissions once written, then moved over it — never half a file,
/// never a moment when others could read what they could not before.
fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = std::fs::canonicalize(path)?;
    let permissions = std::fs::metadata(&path)?.permissions();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::set_permissions(&temporary, permissions))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn parse(text: &str) -> Result<CtlConfig, String> {
    if text.trim().is_empty() {
        return Ok(CtlConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| without_values(&e))
}

/// The kinds of value serde names when one has the wrong type, as it starts its description.
const FOUND_KINDS: [(&str, &str); 10] = [
    ("boolean", "a boolean"),
    ("integer", "an integer"),
    ("floating point", "a number"),
    ("character", "a character"),
    ("string", "a string"),
    ("unit value", "an empty value"),
    ("sequence", "a list"),
    ("map", "a mapping"),
    ("Option value", "an optional value"),
    ("byte array", "bytes"),
];

/// A parse error as the file's location and what is wrong there, never the value found
/// there (serde's messages quote a wrong-typed value: a numeric `client-secret` would be
/// printed): `contexts.a.client-secret: invalid type: an integer, expected a string at line 4
/// column 20`.
fn without_values(err: &serde_yaml_ng::Error) -> String {
    let full = err.to_string();
    let at = err
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()));
    let message = match &at {
        Some(at) => full.strip_suffix(at.as_str()).unwrap_or(&full),
        None => &full,
    };
    let at = at.unwrap_or_default();
    // (prefix, replaced by) for the messages that quote a value; each keeps what follows the
    // last ", expected " (a type's description, never a value).
    for marker in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(start) = message.find(marker) else {
            continue;
        };
        let (before, rest) = message.split_at(start);
        let found = &rest[marker.len()..];
        let expected = found
            .rfind(", expected ")
            .map(|i| &found[i + ", expected ".len()..])
            .unwrap_or("something else");
        let kind = FOUND_KINDS
            .iter()
            .find(|(serde, _)| found.starts_with(serde))
            .map_or("another value", |(_, shown)| shown);
        return match marker {
            "unknown variant " => format!("{before}unknown choice, expected {expected}{at}"),
            "invalid type: " => format!("{before}invalid type: {kind}, expected {expected}{at}"),
            _ => format!("{before}invalid value: {kind}, expected {expected}{at}"),
        };
    }
    full
}

/// `text` with its top-level `current-context` set to `name` (added at the top when absent);
/// `None` when the result would not say so.
fn with_current_context(text: &str, name: &str) -> Option<String> {
    let value = serde_yaml_ng::to_string(name).ok()?;
    let line = format!("current-context: {}", value.trim_end());
    let mut replaced = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if !replaced && l.starts_with("current-context:") {
                replaced = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        lines.insert(0, line);
    }
    let mut updated = lines.join("\n");
    updated.push('\n');
    let parsed = parse(&updated).ok()?;
    (parsed.current_context.as_deref() == Some(name)).then_some(updated)
}

/// Whether a file's mode lets its group or anyone else read it.
#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
}

impl Selected<'_> {
    /// `contexts.NAME.<rest>`, the key an error names.
    pub fn key(&self, rest: &str) -> String {
        format!("contexts.{}.{rest}", self.name)
    }

    fn invalid(&self, rest: &str, message: impl Into<String>) -> ContextError {
        ContextError::Invalid {
            path: self.file.shown(),
            key: self.key(rest),
            message: message.into(),
        }
    }

    /// The contexts file's name for messages.
    pub fn file_shown(&self) -> String {
        self.file.shown()
    }

    /// A path the context names, resolved (see [`ConfigFile::resolve_path`]).
    pub fn path(&self, path: &Path) -> PathBuf {
        self.file.resolve_path(path)
    }

    /// The context's service client id and secret, if it names one. The secret comes from
    /// its file, variable (`var`) or inline value — exactly one of them; `warn` hears about
    /// a secret others may read.
    pub fn client_credential(
        &self,
        var: impl Fn(&str) -> Option<String>,
        mut warn: impl FnMut(String),
    ) -> Result<Option<(String, SecretString)>, ContextError> {
        let c = self.context;
        let given = [
            c.client_secret.is_some(),
            c.client_secret_file.is_some(),
            c.client_secret_env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(self.invalid(
                "client-secret",
                "give only one of client-secret, client-secret-file and client-secret-env",
            ));
        }
        let secret = if let Some(file) = &c.client_secret_file {
            let path = self.path(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.invalid(
                    "client-secret-file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if readable_by_others(&path) {
                warn(format!(
                    "{} ({}) can be read by its group or others; `chmod 600` it",
                    path.display(),
                    self.key("client-secret-file")
                ));
            }
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        } else if let Some(name) = &c.client_secret_env {
            Some(var(name).ok_or_else(|| {
                self.invalid(
                    "client-secret-env",
                    format!("names the environment variable {name}, which is not set"),
                )
            })?)
        } else if let Some(inline) = &c.client_secret {
            if self.file.path.as_deref().is_some_and(readable_by_others) {
                warn(format!(
                    "{} holds a secret inline ({}) and can be read by its group or others; `chmod 600` it or use client-secret-file",
                    self.file.shown(),
                    self.key("client-secret")
                ));
            }
            Some(inline.clone())
        } else {
            None
        };
        match (&c.client_id, secret) {
            (None, None) => Ok(None),
            (Some(_), Some(s)) if s.is_empty() => {
                Err(self.invalid("client-secret", "the secret is empty"))
            }
            (Some(id), Some(secret)) => Ok(Some((id.clone(), SecretString::from(secret)))),
            (Some(_), None) => Err(self.invalid(
                "client-id",
                "needs its secret: client-secret-file, client-secret-env or client-secret",
            )),
            (None, Some(_)) => {
                Err(self.invalid("client-id", "a client secret needs its client-id"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// A folder of its own under the system's temporary one.
    fn folder() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mailroom-ctl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file_with(text: &str) -> ConfigFile {
        let path = folder().join("ctl.yaml");
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o600);
        ConfigFile::load(Some(path)).unwrap()
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const TWO: &str = "\
# my deployments
current-context: staging
contexts:
  staging:
    endpoints:
      identity: https://identity.staging.test:50051
    client-id: operator
    client-secret: s3cret
  prod:
    endpoints:
      identity: https://identity.prod.test:50051
      access: https://access.prod.test:50052
    tls:
      ca-file: prod/ca.crt
    client-id: operator
    client-secret-env: PROD_SECRET
";

    #[test]
    fn the_file_is_found_by_variable_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            config_path(env(&[
                (CONFIG_ENV, "/etc/ctl.yaml"),
                ("XDG_CONFIG_HOME", "/x"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/etc/ctl.yaml"))
        );
        assert_eq!(
            config_path(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/mailroom/ctl.yaml"))
        );
        assert_eq!(
            config_path(env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/mailroom/ctl.yaml"))
        );
        assert_eq!(config_path(env(&[])), None);
    }

    #[test]
    fn the_asked_for_context_wins_over_the_current_one_and_unknown_names_are_refused() {
        let file = file_with(TWO);
        assert_eq!(file.select(None).unwrap().unwrap().name, "staging");
        let prod = file.select(Some("prod")).unwrap().unwrap();
        assert_eq!(
            prod.context.endpoints.access.as_deref(),
            Some("https://access.prod.test:50052")
        );
        // Paths are relative to the file.
        let ca = prod.path(prod.context.tls.ca_file.as_deref().unwrap());
        assert_eq!(
            ca,
            file.path
                .as_ref()
                .unwrap()
                .parent()
                .unwrap()
                .join("prod/ca.crt")
        );
        let err = file.select(Some("qa")).unwrap_err().to_string();
        assert!(
            err.contains("ctl.yaml")
                && err.contains("--context")
                && err.contains("`qa`")
                && err.contains("prod, staging"),
            "{err}"
        );
        let dangling = file_with("current-context: gone\ncontexts: {}\n");
        let err = dangling.select(None).unwrap_err().to_string();
        assert!(
            err.contains("current-context names the context `gone`"),
            "{err}"
        );
        // No file, no context: the flags' and local defaults.
        let missing = ConfigFile::load(Some(folder().join("absent.yaml"))).unwrap();
        assert!(!missing.exists && missing.select(None).unwrap().is_none());
    }

    #[test]
    fn a_typo_is_refused_naming_the_file_and_the_key() {
        let path = folder().join("ctl.yaml");
        std::fs::write(&path, "contexts:\n  a:\n    endpoint:\n      identity: x\n").unwrap();
        let err = ConfigFile::load(Some(path)).unwrap_err().to_string();
        assert!(
            err.contains("ctl.yaml") && err.contains("unknown field `endpoint`"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_typed_value_is_refused_by_its_place_and_kind_never_echoed() {
        let refused = |text: &str| {
            let path = folder().join("ctl.yaml");
            std::fs::write(&path, text).unwrap();
            ConfigFile::load(Some(path)).unwrap_err().to_string()
        };
        // A secret indented one level too little lands where a context belongs: serde would
        // quote it.
        let err =
            refused("contexts:\n  prod:\n    client-id: operator\n  client-secret: hunter2-prod\n");
        assert!(
            err.contains("ctl.yaml")
                && err.contains("contexts.client-secret")
                && err.contains("invalid type: a string")
                && err.contains("expected struct CtlContext")
                && err.contains("line 4 column")
                && !err.contains("hunter2"),
            "{err}"
        );
        let err = refused("contexts:\n  a:\n    tls: \"hunter2, expected x\"\n");
        assert!(
            err.contains("contexts.a.tls") && err.contains("a string") && !err.contains("hunter2"),
            "{err}"
        );
        // A numeric secret is a secret as written, not an error.
        let path = folder().join("ctl.yaml");
        std::fs::write(
            &path,
            "contexts:\n  a:\n    client-id: operator\n    client-secret: 0012345\n",
        )
        .unwrap();
        let file = ConfigFile::load(Some(path)).unwrap();
        assert_eq!(
            file.config.contexts["a"].client_secret.as_deref(),
            Some("0012345")
        );
        // Broken YAML says where, from the parser's own words.
        let err = refused("contexts:\n  a: [\n");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_server_name_is_read_from_the_contexts_tls() {
        let file = file_with(
            "contexts:\n  fwd:\n    endpoints:\n      identity: https://localhost:50051\n    tls:\n      server-name: identity.mailroom.example\n",
        );
        let fwd = file.select(Some("fwd")).unwrap().unwrap();
        assert_eq!(
            fwd.context.tls.server_name.as_deref(),
            Some("identity.mailroom.example")
        );
    }

    #[test]
    fn secrets_come_from_exactly_one_place_and_say_where_they_are_missing() {
        let file = file_with(TWO);
        let prod = file.select(Some("prod")).unwrap().unwrap();
        let var = |name: &str| (name == "PROD_SECRET").then(|| "from-env".to_owned());
        let (id, secret) = prod.client_credential(var, |_| {}).unwrap().unwrap();
        assert_eq!(
            (id.as_str(), secret.expose_secret()),
            ("operator", "from-env")
        );
        let err = prod
            .client_credential(|_| None, |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("contexts.prod.client-secret-env") && err.contains("PROD_SECRET"),
            "{err}"
        );

        let dir = folder();
        std::fs::write(dir.join("op.secret"), "from-file\n").unwrap();
        set_mode(&dir.join("op.secret"), 0o644);
        let path = dir.join("ctl.yaml");
        std::fs::write(
            &path,
            "contexts:\n  a:\n    client-id: operator\n    client-secret-file: op.secret\n  b:\n    client-id: operator\n    client-secret: x\n    client-secret-env: Y\n  c:\n    client-id: operator\n",
        )
        .unwrap();
        let file = ConfigFile::load(Some(path)).unwrap();
        let a = file.select(Some("a")).unwrap().unwrap();
        let mut warnings = Vec::new();
        let (_, secret) = a
            .client_credential(|_| None, |w| warnings.push(w))
            .unwrap()
            .unwrap();
        assert_eq!(
            secret.expose_secret(),
            "from-file",
            "the newline is not part of it"
        );
        assert!(
            warnings.len() == 1 && warnings[0].contains("chmod 600"),
            "{warnings:?}"
        );
        let b = file.select(Some("b")).unwrap().unwrap();
        let err = b
            .client_credential(|_| None, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("only one of"), "{err}");
        let c = file.select(Some("c")).unwrap().unwrap();
        let err = c
            .client_credential(|_| None, |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("contexts.c.client-id") && err.contains("needs its secret"),
            "{err}"
        );
    }

    #[test]
    fn an_inline_secret_in_a_file_others_can_read_is_warned_about() {
        let file = file_with(TWO);
        let staging = file.select(None).unwrap().unwrap();
        let mut warnings = Vec::new();
        staging
            .client_credential(|_| None, |w| warnings.push(w))
            .unwrap();
        assert!(warnings.is_empty(), "mode 600: {warnings:?}");
        set_mode(file.path.as_ref().unwrap(), 0o644);
        staging
            .client_credential(|_| None, |w| warnings.push(w))
            .unwrap();
        assert!(
            warnings.len() == 1 && warnings[0].contains("contexts.staging.client-secret"),
            "{warnings:?}"
        );
    }

    #[test]
    fn view_redacts_inline_secrets_and_debug_never_shows_them() {
        let file = file_with(TWO);
        let shown = serde_yaml_ng::to_string(&file.redacted()).unwrap();
        assert!(
            !shown.contains("s3cret") && shown.contains(REDACTED),
            "{shown}"
        );
        assert!(shown.contains("client-secret-env: PROD_SECRET"), "{shown}");
        assert!(!format!("{:?}", file.config).contains("s3cret"));
    }

    #[test]
    fn use_context_switches_in_place_keeping_comments() {
        let mut file = file_with(TWO);
        file.use_context("prod").unwrap();
        let path = file.path.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# my deployments\ncurrent-context: prod\n"),
            "{text}"
        );
        let again = ConfigFile::load(Some(path)).unwrap();
        assert_eq!(again.select(None).unwrap().unwrap().name, "prod");
        assert_eq!(again.config.contexts, file.config.contexts);
        let err = file.use_context("qa").unwrap_err().to_string();
        assert!(err.contains("`qa`"), "{err}");
        // A file without the key gets it at the top.
        let mut bare = file_with("contexts:\n  a: {}\n");
        bare.use_context("a").unwrap();
        let text = std::fs::read_to_string(bare.path.as_ref().unwrap()).unwrap();
        assert!(text.starts_with("current-context: a\n"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn use_context_keeps_the_files_mode_leaves_no_temporary_and_follows_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let mut file = file_with(TWO);
        let path = file.path.clone().unwrap();
        file.use_context("prod").unwrap();
        assert_eq!(mode(&path), 0o600);
        set_mode(&path, 0o640);
        file.use_context("staging").unwrap();
        assert_eq!(mode(&path), 0o640, "the original's mode, not the umask's");
        let dir = path.parent().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ctl.yaml".to_owned()], "no temporary file left");

        // A linked file (dotfiles kept elsewhere) is updated where it lives; the link stays.
        let link = folder().join("ctl.yaml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let mut linked = ConfigFile::load(Some(link.clone())).unwrap();
        linked.use_context("prod").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let again = ConfigFile::load(Some(path)).unwrap();
        assert_eq!(again.config.current_context.as_deref(), Some("prod"));
    }
}
