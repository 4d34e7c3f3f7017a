//! A throwaway Dovecot IMAP server for mailbox tests (skipped, saying so, when Dovecot
//! is not installed): one user, plain IMAP, IMAPS and STARTTLS with a private CA.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadgate::config::{MailboxSection, MailboxTls};

pub const DOVECOT: &str = "/usr/sbin/dovecot";
pub const USER: &str = "sales";
pub const PASSWORD: &str = "mailbox-test-secret";

pub struct Dovecot {
    child: Child,
    pub port: u16,
    /// IMAP over TLS (imaps); the plain port offers STARTTLS.
    pub tls_port: u16,
    /// The CA that signed the server's certificate (for 127.0.0.1), for `ca_file`.
    pub ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master take its login and auth processes with it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts Dovecot on a free port with one user; `None` (after saying so) when it is not
/// installed.
pub async fn start_dovecot(test: &str) -> Option<Dovecot> {
    if !Path::new(DOVECOT).exists() {
        eprintln!("SKIPPED {test}: dovecot is not installed (apt-get install dovecot-imapd)");
        return None;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = root.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let owner = std::fs::metadata(&probe).unwrap();
    let as_root = owner.uid() == 0;
    // Dovecot refuses mail access as root: then the mail user is nobody.
    let (uid, gid) = if as_root {
        (65534, 65534)
    } else {
        (owner.uid(), owner.gid())
    };
    let mail = root.join("mail");
    std::fs::create_dir(&mail).unwrap();
    if as_root {
        std::os::unix::fs::chown(&mail, Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(
        root.join("users"),
        format!(
            "{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}\n",
            mail.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let tls_port = free_port();
    // A throwaway CA and a server certificate it signs, as a private mail server has.
    let (ca, cert, key) = (
        root.join("ca.crt"),
        root.join("server.crt"),
        root.join("server.key"),
    );
    std::fs::write(
        root.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &str| {
        let ok = Command::new("openssl")
            .current_dir(&root)
            .args(args.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs")
            .success();
        assert!(ok, "openssl {args}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -days 2 -subj /CN=leadgate-test-ca -keyout ca.key -out ca.crt"
    ));
    openssl(&format!(
        "req {ec} -subj /CN=127.0.0.1 -keyout server.key -out server.csr"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.crt",
    );
    let unprivileged = if as_root {
        String::new()
    } else {
        let me = std::env::var("USER").unwrap_or_else(|_| "nobody".to_owned());
        format!("default_login_user = {me}\ndefault_internal_user = {me}\n")
    };
    let root_text = root.display();
    let (cert_text, key_text) = (cert.display(), key.display());
    let conf = format!(
        "protocols = imap
listen = 127.0.0.1
base_dir = {root_text}/run
state_dir = {root_text}/state
log_path = {root_text}/dovecot.log
info_log_path = {root_text}/dovecot.log
ssl = yes
ssl_cert = <{cert_text}
ssl_key = <{key_text}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root_text}/mail/%u
first_valid_uid = {uid}
{unprivileged}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root_text}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root_text}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
"
    );
    let conf_path = root.join("dovecot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(DOVECOT)
        .arg("-F")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dovecot starts");
    let dovecot = Dovecot {
        child,
        port,
        tls_port,
        ca,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "dovecot did not listen: {}",
            dovecot.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(dovecot)
}

impl Dovecot {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Puts one message into the user's INBOX over IMAP.
    pub async fn append(&self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw)
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to dovecot");
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        let mut session = client
            .login(USER, PASSWORD)
            .await
            .unwrap_or_else(|(error, _)| panic!("login: {error}\n{}", self.log()));
        session
            .append("INBOX", None, None, text.as_bytes())
            .await
            .expect("APPEND");
        session.logout().await.expect("LOGOUT");
    }

    /// How many messages in INBOX carry `\\Seen`.
    pub async fn seen(&self) -> usize {
        use futures_util::TryStreamExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to dovecot");
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        let mut session = client
            .login(USER, PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .expect("login");
        session.examine("INBOX").await.expect("EXAMINE");
        let fetched: Vec<_> = session
            .fetch("1:*", "FLAGS")
            .await
            .expect("FETCH")
            .try_collect()
            .await
            .expect("FETCH answers");
        let seen = fetched
            .iter()
            .filter(|fetch| {
                fetch
                    .flags()
                    .any(|flag| flag == async_imap::types::Flag::Seen)
            })
            .count();
        session.logout().await.expect("LOGOUT");
        seen
    }

    pub fn mailbox(&self, password_env: &str) -> MailboxSection {
        MailboxSection {
            name: USER.to_owned(),
            host: "127.0.0.1".to_owned(),
            port: self.port,
            tls: MailboxTls::None,
            user: USER.to_owned(),
            password_env: password_env.to_owned(),
            folder: "INBOX".to_owned(),
            after: "flag".to_owned(),
            poll_seconds: 1,
            ca_file: None,
            mapping: None,
        }
    }
}

/// Waits until `check` holds, up to 30 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
