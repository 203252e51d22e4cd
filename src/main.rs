//! The `llm-gateway` command: `serve`, `check`, and the benchmark's `mock-upstream`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llm_gateway::config::Config;
use llm_gateway::{Gateway, check_exposure, reload, server};

#[derive(Parser)]
#[command(name = "llm-gateway", version, about = "An OpenAI-compatible gateway in front of every LLM provider")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway. Without --config, serves a built-in offline demo config.
    Serve {
        /// YAML config file; reloaded when it changes or on SIGHUP.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on; overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate config files without serving; prints every problem and exits non-zero on any.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serve a mock OpenAI-compatible upstream (for benchmarks and demos).
    #[cfg(feature = "testkit")]
    #[command(hide = true)]
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Bytes per streamed write; 0 sends one event per write.
        #[arg(long, default_value_t = 0)]
        split: usize,
        /// Milliseconds to pause before each streamed event; each JSON event then carries its send
        /// time as `"x_mock_sent_ns"` (Unix ns), to measure forwarding delay. 0 = no pauses.
        #[arg(long, default_value_t = 0.0)]
        chunk_interval_ms: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Serve { config, listen } => run(serve(config, listen)),
        #[cfg(feature = "testkit")]
        Command::MockUpstream { listen, split, chunk_interval_ms } => run(async move {
            let interval = std::time::Duration::try_from_secs_f64(chunk_interval_ms / 1000.0)
                .map_err(|e| format!("--chunk-interval-ms {chunk_interval_ms}: {e}"))?;
            let upstream = llm_gateway::testkit::MockUpstream::start_on(listen, false, split)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            upstream.set_chunk_interval(interval);
            tracing::info!("mock upstream listening on {}", upstream.base_url());
            tokio::select! {
                _ = upstream.wait() => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).init();
}

fn run(future: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let shared = llm_gateway::engine::Shared::default();
    let mut failed = false;
    for file in files {
        let config = match Config::load(file) {
            Ok(config) => config,
            Err(e) => {
                failed = true;
                eprintln!("{e}");
                continue;
            }
        };
        let (providers, models) = (config.providers.len(), config.models.len());
        // Also build what `serve` would build (adapters, URLs, clients) without contacting anyone.
        let built = llm_gateway::engine::Snapshot::build(config, &shared);
        match built {
            Ok(_) => println!("{}: ok ({providers} providers, {models} models)", file.display()),
            Err(e) => {
                failed = true;
                eprintln!("{}: {e}", file.display());
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> Result<(), String> {
    let config = match &config_path {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::demo().map_err(|e| e.to_string())?,
    };
    let addr = listen.unwrap_or(config.server.listen);
    check_exposure(addr, &config)?;
    let source = config.source.clone();
    let models = config.models.len();
    let gateway = Gateway::new(config, config_path).map_err(|e| e.to_string())?;
    gateway.set_listen(addr);
    let _watcher = reload::spawn(gateway.clone())?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(config = %source, models, "llm-gateway listening on http://{addr}");
    server::serve(gateway, listener, shutdown_signal()).await.map_err(|e| format!("server failed: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
