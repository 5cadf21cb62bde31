//! The source is layered. Its top-level folders (and single-file modules) are ranked in
//! [`LAYERS`], bottom up, and each imports only from ranks below its own: a policy never
//! reaches into the compiler, the store never into the issuer. Within a folder, the files
//! import one another without cycles: every `use` (and every inline `crate::…` path) points
//! to a file that does not, directly or through others, point back. A module's `mod.rs` may
//! declare and re-export its children, but then they must not import it; shared items live in
//! a sibling file instead. Read from the source, no build needed.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, bottom up; one line per layer, as the README's Architecture
/// section shows them. A module imports only from modules listed before it.
const LAYERS: &[&[&str]] = &[
    &["clock", "id", "task", "redact", "body", "problem", "ipset", "subscription"],
    &["tls"],
    &["config"],
    &["request"],
    &["telemetry"],
    &["limit"],
    &["store"],
    &["policy"],
    &["proxy"],
    &["identity", "secrets"],
    &["route"],
    &["runtime"],
    &["compile"],
    &["serve"],
    &["tools"],
    &["cli"],
];

/// The top-level module a file belongs to (`policy/jwt/keys.rs` → `policy`; `lib.rs` → none).
fn top_level(file: &Path) -> Option<String> {
    let first = file.iter().next()?.to_string_lossy().into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// Every import from a module to one ranked at or above it, as `from -> to (file -> file)`.
fn back_edges(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<String> {
    let rank = |module: &str| LAYERS.iter().flat_map(|layer| layer.iter()).position(|m| *m == module);
    let mut out = Vec::new();
    for (file, targets) in graph {
        let Some(from) = top_level(file) else { continue };
        for target in targets {
            let Some(to) = top_level(target) else { continue };
            if from == to {
                continue;
            }
            match (rank(&from), rank(&to)) {
                (Some(a), Some(b)) if b < a => {}
                (None, _) => out.push(format!("{from} is not ranked in LAYERS ({})", file.display())),
                (_, None) => out.push(format!("{to} is not ranked in LAYERS ({})", target.display())),
                _ => out.push(format!("{from} -> {to} ({} -> {})", file.display(), target.display())),
            }
        }
    }
    out
}

/// Module path (`["policy", "jwt"]`) to file (`policy/jwt/mod.rs`), for every file of `src/`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut segments: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if segments.last().is_some_and(|s| s == "mod") || segments == ["lib"] || segments == ["main"] {
                    segments.pop();
                }
                out.insert(segments, rel.with_extension("rs"));
            }
        }
    }
    out
}

/// The code of a file without comments, string contents and its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut previous = ' ';
        for (i, c) in line.char_indices() {
            if !in_string && line[i..].starts_with("//") {
                break;
            }
            if c == '"' && previous != '\\' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
            previous = c;
        }
        out.push('\n');
    }
    out
}

/// `a::{b, c::{d, e}}` as `[a::b, a::c::d, a::c::e]`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand_into(&[], &tree, &mut out);
    out
}

fn expand_into(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let prefix = [prefix, &head].concat();
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_into(&prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_into(&prefix, &inner[start..], out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree);
        out.push([prefix, &path.split("::").map(str::to_owned).collect::<Vec<_>>()].concat());
    }
}

/// The file a path names, as seen from module `me`.
fn resolve(me: &[String], path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    let absolute: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("self") => [me, &path[1..]].concat(),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            [&me[..me.len().saturating_sub(ups)], &path[ups..]].concat()
        }
        // A child module, named relative to this one.
        Some(first) if modules.contains_key(&[me, &[first.to_owned()]].concat()) => [me, path].concat(),
        _ => return None,
    };
    (1..=absolute.len()).rev().find_map(|n| modules.get(&absolute[..n]).cloned())
}

/// Every file each file imports.
fn imports(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for (me, file) in &modules {
        let code = code(&std::fs::read_to_string(src.join(file)).unwrap());
        let mut paths = Vec::new();
        for statement in code.split(';') {
            if let Some(at) = statement.find("use ") {
                let before = &statement[..at];
                if before.trim().is_empty() || before.trim_end().ends_with("pub") || before.trim_end().ends_with(')') {
                    paths.extend(expand(&statement[at + 4..]));
                }
            }
        }
        for (at, _) in code.match_indices("crate::") {
            let tail: String =
                code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(tail.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
        }
        let targets: BTreeSet<PathBuf> =
            paths.iter().filter_map(|p| resolve(me, p, &modules)).filter(|target| target != file).collect();
        graph.insert(file.clone(), targets);
    }
    graph
}

/// One cycle through the graph, if there is any.
fn find_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        file: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match marks.get(file) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|f| f == file).unwrap();
                return Some([&stack[start..], std::slice::from_ref(file)].concat());
            }
            None => {}
        }
        marks.insert(file.clone(), Mark::Open);
        stack.push(file.clone());
        for next in graph.get(file).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(file.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|file| visit(file, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn source_files_import_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    assert!(graph.len() > 50, "the source tree was read: {} files", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(|f| f.display().to_string()).collect();
        panic!("import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn folders_import_only_from_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    let back = back_edges(&graph);
    assert!(back.is_empty(), "imports against the layers (see LAYERS):\n{}", back.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_and_resolves_use_trees() {
    let trees = expand("crate::policy::{chain::Chain, outcome::{Decision, Denial}}");
    assert_eq!(trees.len(), 3);
    assert_eq!(trees[2], ["crate", "policy", "outcome", "Denial"]);
    let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> =
        [("a.rs", vec!["b.rs"]), ("b.rs", vec!["c.rs"]), ("c.rs", vec!["a.rs"]), ("d.rs", vec!["a.rs"])]
            .into_iter()
            .map(|(f, to)| (PathBuf::from(f), to.into_iter().map(PathBuf::from).collect()))
            .collect();
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
}

#[test]
fn the_checker_sees_an_import_against_the_layers() {
    let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        ("policy/jwt/mod.rs", vec!["config/values.rs", "policy/outcome.rs"]),
        ("config/values.rs", vec!["compile/raw.rs", "clock.rs"]),
        ("lib.rs", vec!["cli/mod.rs"]),
    ]
    .into_iter()
    .map(|(f, to)| (PathBuf::from(f), to.into_iter().map(PathBuf::from).collect()))
    .collect();
    assert_eq!(back_edges(&graph), ["config -> compile (config/values.rs -> compile/raw.rs)"]);
}
