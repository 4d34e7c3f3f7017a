//! Shared by the benches and the latency examples (`#[path]`-included, not a bench itself).

use sqlx::Connection;

/// A new, empty `lgbench_*` database on the PostgreSQL server `base` points at (.ci/run
/// drops leftover ones).
pub async fn fresh_pg(base: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("lgbench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::AnyConnection::connect(base)
        .await
        .expect("connect --pg");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (server, _) = base.rsplit_once('/').expect("URL names a database");
    format!("{server}/{name}")
}
