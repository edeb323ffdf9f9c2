//! The repository's own documents hold together: every "spec §N" cited in code and documents
//! names a section docs/spec.md has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The section numbers of docs/spec.md's headings ("## 4. External contract" → "4").
fn sections(spec: &str) -> BTreeSet<String> {
    spec.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_string())
        .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        .collect()
}

/// Every section number cited after "spec §" or "spec.md §" in `text` (ranges "5.2–5.6" and
/// lists "§7, §8" give each number).
fn citations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["spec §", "spec.md §"] {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len()..];
            let cited: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '–' | ',' | ' ' | '§'))
                .collect();
            for part in cited.split(['–', ',', ' ', '§']) {
                let n = part.trim_end_matches('.');
                if !n.is_empty() && n.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push(n.to_string());
                }
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                files(&path, out);
            }
        } else if [".rs", ".js", ".md", ".py", ".toml"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            out.push(path);
        }
    }
}

#[test]
fn every_spec_section_cited_exists() {
    let root = workspace();
    let spec = std::fs::read_to_string(root.join("docs/spec.md")).unwrap();
    let known = sections(&spec);
    assert!(known.contains("4.2.1") && known.contains("7"), "{known:?}");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut cited = 0;
    let mut missing = Vec::new();
    for path in all {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for n in citations(&text) {
            cited += 1;
            if !known.contains(&n) {
                missing.push(format!(
                    "{}: §{n}",
                    path.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        cited > 30,
        "only {cited} citations found: the scan is broken"
    );
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "cited sections docs/spec.md does not have"
    );
}

#[test]
fn citations_are_read_as_written() {
    assert_eq!(
        citations("see spec §5.2–5.6 and spec §7, §8."),
        ["5.2", "5.6", "7", "8"]
    );
    assert_eq!(citations("(docs/spec.md §2)"), ["2"]);
    assert_eq!(
        sections("## 4. External\n#### 4.2.1 Connecting\n# title"),
        ["4", "4.2.1"].map(String::from).into()
    );
}
