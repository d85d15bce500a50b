use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub struct Brume {
    cache: PathBuf,
}

pub fn brume() -> Brume {
    Brume {
        cache: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-artifacts"),
    }
}

impl Brume {
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_brume"));
        c.env("BRUME_CACHE_DIR", &self.cache);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `brume ARGS` with `stdin` piped in.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn brume");
        let mut input = child.stdin.take().expect("stdin");
        // A guest that does not read stdin may close it early.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().expect("wait for brume")
    }

    pub fn json(&self, args: &[&str], stdin: &[u8]) -> (i32, serde_json::Value) {
        let mut all = vec!["exec", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let v = serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {stdout} / {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().expect("exit code"), v)
    }
}

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A raw request's status and JSON body (`Null` when the body isn't JSON).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let body = resp
        .json::<serde_json::Value>()
        .await
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The `code` of an error body.
pub fn code(body: &serde_json::Value) -> &str {
    body["code"].as_str().unwrap_or("")
}
