//! `cargo xtask check`: the repository's own rules, beyond what the
//! compiler, rustfmt and clippy check. Each check prints what it found;
//! any violation fails the task.
//!
//! 1. `docs/errors.md` is what `cargo xtask docs` generates.
//! 2. `ARCHITECTURE.md` names every workspace member by its path.
//! 3. The top-level modules of each crate of [`ACYCLIC_CRATES`] do not
//!    import each other in a cycle (see [`crate::modgraph`]).
//! 4. In the same crates, no source file is over [`MAX_FILE_LINES`] lines
//!    and no function over [`MAX_FN_LINES`] (see [`sizes`]).
//! 5. `contracts/out/` is what the contracts compile to (see
//!    [`crate::contracts`]).

use std::path::Path;

use crate::{Result, docs, modgraph, root};

/// Crates (paths from the workspace root) whose top-level modules must form
/// no import cycle.
pub const ACYCLIC_CRATES: &[&str] = &["crates/brume-broker"];

/// The crate root in each of them: its `mod x;` are the modules checked.
pub const CRATE_ROOT: &str = "src/lib.rs";

/// The document that must name every workspace member.
pub const ARCHITECTURE_MD: &str = "ARCHITECTURE.md";

/// The most lines a source file of [`ACYCLIC_CRATES`] may have.
pub const MAX_FILE_LINES: usize = 850;

/// The most lines a function of [`ACYCLIC_CRATES`] may have, from its
/// `fn` line to its closing brace ("about 80": a long table or match
/// aside, a longer function is doing several things).
pub const MAX_FN_LINES: usize = 90;

/// Runs every check, printing each one's outcome; fails if any failed.
pub fn all() -> Result {
    let root = root();
    let checks: [(&str, Result); 5] = [
        ("generated docs", generated_docs(&root)),
        ("members in ARCHITECTURE.md", members_documented(&root)),
        ("no module import cycles", no_module_cycles(&root)),
        ("file and function sizes", sizes(&root)),
        ("contract artifacts", crate::contracts::check(&root)),
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

/// Check 4: file and function sizes in [`ACYCLIC_CRATES`].
fn sizes(root: &Path) -> Result {
    let mut report = Vec::new();
    for krate in ACYCLIC_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files)?;
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("  read {}: {e}", path.display()))?;
            let shown = path.strip_prefix(root).unwrap_or(&path).display();
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                report.push(format!(
                    "  {shown}: {lines} lines (at most {MAX_FILE_LINES})"
                ));
            }
            for (name, line, len) in long_functions(&text, MAX_FN_LINES) {
                report.push(format!(
                    "  {shown}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.join("\n"))
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("  read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("  read {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The functions longer than `max` lines in rustfmt-formatted source, as
/// (name, first line, length): a function runs from its `fn` line to the
/// first `}` line at the same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = &line[..line.len() - line.trim_start().len()];
        let Some(name) = fn_name(line.trim_start()) else {
            i += 1;
            continue;
        };
        // The signature ends at the line that opens the body (or at `;`:
        // a declaration without one).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            break;
        };
        if lines[open].trim_end().ends_with(';') {
            i = open + 1;
            continue;
        }
        let close_line = format!("{indent}}}");
        let end = (open + 1..lines.len())
            .find(|&j| lines[j] == close_line)
            .unwrap_or(lines.len() - 1);
        let len = end - i + 1;
        if len > max {
            out.push((name.to_string(), i + 1, len));
        }
        i = end + 1;
    }
    out
}

/// The name of the function a trimmed line declares, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let rest = rest.strip_prefix("fn ")?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_functions_are_found_by_their_braces() {
        let short = "fn a() {\n    x();\n}\n";
        assert!(long_functions(short, 3).is_empty());
        let long =
            "impl X {\n    pub async fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n}\n";
        assert_eq!(long_functions(long, 3), [("b".to_string(), 2, 5)]);
        let decl = "trait T {\n    fn c(&self) -> u8;\n}\nfn d() {\n}\n";
        assert!(long_functions(decl, 2).is_empty());
        assert_eq!(long_functions(decl, 1), [("d".to_string(), 4, 2)]);
    }

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
