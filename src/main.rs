//! The `llm-gateway` command: `serve`, `check`, and the benchmark's `mock-upstream`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llm_gateway::config::Config;
use llm_gateway::{Gateway, check_exposure, reload, server};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

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
    /// Explain how the router would route a prompt, without calling any model.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        /// The prompt to route.
        #[arg(long)]
        explain: String,
    },
    /// Evaluate the router on labelled prompts (JSONL rows of {"prompt": …, "intent": …}).
    EvalRouter {
        #[arg(long, short)]
        config: PathBuf,
        data: PathBuf,
        /// Write one {"intent": …, "tier": …} per input row, in order.
        #[arg(long)]
        predictions: Option<PathBuf>,
        /// Tiers 1 and 2 only: never call the classifier model.
        #[arg(long)]
        no_classifier: bool,
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
        Command::Route { config, explain } => run(route_explain(config, explain)),
        Command::EvalRouter { config, data, predictions, no_classifier } => {
            run(eval_router(config, data, predictions, no_classifier))
        }
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
    let shared = llm_gateway::engine::Shared::for_validation();
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

fn router_snapshot(config: &std::path::Path) -> Result<std::sync::Arc<llm_gateway::engine::Snapshot>, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    if config.router.is_none() {
        return Err(format!("{}: no `router:` section — add routes to route requests for `auto`", config.source));
    }
    let snapshot = llm_gateway::engine::Snapshot::build(config, &llm_gateway::engine::Shared::default())
        .map_err(|e| e.to_string())?;
    // Examples embedded first, so the timings below are of routing alone; a failure is only
    // reported here (the tier abstains with the reason, as it would when serving).
    if let Some(Err(e)) = snapshot.router.as_ref().map(|r| r.wait_ready()) {
        eprintln!("warning: {e}");
    }
    Ok(std::sync::Arc::new(snapshot))
}

async fn route_explain(config: PathBuf, prompt: String) -> Result<(), String> {
    let snapshot = router_snapshot(&config)?;
    let router = snapshot.router.clone().ok_or("no router")?;
    let decision = llm_gateway::engine::pipeline::decide(&snapshot, &router, &prompt, false).await;
    let text = serde_json::to_string_pretty(&decision).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

async fn eval_router(
    config: PathBuf,
    data: PathBuf,
    predictions: Option<PathBuf>,
    no_classifier: bool,
) -> Result<(), String> {
    use llm_gateway::route::eval;
    let snapshot = router_snapshot(&config)?;
    let router = snapshot.router.clone().ok_or("no router")?;
    let text = std::fs::read_to_string(&data).map_err(|e| format!("cannot read {}: {e}", data.display()))?;
    let rows = eval::read_rows(&text, &data.display().to_string())?;
    let mut decisions = Vec::with_capacity(rows.len());
    for row in &rows {
        decisions.push(llm_gateway::engine::pipeline::decide(&snapshot, &router, &row.prompt, !no_classifier).await);
    }
    if let Some(path) = predictions {
        let lines: String =
            decisions.iter().map(|d| format!("{}\n", serde_json::json!({"intent": d.route, "tier": d.tier}))).collect();
        std::fs::write(&path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let price = |name: &str| {
        snapshot.models.get(name).and_then(|m| m.targets.first()).and_then(|t| t.price).map(|p| p.input + p.output)
    };
    print!("{}", eval::report(&rows, &decisions, router.route_names(), &price));
    Ok(())
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
