//! The shape of `node/src/engine/`, checked from its source: the modules
//! import each other without a cycle, no request or membership handler
//! imports another handler, and only the vnode and hint code (and the
//! router's public accessors in `mod.rs`) reach the store.
//!
//! The checks read the `use` declarations and paths of each file, with
//! comments and string literals removed, so a doc link is not an import.
//! Each check has a negative control on made-up sources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The handlers: each owns one concern and reaches the others only
/// through the router (`mod.rs`) or the shard that composes them
/// (`shard.rs`). `status` reads membership's state, which is its job.
const HANDLERS: &[&str] = &[
    "admission",
    "coordinator",
    "forward",
    "hints",
    "membership",
    "status",
    "vnode",
];

/// Handler imports the layout allows.
const ALLOWED_HANDLER_IMPORTS: &[(&str, &str)] = &[("status", "membership")];

/// The files that may call the store: the vnode, hinted handoff, and
/// the module that hands the store to every owner (`parts`, which only
/// clones the handle) and the router's accessors (`mod`).
const STORE_CALLERS: &[&str] = &["vnode", "hints", "parts", "mod"];

/// The engine's modules by name (`mod` for `mod.rs`), each with its
/// source, tests left out: test code may reach anything.
fn engine_sources() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("the engine folder") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "tests" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        sources.insert(name, without_test_modules(&code_only(&text)));
    }
    assert!(sources.len() > 5, "found the engine's files in {dir:?}");
    sources
}

/// `text` with comments removed and string and character literals
/// emptied, so only code is left.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            out.push_str("\"\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A character literal ('x' or '\n'); a lifetime has no
            // closing quote two characters on.
            out.push_str("' '");
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without `#[cfg(test)] mod name { ... }` blocks and
/// `#[cfg(test)] mod name;` declarations.
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        if !after.starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let semi = after.find(';');
        let brace = after.find('{');
        match (semi, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => rest = &after[s + 1..],
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// The first path segment of every item a `use` tree imports, e.g.
/// `{a::B, c, D}` gives `a`, `c`, `D`; `*` gives `*`.
fn first_segments(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        let mut items = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .flat_map(|item| {
                if item.starts_with('{') {
                    first_segments(item)
                } else {
                    vec![segment(item)]
                }
            })
            .collect();
    }
    vec![segment(tree)]
}

/// The first segment of a path (`a::b` gives `a`, `C as D` gives `C`).
fn segment(path: &str) -> String {
    path.split("::")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Which engine modules each module imports. A path through `super::`
/// (from a child) or `self::` (from `mod.rs`) or `crate::engine::` names
/// either a sibling module or an item defined in `mod.rs` (an edge to
/// `mod`).
fn imports(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = sources.keys().map(String::as_str).collect();
    let mut graph = BTreeMap::new();
    for (name, code) in sources {
        let prefixes: &[&str] = if name == "mod" {
            &["self::", "crate::engine::"]
        } else {
            &["super::", "crate::engine::"]
        };
        let mut edges = BTreeSet::new();
        for prefix in prefixes {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().next_back();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    // `super::super::`, or part of a longer path.
                    continue;
                }
                if rest.starts_with("super::") {
                    continue;
                }
                let end = if rest.starts_with('{') {
                    let mut depth = 0;
                    rest.char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            depth == 0
                        })
                        .map_or(rest.len(), |(i, _)| i + 1)
                } else {
                    rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .unwrap_or(rest.len())
                };
                for first in first_segments(&rest[..end]) {
                    let target = if modules.contains(first.as_str()) {
                        first
                    } else {
                        // An item of `mod.rs` (a type, a function, `*`).
                        "mod".to_string()
                    };
                    if target != *name {
                        edges.insert(target);
                    }
                }
            }
        }
        graph.insert(name.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unseen,
        OnPath,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::Unseen) {
                Mark::OnPath => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::Unseen => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::Unseen) == Mark::Unseen {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// Handler files that import another handler the layout does not allow.
fn handler_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (from, targets) in graph {
        if !HANDLERS.contains(&from.as_str()) {
            continue;
        }
        for to in targets {
            let allowed = ALLOWED_HANDLER_IMPORTS.contains(&(from.as_str(), to.as_str()));
            if HANDLERS.contains(&to.as_str()) && !allowed {
                found.push((from.clone(), to.clone()));
            }
        }
    }
    found
}

/// Files outside [`STORE_CALLERS`] that name the store field
/// (`.store.`, `.store)`, `&self.store`).
fn store_callers(sources: &BTreeMap<String, String>) -> Vec<String> {
    sources
        .iter()
        .filter(|(name, _)| !STORE_CALLERS.contains(&name.as_str()))
        .filter(|(_, code)| {
            code.match_indices(".store").any(|(at, _)| {
                !code[at + ".store".len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn made_up(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(name, text)| (name.to_string(), without_test_modules(&code_only(text))))
        .collect()
}

#[test]
fn the_engine_modules_import_each_other_without_a_cycle() {
    let graph = imports(&engine_sources());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle in node/src/engine: {}\nimports: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn no_engine_handler_imports_another() {
    let graph = imports(&engine_sources());
    assert_eq!(handler_imports(&graph), Vec::<(String, String)>::new());
}

#[test]
fn only_the_vnode_and_hint_code_call_the_store() {
    assert_eq!(store_callers(&engine_sources()), Vec::<String>::new());
}

/// Negative controls: each check fails on sources that break its rule,
/// and doc comments, strings and test modules do not count.
#[test]
fn the_checks_fail_on_sources_that_break_the_rules() {
    // `mod` imports `shard`; `shard` imports a type of `mod.rs`.
    let cycle = made_up(&[
        (
            "mod",
            "mod shard;\nuse self::shard::Shard;\npub struct Engine;",
        ),
        (
            "shard",
            "use super::{Engine, view::View};\npub struct Shard;",
        ),
        ("view", "pub struct View;"),
    ]);
    let found = find_cycle(&imports(&cycle)).expect("a cycle");
    assert_eq!(found, ["mod", "shard", "mod"]);
    // Through a sibling, written as a nested group and a plain path.
    let longer = made_up(&[
        ("mod", "use self::a::A;"),
        ("a", "use super::{x, b::{B, C}};\nfn f() { super::x::y(); }"),
        ("b", "fn g() -> super::a::A { todo!() }"),
        ("x", ""),
    ]);
    assert_eq!(
        find_cycle(&imports(&longer)).expect("a cycle"),
        ["a", "b", "a"]
    );
    // Mentions in comments, strings and test modules are not imports.
    let quiet = made_up(&[
        ("mod", "use self::a::A;"),
        (
            "a",
            "//! See [`Engine`](super::Engine).\n/* super::Engine */\nconst S: &str = \"super::Engine\";\nconst C: char = '\"';\nfn f<'a>(x: &'a str) {}\n#[cfg(test)]\nmod tests { use super::super::Engine; use crate::engine::Engine; }\n#[cfg(test)]\nmod more;",
        ),
    ]);
    assert_eq!(find_cycle(&imports(&quiet)), None);
    // A handler importing another.
    let handlers = made_up(&[
        ("coordinator", "use super::hints::keep;"),
        ("hints", ""),
        ("status", "use super::membership::NAME;"),
        ("membership", ""),
    ]);
    assert_eq!(
        handler_imports(&imports(&handlers)),
        [("coordinator".to_string(), "hints".to_string())]
    );
    // The store called from a handler.
    let store = made_up(&[
        ("coordinator", "fn f(cx: &Cx) { cx.parts.store.get(); }"),
        ("forward", "fn g(s: &S) { s.store_message(); }"),
        ("vnode", "fn h(cx: &Cx) { cx.parts.store.put(); }"),
    ]);
    assert_eq!(store_callers(&store), ["coordinator"]);
}
