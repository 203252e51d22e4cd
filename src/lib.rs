//! llm-gateway: one binary between applications and every LLM provider.
//!
//! [`Gateway`] holds the live configuration snapshot; [`server`] is the HTTP edge;
//! [`engine::pipeline`] runs each request's steps in order. See `docs/pipeline.md`.

pub mod balance;
pub mod config;
pub mod engine;
pub mod error;
pub mod providers;
pub mod reload;
mod rng;
pub mod route;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;

use config::Config;
use engine::{Shared, Snapshot};

/// The running gateway: the current snapshot, swapped atomically on reload, and the state that
/// outlives snapshots (connection pools, readiness).
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    shared: Shared,
    config_path: Option<PathBuf>,
    /// The address actually served; a reload must keep it safe (keys on non-loopback).
    listen: std::sync::Mutex<Option<SocketAddr>>,
    pub(crate) ready: AtomicBool,
}

impl Gateway {
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Self>, error::GatewayError> {
        let shared = Shared::default();
        let snapshot = Snapshot::build(config, &shared)?;
        telemetry::prometheus();
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            shared,
            config_path,
            listen: std::sync::Mutex::new(None),
            ready: AtomicBool::new(true),
        }))
    }

    /// The snapshot for one request: hold it until the request is done.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Records the served address so reloads can enforce the same safety rule as startup.
    pub fn set_listen(&self, addr: SocketAddr) {
        if let Ok(mut listen) = self.listen.lock() {
            *listen = Some(addr);
        }
    }

    /// Re-reads the config file; on any problem the current snapshot keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("the gateway runs the built-in demo config; there is no file to reload".into());
        };
        let result = Config::load(path).map_err(|e| e.to_string()).and_then(|config| {
            let listen = self.listen.lock().ok().and_then(|l| *l);
            if let Some(addr) = listen {
                check_exposure(addr, &config)?;
            }
            Snapshot::build(config, &self.shared).map_err(|e| e.to_string())
        });
        telemetry::config_reloaded(result.is_ok());
        let snapshot = result?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

/// reqwest is built without a default TLS provider (to avoid building aws-lc); ring must be
/// installed before any HTTP client is built. Safe to call many times.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses an open gateway (no client keys) on anything but a loopback address.
pub fn check_exposure(addr: SocketAddr, config: &Config) -> Result<(), String> {
    if config.client_keys.is_empty() && !addr.ip().is_loopback() {
        return Err(format!(
            "{}: refusing to serve on {addr} without client keys — add `auth.keys` to the config, or listen on 127.0.0.1",
            config.source
        ));
    }
    Ok(())
}
