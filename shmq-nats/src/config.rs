//! Bridge configuration: NATS connection options, the export and import
//! settings, subject templates, and the optional TOML file.
//!
//! The connection settings use the NATS tools' own names (`url`, `creds`,
//! `user`, `password`, `token`, as in a `nats` CLI context, and the
//! `NATS_URL` / `NATS_CREDS` / `NATS_USER` / `NATS_PASSWORD` / `NATS_TOKEN`
//! environment variables in `shmq bridge`). A file looks like this:
//!
//! ```toml
//! url = "nats://10.0.0.5:4222"        # several: "nats://a:4222,nats://b:4222"
//! creds = "/etc/shmq/bridge.creds"    # a NATS .creds file (JWT + nkey seed)
//!
//! [export]
//! topic = "orders"
//! stream = "SHMQ_ORDERS"
//! subject = "shmq.{ns}.{topic}.{partition}"
//! group = "nats-export"
//!
//! [import]
//! stream = "SHMQ_ORDERS"
//! consumer = "orders-into-b"
//! topic = "orders"
//! ```
//!
//! Flags win over the file; the file wins over the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{BridgeError, Result};

/// Default NATS URL (the `nats` CLI's default too).
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Default subject template of an export.
pub const DEFAULT_SUBJECT: &str = "shmq.{ns}.{topic}.{partition}";
/// Default consumer group an export reads through.
pub const DEFAULT_EXPORT_GROUP: &str = "nats-export";

/// How to reach the NATS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated (`nats://host:4222,nats://other:4222`).
    pub url: String,
    /// A NATS credentials file (`.creds`: user JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// Connection name shown by the server's monitoring.
    pub name: String,
    /// How long to wait for JetStream to acknowledge a publish or answer an
    /// API request before counting it failed (and retrying).
    pub request_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: DEFAULT_URL.to_string(),
            creds: None,
            user: None,
            password: None,
            token: None,
            name: "shmq-bridge".to_string(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsOptions {
    /// Check what can be checked without a server: the URL's shape and that
    /// the credentials file can be read.
    ///
    /// # Errors
    /// [`BridgeError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.url.trim().is_empty() {
            return Err(BridgeError::Config("the NATS url is empty".into()));
        }
        for part in self.url.split(',') {
            let part = part.trim();
            let hostport = match part.split_once("://") {
                Some((scheme, rest)) => {
                    if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                        return Err(BridgeError::Config(format!(
                            "NATS url {part:?}: scheme {scheme:?} is not nats://, tls://, ws:// or wss://"
                        )));
                    }
                    rest
                }
                None => part,
            };
            let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
            if hostport.is_empty() || hostport.contains(char::is_whitespace) {
                return Err(BridgeError::Config(format!(
                    "NATS url {part:?} has no host; write it as nats://HOST:PORT"
                )));
            }
        }
        if let Some(path) = &self.creds {
            std::fs::metadata(path).map_err(|e| {
                BridgeError::Config(format!(
                    "credentials file {}: {e}; give a readable NATS .creds file",
                    path.display()
                ))
            })?;
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(BridgeError::Config(
                "NATS user and password go together; give both or neither".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(BridgeError::Config(
                "the NATS request timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A subject with placeholders `{ns}`, `{topic}` and `{partition}`, e.g.
/// the default `shmq.{ns}.{topic}.{partition}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate(String);

impl SubjectTemplate {
    /// Parse and check a template: its tokens (between dots) must be
    /// non-empty and free of spaces and of the wildcards `*` and `>`, and
    /// only the three placeholders are known.
    ///
    /// # Errors
    /// [`BridgeError::Config`] saying what is wrong.
    pub fn parse(template: &str) -> Result<SubjectTemplate> {
        let bad = |why: String| {
            BridgeError::Config(format!(
                "subject template {template:?}: {why}; e.g. {DEFAULT_SUBJECT:?}"
            ))
        };
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| bad("a '{' is not closed".into()))?;
            let name = &after[..end];
            if !matches!(name, "ns" | "topic" | "partition") {
                return Err(bad(format!(
                    "unknown placeholder {{{name}}} (known: {{ns}}, {{topic}}, {{partition}})"
                )));
            }
            rest = &after[end + 1..];
        }
        if rest.contains('}') {
            return Err(bad("a '}' has no '{'".into()));
        }
        let sample = SubjectTemplate(template.to_string()).render("ns", "topic", 0);
        check_subject(&sample, false).map_err(bad)?;
        Ok(SubjectTemplate(template.to_string()))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject of one partition.
    pub fn render(&self, ns: &str, topic: &str, partition: u32) -> String {
        self.0
            .replace("{ns}", ns)
            .replace("{topic}", topic)
            .replace("{partition}", &partition.to_string())
    }

    /// The stream subject covering every partition (`{partition}` → `*`).
    pub fn wildcard(&self, ns: &str, topic: &str) -> String {
        self.0
            .replace("{ns}", ns)
            .replace("{topic}", topic)
            .replace("{partition}", "*")
    }
}

/// Check a NATS subject (wildcards allowed if `wild`).
pub(crate) fn check_subject(s: &str, wild: bool) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    for (i, tok) in s.split('.').enumerate() {
        if tok.is_empty() {
            return Err("it has an empty token (two dots in a row, or a dot at an end)".into());
        }
        if tok.contains(char::is_whitespace) {
            return Err("it contains white space".into());
        }
        if !wild && (tok.contains('*') || tok.contains('>')) {
            return Err("wildcards '*' and '>' are not allowed here".into());
        }
        if wild && tok.len() > 1 && (tok.contains('*') || tok.contains('>')) {
            return Err(format!("token {i} mixes a wildcard with other characters"));
        }
    }
    Ok(())
}

/// Check a JetStream stream or consumer name.
pub(crate) fn check_js_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| {
            c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_control()
        })
    {
        return Err(BridgeError::Config(format!(
            "{what} name {name:?} is not valid in JetStream: use 1 to 255 characters without \
             spaces, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

/// The default stream name for a topic: `SHMQ_<ns>_<topic>`.
pub fn default_stream(ns: &str, topic: &str) -> String {
    format!("SHMQ_{ns}_{topic}")
}

/// Export: a shmq topic to a JetStream stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// shmq namespace of the topic.
    pub namespace: String,
    /// The shmq topic to export.
    pub topic: String,
    /// JetStream stream the records go to.
    pub stream: String,
    /// Subject of each record.
    pub subject: SubjectTemplate,
    /// The shmq consumer group the bridge reads through (its committed
    /// offsets are the export's position).
    pub group: String,
    /// Records read and published per round (all published before any
    /// acknowledgement is awaited).
    pub batch: usize,
    /// Commit the acknowledged offsets at most this often (zero: after every
    /// round). Whatever was published but not committed is sent again by a
    /// restarted bridge and dropped by the stream as a duplicate.
    pub commit_interval: Duration,
    /// Create the stream if it does not exist (with `duplicate_window`).
    pub create_stream: bool,
    /// The stream's duplicate window when the bridge creates it: a restarted
    /// bridge's re-sends are de-duplicated if they come within it.
    pub duplicate_window: Duration,
    /// How often to emit a progress line.
    pub progress_interval: Duration,
}

impl ExportConfig {
    /// An export of `topic` in `namespace` with every other setting at its
    /// default (stream `SHMQ_<ns>_<topic>`, subject
    /// `shmq.{ns}.{topic}.{partition}`, group `nats-export`).
    pub fn new(namespace: &str, topic: &str) -> ExportConfig {
        ExportConfig {
            nats: NatsOptions::default(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            stream: default_stream(namespace, topic),
            subject: SubjectTemplate(DEFAULT_SUBJECT.to_string()),
            group: DEFAULT_EXPORT_GROUP.to_string(),
            batch: 256,
            commit_interval: Duration::ZERO,
            create_stream: true,
            duplicate_window: Duration::from_secs(120),
            progress_interval: Duration::from_secs(1),
        }
    }

    /// Check every setting that can be checked without a server.
    ///
    /// # Errors
    /// [`BridgeError::Config`].
    pub fn validate(&self) -> Result<()> {
        self.nats.validate()?;
        shmq::protocol::name::validate_namespace(&self.namespace)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        shmq::protocol::name::validate_topic(&self.topic)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        shmq::protocol::name::validate_group(&self.group)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        check_js_name("stream", &self.stream)?;
        if self.batch == 0 {
            return Err(BridgeError::Config("batch must be at least 1".into()));
        }
        if self.duplicate_window.is_zero() {
            return Err(BridgeError::Config(
                "the duplicate window must be positive: it is what de-duplicates a restarted \
                 bridge's re-sends"
                    .into(),
            ));
        }
        if self.progress_interval.is_zero() {
            return Err(BridgeError::Config(
                "progress interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Import: a JetStream stream into a shmq topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportConfig {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// shmq namespace of the destination topic.
    pub namespace: String,
    /// The destination topic (it must exist; the bridge writes all its
    /// partitions).
    pub topic: String,
    /// The stream to read.
    pub stream: String,
    /// Durable consumer name (the bridge owns it: it re-positions it from
    /// its checkpoint at start and after a reconnect).
    pub consumer: String,
    /// Only messages on subjects matching this (wildcards allowed).
    pub filter_subject: Option<String>,
    /// Messages pulled per request.
    pub batch: usize,
    /// JetStream's ack wait for the consumer (a message not acknowledged
    /// within it is delivered again; while a backpressure topic is full the
    /// bridge tells the server it is still working on the message).
    pub ack_wait: Duration,
    /// The small shmq topic where the bridge records, before each send,
    /// which stream sequence goes to which partition and offset (default
    /// `<topic>-nats-ckpt`): how a restarted bridge avoids duplicates.
    pub checkpoint_topic: String,
    /// How often to emit a progress line.
    pub progress_interval: Duration,
}

impl ImportConfig {
    /// An import of `stream` into `topic` in `namespace` with the other
    /// settings at their defaults (consumer `shmq-import-<ns>-<topic>`).
    pub fn new(namespace: &str, topic: &str, stream: &str) -> ImportConfig {
        ImportConfig {
            nats: NatsOptions::default(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            stream: stream.to_string(),
            consumer: format!("shmq-import-{namespace}-{topic}"),
            filter_subject: None,
            batch: 256,
            ack_wait: Duration::from_secs(30),
            checkpoint_topic: format!("{topic}-nats-ckpt"),
            progress_interval: Duration::from_secs(1),
        }
    }

    /// Check every setting that can be checked without a server.
    ///
    /// # Errors
    /// [`BridgeError::Config`].
    pub fn validate(&self) -> Result<()> {
        self.nats.validate()?;
        shmq::protocol::name::validate_namespace(&self.namespace)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        shmq::protocol::name::validate_topic(&self.topic)
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        shmq::protocol::name::validate_topic(&self.checkpoint_topic).map_err(|e| {
            BridgeError::Config(format!(
                "checkpoint topic: {e}; choose one with --checkpoint-topic"
            ))
        })?;
        if self.checkpoint_topic == self.topic {
            return Err(BridgeError::Config(
                "the checkpoint topic must not be the destination topic".into(),
            ));
        }
        check_js_name("stream", &self.stream)?;
        check_js_name("consumer", &self.consumer)?;
        if let Some(f) = &self.filter_subject {
            check_subject(f, true)
                .map_err(|why| BridgeError::Config(format!("filter subject {f:?}: {why}")))?;
        }
        if self.batch == 0 {
            return Err(BridgeError::Config("batch must be at least 1".into()));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(BridgeError::Config("ack wait must be at least 1s".into()));
        }
        if self.progress_interval.is_zero() {
            return Err(BridgeError::Config(
                "progress interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The optional TOML file (`shmq bridge --config FILE`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// NATS server URL(s).
    pub url: Option<String>,
    /// Credentials file.
    pub creds: Option<PathBuf>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Token.
    pub token: Option<String>,
    /// `[export]` settings.
    pub export: Option<ExportSection>,
    /// `[import]` settings.
    pub import: Option<ImportSection>,
}

/// The `[export]` table of the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Topic.
    pub topic: Option<String>,
    /// Stream.
    pub stream: Option<String>,
    /// Subject template.
    pub subject: Option<String>,
    /// Consumer group.
    pub group: Option<String>,
}

/// The `[import]` table of the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportSection {
    /// Topic.
    pub topic: Option<String>,
    /// Stream.
    pub stream: Option<String>,
    /// Durable consumer name.
    pub consumer: Option<String>,
    /// Filter subject.
    pub filter_subject: Option<String>,
    /// Checkpoint topic.
    pub checkpoint_topic: Option<String>,
}

impl FileConfig {
    /// Parse a TOML document.
    ///
    /// # Errors
    /// [`BridgeError::Config`] with the parser's line and column.
    pub fn parse(text: &str, origin: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| BridgeError::Config(format!("{origin}: {e}")))
    }

    /// Read and parse a file.
    ///
    /// # Errors
    /// [`BridgeError::Config`] if it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BridgeError::Config(format!("config file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_bad_ones_are_refused() {
        let t = SubjectTemplate::parse(DEFAULT_SUBJECT).unwrap();
        assert_eq!(t.render("a", "orders", 3), "shmq.a.orders.3");
        assert_eq!(t.wildcard("a", "orders"), "shmq.a.orders.*");
        for bad in [
            "shmq..{topic}",
            "shmq.{nope}",
            "a b.{partition}",
            "x.>",
            "x.{ns",
            "x}.y",
            "",
        ] {
            let e = SubjectTemplate::parse(bad).unwrap_err();
            assert!(e.is_config(), "{bad}: {e}");
        }
    }

    #[test]
    fn file_parses_and_rejects_unknown_keys() {
        let f = FileConfig::parse(
            "url = \"nats://h:1\"\n[export]\ntopic = \"t\"\nsubject = \"s.{partition}\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(f.url.as_deref(), Some("nats://h:1"));
        assert_eq!(f.export.unwrap().subject.as_deref(), Some("s.{partition}"));
        let e = FileConfig::parse("urls = 1\n", "f").unwrap_err();
        assert!(e.to_string().contains("urls"), "{e}");
    }

    #[test]
    fn configs_validate() {
        let mut e = ExportConfig::new("a", "t");
        e.validate().unwrap();
        e.stream = "bad.name".into();
        assert!(e.validate().unwrap_err().is_config());
        let mut i = ImportConfig::new("b", "t", "S");
        i.validate().unwrap();
        i.nats.url = "http://x".into();
        assert!(i.validate().unwrap_err().to_string().contains("scheme"));
        i.nats.url = DEFAULT_URL.into();
        i.nats.creds = Some("/nonexistent/x.creds".into());
        assert!(i
            .validate()
            .unwrap_err()
            .to_string()
            .contains("credentials file"));
    }
}
