//! `cargo xtask check`: the repository's own rules, beyond what the
//! compiler, rustfmt and clippy check. Each check prints what it found;
//! any violation fails the task.
//!
//! 1. `docs/errors.md` is what `cargo xtask docs` generates.
//! 2. `ARCHITECTURE.md` names every workspace member by its path.
//! 3. The top-level modules of each crate of [`ACYCLIC_CRATES`] do not
//!    import each other in a cycle (see [`crate::modgraph`]).

use std::path::Path;

use crate::{Result, docs, modgraph, root};

/// Crates (paths from the workspace root) whose top-level modules must form
/// no import cycle.
pub const ACYCLIC_CRATES: &[&str] = &["crates/brume-broker"];

/// The crate root in each of them: its `mod x;` are the modules checked.
pub const CRATE_ROOT: &str = "src/lib.rs";

/// The document that must name every workspace member.
pub const ARCHITECTURE_MD: &str = "ARCHITECTURE.md";

/// Runs every check, printing each one's outcome; fails if any failed.
pub fn all() -> Result {
    let root = root();
    let checks: [(&str, Result); 3] = [
        ("generated docs", generated_docs(&root)),
        ("members in ARCHITECTURE.md", members_documented(&root)),
        ("no module import cycles", no_module_cycles(&root)),
    ];
    let mut failed = Vec::new();
    for (name, result) in checks {
        match result {
            Ok(()) => eprintln!("check {name}: ok"),
            Err(e) => {
                eprintln!("check {name}: FAILED\n{e}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// Check 1: `docs/errors.md` is up to date.
fn generated_docs(root: &Path) -> Result {
    let path = root.join(docs::ERRORS_MD);
    let now = std::fs::read_to_string(&path).unwrap_or_default();
    if now.replace("\r\n", "\n") == docs::errors_md() {
        Ok(())
    } else {
        Err(format!(
            "  {} is missing or out of date: run `cargo xtask docs` (and commit it)",
            docs::ERRORS_MD
        ))
    }
}

/// Check 2: every `[workspace] members` path of the root `Cargo.toml`
/// appears in `ARCHITECTURE.md`.
fn members_documented(root: &Path) -> Result {
    let read = |name: &str| {
        std::fs::read_to_string(root.join(name)).map_err(|e| format!("  read {name}: {e}"))
    };
    let members = workspace_members(&read("Cargo.toml")?)?;
    let missing = undocumented(&members, &read(ARCHITECTURE_MD)?);
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing
        .iter()
        .map(|m| format!("  {ARCHITECTURE_MD} does not mention the workspace member `{m}`"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The `[workspace] members` of a `Cargo.toml`.
fn workspace_members(cargo_toml: &str) -> std::result::Result<Vec<String>, String> {
    let table: toml::Table = cargo_toml
        .parse()
        .map_err(|e| format!("  Cargo.toml does not parse: {e}"))?;
    let members = table
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .ok_or("  Cargo.toml has no [workspace] members list")?;
    members
        .iter()
        .map(|m| match m.as_str() {
            Some(s) if s.contains(['*', '?', '[']) => Err(format!(
                "  workspace member {s:?} is a glob: list members one by one"
            )),
            Some(s) => Ok(s.trim_end_matches('/').to_string()),
            None => Err(format!("  workspace member {m} is not a string")),
        })
        .collect()
}

/// The members not named in `doc`: a path counts where it stands alone
/// (`crates/brume` is not found inside `crates/brume-api` or
/// `x/crates/brume`; `crates/brume/src` names it).
fn undocumented<'m>(members: &'m [String], doc: &str) -> Vec<&'m str> {
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_');
    members
        .iter()
        .map(String::as_str)
        .filter(|m| {
            !doc.match_indices(m).any(|(at, _)| {
                let before = doc[..at].chars().next_back();
                let after = doc[at + m.len()..].chars().next();
                before.is_none_or(|c| !name_char(c) && !matches!(c, '/' | '.'))
                    && after.is_none_or(|c| !name_char(c))
            })
        })
        .collect()
}

/// Check 3: no import cycle among the top-level modules of [`ACYCLIC_CRATES`].
fn no_module_cycles(root: &Path) -> Result {
    let mut report = Vec::new();
    for krate in ACYCLIC_CRATES {
        let graph = modgraph::graph_of(&root.join(krate).join(CRATE_ROOT))?;
        let cycles = modgraph::cycles(&graph);
        if cycles.is_empty() {
            continue;
        }
        report.push(format!(
            "  {krate}: {} import cycle(s) among its top-level modules:",
            cycles.len()
        ));
        for cycle in &cycles {
            report.push(format!("    {}", cycle.join(" -> ")));
        }
        report.push("  where each edge of a cycle is first made:".into());
        let mut edges: Vec<(&String, &String)> = cycles
            .iter()
            .flat_map(|c| c.iter().zip(c.iter().skip(1)))
            .collect();
        edges.sort();
        edges.dedup();
        for (from, to) in edges {
            let at = graph
                .get(from)
                .and_then(|e| e.get(to))
                .map_or("?", String::as_str);
            report.push(format!("    {from} -> {to}: {at}"));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_from_the_workspace_table() {
        let toml = "[workspace]\nmembers = [\n  \"crates/a\",\n  \"xtask\",\n]\n\
                    default-members = [\"crates/a\"]\n[workspace.package]\nversion = \"0.0.0\"\n";
        assert_eq!(
            workspace_members(toml),
            Ok(vec!["crates/a".into(), "xtask".into()])
        );
        assert!(workspace_members("[workspace]\nmembers = [\"crates/*\"]\n").is_err());
        assert!(workspace_members("[package]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn a_member_counts_only_as_a_whole_path() {
        let members: Vec<String> = ["crates/brume", "crates/brume-api", "xtask", "examples/x"]
            .map(String::from)
            .into();
        let doc = "**`crates/brume-api`.** Types. See xtask/ and x/crates/brume.";
        assert_eq!(undocumented(&members, doc), ["crates/brume", "examples/x"]);
        let doc = "`crates/brume` and `crates/brume-api`; examples/x. The xtask";
        assert!(undocumented(&members, doc).is_empty());
    }
}
