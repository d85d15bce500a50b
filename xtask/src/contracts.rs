//! `cargo xtask contracts`: compiles `contracts/*.sol` with solc-js (the
//! npm `solc` package, with OpenZeppelin's contracts, both pinned in
//! `package.json` and installed by [`ensure_npm`]) and writes
//! `contracts/out/<Name>.json`, `{"abi": …, "bytecode": "0x…"}`, which the
//! `brume-evm` crate's `sol!` bindings include. The artifacts are
//! committed; `cargo xtask check` recompiles and fails when they differ.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root, run};

/// The contracts, each in `contracts/<Name>.sol`.
pub const CONTRACTS: &[&str] = &["BrumeToken", "Settlement", "Stake", "HubWallet"];

/// Where the committed artifacts live.
pub const OUT: &str = "contracts/out";

/// Installs the npm packages (solc-js, OpenZeppelin, anvil) from
/// `package-lock.json` when they are missing.
pub fn ensure_npm() -> Result {
    let root = root();
    let bin = root.join("node_modules/.bin");
    if bin.join("solcjs").exists() && bin.join("anvil").exists() {
        return Ok(());
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&root))
}

/// Compiles every contract into `dir`; returns each one's artifact text.
fn compile(root: &Path, dir: &Path) -> Result<Vec<(String, String)>> {
    ensure_npm()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut cmd = Command::new(root.join("node_modules/.bin/solcjs"));
    cmd.current_dir(root)
        .args(["--bin", "--abi", "--optimize", "--base-path", "."])
        .args(["--include-path", "node_modules", "-o"])
        .arg(dir)
        .args(CONTRACTS.iter().map(|c| format!("contracts/{c}.sol")));
    run(&mut cmd)?;
    CONTRACTS
        .iter()
        .map(|c| {
            let read = |ext: &str| {
                let p = dir.join(format!("contracts_{c}_sol_{c}.{ext}"));
                std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))
            };
            let (abi, bin) = (read("abi")?, read("bin")?);
            let json = format!(
                "{{\"abi\":{},\"bytecode\":\"0x{}\"}}\n",
                abi.trim(),
                bin.trim()
            );
            Ok((c.to_string(), json))
        })
        .collect()
}

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("brume-solc-{}", std::process::id()))
}

/// Writes the artifacts.
pub fn write() -> Result {
    let root = root();
    let dir = scratch();
    let built = compile(&root, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let out = root.join(OUT);
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    for (name, json) in built? {
        let p = out.join(format!("{name}.json"));
        std::fs::write(&p, json).map_err(|e| format!("write {}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Fails when a rebuild does not give the committed bytes.
pub fn check(root: &Path) -> Result {
    let dir = scratch();
    let built = compile(root, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    for (name, json) in built? {
        let p = root.join(OUT).join(format!("{name}.json"));
        let committed = std::fs::read_to_string(&p).unwrap_or_default();
        if committed != json {
            return Err(format!(
                "{} is not what contracts/{name}.sol compiles to: run `cargo xtask contracts` and commit it",
                p.display()
            ));
        }
    }
    Ok(())
}
