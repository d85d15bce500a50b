//! `brume bench sandbox`: instantiation, HTTP invocation, artifact loading,
//! cold compilation and the cost of metering.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use brume_sandbox::{
    CommandRequest, ExecOptions, HttpRequest, Limits, Profile, Sandbox, SandboxConfig,
};
use serde_json::json;

use crate::{round, sample};

/// The smallest WASI command: `_start` returns at once.
const TRIVIAL_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Rounds of `cpu_loop` per metering run (about 0.1–0.3 s of work).
const CPU_LOOP_ROUNDS: &str = "200000000";

pub async fn run(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let slice = duration / 6;
    let cache = tempfile::tempdir().context("create artifact cache dir")?;
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxConfig::default()
    })?;
    let opts = ExecOptions::default();

    // 1. Instantiate from InstancePre and run a trivial `_start`.
    let trivial = sandbox.load(TRIVIAL_WAT.as_bytes(), Profile::Standard)?;
    let empty = CommandRequest::default();
    let inst = sample(slice, 1_000, 2_000_000, || async {
        let o = sandbox.run(&trivial, &empty, &opts).await?;
        anyhow::ensure!(o.exit_code == 0, "trivial module exited {}", o.exit_code);
        Ok(())
    })
    .await?;
    // Baseline: plain wasmtime, default engine (no pooling, no fuel, no
    // epochs, no WASI context), compiling nothing per call either.
    let base_engine = wasmtime::Engine::default();
    let base_module = wasmtime::Module::new(&base_engine, TRIVIAL_WAT)?;
    let base_linker = wasmtime::Linker::<()>::new(&base_engine);
    let base_pre = base_linker.instantiate_pre(&base_module)?;
    let base = sample(slice / 2, 1_000, 2_000_000, || async {
        let mut store = wasmtime::Store::new(&base_engine, ());
        let i = base_pre.instantiate(&mut store)?;
        i.get_typed_func::<(), ()>(&mut store, "_start")?
            .call(&mut store, ())?;
        Ok(())
    })
    .await?;
    out(&format!(
        "instantiate+run trivial _start: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} runs)",
        inst.us(0.5),
        inst.us(0.99),
        inst.us(0.999),
        inst.len()
    ));
    out(&format!(
        "  baseline (bare wasmtime, no WASI/limits): p50 {:.1} µs  p99 {:.1} µs",
        base.us(0.5),
        base.us(0.99)
    ));

    // 2. In-process wasi:http handler.
    let hello = sandbox.load(test_programs_artifacts::HTTP_HELLO_BYTES, Profile::Standard)?;
    let http = sample(slice, 500, 1_000_000, || async {
        let req = HttpRequest {
            method: http::Method::GET,
            uri: http::Uri::from_static("/bench"),
            ..HttpRequest::default()
        };
        let o = sandbox.handle_http(&hello, req, &opts).await?;
        anyhow::ensure!(o.response.status == 200, "status {}", o.response.status);
        Ok(())
    })
    .await?;
    out(&format!(
        "invoke wasi:http hello: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  ({} runs)",
        http.us(0.5),
        http.us(0.99),
        http.us(0.999),
        http.len()
    ));

    // 3. Cold compile of the image example (no cache), then 4. reloading
    // its artifact from disk.
    let image = test_programs_artifacts::IMAGE_TRANSFORM_BYTES;
    let uncached = Sandbox::new(SandboxConfig {
        max_concurrent_instances: 4,
        ..SandboxConfig::default()
    })?;
    let mut cold = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let p = uncached.load(image, Profile::Standard)?;
        cold.push(t.elapsed());
        uncached.evict(&p.digest());
    }
    cold.sort();
    let cold_ms = cold[cold.len() / 2].as_secs_f64() * 1e3;
    out(&format!(
        "cold compile image-transform ({} KiB wasm): {cold_ms:.0} ms (median of 3)",
        image.len() / 1024
    ));

    let digest = sandbox.load(image, Profile::Standard)?.digest();
    let load = sample(slice / 2, 20, 100_000, || async {
        sandbox.evict(&digest);
        match sandbox.load_cached(&digest, Profile::Standard)? {
            Some(_) => Ok(()),
            None => bail!("artifact for {digest} is not in the cache"),
        }
    })
    .await?;
    out(&format!(
        "load cached artifact (image-transform): p50 {:.2} ms  p99 {:.2} ms  ({} loads)",
        load.ms(0.5),
        load.ms(0.99),
        load.len()
    ));

    // 5. Fuel: the same CPU-bound guest metered (the product path) and on
    // an unmetered wasmtime engine, interleaved.
    let cpu = sandbox.load(
        test_programs_artifacts::CPU_LOOP_P1_BYTES,
        Profile::Standard,
    )?;
    let req = CommandRequest {
        args: vec!["cpu_loop".into(), CPU_LOOP_ROUNDS.into()],
        ..CommandRequest::default()
    };
    let unmetered = Unmetered::new(test_programs_artifacts::CPU_LOOP_P1_BYTES)?;
    let long = ExecOptions {
        limits: Limits {
            fuel: u64::MAX / 2,
            timeout: Duration::from_secs(600),
            ..Limits::default()
        },
        ..ExecOptions::default()
    };
    let (mut metered_t, mut unmetered_t, mut fuel) = (Vec::new(), Vec::new(), 0);
    let started = Instant::now();
    while metered_t.len() < 3 || (started.elapsed() < slice * 2 && metered_t.len() < 50) {
        let t = Instant::now();
        let o = sandbox.run(&cpu, &req, &long).await?;
        metered_t.push(t.elapsed());
        fuel = o.usage.fuel;
        let t = Instant::now();
        let expect = unmetered.run(&req.args).await?;
        unmetered_t.push(t.elapsed());
        anyhow::ensure!(expect == o.stdout, "metered and unmetered runs disagree");
    }
    metered_t.sort();
    unmetered_t.sort();
    let m = metered_t[metered_t.len() / 2].as_secs_f64() * 1e3;
    let u = unmetered_t[unmetered_t.len() / 2].as_secs_f64() * 1e3;
    out(&format!(
        "cpu_loop metered {m:.1} ms vs unmetered {u:.1} ms: {:.3}x  ({fuel} fuel, {} pairs)",
        m / u,
        metered_t.len()
    ));

    Ok(json!({
        "bench": "sandbox",
        "instantiate_p50_us": round(inst.us(0.5), 2),
        "instantiate_p99_us": round(inst.us(0.99), 2),
        "instantiate_p999_us": round(inst.us(0.999), 2),
        "instantiate_samples": inst.len(),
        "baseline_instantiate_p50_us": round(base.us(0.5), 2),
        "baseline_instantiate_p99_us": round(base.us(0.99), 2),
        "instantiate_ratio": round(inst.us(0.5) / base.us(0.5), 3),
        "invoke_http_p50_us": round(http.us(0.5), 2),
        "invoke_http_p99_us": round(http.us(0.99), 2),
        "invoke_http_p999_us": round(http.us(0.999), 2),
        "invoke_http_samples": http.len(),
        "precompiled_load_ms": round(load.ms(0.5), 3),
        "precompiled_load_p99_ms": round(load.ms(0.99), 3),
        "cold_compile_ms": round(cold_ms, 1),
        "image_wasm_bytes": image.len(),
        "fuel_metered_ms": round(m, 2),
        "fuel_unmetered_ms": round(u, 2),
        "fuel_overhead_ratio": round(m / u, 3),
        "fuel_per_run": fuel,
    }))
}

/// Plain wasmtime with WASI preview 1: no fuel, no epochs, no pooling.
struct Unmetered {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<wasmtime_wasi::p1::WasiP1Ctx>,
}

impl Unmetered {
    fn new(wasm: &[u8]) -> anyhow::Result<Unmetered> {
        let config = wasmtime::Config::new();
        let engine = wasmtime::Engine::new(&config)?;
        let module = wasmtime::Module::new(&engine, wasm)?;
        let mut linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s)?;
        let pre = linker.instantiate_pre(&module)?;
        Ok(Unmetered { engine, pre })
    }

    async fn run(&self, args: &[String]) -> anyhow::Result<bytes::Bytes> {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
        let ctx = wasmtime_wasi::WasiCtxBuilder::new()
            .args(args)
            .stdout(stdout.clone())
            .build_p1();
        let mut store = wasmtime::Store::new(&self.engine, ctx);
        let instance = self.pre.instantiate_async(&mut store).await?;
        instance
            .get_typed_func::<(), ()>(&mut store, "_start")?
            .call_async(&mut store, ())
            .await?;
        Ok(stdout.contents())
    }
}
