//! Connecting to NATS, with backoff, and watching the connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event};

use crate::config::NatsOptions;
use crate::error::{BridgeError, Result};
use crate::progress::{Meter, Progress};
use crate::Stop;

/// What the client's event callback saw.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) connected: AtomicBool,
    /// Bumped on every lost connection: a change tells the import loop that
    /// messages in flight may have been lost and it must re-position.
    pub(crate) disconnects: AtomicU64,
    pub(crate) last_event_error: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// Copy what the callback saw into the report.
    pub(crate) fn sync(&self, meter: &mut Meter) {
        meter.p.connected = self.connected.load(Ordering::SeqCst);
        meter.p.disconnects = self.disconnects.load(Ordering::SeqCst);
        if let Some(e) = self
            .last_event_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            meter.error(e);
        }
    }
}

/// Reconnect delay: 50 ms doubling to 2 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(2))
}

/// Connect, retrying with backoff while the server cannot be reached;
/// authentication and URL errors are fatal.
pub(crate) async fn connect(
    opts: &NatsOptions,
    health: &Arc<Health>,
    meter: &mut Meter,
    stop: &Stop,
    emit: &mut dyn FnMut(&Progress),
) -> Result<Option<async_nats::Client>> {
    let mut attempt = 0u32;
    loop {
        if stop.stopped() {
            return Ok(None);
        }
        let mut o = ConnectOptions::new()
            .name(&opts.name)
            .connection_timeout(opts.request_timeout)
            .request_timeout(Some(opts.request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|n| backoff(n.min(32) as u32));
        if let Some(path) = &opts.creds {
            o = o.credentials_file(path).await.map_err(|e| {
                BridgeError::Config(format!("credentials file {}: {e}", path.display()))
            })?;
        }
        if let (Some(u), Some(p)) = (&opts.user, &opts.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &opts.token {
            o = o.token(t.clone());
        }
        let h = health.clone();
        o = o.event_callback(move |ev| {
            let h = h.clone();
            async move {
                match ev {
                    Event::Connected => h.connected.store(true, Ordering::SeqCst),
                    Event::Disconnected => {
                        h.connected.store(false, Ordering::SeqCst);
                        h.disconnects.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::ServerError(e) => {
                        *h.last_event_error.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("server error: {e}"));
                    }
                    _ => {}
                }
            }
        });
        match o.connect(opts.url.as_str()).await {
            Ok(client) => {
                health.connected.store(true, Ordering::SeqCst);
                meter.p.connected = true;
                return Ok(Some(client));
            }
            Err(e) => {
                let fatal = matches!(
                    e.kind(),
                    ConnectErrorKind::Authentication
                        | ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::ServerParse
                        | ConnectErrorKind::Tls
                );
                if fatal {
                    return Err(BridgeError::Config(format!(
                        "connecting to {}: {e}; check the url and credentials",
                        opts.url
                    )));
                }
                meter.p.connected = false;
                meter.p.retries += 1;
                meter.error(format!("connecting to {}: {e}", opts.url));
                if let Some(p) = meter.due(attempt == 0) {
                    emit(&p);
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// The JetStream context with the configured request timeout.
pub(crate) fn jetstream(
    client: async_nats::Client,
    opts: &NatsOptions,
) -> async_nats::jetstream::Context {
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(opts.request_timeout);
    js
}
