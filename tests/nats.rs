//! Scale-out on NATS JetStream: gateways publish, workers consume partitions, PostgreSQL
//! holds the records. Each test has its own stream (uuid suffix) and its own database.
//! They run when `LEADGATE_TEST_NATS` and `LEADGATE_TEST_PG` are set; the back-pressure
//! test runs its own throwaway nats-server (it stops and starts it).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestApp;
use connectors::signature::hmac_sha256_hex;
use futures_util::future::join_all;
use leadgate::config::{Config, FormSection, NatsSection, QueueKind, Role};
use leadgate::domain::RecordKind;
use serde_json::{Value, json};

const WA_SECRET: &str = "wa-app-secret";

/// The NATS URL, or `None` (after saying so) when the test cannot run here.
fn enabled(test: &str) -> Option<String> {
    let Some(nats) = std::env::var("LEADGATE_TEST_NATS")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("SKIPPED nats::{test}: LEADGATE_TEST_NATS is unset");
        return None;
    };
    if !common::postgres_enabled() {
        eprintln!("SKIPPED nats::{test}: LEADGATE_TEST_PG is unset");
        return None;
    }
    Some(nats)
}

fn stream_name() -> String {
    format!("lgtest_{}", uuid::Uuid::now_v7().simple())
}

fn section(url: &str, stream: &str) -> NatsSection {
    NatsSection {
        url: url.to_owned(),
        stream: stream.to_owned(),
        partitions: 4,
        max_deliver: 3,
        ack_wait_secs: 3,
        lease_secs: 2,
        publish_timeout_ms: 1000,
        ..NatsSection::default()
    }
}

/// One leadgate process (in-process, port 0) on the shared database and stream.
async fn node(
    database_url: &str,
    nats: &NatsSection,
    role: Role,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        data_dir: data.path().to_path_buf(),
        database_url: database_url.to_owned(),
        http_workers: 2,
        role,
        queue: QueueKind::Nats,
        nats: nats.clone(),
        worker_batch: 64,
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    config.whatsapp.app_secret = WA_SECRET.into();
    config.whatsapp.verify_token = "verify".into();
    config.forms.insert(
        "contact".into(),
        FormSection {
            required: vec!["email".into()],
            mapping: Some("form".into()),
            ..FormSection::default()
        },
    );
    adjust(&mut config);
    common::spawn_app_with(config, data).await
}

/// Removes the test's streams and lease bucket from the shared server.
async fn cleanup(nats: &NatsSection) {
    let Ok(client) = async_nats::connect(nats.url.as_str()).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&nats.stream).await;
    let _ = js.delete_stream(format!("{}_dlq", nats.stream)).await;
    let _ = js.delete_key_value(format!("{}_leases", nats.stream)).await;
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(app.store.pool())
        .await
        .expect("count query")
}

/// Waits until `n` inbox rows are done or failed; answers how many are.
async fn settled(app: &TestApp, n: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let done = scalar(
            app,
            "SELECT COUNT(*) FROM inbox WHERE status IN ('done', 'failed')",
        )
        .await;
        if done >= n || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn whatsapp_body(phone_digits: &str, name: &str, message_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "0", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "16505551111", "phone_number_id": "123456123"},
            "contacts": [{"profile": {"name": name}, "wa_id": phone_digits}],
            "messages": [{"from": phone_digits, "id": message_id, "timestamp": "1504902988",
                          "type": "text", "text": {"body": "is the offer still open?"}}]
        }}]}]
    }))
    .expect("json")
}

const PEOPLE: &[(&str, &str)] = &[
    ("Ada", "Lovelace"),
    ("Grace", "Hopper"),
    ("Margaret", "Hamilton"),
    ("Katherine", "Johnson"),
    ("Barbara", "Liskov"),
    ("Frances", "Allen"),
    ("Radia", "Perlman"),
    ("Hedy", "Lamarr"),
    ("Joan", "Clarke"),
    ("Sophie", "Wilson"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_person_through_form_partner_batch_and_whatsapp_at_once_is_one_lead() {
    let Some(url) =
        enabled("one_person_through_form_partner_batch_and_whatsapp_at_once_is_one_lead")
    else {
        return;
    };
    let db = common::fresh_postgres_url().await;
    let nats = section(&url, &stream_name());
    let gateway_a = node(&db, &nats, Role::Gateway, |_| {}).await;
    let gateway_b = node(&db, &nats, Role::Gateway, |_| {}).await;
    let worker_1 = node(&db, &nats, Role::Worker, |_| {}).await;
    let worker_2 = node(&db, &nats, Role::Worker, |_| {}).await;
    let key = gateway_a.partner_token("acme").await;
    let client = reqwest::Client::new();

    let mut requests = Vec::new();
    for (i, (first, last)) in PEOPLE.iter().enumerate() {
        let email = format!(
            "{}.{}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let phone = format!("1631555{:04}", 1000 + i);
        let form = client
            .post(format!("{}/v1/forms/contact", gateway_a.base))
            .json(
                &json!({"first_name": first, "last_name": last, "email": email,
                          "phone": format!("+{phone}"), "name": format!("{first} {last}")}),
            )
            .send();
        // The person in the middle of a partner batch of three.
        let batch = client
            .post(format!("{}/v1/partner/leads", gateway_b.base))
            .bearer_auth(&key)
            .json(&json!([
                {"external_id": format!("before-{i}"), "first_name": "Filler", "last_name": format!("Before{i}"),
                 "email": format!("before{i}@filler.example")},
                {"external_id": format!("crm-{i}"), "first_name": first, "last_name": last,
                 "email": email.to_uppercase(), "phone": format!("+{phone}")},
                {"external_id": format!("after-{i}"), "first_name": "Filler", "last_name": format!("After{i}"),
                 "email": format!("after{i}@filler.example")},
            ]))
            .send();
        let body = whatsapp_body(&phone, &format!("{first} {last}"), &format!("wamid.{i}"));
        let signature = format!("sha256={}", hmac_sha256_hex(WA_SECRET.as_bytes(), &[&body]));
        let whatsapp = client
            .post(format!("{}/v1/webhooks/whatsapp", gateway_a.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send();
        requests.push(form);
        requests.push(batch);
        requests.push(whatsapp);
    }
    for response in join_all(requests).await {
        let response = response.expect("request sent");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let expected = (PEOPLE.len() * 5) as i64;
    assert_eq!(
        settled(&worker_1, expected, Duration::from_secs(60)).await,
        expected
    );
    for (i, (first, last)) in PEOPLE.iter().enumerate() {
        let phone = format!("+1631555{:04}", 1000 + i);
        let leads = worker_1
            .store
            .find_by(RecordKind::Lead, "phone", &phone, 10)
            .await
            .expect("leads by phone");
        assert_eq!(leads.len(), 1, "{first} {last}: {leads:?}");
        let email = format!(
            "{}.{}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        );
        assert_eq!(leads[0].fields["email"], email.as_str(), "{first} {last}");
    }
    // Each person once, each filler once.
    assert_eq!(
        worker_1.store.count(RecordKind::Lead).await.expect("count"),
        (PEOPLE.len() * 3) as i64
    );
    for app in [gateway_a, gateway_b, worker_1, worker_2] {
        app.stop().await;
    }
    cleanup(&nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_replayed_inbound_is_written_once() {
    let Some(url) = enabled("a_redelivered_or_replayed_inbound_is_written_once") else {
        return;
    };
    let db = common::fresh_postgres_url().await;
    let nats = section(&url, &stream_name());
    let gateway = node(&db, &nats, Role::Gateway, |_| {}).await;
    let key = gateway.partner_token("acme").await;
    let lead = json!({"external_id": "crm-77", "first_name": "Alan", "last_name": "Turing",
                      "email": "alan@bletchley.example"});
    let first: Value = gateway
        .post_json(&key, "/v1/partner/leads", &lead)
        .await
        .json()
        .await
        .expect("receipt");
    // The partner sends it again: JetStream's duplicate window drops it, same answer.
    let again = gateway.post_json(&key, "/v1/partner/leads", &lead).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(b"true".as_slice())
    );
    let again: Value = again.json().await.expect("receipt");
    assert_eq!(again["id"], first["id"]);

    // A worker that committed and died before its ack: the same message delivered twice
    // (here: published twice under different message ids, past JetStream's dedup).
    let client = async_nats::connect(url.as_str()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&nats.stream).await.expect("stream exists");
    let published = stream
        .get_raw_message(1)
        .await
        .expect("the first publish is message 1");
    for copy in 0..2 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("copy-{copy}").as_str());
        js.publish_with_headers(
            published.subject.clone(),
            headers,
            published.payload.clone(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
    let worker = node(&db, &nats, Role::Worker, |_| {}).await;
    assert_eq!(settled(&worker, 1, Duration::from_secs(30)).await, 1);
    // Give the copies time to be processed too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream_pending(&js, &nats.stream).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stream_pending(&js, &nats.stream).await,
        0,
        "every copy acknowledged"
    );
    assert_eq!(scalar(&worker, "SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(
        worker.store.count(RecordKind::Lead).await.expect("count"),
        1
    );
    let row = worker
        .store
        .inbox_row(first["id"].as_str().expect("id"))
        .await
        .expect("read")
        .expect("the gateway's id is the inbox id");
    assert_eq!(row.status, "done");
    for app in [gateway, worker] {
        app.stop().await;
    }
    cleanup(&nats).await;
}

/// Messages left in the stream (work-queue retention removes acknowledged ones).
async fn stream_pending(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.expect("stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_is_dead_lettered_with_its_error_and_replays() {
    let Some(url) =
        enabled("a_message_that_always_fails_is_dead_lettered_with_its_error_and_replays")
    else {
        return;
    };
    let db = common::fresh_postgres_url().await;
    let nats = section(&url, &stream_name());
    let gateway = node(&db, &nats, Role::Gateway, |_| {}).await;
    // The store refuses this one record, every time, until the trigger is dropped.
    for sql in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
         IF NEW.external_id = 'poison-1' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        sqlx::query(sql)
            .execute(gateway.store.pool())
            .await
            .expect("trigger");
    }
    let key = gateway.partner_token("acme").await;
    let receipts: Value = gateway
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!([
                {"external_id": "poison-1", "first_name": "Poison", "last_name": "Pill", "email": "pill@example.org"},
                {"external_id": "good-1", "first_name": "Good", "last_name": "Record", "email": "good@example.org"},
            ]),
        )
        .await
        .json()
        .await
        .expect("receipts");
    let poison_id = receipts["items"][0]["id"].as_str().expect("id").to_owned();
    let worker = node(&db, &nats, Role::Worker, |_| {}).await;

    let client = async_nats::connect(url.as_str()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(40);
    let letters = loop {
        let letters = leadgate::queue::dlq::list(&js, &nats, 10)
            .await
            .expect("list");
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].id.as_deref(), Some(poison_id.as_str()));
    // At the third delivery, or later when a slow (loaded) attempt outlived `ack_wait`.
    let attempts: i64 = letters[0].attempts.parse().expect("a count");
    assert!(attempts >= 3, "{attempts}");
    assert!(
        letters[0].error.contains("refused by the test trigger"),
        "{}",
        letters[0].error
    );
    assert_eq!(
        settled(&worker, 1, Duration::from_secs(10)).await,
        1,
        "the good one is done"
    );
    assert!(
        worker
            .store
            .inbox_row(&poison_id)
            .await
            .expect("read")
            .is_none()
    );

    sqlx::query("DROP TRIGGER refuse_poison ON inbox")
        .execute(worker.store.pool())
        .await
        .expect("drop trigger");
    // The operator's command, as a separate process.
    let output = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .args(["dlq", "replay", "--all"])
        .env("LEADGATE_QUEUE", "nats")
        .env("LEADGATE_NATS__URL", &nats.url)
        .env("LEADGATE_NATS__STREAM", &nats.stream)
        .env("LEADGATE_DATA_DIR", worker.config.data_dir.as_os_str())
        .output()
        .expect("leadgate dlq replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 dead letter(s) replayed"));
    assert_eq!(settled(&worker, 2, Duration::from_secs(30)).await, 2);
    let row = worker
        .store
        .inbox_row(&poison_id)
        .await
        .expect("read")
        .expect("replayed and written");
    assert_eq!(row.status, "done");
    assert!(
        leadgate::queue::dlq::list(&js, &nats, 10)
            .await
            .expect("list")
            .is_empty()
    );
    for app in [gateway, worker] {
        app.stop().await;
    }
    cleanup(&nats).await;
}

/// A nats-server of the test's own, on a free port, with its store in a temporary
/// directory: it can be stopped and started without disturbing anyone else.
struct OwnNats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnNats {
    fn binary() -> Option<&'static str> {
        [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
    }

    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self {
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
            child: None,
        }
    }

    async fn start(&mut self) {
        let binary = Self::binary().expect("nats-server installed");
        let child = Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn post_lead(app: &TestApp, key: &str, n: usize) -> reqwest::Response {
    app.post_json(
        key,
        "/v1/partner/leads",
        &json!({"external_id": format!("bp-{n}"), "first_name": "Back", "last_name": format!("Pressure{n}"),
                "email": format!("bp{n}@example.org")}),
    )
    .await
}

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["status"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_or_the_stream_full_answers_503_with_retry_after_and_recovers_by_itself() {
    let test = "nats_down_or_the_stream_full_answers_503_with_retry_after_and_recovers_by_itself";
    if enabled(test).is_none() {
        return;
    }
    if OwnNats::binary().is_none() {
        eprintln!("SKIPPED nats::{test}: nats-server is not installed");
        return;
    }
    let db = common::fresh_postgres_url().await;
    let mut server = OwnNats::new();
    let nats = NatsSection {
        max_msgs: 3,
        ..section(&format!("nats://127.0.0.1:{}", server.port), &stream_name())
    };
    // Started while NATS is not there at all.
    let gateway = node(&db, &nats, Role::Gateway, |_| {}).await;
    let key = gateway.partner_token("acme").await;
    assert_unavailable(post_lead(&gateway, &key, 0).await).await;

    // NATS comes up: the gateway reconnects and creates the stream by itself.
    server.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut accepted = 0;
    while accepted == 0 {
        let response = post_lead(&gateway, &key, 1).await;
        if response.status() == 202 {
            accepted += 1;
        } else {
            assert_eq!(response.status(), 503);
            assert!(Instant::now() < deadline, "the gateway did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // No worker: the stream fills at three messages, and then refuses.
    for n in 2..=3 {
        assert_eq!(post_lead(&gateway, &key, n).await.status(), 202);
    }
    assert_unavailable(post_lead(&gateway, &key, 4).await).await;

    // NATS goes away: 503 again, nothing half-accepted.
    server.stop();
    assert_unavailable(post_lead(&gateway, &key, 5).await).await;
    assert_eq!(scalar(&gateway, "SELECT COUNT(*) FROM inbox").await, 0);

    // Back again (same store directory): a worker drains what was acknowledged.
    server.start().await;
    let worker = node(&db, &nats, Role::Worker, |_| {}).await;
    assert_eq!(settled(&worker, 3, Duration::from_secs(30)).await, 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = post_lead(&gateway, &key, 6).await;
        if response.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", response.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(settled(&worker, 4, Duration::from_secs(30)).await, 4);

    // NATS restarts under a running worker: it resumes consuming by itself.
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = post_lead(&gateway, &key, 7).await;
        if response.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", response.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(settled(&worker, 5, Duration::from_secs(30)).await, 5);
    for app in [gateway, worker] {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing() {
    let Some(url) = enabled("a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing") else {
        return;
    };
    let db = common::fresh_postgres_url().await;
    let nats = section(&url, &stream_name());
    let gateway = node(&db, &nats, Role::Gateway, |_| {}).await;
    let key = gateway.partner_token("acme").await;
    const TOTAL: usize = 1500;
    for chunk in 0..TOTAL / 100 {
        let leads: Vec<Value> = (chunk * 100..chunk * 100 + 100)
            .map(|n| json!({"external_id": format!("k-{n}"), "first_name": "Killed",
                            "last_name": format!("Worker{n}"), "email": format!("k{n}@example.org")}))
            .collect();
        let response = gateway
            .post_json(&key, "/v1/partner/leads", &json!(leads))
            .await;
        assert_eq!(response.status(), 202);
    }
    // A worker process, killed with SIGKILL while it is working through the backlog.
    let data = tempfile::tempdir().expect("temporary directory");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .args(["serve", "--role", "worker", "--listen", "127.0.0.1:0"])
            .env("LEADGATE_QUEUE", "nats")
            .env("LEADGATE_DATABASE_URL", &db)
            .env("LEADGATE_DATA_DIR", data.path())
            .env("LEADGATE_WORKER_BATCH", "100")
            .env("LEADGATE_NATS__URL", &nats.url)
            .env("LEADGATE_NATS__STREAM", &nats.stream)
            .env("LEADGATE_NATS__PARTITIONS", nats.partitions.to_string())
            .env(
                "LEADGATE_NATS__ACK_WAIT_SECS",
                nats.ack_wait_secs.to_string(),
            )
            .env("LEADGATE_NATS__LEASE_SECS", nats.lease_secs.to_string())
            .env("LEADGATE_LOG_FILTER", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker process starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = scalar(&gateway, "SELECT COUNT(*) FROM inbox").await;
        if done >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker process did nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    let at_kill = scalar(&gateway, "SELECT COUNT(*) FROM inbox").await;
    assert!(
        (at_kill as usize) < TOTAL,
        "killed too late to prove anything ({at_kill} done)"
    );
    // Another worker takes the partitions over once the leases lapse.
    let worker = node(&db, &nats, Role::Worker, |_| {}).await;
    assert_eq!(
        settled(&worker, TOTAL as i64, Duration::from_secs(90)).await,
        TOTAL as i64
    );
    assert_eq!(
        scalar(&worker, "SELECT COUNT(*) FROM inbox").await,
        TOTAL as i64
    );
    assert_eq!(
        scalar(&worker, "SELECT COUNT(*) FROM inbox WHERE status = 'done'").await,
        TOTAL as i64
    );
    assert_eq!(
        worker.store.count(RecordKind::Lead).await.expect("count"),
        TOTAL as i64,
        "every lead once"
    );
    for app in [gateway, worker] {
        app.stop().await;
    }
    cleanup(&nats).await;
}

/// A child process that does not outlive a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
