//! Hot reload: on a change to the config file (watched through its directory, since editors and
//! ConfigMaps replace files by rename) or on SIGHUP, validate the file and swap the snapshot.
//! Events are debounced: one `cp` fires several events and may be read half-written.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::Gateway;

const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching; the returned watcher must be kept alive.
pub fn spawn(gateway: Arc<Gateway>) -> Result<Option<notify::RecommendedWatcher>, String> {
    let Some(path) = gateway.config_path().map(std::path::Path::to_path_buf) else {
        return Ok(None);
    };
    let file_name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let sighup_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let touches_config = event.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
            if touches_config && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;

    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let _ = sighup_tx.send(());
        }
    });

    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            match gateway.reload() {
                Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
                Err(e) => {
                    tracing::error!(config = %path.display(), "config reload rejected, still serving the previous config:\n{e}")
                }
            }
        }
    });
    Ok(Some(watcher))
}
