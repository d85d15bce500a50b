use test_programs_artifacts as art;

use crate::util::*;

#[test]
fn stdout_stdin_and_exit_codes_pass_through() {
    let b = brume();
    let out = b.run(&["exec", art::ECHO_P1], b"piped in");
    assert_eq!(s(&out.stdout), "piped in");
    assert_eq!(out.status.code(), Some(0));

    let f = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(f.path(), "from a file").expect("write");
    let path = f.path().to_str().expect("utf-8 path");
    let out = b.run(&["exec", art::ECHO_P2, "--stdin", path], b"");
    assert_eq!(s(&out.stdout), "from a file");

    let out = b.run(&["exec", "--env", "EXIT_CODE=42", art::ARGS_P1], b"");
    assert_eq!(out.status.code(), Some(42));
    let out = b.run(&["exec", &art::wat("exit_code")], b"");
    assert_eq!(out.status.code(), Some(7), "a .wat module runs too");
}

#[test]
fn args_follow_wasmtime_run() {
    let b = brume();
    // After the module, with or without `--`; argv[0] is the module path.
    let out = b.run(&["exec", art::ARGS_P1, "a", "--flag", "-x"], b"");
    assert_eq!(s(&out.stdout), format!("{}\na\n--flag\n-x\n", art::ARGS_P1));
    let out = b.run(&["exec", art::ARGS_P2, "--", "--fuel", "3"], b"");
    assert_eq!(s(&out.stdout), format!("{}\n--fuel\n3\n", art::ARGS_P2));
    let out = b.run(&["exec", "--argv0", "prog", art::ARGS_P1, "z"], b"");
    assert_eq!(s(&out.stdout), "prog\nz\n");
}

#[test]
fn env_is_explicit_only() {
    let b = brume();
    let out = b
        .cmd()
        .args(["exec", "--env", "A=1", "--env", "HOST_VALUE", art::ENV_P1])
        .env("HOST_VALUE", "copied")
        .env("NOT_PASSED", "secret")
        .output()
        .expect("run");
    assert_eq!(s(&out.stdout), "A=1\nHOST_VALUE=copied\n");
    let out = b.run(&["exec", "--env", "NO_SUCH_VAR_ANYWHERE", art::ENV_P1], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        s(&out.stderr).contains("error[invalid_request]"),
        "{}",
        s(&out.stderr)
    );
}

#[test]
fn dir_maps_host_to_guest() {
    let b = brume();
    let dir = tempfile::tempdir().expect("tmp");
    let map = format!("{}::/work", dir.path().display());
    let out = b.run(
        &[
            "exec",
            "--dir",
            &map,
            art::WRITE_FILE_P1,
            "/work/a.txt",
            "hi",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stdout));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).expect("read"),
        "hi"
    );
    // Without a GUEST part the host path is used as is, as in wasmtime.
    let plain = dir.path().display().to_string();
    let file = format!("{plain}/a.txt");
    let out = b.run(&["exec", "--dir", &plain, art::READ_FILE_P2, &file], b"");
    assert_eq!(s(&out.stdout), "hi");
    // And nothing outside it.
    let out = b.run(
        &["exec", "--dir", &map, art::READ_FILE_P1, "/etc/hostname"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn json_reports_outcome_output_and_usage() {
    let b = brume();
    let (code, v) = b.json(&[art::SHA256_P1], b"abc");
    assert_eq!(code, 0);
    assert_eq!(v["outcome"], "exited");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["shape"], "p1_command");
    assert_eq!(
        v["stdout"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    );
    assert_eq!(v["usage"]["bytes_in"], 3);
    assert_eq!(v["usage"]["bytes_out"], 65);
    assert!(v["usage"]["fuel"].as_u64().expect("fuel") > 0);
    assert!(v["digest"].as_str().expect("digest").len() == 64);
}

#[test]
fn errors_print_code_and_exit_nonzero() {
    let b = brume();
    // Guest faults all exit 134, as `wasmtime run` does for traps.
    let cases: &[(&[&str], &str)] = &[
        (&[art::INFINITE_LOOP_P1, "--fuel", "1000"], "out_of_fuel"),
        (&[art::INFINITE_LOOP_P2, "--timeout", "50ms"], "timeout"),
        (&[art::MEMORY_BOMB_P1, "--memory", "16MiB"], "memory_limit"),
        (
            &[art::OUTPUT_FLOOD_P1, "--max-output", "64KiB"],
            "output_too_large",
        ),
    ];
    for (args, code) in cases {
        let (exit, v) = b.json(args, b"");
        assert_eq!(v["error"]["code"], *code, "{args:?}: {v}");
        assert_eq!(exit, 134, "{args:?}");
        let mut plain = vec!["exec"];
        plain.extend_from_slice(args);
        let out = b.run(&plain, b"");
        assert!(
            s(&out.stderr).contains(&format!("error[{code}]")),
            "{}",
            s(&out.stderr)
        );
    }
    let trap = art::wat("unreachable");
    let (exit, v) = b.json(&[&trap], b"");
    assert_eq!((exit, v["error"]["code"].as_str()), (134, Some("trap")));

    let bad = art::wat("bad_import");
    let (exit, v) = b.json(&[&bad], b"");
    assert_eq!(
        (exit, v["error"]["code"].as_str()),
        (125, Some("import_not_allowed"))
    );
    let garbage = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(garbage.path(), b"not wasm at all").expect("write");
    let (exit, v) = b.json(&[garbage.path().to_str().expect("utf-8")], b"");
    assert_eq!(
        (exit, v["error"]["code"].as_str()),
        (125, Some("invalid_module"))
    );
    let (exit, v) = b.json(&["/no/such/module.wasm"], b"");
    assert_eq!(exit, 125);
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("/no/such/module.wasm")
    );
}

#[test]
fn http_components_take_a_request() {
    let b = brume();
    let (code, v) = b.json(
        &[
            art::HTTP_HELLO,
            "--method",
            "PUT",
            "--path",
            "/x?y=1",
            "--header",
            "x-a: b",
        ],
        b"body!",
    );
    assert_eq!(code, 0);
    assert_eq!(v["status"], 200);
    assert_eq!(
        v["body"],
        "hello from brume: Method::Put /x?y=1 body=body!\n"
    );
}

#[test]
fn image_transform_example_produces_a_jpeg() {
    let b = brume();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/image-transform/sample.png"
    );
    let out = b.run(
        &[
            "exec",
            art::IMAGE_TRANSFORM,
            "--stdin",
            sample,
            "--",
            "resize",
            "64x64",
            "rotate",
            "90",
            "grayscale",
            "--format",
            "jpeg",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    assert_eq!(&out.stdout[..3], &[0xff, 0xd8, 0xff], "JPEG magic");
    assert!(
        s(&out.stderr).contains("Png 192x144 -> Jpeg 48x64"),
        "{}",
        s(&out.stderr)
    );
    let out = b.run(&["exec", art::IMAGE_TRANSFORM, "--", "rotate", "45"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad arguments are the guest's own exit code"
    );
}

#[test]
fn monte_carlo_is_reproducible_with_deterministic() {
    let b = brume();
    let args = [
        art::MONTE_CARLO,
        "--deterministic",
        "--seed",
        "9",
        "--",
        "--paths",
        "5000",
    ];
    let (_, a) = b.json(&args, b"");
    let (_, c) = b.json(&args, b"");
    assert_eq!(a["stdout"], c["stdout"]);
    assert_eq!(a["usage"]["fuel"], c["usage"]["fuel"]);
    let price: serde_json::Value =
        serde_json::from_str(a["stdout"].as_str().expect("stdout")).expect("guest JSON");
    let (p, bs) = (
        price["price"].as_f64().expect("price"),
        price["black_scholes"].as_f64().expect("bs"),
    );
    assert!((p - bs).abs() < 0.5, "MC {p} vs Black-Scholes {bs}");
}
