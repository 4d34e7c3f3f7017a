//! The real binary, killed mid-load: nothing it acknowledged is lost, nothing is
//! processed twice. And a bad configuration stops start with the key named.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_leadgate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cli(data: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("LEADGATE_DATA_DIR", data)
        .env("LEADGATE_LOG_FILTER", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn start(data: &Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("LEADGATE_DATA_DIR", data)
        .env("LEADGATE_LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Posts unique leads from 32 connections until stopped; answers external id → inbound id
/// for every 202.
fn load(
    port: u16,
    key: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<HashMap<String, String>> {
    tokio::spawn(async move {
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for conn in 0..32 {
            let (client, key, stop, acked) =
                (client.clone(), key.clone(), stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let external_id = format!("c{conn}-{n}");
                    let sent = client
                        .post(format!("http://127.0.0.1:{port}/v1/partner/leads"))
                        .bearer_auth(&key)
                        .json(&json!({"external_id": external_id, "email": format!("{external_id}@load.example")}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 202 => {
                            if let Ok(body) = response.json::<Value>().await {
                                let id = body["id"].as_str().unwrap_or_default().to_owned();
                                acked.lock().unwrap().insert(external_id, id);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
    })
}

async fn wait_drained(port: u16) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            let ready: Value = response.json().await.unwrap_or(Value::Null);
            if ready["inbox"]["pending"] == 0 && ready["inbox"]["processing"] == 0 {
                return ready;
            }
        }
        assert!(Instant::now() < deadline, "inbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_all_kept(port: u16, admin: &str, acked: &HashMap<String, String>, data: &Path) {
    let ready = wait_drained(port).await;
    let client = reqwest::Client::new();
    for (external_id, id) in acked {
        let row: Value = client
            .get(format!("http://127.0.0.1:{port}/v1/inbound/{id}"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            row["external_id"],
            external_id.as_str(),
            "acknowledged {external_id} lost"
        );
        assert_eq!(row["status"], "done", "{row}");
    }
    // Each done row made exactly one lead: none was processed twice.
    let done = ready["inbox"]["done"].as_i64().unwrap();
    assert!(
        done >= acked.len() as i64,
        "{done} done < {} acknowledged",
        acked.len()
    );
    let store =
        leadgate::store::Store::connect(&format!("sqlite://{}/leadgate.db", data.display()), 1)
            .await
            .unwrap();
    let leads = store
        .count(leadgate::domain::RecordKind::Lead)
        .await
        .unwrap();
    assert_eq!(leads, done, "leads vs processed inbox rows");
}

async fn survives(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let admin = cli(
        data.path(),
        &["token", "create", "--name", "admin", "--admin"],
    );
    let key = cli(
        data.path(),
        &["token", "create", "--name", "load", "--partner", "load"],
    );
    let port = free_port();
    let child = start(data.path(), port).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = load(port, key, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    if signal == "-TERM" {
        assert!(exit.success(), "graceful stop exits 0, got {exit:?}");
        // The worker finished its batch and gave back the one it had claimed ahead.
        let depth: Value = serde_json::from_str(&cli(data.path(), &["inbox", "status"])).unwrap();
        assert_eq!(depth["processing"], 0, "{depth}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = loader.await.unwrap();
    assert!(
        acked.len() > 50,
        "the load got going before the {signal}: {}",
        acked.len()
    );
    let _restarted = start(data.path(), port).await;
    assert_all_kept(port, &admin, &acked, data.path()).await;
    let mut restarted = _restarted;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_load_loses_nothing_acknowledged() {
    survives("-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_mid_load_drains_and_loses_nothing() {
    survives("-TERM").await;
}

#[test]
fn a_bad_configuration_value_fails_start_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve"])
        .env("LEADGATE_DATA_DIR", data.path())
        .env("LEADGATE_MAX_BODY_BYTES", "a lot")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_body_bytes"), "{stderr}");

    let file = data.path().join("leadgate.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:99999\"\n").unwrap();
    let output = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen"));

    let output = Command::new(BIN)
        .args(["--config", "/nonexistent/leadgate.toml", "migrate"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}
