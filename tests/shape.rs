//! The shape of `src/`, guarded (`make shape`, run by `make unit`): no production source file
//! over 450 lines, no function in the plan over 60 lines, no import circle between modules.
//! A module is a file; `crate::…`, `super::…` and `self::…` paths, and a folder's file naming
//! its children, are its arrows. A path to one's own ancestor is left out: that is how Rust
//! nests (a folder's `mod.rs` is its face), not a circle. Read from the source text, so it runs
//! anywhere `cargo test` does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 450;
const MAX_PLAN_FN_LINES: usize = 60;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, as its module path (`controller/plan/mod.rs` -> ["controller", "plan"]).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(src()).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                let last = parts.pop().unwrap();
                if parts.is_empty() && last != "lib" {
                    parts.push(last);
                }
            }
            (parts, f)
        })
        .collect()
}

/// The file's production part: what comes before its `#[cfg(test)]` module.
fn production(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).collect()
}

/// Files that are tests themselves (`tests.rs`, `tests_*.rs`, anything under a `tests/` folder)
/// or the shared test fixtures.
fn is_test_file(module: &[String]) -> bool {
    module.iter().any(|m| m == "tests" || m.starts_with("tests_")) || module.last().is_some_and(|m| m == "testing")
}

#[test]
fn no_production_file_over_450_lines() {
    let long: Vec<String> = modules()
        .iter()
        .filter(|(m, _)| !is_test_file(m))
        .filter_map(|(_, f)| {
            let n = production(&std::fs::read_to_string(f).unwrap()).len();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(src()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines: {long:#?}");
}

/// Functions of a text as (name, first line, lines), by brace depth from their `fn` line.
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let sig = ["fn ", "pub fn ", "async fn ", "pub async fn ", "const fn "]
            .iter()
            .any(|p| line.starts_with(p))
            || (line.starts_with("pub(") && (line.contains(") fn ") || line.contains(") async fn ")));
        if !sig || line.starts_with("//") {
            i += 1;
            continue;
        }
        let name = line
            .split("fn ")
            .nth(1)
            .unwrap_or("")
            .split(['(', '<'])
            .next()
            .unwrap_or("")
            .to_string();
        let (mut depth, mut opened, start) = (0i32, false, i);
        while i < lines.len() {
            for c in code_of(lines[i]).chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if (opened && depth == 0) || (!opened && lines[i].trim_end().ends_with(';')) {
                break;
            }
            i += 1;
        }
        out.push((name, start + 1, i - start + 1));
        i += 1;
    }
    out
}

/// A line without its string literals, char literals and comment (braces in them do not count).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => in_str = false,
            (true, _) => {}
            (false, '"') => in_str = true,
            (false, '\'') => {
                // A char literal ('{', '\'') or a lifetime ('a): skip a literal only.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.nth(2);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                }
            }
            (false, '/') if chars.peek() == Some(&'/') => break,
            (false, _) => out.push(c),
        }
    }
    out
}

#[test]
fn no_function_in_the_plan_over_60_lines() {
    let mut long = Vec::new();
    for (module, file) in modules() {
        if module.len() < 2 || module[..2] != ["controller", "plan"] || is_test_file(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, n) in functions(&production(&text)) {
            if n > MAX_PLAN_FN_LINES {
                long.push(format!(
                    "{}:{line} {name} ({n} lines)",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_PLAN_FN_LINES} lines: {long:#?}");
}

/// The modules a file's production part names, resolved to the longest module path that exists.
fn arrows(module: &[String], text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    // Comments (doc links among them) name modules without depending on them.
    let body: String = production(text).iter().map(|l| code_of(l) + "\n").collect();
    // `use a::{b, c::d}` groups: expand one level of braces into paths.
    let mut paths = Vec::new();
    for (i, _) in body
        .match_indices("crate::")
        .chain(body.match_indices("super::"))
        .chain(body.match_indices("self::"))
    {
        let before = body[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &body[i..];
        let end = rest
            .find(|c: char| {
                !(c.is_alphanumeric()
                    || c == '_'
                    || c == ':'
                    || c == '{'
                    || c == '}'
                    || c == ','
                    || c == ' '
                    || c == '\n'
                    || c == '*')
            })
            .unwrap_or(rest.len());
        paths.push(rest[..end].to_string());
    }
    // A folder's own file naming one of its children by its bare name (`roll::roll(p)`).
    let children: Vec<&Vec<String>> = known
        .iter()
        .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
        .collect();
    for child in children {
        let name = format!("{}::", child.last().unwrap());
        let named = body.match_indices(&name).any(|(i, _)| {
            let before = body[..i].chars().last();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        });
        if named {
            out.insert(child.clone());
        }
    }
    for path in paths {
        for expanded in expand(&path) {
            let segs: Vec<&str> = expanded.split("::").map(str::trim).filter(|s| !s.is_empty()).collect();
            let mut base: Vec<String> = match segs.first() {
                Some(&"crate") => Vec::new(),
                Some(&"super") | Some(&"self") => {
                    // A file's own module is `module`; `mod.rs` files are their folder.
                    let mut here = module.to_vec();
                    let mut k = 0;
                    while segs.get(k) == Some(&"super") {
                        here.pop();
                        k += 1;
                    }
                    if segs.first() == Some(&"self") {
                        k = 1;
                    }
                    let resolved = resolve(&here, &segs[k..], known);
                    // A child naming its own parent through `super::item` is nesting.
                    if segs.first() == Some(&"super") && module.starts_with(&resolved) {
                        continue;
                    }
                    if resolved != module {
                        out.insert(resolved);
                    }
                    continue;
                }
                _ => continue,
            };
            base.clear();
            let resolved = resolve(&base, &segs[1..], known);
            if resolved != module && !module.starts_with(&resolved) {
                out.insert(resolved);
            }
        }
    }
    out
}

/// `a::{b, c::{d}}` -> ["a::b", "a::c::d"] (enough nesting for this code base).
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.replace(['\n', ' '], "")];
    };
    let head = &path[..open];
    let mut depth = 0;
    let mut close = path.len();
    for (i, c) in path[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &path[open + 1..close.min(path.len())];
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{head}{}", p.trim())))
        .collect()
}

/// The longest prefix of `base + segs` that is a module.
fn resolve(base: &[String], segs: &[&str], known: &BTreeSet<Vec<String>>) -> Vec<String> {
    let mut best = base.to_vec();
    let mut path = base.to_vec();
    for s in segs {
        path.push(s.to_string());
        if known.contains(&path) {
            best = path.clone();
        }
    }
    best
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on: BTreeSet<&'g Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g Vec<String>) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else { continue };
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[v].min(t.low[w]);
                t.low.insert(v, l);
            } else if t.on.contains(w) {
                let l = t.low[v].min(t.index[w]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_import_circle_between_modules() {
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = modules
        .iter()
        .filter(|(m, _)| !is_test_file(m))
        .map(|(m, f)| (m.clone(), arrows(m, &std::fs::read_to_string(f).unwrap(), &known)))
        .collect();
    let found = circles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&String> = c.iter().collect();
            let ties: Vec<String> = graph
                .iter()
                .filter(|(m, _)| members.contains(&m.join("::")))
                .flat_map(|(m, to)| {
                    to.iter()
                        .filter(|t| members.contains(&t.join("::")))
                        .map(move |t| format!("{} -> {}", m.join("::"), t.join("::")))
                })
                .collect();
            ties.join("; ")
        })
        .collect();
    assert!(found.is_empty(), "{} import circles: {described:#?}", found.len());
}

/// The milestones in status, written only through `plan::facts` (`Fact`).
const MILESTONES: [&str; 11] = [
    "provisioning_started_at",
    "traffic_shifted_at",
    "cutoff",
    "migrations_enabled_at",
    "migrations_finished_at",
    "verified_at",
    "source_retired_at",
    "finalized_at",
    "completed_at",
    "rolled_back_at",
    "worker_restarted_at",
];

/// `status.<milestone> =` on a line (not `==`).
fn writes_a_milestone(line: &str) -> Option<&'static str> {
    MILESTONES.into_iter().find(|m| {
        let at = format!(".{m} =");
        line.find(&at).is_some_and(|i| !line[i + at.len()..].starts_with('='))
    })
}

#[test]
fn milestones_are_recorded_only_through_the_fact_enum() {
    let mut found = Vec::new();
    for (module, path) in modules() {
        if is_test_file(&module) || module.last().is_some_and(|m| m == "facts") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in production(&text).iter().enumerate() {
            if let Some(m) = writes_a_milestone(line) {
                found.push(format!("{}:{}: {m}", path.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "record these through `Planner::record` and `Fact`:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_themselves_see_what_they_guard() {
    assert_eq!(
        writes_a_milestone("    p.status.verified_at = Some(t);"),
        Some("verified_at")
    );
    assert_eq!(writes_a_milestone("    if s.verified_at == None {"), None);
    // A circle is found, a long function measured, braces in strings ignored.
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let graph = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(circles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    let text = "pub fn f() {\n    let s = \"{\";\n    if x {\n    }\n}\nfn g();\n";
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        functions(&lines),
        vec![("f".to_string(), 1, 5), ("g".to_string(), 6, 1)]
    );
    assert_eq!(
        expand("crate::a::{b, c::{d, e}}"),
        vec!["crate::a::b", "crate::a::c::d", "crate::a::c::e"]
    );
}
