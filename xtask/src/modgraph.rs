//! The import graph among a crate's top-level modules, and its cycles.
//!
//! The top-level modules are the `mod x;` declarations (any visibility) of
//! the crate root; inline `mod x { ... }` blocks and `#[path]` are not
//! followed. Module `x` is the file `x.rs` and/or `x/mod.rs`, plus every
//! `.rs` file under `x/`. There is an edge `a -> b` when a source file of
//! `a` names `crate::b`: `use crate::b::...`, `use crate::{b, ...}` (groups
//! nest: `crate::{b::X, c}`), or a path in code, `crate::b::f()`. Comments
//! are skipped, string literals are not (`#[serde(with = "crate::b::x")]`
//! is a real dependency). `crate::X` where `X` is not a module (an item of
//! the crate root) is no edge, nor is a module naming itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name -> the modules it imports -> where, first (`file:line`).
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// At most this many cycles are listed (the graph may have many more).
const MAX_CYCLES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Punct(char),
}

/// `src` with every comment replaced by spaces (newlines kept, so lines
/// still count). With `blank_strings`, the contents of string and char
/// literals are blanked too.
fn scrub(src: &str, blank_strings: bool) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0 || !is_ident_char(c[i - 1]))
            && raw_string_hashes(&c[i + 1..]).is_some()
        {
            // r"..." or r#"..."#: no escapes inside.
            let hashes = raw_string_hashes(&c[i + 1..]).unwrap_or(0);
            let open = 2 + hashes; // r, hashes, "
            out.extend(&c[i..i + open]);
            i += open;
            while i < c.len() {
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    out.extend(&c[i..(i + 1 + hashes).min(c.len())]);
                    i += 1 + hashes;
                    break;
                }
                out.push(if blank_strings { blank(c[i]) } else { c[i] });
                i += 1;
            }
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                let n = if c[i] == '\\' { 2 } else { 1 };
                for &ch in c.iter().skip(i).take(n) {
                    out.push(if blank_strings { blank(ch) } else { ch });
                }
                i += n;
            }
            if i < c.len() {
                out.push('"');
                i += 1;
            }
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if next == Some('\\') {
                c.get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&ch| ch == '\''))
                    .map(|p| i + 3 + p)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    for &ch in &c[i + 1..end] {
                        out.push(if blank_strings { blank(ch) } else { ch });
                    }
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// After the `r` of a raw string: how many `#` precede its `"`.
fn raw_string_hashes(rest: &[char]) -> Option<usize> {
    let hashes = rest.iter().take_while(|&&ch| ch == '#').count();
    (rest.get(hashes) == Some(&'"')).then_some(hashes)
}

fn is_ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Identifiers and single punctuation characters, each with its line (1-based).
fn tokens(code: &str) -> Vec<(Token, usize)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut chars = line.char_indices().peekable();
        while let Some((start, ch)) = chars.next() {
            if is_ident_char(ch) {
                let mut end = start + ch.len_utf8();
                while let Some(&(i, c)) = chars.peek() {
                    if !is_ident_char(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                out.push((Token::Ident(line[start..end].to_string()), n + 1));
            } else if !ch.is_whitespace() {
                out.push((Token::Punct(ch), n + 1));
            }
        }
    }
    out
}

/// The modules a crate root declares with `mod x;`, in order.
pub fn declared_modules(root_src: &str) -> Vec<String> {
    let toks = tokens(&scrub(root_src, true));
    let mut depth = 0usize;
    let mut out = Vec::new();
    for (i, (t, _)) in toks.iter().enumerate() {
        match t {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => depth = depth.saturating_sub(1),
            Token::Ident(m) if m == "mod" && depth == 0 => {
                if let (Some((Token::Ident(name), _)), Some((Token::Punct(';'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    out.push(name.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// Every name `src` reaches through `crate::`, with its line: `crate::a`
/// gives `a`, `crate::{a::X, b, c::{Y, Z}}` gives `a`, `b` and `c`.
pub fn crate_paths(src: &str) -> Vec<(String, usize)> {
    let toks = tokens(&scrub(src, false));
    let mut out = Vec::new();
    let is = |i: usize, p: char| matches!(toks.get(i), Some((Token::Punct(c), _)) if *c == p);
    for (i, (t, _)) in toks.iter().enumerate() {
        if *t != Token::Ident("crate".into()) || !is(i + 1, ':') || !is(i + 2, ':') {
            continue;
        }
        match toks.get(i + 3) {
            Some((Token::Ident(name), line)) => out.push((name.clone(), *line)),
            Some((Token::Punct('{'), _)) => {
                // The first name of each top-level item of the group.
                let mut depth = 0usize;
                let mut item_start = true;
                for (t, line) in &toks[i + 3..] {
                    match t {
                        Token::Punct('{') => {
                            depth += 1;
                            item_start = depth == 1;
                        }
                        Token::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Token::Punct(',') if depth == 1 => item_start = true,
                        Token::Ident(name) if item_start => {
                            out.push((name.clone(), *line));
                            item_start = false;
                        }
                        _ => item_start = false,
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The source files of module `name` of a crate whose root is in `src_dir`.
fn module_files(src_dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src_dir.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    collect_rs(&src_dir.join(name), &mut files);
    files.sort();
    files
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The import graph among the top-level modules of the crate whose root
/// file is `root_file` (e.g. `crates/x/src/lib.rs`).
pub fn graph_of(root_file: &Path) -> Result<Graph, String> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()));
    let src_dir = root_file.parent().unwrap_or(Path::new("."));
    let modules = declared_modules(&read(root_file)?);
    let names: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut graph = Graph::new();
    for m in &modules {
        let files = module_files(src_dir, m);
        if files.is_empty() {
            return Err(format!(
                "{}: no file for module {m} ({m}.rs or {m}/mod.rs)",
                src_dir.display()
            ));
        }
        let edges = graph.entry(m.clone()).or_default();
        for file in files {
            let shown = file
                .strip_prefix(src_dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            for (to, line) in crate_paths(&read(&file)?) {
                if to != *m && names.contains(to.as_str()) {
                    edges.entry(to).or_insert_with(|| format!("{shown}:{line}"));
                }
            }
        }
    }
    Ok(graph)
}

/// The strongly connected components of `graph` with more than one module
/// (Tarjan's algorithm), each sorted, in order of their first module.
pub fn tangles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(BTreeMap::keys) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// The elementary cycles of `graph` (each from its smallest module, back to
/// it), sorted; at most [`MAX_CYCLES`].
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn walk(
        graph: &Graph,
        scc: &BTreeSet<&str>,
        start: &str,
        path: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        let Some(last) = path.last().cloned() else {
            return;
        };
        for next in graph.get(&last).into_iter().flat_map(BTreeMap::keys) {
            if out.len() >= MAX_CYCLES {
                return;
            }
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                out.push(cycle);
            } else if next.as_str() > start && scc.contains(next.as_str()) && !path.contains(next) {
                path.push(next.clone());
                walk(graph, scc, start, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for scc in tangles(graph) {
        let members: BTreeSet<&str> = scc.iter().map(String::as_str).collect();
        for start in &scc {
            walk(graph, &members, start, &mut vec![start.clone()], &mut out);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string())
                .or_default()
                .insert(b.to_string(), String::new());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    fn names(paths: &[(String, usize)]) -> Vec<&str> {
        paths.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn declared_modules_are_the_file_modules_at_top_level() {
        let lib = "//! mod fake;\n\
                   mod a;\n\
                   pub mod b;\n\
                   pub(crate) mod c;\n\
                   #[cfg(test)] mod d;\n\
                   /* mod e; */\n\
                   mod inline { mod nested; }\n\
                   const S: &str = \"mod f;\";\n";
        assert_eq!(declared_modules(lib), ["a", "b", "c", "d"]);
    }

    #[test]
    fn crate_paths_of_uses_groups_and_code() {
        let src = "use crate::jobs::JobEntry;\n\
                   use crate::{sched::{Work, Sink}, ledger, self};\n\
                   use crate::{\n    verify::X,\n    store,\n};\n\
                   fn f() { crate::chain::slash(); let t = crate::now_ms(); }\n\
                   #[serde(with = \"crate::escrow::amount\")]\n";
        let paths = crate_paths(src);
        assert_eq!(
            names(&paths),
            [
                "jobs", "sched", "ledger", "self", "verify", "store", "chain", "now_ms", "escrow"
            ]
        );
        // Lines point at the name, even inside a multi-line group.
        assert_eq!(paths[4], ("verify".to_string(), 4));
    }

    #[test]
    fn crate_paths_skip_comments_and_lookalikes() {
        let src = "// use crate::a;\n\
                   /// See [`crate::b`].\n\
                   //! crate::c\n\
                   /* crate::d /* nested */ crate::e */\n\
                   let x = mycrate::f; // crate::g\n\
                   let c = '\"'; let q = '\\''; let l: &'static str = \"crate::h\";\n\
                   let r = r#\"\"crate::i\"\"#;\n\
                   pub(crate) fn k() {}\n";
        assert_eq!(names(&crate_paths(src)), ["h", "i"]);
    }

    #[test]
    fn no_cycles_in_a_dag() {
        let g = graph(&[("a", "b"), ("b", "c"), ("a", "c")]);
        assert!(tangles(&g).is_empty());
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn every_cycle_is_found_once() {
        let g = graph(&[
            ("api", "chain_api"),
            ("chain_api", "api"),
            ("sched", "jobs"),
            ("jobs", "sched"),
            ("sched", "ledger"),
            ("ledger", "sched"),
            ("ledger", "verify"),
            ("verify", "sched"),
            ("api", "sched"),
            ("store", "store"),
        ]);
        assert_eq!(
            tangles(&g),
            [
                vec!["api", "chain_api"],
                vec!["jobs", "ledger", "sched", "verify"]
            ]
        );
        let shown: Vec<String> = cycles(&g).iter().map(|c| c.join(" -> ")).collect();
        assert_eq!(
            shown,
            [
                "api -> chain_api -> api",
                "jobs -> sched -> jobs",
                "ledger -> sched -> ledger",
                "ledger -> verify -> sched -> ledger",
            ]
        );
    }
}
