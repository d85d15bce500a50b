//! The web console in real headless Chromium (Debian's `chromium`, driven
//! by Playwright from `.venv`; `cargo xtask test` installs both): the
//! script `tests/console.py` signs in with a password, publishes through
//! the form, runs a job and watches it end over SSE without a reload,
//! finds its ledger row and its provider's earnings, and is refused the
//! operator's page; then the operator, signed in with an API key, settles
//! from theirs. Its screenshots stay in `target/tmp/console-shots`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use test_programs_artifacts as art;

use crate::net::command;

#[test]
fn a_person_uses_the_console_in_chromium() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let (mut devnet, ready) = crate::net::devnet(home.path());
    let url = ready["broker"].as_str().expect("broker URL").to_string();
    let requester = ready["requester"].as_str().expect("requester").to_string();

    // The operator makes a password account for the devnet's requester.
    let password = "correct horse battery staple";
    let mut create = command(home.path())
        .args(["broker", "accounts", "create", "--json", "--email"])
        .arg("Dev@Example.com")
        .args(["--address", &requester, "--data"])
        .arg(data.join("broker"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("brume broker accounts create");
    create
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = create.wait_with_output().expect("accounts create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(made["email"], "dev@example.com");
    assert_eq!(made["admin"], false);

    // The devnet's operator key (every scope, `admin` included).
    let admin_key = std::fs::read_to_string(data.join("api-key")).expect("the devnet's API key");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-shots");
    std::fs::create_dir_all(&shots).expect("shots dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("../../.venv/bin/python"))
        .arg(root.join("tests/console.py"))
        .args([&url, "dev@example.com", password, art::ECHO_P1])
        .arg(&shots)
        .arg(admin_key.trim())
        .env("HOME", home.path())
        .output()
        .expect("run tests/console.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the console script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let job = seen["job"].as_str().expect("job id");
    assert!(
        seen["row"].as_str().is_some_and(|r| r.contains(job)),
        "{seen}"
    );
    assert_eq!(seen["reloads"], 0, "{seen}");
    assert_eq!(seen["operator_status"], 403, "{seen}");
    assert!(
        seen["provider_earned"]
            .as_str()
            .and_then(|e| e.parse::<u128>().ok())
            .is_some_and(|e| e > 0),
        "{seen}"
    );
    for name in [
        "overview",
        "services",
        "job",
        "ledger",
        "earnings",
        "operator-refused",
    ] {
        let png = std::fs::metadata(shots.join(format!("{name}.png"))).expect("screenshot");
        assert!(png.len() > 1000, "{name}.png is empty");
    }
    devnet.terminate();
}

/// The value of `name` in a response's `set-cookie` headers.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// A form page's double-submit token: its cookie, and the form's field.
async fn form_token(http: &reqwest::Client, url: &str) -> (String, String) {
    let resp = http.get(url).send().await.expect("GET the form");
    assert_eq!(resp.status(), 200);
    let cookie = set_cookie(&resp, "brume_form").expect("a form cookie");
    let value = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("a value");
    let html = resp.text().await.expect("the page");
    assert!(
        html.contains(&format!("name=\"csrf\" value=\"{value}\"")),
        "{html}"
    );
    (format!("brume_form={value}"), value)
}

/// Sign-up (allowed here), Argon2id at rest, the cookies' attributes,
/// forged forms refused, and guessing stopped after five failures.
#[tokio::test(flavor = "multi_thread")]
async fn console_accounts_refuse_forgery_and_guessing() {
    let net =
        crate::net::Net::start_with(1, 1, Some("[broker.console]\nsignup = true\n"), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let address = "0x00000000000000000000000000000000000000a1";
    let (cookie, csrf) = form_token(&http, &net.url("/console/signup")).await;
    let signup = |cookie: String, csrf: String| {
        http.post(net.url("/console/signup"))
            .header("cookie", cookie)
            .form(&[
                ("email", "someone@example.com"),
                ("address", address),
                ("password", "a long enough passphrase"),
                ("csrf", csrf.as_str()),
            ])
            .send()
    };
    // Without the form's own token: refused.
    let forged = signup(cookie.clone(), "0".repeat(32)).await.expect("POST");
    assert_eq!(forged.status(), 403);
    let made = signup(cookie, csrf).await.expect("POST");
    assert_eq!(made.status(), 303, "{:?}", made.text().await);

    // The password is an Argon2id PHC string, never the password.
    let db = rusqlite::Connection::open(net.broker.data.join("broker.db")).expect("db");
    let stored: String = db
        .query_row(
            "SELECT password FROM console_accounts WHERE email = 'someone@example.com'",
            [],
            |r| r.get(0),
        )
        .expect("the account");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("passphrase"));

    let login = |password: &'static str| {
        let http = http.clone();
        let url = net.url("/console/login");
        async move {
            let (cookie, csrf) = form_token(&http, &url).await;
            http.post(&url)
                .header("cookie", cookie)
                .form(&[
                    ("email", "Someone@Example.com"),
                    ("password", password),
                    ("csrf", csrf.as_str()),
                ])
                .send()
                .await
                .expect("POST /console/login")
        }
    };
    let ok = login("a long enough passphrase").await;
    assert_eq!(ok.status(), 303);
    let session = set_cookie(&ok, "brume_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    let session = session.split(';').next().expect("name=value").to_string();
    // A signed-in form without the session's CSRF token: refused.
    let forged = http
        .post(net.url("/console/jobs"))
        .header("cookie", &session)
        .form(&[("service", "echo"), ("csrf", "forged")])
        .send()
        .await
        .expect("POST");
    assert_eq!(forged.status(), 403);

    // Five wrong passwords, then even the right one waits.
    for _ in 0..5 {
        assert_eq!(login("not the passphrase").await.status(), 401);
    }
    assert_eq!(login("a long enough passphrase").await.status(), 429);
}
