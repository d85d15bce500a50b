//! Signed receipts: what a provider signs for every result it returns.
//!
//! A receipt names the work, the attempt, the provider, the profile, the
//! module, the input, the output and the fuel, and the status. The provider
//! signs [`Receipt::message`] with EIP-191 (`personal_sign`) under its
//! address; the broker rebuilds the same receipt from what it assigned and
//! what came back, and checks the signature before it accepts the result.
//!
//! Two receipts for the same deterministic work (same module, same input,
//! whatever their work ids) whose output or fuel differ cannot both be
//! honest. But a receipt alone proves only what its signer said: anyone can
//! make keys and sign "receipts" for work nobody gave them. So a receipt in
//! a proof carries the broker's [`SignedAssignment`]: the broker's word that
//! it gave this work, with these limits, to this provider. A
//! [`CheatProof`] is checkable offline by anyone, and is exactly as good as
//! the broker that signed its assignments ([`CheatProof::check`] names it).
//!
//! # Assignment message
//!
//! ```text
//! brume assignment v1
//! broker: <0x address>
//! work: <work id>
//! attempt: <n>
//! provider: <0x address>
//! profile: standard|deterministic
//! module: <module sha256>
//! input: <input_digest>
//! limits: fuel=<n> memory=<bytes> timeout_ms=<n>
//! ```
//!
//! The broker signs assignments for a job's receipt and for a proof, not on
//! the invocation path: it rebuilds every receipt from its own
//! assignment, so the fields it signs are its own.
//!
//! # Digests
//!
//! All are sha256, lowercase hex. Each hashes a sequence of *fields*; a field
//! is `u64be(len) ‖ bytes`, and integers are their decimal ASCII.
//!
//! - `input_digest`: the fields `"brume-input-v1"`, the kind (`command` or
//!   `http`), the profile (`standard` or `deterministic`), the seed, the
//!   virtual clock start, the number of args then each arg, the number of
//!   env pairs then each name and value, stdin, then for `http`: method, uri,
//!   the number of headers then each name and value, body; then, if the
//!   job has input or output files, `"files"`, the number of inputs and
//!   each path, sha256 and URL (not the key), the number of outputs and
//!   each path.
//! - `output_digest`: the fields `"brume-output-v1"`, then for an exit:
//!   `"exit"`, the code, stdout, stderr; for an HTTP response: `"http"`, the
//!   status, the number of headers then each name and value, the body,
//!   stderr; then, for an exit with output files, `"files"`, their number
//!   and each path and sha256; for a sandbox fault: `"fault"`, the code, stdout, stderr (not
//!   the message, which may name host paths).
//!
//! # Message
//!
//! ```text
//! brume receipt v1
//! work: <work id>
//! attempt: <n>
//! provider: <0x address, as the provider's Hello gave it>
//! profile: standard|deterministic
//! module: <module sha256>
//! input: <input_digest>
//! output: <output_digest>
//! fuel: <n>
//! status: exit:<code> | http:<status> | fault:<code>
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::wire::{Assign, Outcome};
use crate::{Profile, ServiceKind, WorkId};

/// What a provider signs for a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub work_id: WorkId,
    pub attempt: u32,
    pub provider: String,
    pub profile: Profile,
    pub module_digest: String,
    pub input_digest: String,
    pub output_digest: String,
    pub fuel: u64,
    pub status: String,
}

/// A receipt and its signature (65 bytes, `0x` hex), with the broker's
/// signed assignment it answers when the broker issued one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedReceipt {
    #[serde(flatten)]
    pub receipt: Receipt,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<SignedAssignment>,
}

/// What a broker gave a provider to run (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// The broker's address.
    pub broker: String,
    pub work_id: WorkId,
    pub attempt: u32,
    pub provider: String,
    pub profile: Profile,
    pub module_digest: String,
    pub input_digest: String,
    pub fuel_limit: u64,
    pub memory_limit_bytes: u64,
    pub timeout_ms: u64,
}

/// An assignment and the broker's EIP-191 signature over its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedAssignment {
    #[serde(flatten)]
    pub assignment: Assignment,
    pub signature: String,
}

impl Assignment {
    /// The assignment a receipt answers, as `broker` gave it with `limits`.
    pub fn of(broker: &str, r: &Receipt, limits: &crate::Limits) -> Assignment {
        Assignment {
            broker: broker.to_string(),
            work_id: r.work_id,
            attempt: r.attempt,
            provider: r.provider.clone(),
            profile: r.profile,
            module_digest: r.module_digest.clone(),
            input_digest: r.input_digest.clone(),
            fuel_limit: limits.fuel,
            memory_limit_bytes: limits.memory_bytes,
            timeout_ms: limits.timeout_ms,
        }
    }

    /// The signed text (see the module docs).
    pub fn message(&self) -> String {
        format!(
            "brume assignment v1\nbroker: {}\nwork: {}\nattempt: {}\nprovider: {}\nprofile: {}\nmodule: {}\ninput: {}\nlimits: fuel={} memory={} timeout_ms={}",
            self.broker,
            self.work_id,
            self.attempt,
            self.provider,
            profile_str(self.profile),
            self.module_digest,
            self.input_digest,
            self.fuel_limit,
            self.memory_limit_bytes,
            self.timeout_ms
        )
    }

    /// Whether `r` answers this assignment (same work, attempt, provider,
    /// profile, module and input).
    pub fn answered_by(&self, r: &Receipt) -> bool {
        self.work_id == r.work_id
            && self.attempt == r.attempt
            && self.provider.eq_ignore_ascii_case(&r.provider)
            && self.profile == r.profile
            && self.module_digest == r.module_digest
            && self.input_digest == r.input_digest
    }
}

/// `0x` hex to bytes, if it is hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Whether `signature` (`0x` hex) verifies as `address`'s over `message`.
pub(crate) fn signed_by(
    signature: &str,
    message: &str,
    address: &str,
    verify: impl Fn(&[u8], &[u8], &str) -> bool,
) -> bool {
    unhex(signature).is_some_and(|b| verify(message.as_bytes(), &b, address))
}

impl SignedAssignment {
    /// Whether the signature verifies under the assignment's broker.
    pub fn verifies(&self, verify: impl Fn(&[u8], &[u8], &str) -> bool) -> bool {
        let a = &self.assignment;
        signed_by(&self.signature, &a.message(), &a.broker, verify)
    }
}

struct Fields(Sha256);

impl Fields {
    fn new(domain: &str) -> Fields {
        let mut f = Fields(Sha256::new());
        f.put(domain.as_bytes());
        f
    }

    fn put(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn num(&mut self, n: impl std::fmt::Display) {
        self.put(n.to_string().as_bytes());
    }

    fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn profile_str(p: Profile) -> &'static str {
    match p {
        Profile::Standard => "standard",
        Profile::Deterministic => "deterministic",
    }
}

/// The input digest of an assignment (see the module docs).
pub fn input_digest(a: &Assign) -> String {
    let mut f = Fields::new("brume-input-v1");
    f.put(match a.kind {
        ServiceKind::Command => b"command",
        ServiceKind::Http => b"http",
        ServiceKind::Oci => b"oci",
    });
    f.put(profile_str(a.profile).as_bytes());
    f.num(a.seed);
    f.num(a.clock_start_ms);
    f.num(a.args.len());
    for arg in &a.args {
        f.put(arg.as_bytes());
    }
    f.num(a.env.len());
    for (k, v) in &a.env {
        f.put(k.as_bytes());
        f.put(v.as_bytes());
    }
    f.put(&a.stdin);
    if let Some(h) = &a.http {
        f.put(h.method.as_bytes());
        f.put(h.uri.as_bytes());
        f.num(h.headers.len());
        for (k, v) in &h.headers {
            f.put(k.as_bytes());
            f.put(v);
        }
        f.put(&h.body);
    }
    // Files (appended only when there are any: older digests stand). The
    // keys are not part of it: a receipt is shown to others.
    if !a.inputs.is_empty() || !a.outputs.is_empty() {
        f.put(b"files");
        f.num(a.inputs.len());
        for i in &a.inputs {
            f.put(i.path.as_bytes());
            f.put(i.sha256.as_bytes());
            f.put(i.url.as_deref().unwrap_or("").as_bytes());
        }
        f.num(a.outputs.len());
        for o in &a.outputs {
            f.put(o.as_bytes());
        }
    }
    f.hex()
}

/// The output digest of an outcome (see the module docs).
pub fn output_digest(o: &Outcome) -> String {
    let mut f = Fields::new("brume-output-v1");
    match o {
        Outcome::Exited {
            exit_code,
            stdout,
            stderr,
            outputs,
            ..
        } => {
            f.put(b"exit");
            f.num(exit_code);
            f.put(stdout);
            f.put(stderr);
            // Output files by their sha256 (appended only when there are any).
            if !outputs.is_empty() {
                f.put(b"files");
                f.num(outputs.len());
                for o in outputs {
                    f.put(o.path.as_bytes());
                    f.put(o.sha256.as_bytes());
                }
            }
        }
        Outcome::Responded {
            response, stderr, ..
        } => {
            f.put(b"http");
            f.num(response.status);
            f.num(response.headers.len());
            for (k, v) in &response.headers {
                f.put(k.as_bytes());
                f.put(v);
            }
            f.put(&response.body);
            f.put(stderr);
        }
        Outcome::Failed {
            code,
            stdout,
            stderr,
            ..
        } => {
            f.put(b"fault");
            f.put(code.as_bytes());
            f.put(stdout);
            f.put(stderr);
        }
    }
    f.hex()
}

/// `exit:<code>`, `http:<status>` or `fault:<code>`.
pub fn status(o: &Outcome) -> String {
    match o {
        Outcome::Exited { exit_code, .. } => format!("exit:{exit_code}"),
        Outcome::Responded { response, .. } => format!("http:{}", response.status),
        Outcome::Failed { code, .. } => format!("fault:{code}"),
    }
}

impl Receipt {
    /// The receipt of `outcome` for `assign`, by `provider`.
    pub fn new(assign: &Assign, provider: &str, outcome: &Outcome) -> Receipt {
        Receipt {
            work_id: assign.work_id,
            attempt: assign.attempt,
            provider: provider.to_string(),
            profile: assign.profile,
            module_digest: assign.digest.clone(),
            input_digest: input_digest(assign),
            output_digest: output_digest(outcome),
            fuel: outcome.usage().fuel,
            status: status(outcome),
        }
    }

    /// The signed text (see the module docs).
    pub fn message(&self) -> String {
        format!(
            "brume receipt v1\nwork: {}\nattempt: {}\nprovider: {}\nprofile: {}\nmodule: {}\ninput: {}\noutput: {}\nfuel: {}\nstatus: {}",
            self.work_id,
            self.attempt,
            self.provider,
            profile_str(self.profile),
            self.module_digest,
            self.input_digest,
            self.output_digest,
            self.fuel,
            self.status
        )
    }

    /// Whether `other` is the same work (module and input; the work ids
    /// may differ, e.g. two replicas) run deterministically, with a
    /// different result.
    pub fn conflicts_with(&self, other: &Receipt) -> bool {
        self.profile == Profile::Deterministic
            && other.profile == Profile::Deterministic
            && self.module_digest == other.module_digest
            && self.input_digest == other.input_digest
            && (self.output_digest != other.output_digest || self.fuel != other.fuel)
    }
}

/// A deterministic re-execution of a work's module on its input, signed
/// by whoever ran it: the broker settling a dispute, or an arbiter it
/// names. Message:
///
/// ```text
/// brume reexecution v1
/// by: <0x address>
/// module: <module sha256>
/// input: <input_digest>
/// output: <output_digest>
/// fuel: <n>
/// status: exit:<code> | http:<status> | fault:<code>
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reexecution {
    pub by: String,
    pub module_digest: String,
    pub input_digest: String,
    pub output_digest: String,
    pub fuel: u64,
    pub status: String,
}

/// A re-execution and its signer's EIP-191 signature over its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedReexecution {
    #[serde(flatten)]
    pub reexecution: Reexecution,
    pub signature: String,
}

impl Reexecution {
    /// The re-execution of `assign` by `by` that ended in `outcome`.
    pub fn new(assign: &Assign, by: &str, outcome: &Outcome) -> Reexecution {
        Reexecution {
            by: by.to_string(),
            module_digest: assign.digest.clone(),
            input_digest: input_digest(assign),
            output_digest: output_digest(outcome),
            fuel: outcome.usage().fuel,
            status: status(outcome),
        }
    }

    /// The signed text (see the type's docs).
    pub fn message(&self) -> String {
        format!(
            "brume reexecution v1\nby: {}\nmodule: {}\ninput: {}\noutput: {}\nfuel: {}\nstatus: {}",
            self.by,
            self.module_digest,
            self.input_digest,
            self.output_digest,
            self.fuel,
            self.status
        )
    }

    /// Whether `r` signed another result than this run got, for the same
    /// module and input.
    pub fn refutes(&self, r: &Receipt) -> bool {
        r.profile == Profile::Deterministic
            && self.module_digest == r.module_digest
            && self.input_digest == r.input_digest
            && (self.output_digest != r.output_digest || self.fuel != r.fuel)
    }
}

impl SignedReexecution {
    /// Whether the signature verifies under the re-execution's signer.
    pub fn verifies(&self, verify: impl Fn(&[u8], &[u8], &str) -> bool) -> bool {
        let r = &self.reexecution;
        signed_by(&self.signature, &r.message(), &r.by, verify)
    }
}

/// Proof that `cheat`'s provider signed a wrong result for deterministic
/// work, on an assignment a broker signed. Its grounds are either or both:
///
/// - (a) `reexecution`: a deterministic re-run of the same module and input
///   that got another output or fuel, signed by whoever ran it. With
///   `work`, anyone can re-run it too (`brume verify-proof --reexecute`),
///   which makes the proof independent of the broker's word.
/// - (b) `quorum`: at least [`MIN_WITNESSES`] receipts by distinct other
///   providers, each on its own assignment by the same broker, that agree
///   with one another and conflict with the cheat's. Only as good as the
///   broker that signed the assignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheatProof {
    pub cheat: SignedReceipt,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quorum: Vec<SignedReceipt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reexecution: Option<SignedReexecution>,
    /// The cheat's assignment in full (module digest, args, env, stdin,
    /// seed, clock, limits), for anyone to re-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub work: Option<Box<Assign>>,
}

/// The fewest agreeing witnesses a quorum proof needs.
pub const MIN_WITNESSES: usize = 2;

/// What a valid [`CheatProof`] rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grounds {
    /// The broker that signed the assignments.
    pub broker: String,
    /// Who re-ran the work and got another result, if anyone did.
    pub reexecuted_by: Option<String>,
    /// How many other providers' receipts contradict the cheat's.
    pub witnesses: usize,
}

impl SignedReceipt {
    /// Whether the signature verifies under the receipt's provider, with
    /// `verify(message, signature, address)` (e.g. `brume_identity::verify`).
    pub fn verifies(&self, verify: impl Fn(&[u8], &[u8], &str) -> bool) -> bool {
        let r = &self.receipt;
        signed_by(&self.signature, &r.message(), &r.provider, verify)
    }
}

impl CheatProof {
    /// Checks the proof offline (with `verify(message, signature, address)`,
    /// e.g. `brume_identity::verify`):
    /// - every receipt's signature verifies under its provider;
    /// - every receipt carries an assignment signed by one and the same
    ///   broker, which it answers;
    /// - the cheat's work is deterministic;
    /// - a re-execution, if any, is signed by that broker, re-ran the same
    ///   module and input, and got another output or fuel than the cheat;
    /// - without a re-execution, the quorum has at least [`MIN_WITNESSES`]
    ///   receipts, by distinct providers other than the cheat's, on
    ///   assignments of their own; every quorum receipt agrees with the
    ///   others (and with the re-execution) and conflicts with the cheat;
    /// - `work`, if given, is the work the cheat's receipt names.
    ///
    /// Returns what the proof rests on, or every problem.
    pub fn check(
        &self,
        verify: impl Fn(&[u8], &[u8], &str) -> bool,
    ) -> Result<Grounds, Vec<String>> {
        let mut problems = Vec::new();
        let cheat = &self.cheat.receipt;
        let broker = self
            .cheat
            .assignment
            .as_ref()
            .map(|a| a.assignment.broker.clone());
        let bound = |who: &str, r: &SignedReceipt, problems: &mut Vec<String>| {
            if !r.verifies(&verify) {
                problems.push(format!("{who} is not signed by {}", r.receipt.provider));
            }
            let Some(a) = &r.assignment else {
                problems.push(format!(
                    "{who} has no broker-signed assignment: anyone can sign a receipt for work nobody gave them"
                ));
                return;
            };
            if !a.verifies(&verify) {
                problems.push(format!(
                    "{who}: its assignment is not signed by broker {}",
                    a.assignment.broker
                ));
            }
            if !a.assignment.answered_by(&r.receipt) {
                problems.push(format!("{who} does not answer its assignment"));
            }
            if broker
                .as_deref()
                .is_some_and(|b| !b.eq_ignore_ascii_case(&a.assignment.broker))
            {
                problems.push(format!(
                    "{who}: assigned by broker {}, not {}",
                    a.assignment.broker,
                    broker.as_deref().unwrap_or_default()
                ));
            }
        };
        bound("the cheat's receipt", &self.cheat, &mut problems);
        if cheat.profile != Profile::Deterministic {
            problems.push(
                "the cheat's work is not deterministic: only deterministic work can be proven wrong".into(),
            );
        }
        if let Some(x) = &self.reexecution {
            if !x.verifies(&verify) {
                problems.push(format!(
                    "the re-execution is not signed by {}",
                    x.reexecution.by
                ));
            }
            if broker
                .as_deref()
                .is_some_and(|b| !b.eq_ignore_ascii_case(&x.reexecution.by))
            {
                problems.push(format!(
                    "the re-execution is by {}, not by broker {} that signed the assignments",
                    x.reexecution.by,
                    broker.as_deref().unwrap_or_default()
                ));
            }
            if !x.reexecution.refutes(cheat) {
                problems.push(
                    "the re-execution does not refute the cheat's receipt (another module or input, or the same result)".into(),
                );
            }
        } else if self.quorum.len() < MIN_WITNESSES {
            problems.push(format!(
                "{} quorum receipt(s) and no re-execution; a proof needs a re-execution or at least {MIN_WITNESSES} receipts",
                self.quorum.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut works = std::collections::HashSet::new();
        works.insert((cheat.work_id, cheat.attempt));
        for (i, q) in self.quorum.iter().enumerate() {
            let who = &q.receipt.provider;
            bound(&format!("quorum receipt {i}"), q, &mut problems);
            if who.eq_ignore_ascii_case(&cheat.provider) {
                problems.push(format!("quorum receipt {i} is by the cheat's provider"));
            }
            if !seen.insert(who.to_ascii_lowercase()) {
                problems.push(format!("quorum receipt {i}: provider {who} appears twice"));
            }
            if !works.insert((q.receipt.work_id, q.receipt.attempt)) {
                problems.push(format!(
                    "quorum receipt {i} answers an assignment another receipt answers"
                ));
            }
            if !q.receipt.conflicts_with(cheat) {
                problems.push(format!(
                    "quorum receipt {i} does not conflict with the cheat's (not the same deterministic work, or the same result)"
                ));
            }
            let first = &self.quorum[0].receipt;
            if q.receipt.output_digest != first.output_digest || q.receipt.fuel != first.fuel {
                problems.push(format!(
                    "quorum receipt {i} disagrees with quorum receipt 0"
                ));
            }
            if let Some(x) = &self.reexecution
                && (q.receipt.output_digest != x.reexecution.output_digest
                    || q.receipt.fuel != x.reexecution.fuel)
            {
                problems.push(format!(
                    "quorum receipt {i} disagrees with the re-execution"
                ));
            }
        }
        if let Some(w) = &self.work
            && (w.digest != cheat.module_digest || input_digest(w) != cheat.input_digest)
        {
            problems.push("the work given is not the work the cheat's receipt names".into());
        }
        match (problems.is_empty(), broker) {
            (true, Some(broker)) => Ok(Grounds {
                broker,
                reexecuted_by: self.reexecution.as_ref().map(|x| x.reexecution.by.clone()),
                witnesses: self.quorum.len(),
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use bytes::Bytes;

    fn assign() -> Assign {
        Assign {
            work_id: WorkId::new(),
            attempt: 1,
            digest: "ab".repeat(32),
            service: Some("echo".into()),
            kind: ServiceKind::Command,
            profile: Profile::Deterministic,
            limits: Limits::default(),
            args: vec!["echo".into(), "x".into()],
            env: vec![("A".into(), "1".into())],
            stdin: Bytes::from_static(b"in"),
            http: None,
            progress_ms: None,
            seed: 3,
            clock_start_ms: 0,
            module_signature: None,
            batched_receipt: false,
            inputs: Vec::new(),
            outputs: Vec::new(),
            gpus: Default::default(),
            vcpus: Default::default(),
            network: Default::default(),
            image: None,
            max_price: None,
            affinity: None,
            lease: false,
        }
    }

    fn exited(stdout: &'static [u8], fuel: u64) -> Outcome {
        Outcome::Exited {
            exit_code: 0,
            stdout: Bytes::from_static(stdout),
            stderr: Bytes::new(),
            usage: crate::Usage {
                fuel,
                ..crate::Usage::default()
            },
            outputs: Vec::new(),
        }
    }

    #[test]
    fn digests_cover_every_field_and_conflicts_are_detected() {
        let a = assign();
        let base = input_digest(&a);
        for edit in [
            |a: &mut Assign| a.args[1].push('y'),
            |a: &mut Assign| a.env[0].1.push('2'),
            |a: &mut Assign| a.stdin = Bytes::from_static(b"in2"),
            |a: &mut Assign| a.seed += 1,
            |a: &mut Assign| a.profile = Profile::Standard,
            // Field boundaries count: "x" + "" is not "" + "x".
            |a: &mut Assign| a.args = vec!["echox".into(), String::new()],
        ] {
            let mut b = a.clone();
            edit(&mut b);
            assert_ne!(input_digest(&b), base);
        }
        let honest = Receipt::new(&a, "0x1", &exited(b"ok", 10));
        let same = Receipt::new(&a, "0x2", &exited(b"ok", 10));
        let wrong = Receipt::new(&a, "0x3", &exited(b"no", 10));
        let fuel = Receipt::new(&a, "0x3", &exited(b"ok", 11));
        assert!(!honest.conflicts_with(&same));
        assert!(honest.conflicts_with(&wrong));
        assert!(honest.conflicts_with(&fuel));
        assert!(honest.message().starts_with("brume receipt v1\nwork: "));
        assert!(honest.message().contains("\nprofile: deterministic\n"));
    }
}
