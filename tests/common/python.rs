//! Running the official Python SDKs against the gateway: finding the interpreter and running a
//! script with a time limit. Python comes from `LLM_GATEWAY_TEST_PYTHON`, else `.venv/bin/python`
//! (made by `scripts/setup-python.sh`). Without a Python that imports the needed modules a test is
//! skipped, or fails when `CI` is set.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP: &str = "scripts/setup-python.sh";
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(180);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter to use, or why there is none.
fn find_python(modules: &[&str]) -> Result<PathBuf, String> {
    let python = match std::env::var_os("LLM_GATEWAY_TEST_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv/bin/python"),
    };
    if !python.exists() {
        return Err(format!("no Python interpreter at {}", python.display()));
    }
    let probe = Command::new(&python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !probe.status.success() {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(format!("`import {}` fails with {}: {}", modules.join(", "), python.display(), why.trim()));
    }
    Ok(python)
}

/// The interpreter, `None` to skip (outside CI), or a panic in CI where the SDK tests must run.
pub fn python_or_skip(test: &str, modules: &[&str]) -> Option<PathBuf> {
    match find_python(modules) {
        Ok(python) => Some(python),
        Err(why) if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("{why}; CI needs the Python SDKs: run `{SETUP}` first")
        }
        Err(why) => {
            eprintln!("{test} skipped: {why}; run `{SETUP}` to enable this test");
            None
        }
    }
}

/// Runs `script` to completion (killing it after a time limit) and panics with its output unless
/// it exits 0.
pub fn run_script(python: &Path, script: &str, envs: &[(&str, String)]) -> String {
    let mut child = Command::new(python)
        .arg(repo().join(script))
        .current_dir(repo())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("--- stdout ---\n{}--- stderr ---\n{}", stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        None => panic!("{script} ran longer than {SCRIPT_TIME_LIMIT:?} and was killed\n{output}"),
        Some(status) if !status.success() => panic!("{script} failed ({status})\n{output}"),
        Some(_) => output,
    }
}
