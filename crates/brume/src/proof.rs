//! `brume verify-proof FILE`: checks, offline and with no broker, either a
//! proof of cheat (`brume_api::receipt::CheatProof`: a cheat's receipt and
//! the broker's re-execution or a quorum of conflicting receipts) or a
//! single signed receipt (a job result's `receipt`), or a call's receipt
//! proved by its provider's signed batch root
//! (`brume_api::batch::ReceiptInclusion`, from `GET /v1/receipts/{id}`).
//!
//! With `--reexecute`, it also re-runs the proof's work on this machine, in
//! the deterministic sandbox, and confirms or refutes it: a proof then
//! rests on nobody's word.
//!
//! Exit codes: 0 valid, 1 invalid (the reasons on stderr), 2 unreadable or
//! not re-executable.

use std::path::PathBuf;
use std::process::ExitCode;

use brume_api::batch::ReceiptInclusion;
use brume_api::receipt::{CheatProof, SignedReceipt};

#[derive(Debug, clap::Args)]
pub struct VerifyProofArgs {
    /// A proof of cheat, a signed receipt or a receipt's inclusion proof,
    /// as JSON (`-`: stdin).
    file: PathBuf,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    /// Re-run the proof's work here (deterministic profile, the assigned
    /// limits) and check the accused result against it.
    #[arg(long)]
    reexecute: bool,
    /// The module to re-run (a .wasm file whose sha256 the proof names);
    /// default: fetched from --broker.
    #[arg(long, value_name = "FILE", requires = "reexecute")]
    module: Option<PathBuf>,
    /// Where to fetch the module from, with --reexecute.
    #[arg(long, env = "BRUME_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// API key for fetching the module.
    #[arg(
        long,
        env = "BRUME_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
}

fn verify(message: &[u8], signature: &[u8], address: &str) -> bool {
    brume_identity::verify(message, signature, address).is_ok()
}

pub async fn main(args: &VerifyProofArgs) -> ExitCode {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let (kind, verdict) = if let Ok(proof) = serde_json::from_str::<CheatProof>(&text) {
        let mut verdict = proof.check(verify).map(|g| {
            let grounds = match &g.reexecuted_by {
                Some(by) => format!(
                    "a deterministic re-execution by {by} got another result{}",
                    if g.witnesses > 0 {
                        format!(", as did {} other provider(s)", g.witnesses)
                    } else {
                        String::new()
                    }
                ),
                None => format!("{} other provider(s) signed another result", g.witnesses),
            };
            format!(
                "valid proof under broker {}: {} signed a wrong result for deterministic work {}: {grounds}, on assignments that broker signed (without --reexecute, the proof is as good as that broker's word)",
                g.broker, proof.cheat.receipt.provider, proof.cheat.receipt.work_id
            )
        });
        if args.reexecute && verdict.is_ok() {
            verdict = match reexecute(args, &proof).await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: re-execution: {e}");
                    return ExitCode::from(2);
                }
            };
        }
        ("proof", verdict)
    } else if let Ok(p) = serde_json::from_str::<ReceiptInclusion>(&text) {
        let verdict = p.check(verify).map_err(|e| vec![e.to_string()]).map(|provider| {
            let (r, root) = (&p.receipt, &p.root.claim);
            format!(
                "valid receipt: {provider} signed, in its batch {} of {} receipts for broker {}, that call {} (attempt {}) of module {} gave output {} ({}) for {} fuel",
                root.batch, root.size, root.broker, r.work_id, r.attempt, r.module_digest, r.output_digest, r.status, r.fuel
            )
        });
        ("inclusion", verdict)
    } else if let Ok(r) = serde_json::from_str::<SignedReceipt>(&text) {
        ("receipt", check_receipt(&r))
    } else {
        eprintln!(
            "error: {} is neither a proof of cheat nor a signed receipt nor a receipt's inclusion proof",
            args.file.display()
        );
        return ExitCode::from(2);
    };
    if args.json {
        let v = match &verdict {
            Ok(m) => serde_json::json!({"kind": kind, "valid": true, "message": m}),
            Err(p) => serde_json::json!({"kind": kind, "valid": false, "problems": p}),
        };
        println!("{v}");
    }
    match verdict {
        Ok(m) => {
            if !args.json {
                println!("{m}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            if !args.json {
                for p in &problems {
                    eprintln!("invalid: {p}");
                }
            }
            ExitCode::from(1)
        }
    }
}

/// Re-runs the proof's work here: `Ok(Ok)` if this run refutes the cheat's
/// receipt too, `Ok(Err)` if it agrees with the accused (the proof is
/// false), `Err` if it can't be run.
async fn reexecute(
    args: &VerifyProofArgs,
    proof: &CheatProof,
) -> anyhow::Result<Result<String, Vec<String>>> {
    use anyhow::Context as _;
    let cheat = &proof.cheat.receipt;
    let mut work = *proof
        .work
        .clone()
        .context("the proof carries no work to re-run (its input was too large to include)")?;
    // The limits the broker signed, not whatever the proof's copy says.
    if let Some(a) = &proof.cheat.assignment {
        work.limits.fuel = a.assignment.fuel_limit;
        work.limits.memory_bytes = a.assignment.memory_limit_bytes;
        work.limits.timeout_ms = a.assignment.timeout_ms;
    }
    let bytes = match (&args.module, &args.broker) {
        (Some(path), _) => bytes::Bytes::from(
            std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
        ),
        (None, Some(url)) => brume_client::Client::new(url, args.api_key.clone())?
            .blob(&cheat.module_digest)
            .await
            .with_context(|| format!("fetch module {} from {url}", cheat.module_digest))?,
        (None, None) => anyhow::bail!(
            "give the module with --module FILE, or a broker to fetch it from with --broker URL"
        ),
    };
    let sandbox = brume_sandbox::Sandbox::new(brume_sandbox::SandboxConfig {
        max_concurrent_instances: 1,
        ..brume_sandbox::SandboxConfig::default()
    })?;
    let program = sandbox.load(&bytes, brume_sandbox::Profile::Deterministic)?;
    anyhow::ensure!(
        program.digest().to_string() == cheat.module_digest,
        "the module's sha256 is {}, not the {} the proof names",
        program.digest(),
        cheat.module_digest
    );
    let outcome = brume_exec::run(&sandbox, &program, &work).await;
    let here = brume_api::receipt::Reexecution::new(&work, "this machine", &outcome);
    if let brume_api::wire::Outcome::Failed { code, message, .. } = &outcome
        && (code == "timeout" || code == "internal")
    {
        anyhow::bail!("the run here ended in {code} ({message}): it decides nothing");
    }
    if here.refutes(cheat) {
        Ok(Ok(format!(
            "confirmed by re-execution here: {} signed output {} with fuel {}; this machine got output {} with fuel {} for the same module and input",
            cheat.provider, cheat.output_digest, cheat.fuel, here.output_digest, here.fuel
        )))
    } else {
        Ok(Err(vec![format!(
            "refuted by re-execution here: this machine got the same result {} (fuel {}) that {} signed; the proof is false",
            here.output_digest, here.fuel, cheat.provider
        )]))
    }
}

/// A single receipt: its provider's signature, and, when it carries one,
/// the broker's signed assignment it answers.
fn check_receipt(r: &SignedReceipt) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    if !r.verifies(verify) {
        problems.push(format!(
            "the signature does not verify under {}",
            r.receipt.provider
        ));
    }
    let assigned = match &r.assignment {
        None => " (no broker-signed assignment)".to_string(),
        Some(a) => {
            if !a.verifies(verify) {
                problems.push(format!(
                    "the assignment is not signed by broker {}",
                    a.assignment.broker
                ));
            }
            if !a.assignment.answered_by(&r.receipt) {
                problems.push("the receipt does not answer its assignment".into());
            }
            format!(
                ", on an assignment signed by broker {}",
                a.assignment.broker
            )
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(format!(
        "valid receipt: {} signed work {} attempt {} (output {}, fuel {}){assigned}",
        r.receipt.provider,
        r.receipt.work_id,
        r.receipt.attempt,
        r.receipt.output_digest,
        r.receipt.fuel
    ))
}
