//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, the fantoccini crate) against the real server on port 0. Sign-in, search
//! with a typo, the record page, a rep's hidden fields, script in a lead's name, an import
//! from file pick to report (and the uploads it refuses), a session that ends mid-import,
//! the review queue (two stewards on one pair) and inbox health. Each page is saved as a
//! PNG under the build's scratch directory, or under `LEADGATE_SCREENSHOTS_DIR` when set
//! (`LEADGATE_SCREENSHOTS_DIR=docs/screenshots` refreshes the README's pictures), so a
//! test run leaves the checkout clean.
//!
//! Chromium and chromedriver come from Debian (`apt-get install -y chromium
//! chromium-driver`; .ci/run installs them). Without them these tests fail: they never
//! skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, spawn_app, spawn_app_with_config};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser at a time: two cores are shared with the server under test.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "correct horse battery staple";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Browser {
    client: Client,
    base: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

async fn browser(app: &TestApp) -> Browser {
    let chromium = which("chromium").expect(
        "Chromium is not installed: apt-get install -y chromium chromium-driver (.ci/run does)",
    );
    let chromedriver = which("chromedriver")
        .expect("chromedriver is not installed: apt-get install -y chromium-driver (.ci/run does)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().expect("profile directory");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Browser {
        client,
        base: app.base.clone(),
        _driver: driver,
        _profile: profile,
    }
}

impl Browser {
    async fn open(&self, hash: &str) {
        self.client
            .goto(&format!("{}/{hash}", self.base))
            .await
            .expect("navigate");
    }

    /// Waits for an element matching `css` whose text contains `text`.
    async fn wait_text(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if let Ok(found) = element.text().await
                        && found.contains(text)
                    {
                        return found;
                    }
                }
            }
            if Instant::now() > deadline {
                let body = self.text().await;
                panic!("no `{css}` containing `{text}` appeared; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("`{css}`: {e}"));
        element.send_keys(text).await.expect("typing");
    }

    /// Clicks the element, finding it again if the page re-rendered it meanwhile.
    async fn click(&self, css: &str) {
        for attempt in 0.. {
            let element = self
                .client
                .wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("`{css}`: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(error) if attempt < 5 => {
                    eprintln!("clicking `{css}` again: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("click `{css}`: {error}"),
            }
        }
    }

    /// Everything the page shows, as text.
    async fn text(&self) -> String {
        self.client
            .execute("return document.body.innerText", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    async fn sign_in(&self, email: &str) {
        self.open("#/sign-in").await;
        self.type_into("#email", email).await;
        self.type_into("#password", PASSWORD).await;
        self.click("#sign-in").await;
        self.wait_text("#who", "(").await;
    }

    async fn screenshot(&self, name: &str) {
        // Let fonts and the last paint settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = match std::env::var_os("LEADGATE_SCREENSHOTS_DIR") {
            Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        };
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

async fn api(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&app.admin_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A user who signs in with [`PASSWORD`]; answers the user's id.
async fn user(app: &TestApp, email: &str, role: &str) -> String {
    let user = api(
        app,
        reqwest::Method::POST,
        "/v1/admin/users",
        Some(json!({"email": email, "name": email, "role": role, "password": PASSWORD})),
    )
    .await;
    user["id"].as_str().expect("user id").to_owned()
}

async fn create(app: &TestApp, kind: &str, fields: Value) -> String {
    let record = api(
        app,
        reqwest::Method::POST,
        &format!("/v1/{kind}"),
        Some(fields),
    )
    .await;
    record["id"].as_str().expect("id").to_owned()
}

/// Waits until search finds `q` (the index follows the store shortly after a write).
async fn searchable(app: &TestApp, q: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, answer) = app
            .get_json(&format!("/v1/search?q={}", urlencode(q)))
            .await;
        if answer["hits"].as_array().is_some_and(|h| !h.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "`{q}` never became searchable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/console")
        .join(name)
        .display()
        .to_string()
}

on_both_backends!(
    console_is_served_under_a_strict_policy_and_cookie_writes_need_the_csrf_token,
    past_imports_and_per_channel_inbox_counts_are_answered,
);

async fn console_is_served_under_a_strict_policy_and_cookie_writes_need_the_csrf_token(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let page = app.client.get(&app.base).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "inline code: {html}"
    );
    let script = app
        .client
        .get(format!("{}/console/app.js", app.base))
        .send()
        .await
        .expect("app.js");
    assert!(
        script.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/javascript"))
    );

    user(&app, "ops@example.com", "admin").await;
    let signed_in = app
        .client
        .post(format!("{}/console/session", app.base))
        .json(&json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 201);
    let cookies: Vec<String> = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("lg_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let token = session["lg_session=".len()..]
        .split(';')
        .next()
        .expect("value");
    let answer: Value = signed_in.json().await.expect("json");
    let csrf = answer["csrf"].as_str().expect("csrf token");
    assert!(
        !answer.to_string().contains(token),
        "the token stays out of page scripts' reach"
    );
    let cookie = format!("lg_session={token}; lg_csrf={csrf}");
    // Reads need only the cookie.
    let me = app
        .client
        .get(format!("{}/v1/auth/me", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    // A write with the cookie but without (or with a wrong) CSRF token is refused and writes nothing.
    for header in [None, Some("0".repeat(64))] {
        let mut request = app
            .client
            .post(format!("{}/v1/leads", app.base))
            .header("cookie", &cookie)
            .json(&json!({"first_name": "Forged", "email": "forged@example.com"}));
        if let Some(value) = header {
            request = request.header("x-csrf-token", value);
        }
        let refused = request.send().await.expect("forged write");
        assert_eq!(refused.status(), 403);
    }
    let (_, leads) = app.get_json("/v1/leads?email=forged@example.com").await;
    assert_eq!(leads["items"], json!([]), "nothing written");
    // With it, the write goes through.
    let written = app
        .client
        .post(format!("{}/v1/leads", app.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({"first_name": "Real", "email": "real@example.com"}))
        .send()
        .await
        .expect("write");
    assert_eq!(written.status(), 201);
    // Signing out revokes the session token.
    let out = app
        .client
        .post(format!("{}/console/sign-out", app.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 204);
    let me = app
        .client
        .get(format!("{}/v1/auth/me", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 401);

    // A token signs in too: it buys a session of its own, so signing out leaves it valid.
    let by_token = app
        .client
        .post(format!("{}/console/session", app.base))
        .json(&json!({"token": app.admin_token}))
        .send()
        .await
        .expect("token sign-in");
    assert_eq!(by_token.status(), 201);
    let session = by_token
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("lg_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    assert_ne!(session, app.admin_token);
    let csrf = by_token.json::<Value>().await.expect("json")["csrf"]
        .as_str()
        .expect("csrf")
        .to_owned();
    let out = app
        .client
        .post(format!("{}/console/sign-out", app.base))
        .header("cookie", format!("lg_session={session}"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 204);
    let (status, _) = app.get_json("/v1/auth/me").await;
    assert_eq!(status, 200, "the typed-in token still works");
    // Partner keys and unknown tokens do not sign in.
    let partner = app.partner_token("acme").await;
    for (token, expected) in [(partner.as_str(), 403), ("lg_not_a_token", 401)] {
        let refused = app
            .client
            .post(format!("{}/console/session", app.base))
            .json(&json!({"token": token}))
            .send()
            .await
            .expect("refused sign-in");
        assert_eq!(refused.status(), expected);
    }
    app.stop().await;
}

/// The two small endpoints the console added: `GET /v1/imports` and
/// `GET /v1/inbound/channels`.
async fn past_imports_and_per_channel_inbox_counts_are_answered(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let receipt: Value = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"first_name": "Ada", "last_name": "Byron", "email": "ada@byron.example"}),
        )
        .await
        .json()
        .await
        .expect("receipt");
    app.settled_inbound(receipt["id"].as_str().expect("id"))
        .await;
    let csv = std::fs::read(fixture("scientists.csv")).expect("fixture");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(csv).file_name("scientists.csv"),
    );
    let started = app
        .client
        .post(format!("{}/v1/imports", app.base))
        .bearer_auth(&app.admin_token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(started.status(), 202);
    let started: Value = started.json().await.expect("json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let channels = loop {
        let (_, answer) = app.get_json("/v1/inbound/channels").await;
        let import = answer["channels"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["channel"] == "import").cloned());
        if import.as_ref().is_some_and(|i| i["done"] == 3) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "import rows never settled: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = channels["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["channel"].as_str())
        .collect();
    assert_eq!(names, ["import", "partner:acme"], "{channels}");
    assert_eq!(channels["depth"]["done"], 4, "{channels}");
    let (status, imports) = app.get_json("/v1/imports?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(imports["items"][0]["id"], started["id"]);
    assert_eq!(imports["items"][0]["file_name"], "scientists.csv");
    let (_, openapi) = app.get_json("/openapi.json").await;
    for (path, method) in [
        ("/v1/imports", "get"),
        ("/v1/inbound/channels", "get"),
        ("/", "get"),
        ("/console/session", "post"),
        ("/console/sign-out", "post"),
    ] {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{method} {path} undocumented"
        );
    }
    // A rep reads neither.
    user(&app, "rep@example.com", "rep").await;
    let signed_in: Value = app
        .client
        .post(format!("{}/v1/auth/sign-in", app.base))
        .json(&json!({"email": "rep@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sign in")
        .json()
        .await
        .expect("session");
    let token = signed_in["token"].as_str().expect("token");
    for path in ["/v1/imports", "/v1/inbound/channels"] {
        let refused = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 403, "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_shows_the_roles_pages_and_signing_out_returns_to_sign_in() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "ops@example.com", "admin").await;
    user(&app, "rep@example.com", "rep").await;
    let b = browser(&app).await;
    b.open("").await;
    b.wait_text("h1", "Sign in").await;
    b.screenshot("sign-in").await;
    // Wrong password: told so, still on the sign-in page.
    b.type_into("#email", "ops@example.com").await;
    b.type_into("#password", "wrong password!").await;
    b.click("#sign-in").await;
    b.wait_text("#sign-in-error", "Wrong email or password")
        .await;
    b.sign_in("ops@example.com").await;
    let nav = b.wait_text("#nav", "Search").await;
    for page in ["Import", "Review", "Inbox"] {
        assert!(nav.contains(page), "an admin sees {page}: {nav}");
    }
    b.click("#sign-out").await;
    b.wait_text("h1", "Sign in").await;
    // A rep neither imports, reviews nor reads the inbox.
    b.sign_in("rep@example.com").await;
    let nav = b.wait_text("#nav", "Search").await;
    for page in ["Import", "Review", "Inbox"] {
        assert!(!nav.contains(page), "a rep does not see {page}: {nav}");
    }
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_with_a_typo_finds_the_lead_and_opens_its_record() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "rep@example.com", "admin").await;
    let account = create(
        &app,
        "accounts",
        json!({"name": "Whitfield Optics", "domain": "whitfield-optics.example"}),
    )
    .await;
    let lead = create(
        &app,
        "leads",
        json!({"first_name": "Jonathan", "last_name": "Whitfield",
               "email": "jonathan@whitfield-optics.example", "phone": "+44 20 7946 0321",
               "company": "Whitfield Optics", "account_id": account}),
    )
    .await;
    api(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/leads/{lead}"),
        Some(json!({"city": "Leeds"})),
    )
    .await;
    searchable(&app, "Whitfield").await;
    let b = browser(&app).await;
    b.sign_in("rep@example.com").await;
    b.open("#/search").await;
    b.type_into("#q", "Jonathn Whitfeld").await;
    let hit = b.wait_text("#results .hit", "Whitfield").await;
    assert!(hit.contains("Jonathan"), "{hit}");
    let marks = b
        .client
        .find_all(Locator::Css("#results mark"))
        .await
        .expect("marks");
    assert!(!marks.is_empty(), "matched parts are highlighted");
    b.screenshot("search").await;
    // Kind filter: only the account.
    b.client
        .find(Locator::Css("#kind"))
        .await
        .expect("kind filter")
        .select_by_value("accounts")
        .await
        .expect("select");
    let only = b.wait_text("#results .hit", "accounts").await;
    assert!(only.contains("Whitfield Optics"), "{only}");
    b.client
        .find(Locator::Css("#kind"))
        .await
        .expect("kind filter")
        .select_by_value("leads")
        .await
        .expect("select");
    b.wait_text("#results .hit", "Jonathan").await;
    b.click("#results a.hit-title").await;
    b.wait_text("h1", "Jonathan Whitfield").await;
    b.wait_text("#main dl.fields", "jonathan@whitfield-optics.example")
        .await;
    b.wait_text(".related", "Whitfield Optics").await;
    let audit = b.wait_text("table.audit", "city").await;
    assert!(
        audit.contains("Leeds"),
        "the audit trail shows old → new: {audit}"
    );
    b.screenshot("record").await;
    // A phone-sized window: one column, nothing cut off.
    b.client
        .set_window_size(390, 844)
        .await
        .expect("window size");
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(overflow, json!(true), "no sideways scrolling on a phone");
    b.screenshot("record-phone").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rep_does_not_see_a_hidden_field_anywhere_on_the_page() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    let rep = user(&app, "rep@example.com", "rep").await;
    let account = create(
        &app,
        "accounts",
        json!({"name": "Quillfeather Mills", "annual_revenue": "987654321",
               "owner_id": rep}),
    )
    .await;
    searchable(&app, "Quillfeather").await;
    let b = browser(&app).await;
    b.sign_in("rep@example.com").await;
    b.open("#/search").await;
    b.type_into("#q", "Quillfeather").await;
    b.wait_text("#results .hit", "Quillfeather").await;
    let source = b.client.source().await.expect("page source");
    assert!(!source.contains("987654321") && !source.contains("annual_revenue"));
    b.open(&format!("#/record/accounts/{account}")).await;
    b.wait_text("h1", "Quillfeather Mills").await;
    b.wait_text("#audit-title", "Audit").await;
    // Let the page's remaining calls (related records, timeline) land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = b.client.source().await.expect("page source");
    let text = b.text().await;
    for shown in [&source, &text] {
        assert!(!shown.contains("987654321"), "the value leaked:\n{shown}");
        assert!(
            !shown.contains("annual_revenue"),
            "the field name leaked:\n{shown}"
        );
        assert!(!shown.contains("987,654,321"));
    }
    b.screenshot("record-rep").await;
    // An admin sees it on the same page.
    b.click("#sign-out").await;
    b.wait_text("h1", "Sign in").await;
    user(&app, "admin@example.com", "admin").await;
    b.sign_in("admin@example.com").await;
    b.open(&format!("#/record/accounts/{account}")).await;
    b.wait_text("#main dl.fields", "987654321").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_a_leads_name_is_shown_as_text_and_never_runs() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "ops@example.com", "admin").await;
    let evil = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
    let lead = create(
        &app,
        "leads",
        json!({"first_name": "Mallory", "last_name": "Payload",
               "company": evil, "email": "mallory@payload.example"}),
    )
    .await;
    searchable(&app, "Mallory").await;
    let b = browser(&app).await;
    b.sign_in("ops@example.com").await;
    b.open("#/search").await;
    b.type_into("#q", "mallory payload").await;
    b.wait_text("#results .hit", "Mallory").await;
    b.open(&format!("#/record/leads/{lead}")).await;
    b.wait_text("h1", "Mallory Payload").await;
    let shown = b.wait_text("#main dl.fields", "<script>").await;
    assert!(shown.contains(evil), "the name is shown as typed: {shown}");
    let ran = b
        .client
        .execute(
            "return [window.pwned === undefined, document.querySelectorAll('main img, main script').length]",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        ran,
        json!([true, 0]),
        "no injected element exists, nothing ran"
    );
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheet_is_previewed_imported_and_reported_and_bad_files_are_refused() {
    let _one = BROWSER.lock().await;
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        config.max_import_bytes = 64 * 1024 * 1024;
    })
    .await;
    user(&app, "ops@example.com", "admin").await;
    let b = browser(&app).await;
    b.sign_in("ops@example.com").await;
    b.open("#/import").await;
    b.wait_text("#past-imports, #main", "No imports yet").await;
    // Not a spreadsheet: refused before uploading.
    b.type_into("#file", &fixture("notes.txt")).await;
    b.wait_text("#import-error", "is not a spreadsheet").await;
    // A spreadsheet by name only: the server's problem detail is shown.
    b.type_into("#file", &fixture("broken.xlsx")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let text = b.wait_text("#import-error", "").await;
        if !text.trim().is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal shown: {}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown = b.text().await;
    assert!(
        !detail.is_empty() && !shown.contains("Preview of"),
        "a broken workbook is refused with the server's detail: {shown}"
    );
    // 200 MB: refused from its size before any of it is read.
    let big_dir = tempfile::tempdir().expect("temp dir");
    let big = big_dir.path().join("huge.csv");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(200 * 1024 * 1024))
        .expect("a sparse 200 MB file");
    b.type_into("#file", &big.display().to_string()).await;
    let refused = b.wait_text("#import-error", "the largest upload is").await;
    assert!(
        refused.contains("200.0 MB") && refused.contains("64.0 MB"),
        "{refused}"
    );
    b.screenshot("import-refused").await;
    // A real one: the preview shows the mapping, the first rows and the first errors.
    b.type_into("#file", &fixture("scientists.csv")).await;
    b.wait_text("#mapping", "E-mail").await;
    b.wait_text("#preview-rows", "linus@caltech.example").await;
    b.wait_text("#preview-errors", "email").await;
    // Change a column's target: Company becomes a custom field; the preview follows.
    let company = b
        .client
        .find(Locator::Css(
            "select[aria-label='Target of column Company']",
        ))
        .await
        .expect("company target");
    company
        .select_by_value("custom:Company")
        .await
        .expect("choose custom");
    b.wait_text("#preview-rows", "Company").await;
    b.screenshot("import-preview").await;
    b.click("#start-import").await;
    b.wait_text("#report-title", "Finished").await;
    assert_eq!(
        b.wait_text("#count-created", "").await.trim(),
        "3",
        "three valid rows"
    );
    let rejected = b.wait_text("#rejected-rows", "E-mail").await;
    assert!(
        rejected.contains('4'),
        "row 4 has the bad address: {rejected}"
    );
    let csv_href = b
        .client
        .find(Locator::Css("#errors-csv"))
        .await
        .expect("CSV link")
        .attr("href")
        .await
        .expect("href")
        .expect("an href");
    assert!(csv_href.ends_with("/errors.csv"), "{csv_href}");
    b.screenshot("import-report").await;
    let (_, imports) = app.get_json("/v1/imports").await;
    assert_eq!(imports["items"][0]["file_name"], "scientists.csv");
    let (_, leads) = app.get_json("/v1/leads?email=linus@caltech.example").await;
    assert_eq!(leads["items"][0]["fields"]["custom"]["Company"], "Caltech");
    b.open("#/import").await;
    b.wait_text("#past-imports", "scientists.csv").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_mid_import_signs_in_again_and_finds_the_import() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "ops@example.com", "admin").await;
    let b = browser(&app).await;
    b.sign_in("ops@example.com").await;
    b.open("#/import").await;
    b.type_into("#file", &fixture("scientists.csv")).await;
    b.wait_text("#mapping", "E-mail").await;
    b.click("#start-import").await;
    b.wait_text("h1", "Import of scientists.csv").await;
    // The session ends: the browser no longer has a valid session (as when it expires),
    // and the page's next progress poll is answered 401.
    b.client
        .delete_cookie("lg_session")
        .await
        .expect("cookie deleted");
    b.wait_text("h1", "Sign in").await;
    b.wait_text(".note", "session has ended").await;
    b.type_into("#email", "ops@example.com").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#sign-in").await;
    b.wait_text("h1", "Import of scientists.csv").await;
    b.wait_text("#report-title", "Finished").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_resolves_a_review_pair_and_the_second_is_told_it_was_resolved() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "steward@example.com", "admin").await;
    let key = app.partner_token("acme").await;
    for (a, b) in [
        ("sam@okafor.example", "sokafor@bello.example"),
        ("ines@duarte.example", "iduarte@porto.example"),
    ] {
        let name = if a.starts_with("sam") {
            ("Sam", "Okafor")
        } else {
            ("Ines", "Duarte")
        };
        for email in [a, b] {
            let receipt: Value = app
                .post_json(
                    &key,
                    "/v1/partner/leads",
                    &json!({"first_name": name.0, "last_name": name.1, "email": email}),
                )
                .await
                .json()
                .await
                .expect("receipt");
            app.settled_inbound(receipt["id"].as_str().expect("id"))
                .await;
        }
    }
    let (_, queue) = app.get_json("/v1/review").await;
    let pairs = queue["items"].as_array().expect("pairs").clone();
    assert_eq!(pairs.len(), 2, "{queue}");
    let b = browser(&app).await;
    b.sign_in("steward@example.com").await;
    b.open("#/review").await;
    b.wait_text("#review-count", "Pair 1 of 2").await;
    let pair = b.wait_text("table.pair", "email").await;
    assert!(pair.contains("sam@okafor.example") || pair.contains("ines@duarte.example"));
    b.wait_text("#pair", "Total score").await;
    b.screenshot("review").await;
    // The steward keeps B's address on the merged record, and merges.
    let first = &pairs[0];
    let b_email = first["b"]["fields"]["email"]
        .as_str()
        .expect("B's email")
        .to_owned();
    b.click("#keep-email-b").await;
    b.click("#merge").await;
    b.wait_text("#review-message", "Merged").await;
    b.wait_text("#review-count", "Pair 1 of 1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, kept) = app
            .get_json(&format!(
                "/v1/leads/{}",
                first["record_a"].as_str().expect("a")
            ))
            .await;
        if kept["fields"]["email"] == b_email.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "B's email was not kept: {kept}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another steward decides the remaining pair first; this one (keyboard: n) is told so.
    let (_, queue) = app.get_json("/v1/review").await;
    let other = queue["items"][0]["id"]
        .as_str()
        .expect("pair id")
        .to_owned();
    api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/review/{other}"),
        Some(json!({"decision": "not_a_duplicate"})),
    )
    .await;
    b.client
        .find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys("n")
        .await
        .expect("key n");
    b.wait_text("#review-message", "already resolved").await;
    b.wait_text("#review-count", "queue is empty").await;
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_health_shows_depth_channels_and_retries_a_failed_row() {
    let _one = BROWSER.lock().await;
    let app = spawn_app(Backend::Sqlite).await;
    user(&app, "admin@example.com", "admin").await;
    let key = app.partner_token("acme").await;
    let receipt: Value = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"first_name": "Failing", "last_name": "Row", "email": "failing@row.example"}),
        )
        .await
        .json()
        .await
        .expect("receipt");
    let id = receipt["id"].as_str().expect("id").to_owned();
    app.settled_inbound(&id).await;
    let row = app.store.inbox_row(&id).await.expect("read").expect("row");
    app.store
        .mark_inbox_failed(&row, "enrichment provider timed out")
        .await
        .expect("marked failed");
    let b = browser(&app).await;
    b.sign_in("admin@example.com").await;
    b.open("#/inbox").await;
    b.wait_text("#channels", "partner").await;
    b.wait_text("#failed", "enrichment provider timed out")
        .await;
    b.screenshot("inbox").await;
    b.click(&format!("button[aria-label='Retry {id}']")).await;
    b.wait_text("#status", "queued again").await;
    let row = app.settled_inbound(&id).await;
    assert_eq!(row["status"], "done", "{row}");
    b.close().await;
    app.stop().await;
}
