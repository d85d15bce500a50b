//! `brume verify-proof FILE`: checks, offline and with no broker, either a
//! proof of cheat (`brume_api::receipt::CheatProof`: a cheat's receipt and
//! a quorum of conflicting ones) or a single signed receipt (a job result's
//! `receipt`).
//!
//! Exit codes: 0 valid, 1 invalid (the reasons on stderr), 2 unreadable.

use std::path::PathBuf;
use std::process::ExitCode;

use brume_api::receipt::{CheatProof, SignedReceipt};

#[derive(Debug, clap::Args)]
pub struct VerifyProofArgs {
    /// A proof of cheat or a signed receipt, as JSON (`-`: stdin).
    file: PathBuf,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

fn verify(message: &[u8], signature: &[u8], address: &str) -> bool {
    brume_identity::verify(message, signature, address).is_ok()
}

pub fn main(args: &VerifyProofArgs) -> ExitCode {
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
        ("proof", proof.check(verify).map(|broker| {
            format!(
                "valid proof under broker {broker}: {} signed a result that {} other provider(s) contradict for deterministic work {}, each on an assignment that broker signed (the proof is as good as that broker's word)",
                proof.cheat.receipt.provider,
                proof.quorum.len(),
                proof.cheat.receipt.work_id
            )
        }))
    } else if let Ok(r) = serde_json::from_str::<SignedReceipt>(&text) {
        ("receipt", check_receipt(&r))
    } else {
        eprintln!(
            "error: {} is neither a proof of cheat nor a signed receipt",
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
