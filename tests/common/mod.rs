//! Test harness: the real server on port 0 against a fresh database (a SQLite file in a
//! temporary directory, or a new PostgreSQL database when `LEADGATE_TEST_PG` is set).
#![allow(dead_code)]

pub mod dovecot;

use std::time::{Duration, Instant};

use leadgate::config::Config;
use leadgate::startup::Application;
use leadgate::store::{RequestMeta, Store, WriteContext};
use serde_json::Value;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once per backend; PostgreSQL variants say plainly when they skip.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !common::postgres_enabled() {
                    eprintln!("SKIPPED {}: LEADGATE_TEST_PG is unset", module_path!());
                    return;
                }
                super::$name(common::Backend::Postgres).await
            }
        })*
    };
}

pub fn postgres_enabled() -> bool {
    std::env::var("LEADGATE_TEST_PG").is_ok_and(|v| !v.is_empty())
}

/// A fresh, empty PostgreSQL database on the server `LEADGATE_TEST_PG` points at.
pub async fn fresh_postgres_url() -> String {
    let base = std::env::var("LEADGATE_TEST_PG").expect("LEADGATE_TEST_PG is set");
    sqlx::any::install_default_drivers();
    let name = format!("lgtest_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::AnyConnection::connect(&base)
        .await
        .expect("connect to LEADGATE_TEST_PG");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (server, _) = base.rsplit_once('/').expect("URL names a database");
    format!("{server}/{name}")
}

pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub store: Store,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub handle: actix_web::dev::ServerHandle,
    pub stopped: tokio::task::JoinHandle<std::io::Result<()>>,
    _data: tempfile::TempDir,
}

pub async fn test_config(backend: Backend, data: &tempfile::TempDir) -> Config {
    let database_url = match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => fresh_postgres_url().await,
    };
    Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        data_dir: data.path().to_path_buf(),
        database_url,
        http_workers: 2,
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let data = tempfile::tempdir().expect("temporary directory");
    let config = test_config(backend, &data).await;
    spawn_app_with(config, data).await
}

/// The app with a configuration the test adjusts first (channel secrets, forms, limits).
pub async fn spawn_app_with_config(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut config = test_config(backend, &data).await;
    adjust(&mut config);
    spawn_app_with(config, data).await
}

pub async fn spawn_app_with(config: Config, data: tempfile::TempDir) -> TestApp {
    leadgate::telemetry::init_logging(config.log_format, "warn");
    let app = Application::build(config.clone())
        .await
        .expect("app builds");
    let port = app.port();
    let store = app.store();
    let handle = app.handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let admin = store
        .create_token(&ctx, "test admin", "admin", "admin", None)
        .await
        .expect("admin token");
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        store,
        admin_token: admin.secret,
        client: reqwest::Client::new(),
        config,
        handle,
        stopped,
        _data: data,
    }
}

impl TestApp {
    pub async fn partner_token(&self, name: &str) -> String {
        let ctx = WriteContext::new("test", "test", RequestMeta::default());
        self.store
            .create_token(&ctx, name, &format!("partner:{name}"), "partner", None)
            .await
            .expect("partner token")
            .secret
    }

    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Waits until the inbound row leaves the queue and returns it.
    pub async fn settled_inbound(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, row) = self.get_json(&format!("/v1/inbound/{id}")).await;
            assert_eq!(status, 200, "inbound {id}: {row}");
            if row["status"] == "done" || row["status"] == "failed" {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "inbound {id} still {}",
                row["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many inbox rows exist, whatever their state.
    pub async fn inbox_total(&self) -> i64 {
        let depth = self.store.inbox_depth().await.expect("inbox depth");
        depth.pending + depth.processing + depth.done + depth.failed
    }

    /// The Prometheus text the app exposes.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.stopped.await;
    }

    /// Stops the app and starts it again on the same configuration and data (a restart).
    pub async fn restart(self) -> TestApp {
        self.restart_with(async |_| {}).await
    }

    /// Stops the app, lets `between` act on the stopped app's configuration and data (a
    /// crash's aftermath, a damaged file), then starts it again.
    pub async fn restart_with(self, between: impl AsyncFnOnce(&Config)) -> TestApp {
        self.handle.stop(true).await;
        let _ = self.stopped.await;
        between(&self.config).await;
        spawn_app_with(self.config, self._data).await
    }
}
