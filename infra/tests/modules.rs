//! No import circles between the files of a crate: when `a.rs` uses something of `b.rs`, `b.rs`
//! (and what it uses) does not use `a.rs`. A module and its own submodules are one room (a
//! parent declares its children, which may use what it defines), so only files that are not
//! each other's ancestor count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `src` directories of the workspace's crates.
fn crates() -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let start = manifest.find("members").expect("workspace members");
    let list = &manifest[start..manifest[start..].find(']').unwrap() + start];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(|m| workspace().join(m).join("src"))
        .filter(|p| p.is_dir())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // Each file of src/bin is a crate of its own.
            if path.file_name().unwrap() != "bin" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The code of a file without comments and without its `#[cfg(test)]` module at the end.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits `a, b::{c, d}, e` at its top-level commas.
fn split_top(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out
}

/// The paths a use tree names, each as its segments (`gate::{Gate, self}` → `gate::Gate`,
/// `gate`).
fn paths(tree: &str, prefix: &[String], out: &mut Vec<Module>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base: Module = prefix.iter().cloned().chain(head).collect();
        for part in split_top(inner) {
            paths(part, &base, out);
        }
    } else {
        let mut p: Module = prefix.to_vec();
        for seg in tree.split("::").map(str::trim) {
            let seg = seg.split_whitespace().next().unwrap_or("");
            if seg != "self" && !seg.is_empty() {
                p.push(seg.to_string());
            }
        }
        out.push(p);
    }
}

/// Every module path a file's code reaches through `crate::`, `super::` or `self::`.
fn references(code: &str, module: &Module) -> Vec<Module> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(root) {
            if code[..at].chars().next_back().is_some_and(ident) {
                continue;
            }
            let mut base: Module = match root {
                "crate::" => Vec::new(),
                // The parent of the file's module (a mod.rs's module is its directory's).
                "super::" => module[..module.len().saturating_sub(1)].to_vec(),
                _ => module.clone(),
            };
            let mut rest = &code[at + root.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            // The path up to where it stops being a path (a brace group is taken whole).
            let end = if rest.starts_with('{') {
                let mut depth = 0;
                rest.char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i + 1)
            } else {
                rest.find(|c: char| !(ident(c) || c == ':' || c == '{'))
                    .unwrap_or(rest.len())
            };
            let tree = &rest[..end];
            let tree = if tree.contains('{') && !tree.ends_with('}') {
                // `crate::a::{` spanning lines: take up to the closing brace.
                let close = rest.find('}').map_or(rest.len(), |i| i + 1);
                &rest[..close]
            } else {
                tree
            };
            paths(tree, &base, &mut out);
        }
    }
    out
}

fn is_ancestor(a: &Module, b: &Module) -> bool {
    a.len() <= b.len() && b[..a.len()] == a[..]
}

/// The import graph between a crate's files, ancestors and descendants left out.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        for path in references(&code(&text), module) {
            // The longest prefix of the path that is a file of the crate.
            let Some(target) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains_key(p))
            else {
                continue;
            };
            if !is_ancestor(&target, module) && !is_ancestor(module, &target) {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// A circle through the graph, when there is one.
fn circle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut c = path[at..].to_vec();
            c.push(m.clone());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let srcs = crates();
    assert!(srcs.len() >= 10, "the workspace's crates: {srcs:?}");
    let mut circles = Vec::new();
    for src in &srcs {
        if let Some(c) = circle(&graph(src)) {
            let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
            circles.push(format!("{}: {}", src.display(), names.join(" → ")));
        }
    }
    assert!(
        circles.is_empty(),
        "files that import each other (move what both need into a third, or into their \
         parent):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found_through_grouped_and_relative_imports() {
    let dir = std::env::temp_dir().join(format!("modules-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod gate;\nmod ledger;\nmod store;\n").unwrap();
    std::fs::write(
        src.join("gate.rs"),
        "use crate::{\n    ledger::Ledger,\n    store::Kind,\n};\n",
    )
    .unwrap();
    std::fs::write(src.join("store/mod.rs"), "mod item;\npub struct Kind;\n").unwrap();
    // A child using its parent is not a circle.
    std::fs::write(src.join("store/item.rs"), "use super::Kind;\n").unwrap();
    std::fs::write(
        src.join("ledger.rs"),
        "// crate::gate in a comment is not a use\npub struct Ledger;\n",
    )
    .unwrap();
    assert_eq!(circle(&graph(&src)), None);
    std::fs::write(
        src.join("ledger.rs"),
        "pub struct Ledger;\nfn f() { let _ = super::gate::now(); }\n",
    )
    .unwrap();
    let found = circle(&graph(&src)).expect("gate → ledger → gate");
    let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
    assert_eq!(names, ["gate", "ledger", "gate"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
