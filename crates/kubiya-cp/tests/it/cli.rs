//! The real binary: administration commands, `serve` bootstrap, keys made by the CLI working
//! against a running server, and graceful shutdown; on SQLite and PostgreSQL.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::db::{BIN, Db, Killed, free_port};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn wait_ready(base: &str, child: &mut Child) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/api/ready")).await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited early: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(15), "server not ready in 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_with(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/auth/validate"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn is_key_line(s: &str) -> bool {
    let key = s.strip_suffix('\n').unwrap_or("");
    key.starts_with("kby_") && key.len() >= 28 && !key.contains(char::is_whitespace)
}

async fn admin_commands(postgres: bool) {
    let db = Db::new(postgres).await;
    // The documented first command works on a database that `serve` never bootstrapped.
    let o = db.run(&["keys", "create", "--org", "default", "--role", "admin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_key_line(&stdout(&o)), "stdout was {:?}", stdout(&o));
    let o = db.run(&["orgs", "create", "acme"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = db.run(&["orgs", "create", "acme"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = db.run(&["orgs", "create", "Not A Slug"]);
    assert_eq!(o.status.code(), Some(1));

    // Only the key on stdout, so scripts can capture it.
    let o = db.run(&["keys", "create", "--org", "acme", "--role", "admin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_key_line(&stdout(&o)), "stdout was {:?}", stdout(&o));
    let o = db.run(&["keys", "create", "--org", "nowhere", "--role", "admin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"));
    let o = db.run(&["keys", "create", "--org", "acme", "--role", "king"]);
    assert!(!o.status.success());

    // Global flags work before the subcommand too.
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(db.dir.path());
    if let Some(url) = &db.url {
        c.arg("--database-url").arg(url);
    }
    let o = c
        .args(["keys", "list"])
        .env_remove("KUBIYA_CP_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = stdout(&o);
    assert!(
        listing.contains("acme") && listing.contains("admin") && listing.contains("active"),
        "{listing}"
    );
    let id = listing
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let o = db.run(&["keys", "revoke", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&db.run(&["keys", "list", "--org", "acme"])).contains("revoked"));
    // Nothing is past its retention in a new database (the sweep itself is tested in
    // cp-server's webhooks::what_is_past_retention_is_swept_and_nothing_else).
    let o = db.run(&["sweep"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "deleted 0 events, 0 policy decisions, 0 webhook deliveries, 0 idempotency records"
    );
    db.drop_schema().await;
}

async fn serve_bootstraps_and_honours_cli_keys(postgres: bool) {
    let db = Db::new(postgres).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Killed on drop, so a failed assertion does not leave it running (a stray server on the
    // shared PostgreSQL database would hold the reaper's lock for the other tests).
    let mut server = Killed(
        db.cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut server.0;
    wait_ready(&base, child).await;

    // The generated admin key is saved with mode 0600 and works.
    let key_file = db.dir.path().join("admin-api-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    assert_eq!(status_with(&base, &admin).await, 200);
    if !postgres {
        let mode = std::fs::metadata(db.dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // A key made by the CLI works against the running server within a second.
    let o = db.run(&[
        "keys", "create", "--org", "default", "--role", "viewer", "--name", "ops",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let viewer = stdout(&o).trim().to_string();
    let made = Instant::now();
    while status_with(&base, &viewer).await != 200 {
        assert!(
            made.elapsed() < Duration::from_secs(1),
            "CLI key not accepted within a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoked by the CLI: refused once the server's one-second key cache expires.
    let list = stdout(&db.run(&["keys", "list", "--org", "default"]));
    let id = list
        .lines()
        .find(|l| l.contains(" ops "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(db.run(&["keys", "revoke", &id]).status.success());
    let revoked = Instant::now();
    while status_with(&base, &viewer).await != 401 {
        assert!(revoked.elapsed() < Duration::from_secs(3), "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM drains and exits 0, also after a request on the execution engine's kept
    // connections (PostgreSQL's pool waits for every connection it lent).
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/agents/{}/execute", uuid::Uuid::now_v7()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"prompt": "x", "worker_queue_id": uuid::Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A restart on the same database does not bootstrap again.
    let o = db.run(&["keys", "list"]);
    assert_eq!(stdout(&o).matches("bootstrap admin").count(), 1);
    db.drop_schema().await;
}

#[tokio::test]
async fn admin_commands_sqlite() {
    admin_commands(false).await;
}

#[tokio::test]
async fn admin_commands_postgres() {
    admin_commands(true).await;
}

#[tokio::test]
async fn serve_bootstraps_and_honours_cli_keys_sqlite() {
    serve_bootstraps_and_honours_cli_keys(false).await;
}

#[tokio::test]
async fn serve_bootstraps_and_honours_cli_keys_postgres() {
    serve_bootstraps_and_honours_cli_keys(true).await;
}

#[tokio::test]
async fn configured_bootstrap_keys_are_checked_and_used() {
    let db = Db::new(false).await;
    let o = db
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env("KUBIYA_CP_BOOTSTRAP_API_KEY", "letmein")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("kby_"), "{}", stderr(&o));

    let key = "kby_configured-bootstrap-key-0123456789";
    let (server, base) = serve_ready(&db, key).await;
    assert_eq!(status_with(&base, key).await, 200);
    assert!(
        !Path::new(&db.dir.path().join("admin-api-key")).exists(),
        "a configured key is not written out"
    );
    drop(server);
}

/// `serve` on `db` with `key` as its bootstrap admin key, once it is ready (killed on drop).
async fn serve_ready(db: &Db, key: &str) -> (Killed, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Killed(
        db.cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("KUBIYA_CP_BOOTSTRAP_API_KEY", key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&base, &mut server.0).await;
    (server, base)
}

async fn secret_value(base: &str, key: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/secrets/value/DB_PASSWORD"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["value"].as_str().unwrap_or_default().to_string()
}

/// A server that must refuse to start; its error output.
fn refused(db: &Db, extra: &[&str]) -> String {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let o = db.run(&args);
    assert!(!o.status.success(), "serve started: {}", stderr(&o));
    stderr(&o)
}

async fn the_master_key_is_checked_and_rotated(postgres: bool) {
    let db = Db::new(postgres).await;
    let key = "kby_master-key-test-bootstrap-0123456789";
    let (server, base) = serve_ready(&db, key).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/secrets"))
        .bearer_auth(key)
        .json(&serde_json::json!({"name": "DB_PASSWORD", "value": "hunter2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(server);

    // A lost key file is not silently replaced by a new key.
    let file = db.dir.path().join("master.key");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(refused(&db, &[]).contains("missing"));
    assert!(!file.exists(), "a new key was generated over sealed data");
    // A key file others may read is refused.
    std::fs::write(&file, &original).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(refused(&db, &[]).contains("chmod 600"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another key does not match the database's check value.
    let other = "11".repeat(32);
    assert!(refused(&db, &["--master-key", &other]).contains("does not match"));

    // Rotation re-seals everything and replaces the file; the server reads the secret again.
    let o = db.run(&["rotate-master-key"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rotated = std::fs::read_to_string(&file).unwrap();
    assert_ne!(rotated, original);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let (server, base) = serve_ready(&db, key).await;
    assert_eq!(secret_value(&base, key).await, "hunter2");
    drop(server);
    // The old key no longer opens this database.
    assert!(refused(&db, &["--master-key", original.trim()]).contains("does not match"));
    db.drop_schema().await;
}

#[tokio::test]
async fn the_master_key_is_checked_and_rotated_sqlite() {
    the_master_key_is_checked_and_rotated(false).await;
}

#[tokio::test]
async fn the_master_key_is_checked_and_rotated_postgres() {
    the_master_key_is_checked_and_rotated(true).await;
}

/// The worker's help shows its operator flags and not `--api-key` (a flag's value is visible
/// to every process of the host; the key comes from KUBIYA_API_KEY), which stays accepted.
#[test]
fn worker_help_hides_the_api_key_flag() {
    let help = Command::new(BIN).args(["worker", "--help"]).output().unwrap();
    let text = stdout(&help);
    assert!(help.status.success(), "{text}");
    for flag in ["--allow-private-http", "--unsandboxed-tools", "--queue-id"] {
        assert!(text.contains(flag), "{flag} missing from {text}");
    }
    assert!(!text.contains("--api-key"), "{text}");
    // Still accepted: an unreachable control plane, not an unknown flag, is what stops it.
    let run = Command::new(BIN)
        .args(["worker", "--queue-id", "00000000-0000-0000-0000-000000000000"])
        .args(["--api-key", "x", "--control-plane-url", "not a url", "--help"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    // Without a key it says where the key goes.
    let run = Command::new(BIN)
        .args(["worker", "--queue-id", "00000000-0000-0000-0000-000000000000"])
        .env_remove("KUBIYA_API_KEY")
        .output()
        .unwrap();
    assert!(
        !run.status.success() && stderr(&run).contains("KUBIYA_API_KEY"),
        "{}",
        stderr(&run)
    );
}

/// The Claude Code hook blocks (exit code 2, the reason on stderr) when it cannot ask a
/// worker: a tool use is never allowed by default.
#[test]
fn the_claude_hook_fails_closed() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("claude-hook")
        .env_remove("KUBIYA_HOOK_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"tool_name":"Bash","tool_input":{"command":"ls"}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("KUBIYA_HOOK_SOCKET"), "{}", stderr(&out));
}
