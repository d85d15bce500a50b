//! The AWS Lambda API through the real `aws` CLI (v1, from PyPI, in the
//! workspace's `.venv`: `cargo xtask test` installs it): a credential
//! minted with `brume broker lambda-keys create` signs `aws lambda invoke`
//! with SigV4.

use std::path::{Path, PathBuf};
use std::process::Output;

use brume_client::ServiceKind;
use test_programs_artifacts as art;

use crate::net::{Net, command};

fn aws_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/aws")
}

struct Creds {
    key_id: String,
    secret: String,
}

fn mint(net: &Net, account: &str) -> Creds {
    let out = command(net.home())
        .args([
            "broker",
            "lambda-keys",
            "create",
            "--json",
            "--account",
            account,
            "--data",
        ])
        .arg(&net.broker.data)
        .output()
        .expect("brume broker lambda-keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    Creds {
        key_id: v["access_key_id"].as_str().expect("key id").into(),
        secret: v["secret_access_key"].as_str().expect("secret").into(),
    }
}

/// `aws lambda ARGS` with `creds`: the exit and stdout as JSON (or null).
fn aws(net: &Net, creds: &Creds, args: &[&str]) -> (Output, serde_json::Value) {
    let out = std::process::Command::new(aws_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", net.home())
        .env("AWS_ACCESS_KEY_ID", &creds.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .env("AWS_DEFAULT_REGION", "eu-west-3")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["lambda", "--endpoint-url", &net.broker.url])
        .args(args)
        .output()
        .expect("run the aws CLI");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// A zip holding `module` as `NAME.wasm` (made with Python's zipfile).
fn zip(home: &Path, name: &str, module: &[u8]) -> PathBuf {
    let wasm = home.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module).expect("write the module");
    let zip = home.join(format!("{name}.zip"));
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED); z.write(sys.argv[2], sys.argv[3]); z.close()"])
        .arg(&zip)
        .arg(&wasm)
        .arg(format!("{name}.wasm"))
        .output()
        .expect("python3 zipfile");
    assert!(out.status.success(), "{}", stderr(&out));
    zip
}

/// `aws lambda create-function` of `name` from the zip `zip_arg`
/// (`fileb://…`).
fn create(net: &Net, creds: &Creds, name: &str, zip_arg: &str) -> (Output, serde_json::Value) {
    aws(
        net,
        creds,
        &[
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "provided",
            "--role",
            "arn:aws:iam::000000000000:role/ignored",
            "--handler",
            "echo.wasm",
            "--zip-file",
            zip_arg,
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_creates_updates_lists_gets_and_deletes_functions() {
    let net = Net::start(1, 2).await;
    let creds = mint(&net, "default");
    let code = zip(net.home(), "echo", art::ECHO_P1_BYTES);
    let zip_arg = format!("fileb://{}", code.display());
    let (out, v) = create(&net, &creds, "greeter", &zip_arg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["FunctionName"], "greeter", "{v}");
    assert_eq!(v["Handler"], "echo.wasm");
    // Twice is a conflict.
    let (out, _) = create(&net, &creds, "greeter", &zip_arg);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("ResourceConflictException"),
        "{}",
        stderr(&out)
    );

    let (out, _, payload) = invoke(&net, &creds, "greeter", &["--payload", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(payload, b"hi");

    // A new version of the code.
    let (out, v) = aws(
        &net,
        &creds,
        &[
            "update-function-code",
            "--function-name",
            "greeter",
            "--zip-file",
            &zip_arg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["Version"], "2", "{v}");
    let (_, v, _) = invoke(&net, &creds, "greeter", &["--payload", "hi"]);
    assert_eq!(v["ExecutedVersion"], "2", "{v}");

    let (out, v) = aws(
        &net,
        &creds,
        &["get-function", "--function-name", "greeter"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["Configuration"]["FunctionName"], "greeter", "{v}");
    let (out, v) = aws(&net, &creds, &["list-functions"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<&str> = v["Functions"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x["FunctionName"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["greeter"], "{v}");

    let (out, _) = aws(
        &net,
        &creds,
        &["delete-function", "--function-name", "greeter"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _, _) = invoke(&net, &creds, "greeter", &["--payload", "hi"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("ResourceNotFoundException"),
        "{}",
        stderr(&out)
    );
    let (out, _) = aws(
        &net,
        &creds,
        &["get-function", "--function-name", "greeter"],
    );
    assert_eq!(out.status.code(), Some(255));
}

/// `aws lambda invoke ... OUT`: the exit, stdout as JSON (or null),
/// and the payload written to OUT.
fn invoke(
    net: &Net,
    creds: &Creds,
    function: &str,
    extra: &[&str],
) -> (Output, serde_json::Value, Vec<u8>) {
    let out_file = net.home().join(format!("out-{}", rand_suffix()));
    let out_path = out_file.display().to_string();
    let mut args = vec!["invoke", "--function-name", function];
    args.extend_from_slice(extra);
    args.push(&out_path);
    let (out, v) = aws(net, creds, &args);
    let payload = std::fs::read(&out_file).unwrap_or_default();
    (out, v, payload)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_invokes_functions_with_a_lambda_credential() {
    let net = Net::start(1, 2).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    net.publish(
        "overflow",
        ServiceKind::Command,
        art::STACK_OVERFLOW_P1_BYTES,
    )
    .await;
    let creds = mint(&net, "default");

    // RequestResponse: the payload is stdin, stdout the response.
    let (out, v, payload) = invoke(
        &net,
        &creds,
        "echo",
        &["--payload", "hello lambda", "--log-type", "Tail"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["StatusCode"], 200, "{v}");
    assert_eq!(v["ExecutedVersion"], "1", "{v}");
    assert!(v.get("LogResult").is_some(), "Tail asks for the log: {v}");
    assert!(v.get("FunctionError").is_none(), "{v}");
    assert_eq!(payload, b"hello lambda");

    // A version by qualifier, and the unknown one.
    let (out, v, _) = invoke(
        &net,
        &creds,
        "echo",
        &["--payload", "x", "--qualifier", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["ExecutedVersion"], "1");
    let (out, _, _) = invoke(
        &net,
        &creds,
        "echo",
        &["--payload", "x", "--qualifier", "9"],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("ResourceNotFoundException"),
        "{}",
        stderr(&out)
    );

    // A guest fault is the function's error: 200, Unhandled.
    let (out, v, payload) = invoke(&net, &creds, "overflow", &["--payload", "x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["StatusCode"], 200);
    assert_eq!(v["FunctionError"], "Unhandled", "{v}");
    let error: serde_json::Value = serde_json::from_slice(&payload).expect("an error payload");
    assert!(
        error["errorType"].is_string() && error["errorMessage"].is_string(),
        "{error}"
    );

    // A wasi:http service takes an API Gateway proxy event and answers
    // {statusCode, headers, body}.
    net.publish("hello", ServiceKind::Http, art::HTTP_HELLO_BYTES)
        .await;
    let event = r#"{"httpMethod":"POST","path":"/greet","queryStringParameters":{"who":"aws"},"headers":{"content-type":"text/plain"},"body":"ping","isBase64Encoded":false}"#;
    let (out, v, payload) = invoke(&net, &creds, "hello", &["--payload", event]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(v.get("FunctionError").is_none(), "{v}");
    let answer: serde_json::Value = serde_json::from_slice(&payload).expect("a gateway response");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body = answer["body"].as_str().expect("a text body");
    assert!(
        body.contains("/greet?who=aws") && body.contains("ping"),
        "{body}"
    );

    // Event: a job, 202; DryRun: 204.
    let (out, v, _) = invoke(
        &net,
        &creds,
        "echo",
        &["--payload", "later", "--invocation-type", "Event"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["StatusCode"], 202, "{v}");
    let jobs = net.client.jobs(None, None).await.expect("jobs");
    assert_eq!(jobs.jobs.len(), 1, "the Event became a job");
    let (out, v, _) = invoke(
        &net,
        &creds,
        "echo",
        &["--payload", "x", "--invocation-type", "DryRun"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["StatusCode"], 204, "{v}");

    // Unknown functions, and bad credentials, in Lambda's error shape.
    let (out, _, _) = invoke(&net, &creds, "nope", &["--payload", "x"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("ResourceNotFoundException"),
        "{}",
        stderr(&out)
    );
    let wrong = Creds {
        key_id: creds.key_id.clone(),
        secret: "not the secret".into(),
    };
    let (out, _, _) = invoke(&net, &wrong, "echo", &["--payload", "x"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("InvalidSignatureException"),
        "{}",
        stderr(&out)
    );
    let unknown = Creds {
        key_id: "BRUME0000000000000000".into(),
        secret: creds.secret.clone(),
    };
    let (out, _, _) = invoke(&net, &unknown, "echo", &["--payload", "x"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("UnrecognizedClientException"),
        "{}",
        stderr(&out)
    );

    // Revoked (by the CLI, beside the running broker): refused at once,
    // and listed as revoked.
    let lambda_keys = |args: &[&str]| {
        command(net.home())
            .args(["broker", "lambda-keys"])
            .args(args)
            .arg("--data")
            .arg(&net.broker.data)
            .output()
            .expect("brume broker lambda-keys")
    };
    let out = lambda_keys(&["revoke", &creds.key_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _, _) = invoke(&net, &creds, "echo", &["--payload", "x"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("UnrecognizedClientException"),
        "{}",
        stderr(&out)
    );
    let out = lambda_keys(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|k| k["key_id"] == creds.key_id.as_str())
        .expect("the credential is listed");
    assert!(listed["revoked_at_ms"].as_u64().is_some(), "{listed}");
    assert!(listed.get("secret_access_key").is_none(), "{listed}");
    // Revoking twice is an error that says so.
    let out = lambda_keys(&["revoke", &creds.key_id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no live Lambda credential"),
        "{}",
        stderr(&out)
    );
}
