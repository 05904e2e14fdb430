//! The layer order written in `src/lib.rs`, kept: each top-level module of `src/` may use
//! only modules of a lower layer, so dependencies point one way and no import circle can
//! form between them; and within a layer no two files import each other round a circle. It
//! reads the sources, following every path to the module it denotes (`crate::`, `self::`,
//! `super::`, and names a `use` brought in, grouped or renamed), so a new upward import or
//! circle fails here with the files that made it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Lowest first; a module may use only modules of strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["clock", "secret", "metrics", "telemetry"],
    &["tls", "custody"],
    &["config"],
    &["domain"],
    &["error"],
    &["fintoc"],
    &["store", "simulator"],
    &["hub"],
    &["app"],
    &["refresh"],
    &["fetch"],
    &["http", "grpc", "tasks"],
    &["server"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut upward = Vec::new();
    // The module graph, printed for `cargo test --test it layers -- --nocapture`.
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = layer(&top).unwrap_or_else(|| {
            panic!("src/{top} is in no layer: add it to LAYERS here and to src/lib.rs")
        });
        let module = module_of(&src, &file);
        let source = std::fs::read_to_string(&file).unwrap();
        let used_modules = named_paths(&module, &code_of(&source))
            .into_iter()
            .filter_map(|path| path.into_iter().next());
        for used in used_modules {
            if used == top || used == "pb" {
                continue;
            }
            graph.entry(top.clone()).or_default().insert(used.clone());
            match layer(&used) {
                Some(theirs) if theirs < own => {}
                _ => upward.push(format!("{} uses crate::{used}", relative.display())),
            }
        }
    }
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        eprintln!("{module} -> {}", uses.join(", "));
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports against the layer order:\n{}",
        upward.join("\n")
    );
}

/// The module path of a source file: `src/store/sqlite/mod.rs` is `store::sqlite`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// A source file reduced to its code: comments emptied, string and character literals
/// emptied (a path in a message is not an import), and its unit tests (`#[cfg(test)] mod
/// tests` at the end) left out.
fn code_of(source: &str) -> String {
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let chars: Vec<char> = source.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        let token_start = i == 0 || !ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    (depth, i) = (depth + 1, i + 2);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    (depth, i) = (depth - 1, i + 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if token_start && (c == 'r' || (c == 'b' && next == Some('r'))) && {
            // A raw string `r#"…"#` (not a raw identifier `r#type`).
            let at = i + if c == 'b' { 2 } else { 1 };
            let hashes = chars[at..].iter().take_while(|&&h| h == '#').count();
            chars.get(at + hashes) == Some(&'"')
        } {
            let at = i + if c == 'b' { 2 } else { 1 };
            let hashes = chars[at..].iter().take_while(|&&h| h == '#').count();
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let body: String = chars[at + hashes + 1..].iter().collect();
            let len = body
                .find(&close)
                .map_or(body.len(), |end| end + close.len());
            i = at + hashes + 1 + body[..len].chars().count();
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: up to its closing quote.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            // A lifetime's quote, or any other character.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// One name a `use` declaration brings into scope: the path it names and the name it is
/// bound to (`None` for a glob or `as _`).
#[derive(Debug, PartialEq)]
struct Imported {
    path: Vec<String>,
    name: Option<String>,
}

/// The tokens of a `use` tree: names, `::`, `{`, `}`, `,` and `*`.
fn use_tokens(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
            let mut name = c.to_string();
            while let Some(&n) = chars
                .peek()
                .filter(|n| n.is_ascii_alphanumeric() || **n == '_')
            {
                name.push(n);
                chars.next();
            }
            tokens.push(name);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push("::".into());
        } else if "{},*".contains(c) {
            tokens.push(c.to_string());
        }
    }
    tokens
}

/// Parses one `use` tree (`a::b`, `a::{b, c::d as e, self}`, `a::*`) below `prefix`.
fn use_tree(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<Imported>) {
    let token = |at: usize| tokens.get(at).map_or("", String::as_str);
    match token(*at) {
        "{" => {
            *at += 1;
            while !matches!(token(*at), "}" | "") {
                use_tree(tokens, at, prefix, out);
                if token(*at) == "," {
                    *at += 1;
                }
            }
            *at += 1;
        }
        "*" => {
            *at += 1;
            out.push(Imported {
                path: prefix.to_vec(),
                name: None,
            });
        }
        _ => {
            let mut path = prefix.to_vec();
            while !matches!(token(*at), "" | "," | "}" | "as") {
                if token(*at) != "::" {
                    path.push(token(*at).to_owned());
                } else if matches!(token(*at + 1), "{" | "*") {
                    *at += 1;
                    return use_tree(tokens, at, &path, out);
                }
                *at += 1;
            }
            if path.last().is_some_and(|last| last == "self") {
                path.pop();
            }
            let mut name = path.last().cloned();
            if token(*at) == "as" {
                name = Some(token(*at + 1).to_owned()).filter(|n| n != "_");
                *at += 2;
            }
            out.push(Imported { path, name });
        }
    }
}

/// Every `use` declaration in `code`: what it imports, and where it stands (to be left out
/// of the search for paths).
fn use_declarations(code: &str) -> (Vec<Imported>, Vec<std::ops::Range<usize>>) {
    let (mut imported, mut spans) = (Vec::new(), Vec::new());
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find("use") {
        let at = from + found;
        from = at + 3;
        let before = at.checked_sub(1).map(|b| bytes[b]);
        let after = bytes.get(at + 3).copied();
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            || !after.is_some_and(|a| a.is_ascii_whitespace())
        {
            continue;
        }
        let Some(end) = code[at..].find(';').map(|e| at + e) else {
            break;
        };
        let tokens = use_tokens(&code[at + 3..end]);
        let start = usize::from(tokens.first().is_some_and(|t| t == "::"));
        use_tree(&tokens, &mut { start }, &[], &mut imported);
        spans.push(at..end);
        from = end;
    }
    (imported, spans)
}

/// The names of the modules `code` declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_modules(code: &str) -> HashSet<String> {
    code.lines()
        .filter_map(|line| line.trim().split_once("mod ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.strip_suffix(';'))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// What a path means in one file: `crate::`, `self::`, `super::` (repeated), a name a `use`
/// brought in (`use super::sqlite;` then `sqlite::export::…`), or a module the file declares,
/// resolved to a path from the crate root; `None` for anything else (another crate, a local
/// item).
struct Scope<'a> {
    module: &'a [String],
    aliases: HashMap<String, Vec<String>>,
    children: HashSet<String>,
}

impl Scope<'_> {
    fn resolve(&self, path: &[String]) -> Option<Vec<String>> {
        let (first, mut rest) = path.split_first()?;
        let mut base = match first.as_str() {
            "crate" | "$crate" => Vec::new(),
            "self" => self.module.to_vec(),
            "super" => self.module[..self.module.len().checked_sub(1)?].to_vec(),
            name if self.aliases.contains_key(name) => self.aliases[name].clone(),
            name if self.children.contains(name) => {
                [self.module, std::slice::from_ref(first)].concat()
            }
            _ => return None,
        };
        if matches!(first.as_str(), "self" | "super") {
            while let Some(("super", more)) = rest.split_first().map(|(s, m)| (s.as_str(), m)) {
                base.pop()?;
                rest = more;
            }
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }
}

/// The paths (from the crate root) that the code of the file of `module` names: in its `use`
/// declarations, and wherever else `a::b` stands, with aliases and relative paths resolved.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let (imported, spans) = use_declarations(code);
    let mut scope = Scope {
        module,
        aliases: HashMap::new(),
        children: declared_modules(code),
    };
    // An alias may be built on another (`use super::store; use store::sqlite;`).
    for _ in 0..4 {
        for import in &imported {
            if let (Some(name), Some(path)) = (&import.name, scope.resolve(&import.path)) {
                scope.aliases.insert(name.clone(), path);
            }
        }
    }
    let mut found: Vec<Vec<String>> = imported
        .iter()
        .filter_map(|import| scope.resolve(&import.path))
        .collect();
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let starts = ident(c) && (i == 0 || !(ident(chars[i - 1].1) || chars[i - 1].1 == ':'));
        if !starts || spans.iter().any(|s| s.contains(&at)) {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        loop {
            let mut name = String::new();
            while i < chars.len() && ident(chars[i].1) {
                name.push(chars[i].1);
                i += 1;
            }
            path.push(name);
            let more = chars.get(i).is_some_and(|c| c.1 == ':')
                && chars.get(i + 1).is_some_and(|c| c.1 == ':')
                && chars.get(i + 2).is_some_and(|c| ident(c.1));
            if !more {
                break;
            }
            i += 2;
        }
        if path.len() > 1 {
            found.extend(scope.resolve(&path));
        }
    }
    found
}

/// The files whose modules the file of `module` uses: each named path cut to the longest
/// prefix that is a module with a file of its own. Its own file, its ancestors (the parent's
/// items, reached through `super::`) and the crate root are no edge.
fn file_dependencies(
    module: &[String],
    source: &str,
    modules: &HashSet<Vec<String>>,
) -> Vec<Vec<String>> {
    named_paths(module, &code_of(source))
        .into_iter()
        .filter_map(|mut full| {
            while !full.is_empty() && !modules.contains(&full) {
                full.pop();
            }
            (!full.is_empty() && !module.starts_with(&full)).then_some(full)
        })
        .collect()
}

/// The file-level import graph of `src/`: module path → the module paths it uses.
fn file_graph() -> HashMap<Vec<String>, HashSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let modules: HashSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: HashMap<Vec<String>, HashSet<Vec<String>>> = HashMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let deps = file_dependencies(&module, &std::fs::read_to_string(file).unwrap(), &modules);
        edges.entry(module).or_default().extend(deps);
    }
    edges
}

/// Every elementary circle of `edges`, each written from its smallest module
/// (`a -> b -> a`), sorted.
fn circles(edges: &HashMap<Vec<String>, HashSet<Vec<String>>>) -> Vec<String> {
    fn walk(
        start: &Vec<String>,
        at: &Vec<String>,
        edges: &HashMap<Vec<String>, HashSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        found: &mut Vec<String>,
    ) {
        let mut next: Vec<&Vec<String>> = edges.get(at).into_iter().flatten().collect();
        next.sort();
        for n in next {
            if n == start {
                let names: Vec<String> = path.iter().chain([start]).map(|m| m.join("::")).collect();
                found.push(names.join(" -> "));
            } else if n > start && !path.contains(n) && found.len() < 100 {
                path.push(n.clone());
                walk(start, n, edges, path, found);
                path.pop();
            }
        }
    }
    let mut starts: Vec<&Vec<String>> = edges.keys().collect();
    starts.sort();
    let mut found = Vec::new();
    for start in starts {
        walk(start, start, edges, &mut vec![start.clone()], &mut found);
    }
    found.sort();
    found
}

/// The import circles between files of `src/` that are tolerated: none. (The last, between
/// `store/copy.rs` and the SQLite export and PostgreSQL import that used its row types, went
/// when those moved below all three, to `store/copy/batch.rs`.) Never add one.
const KNOWN_CIRCLES: &[&str] = &[];

/// No two source files import each other, directly or round a longer circle: within a
/// layer too, dependencies point one way. Paths are followed through `use` aliases and
/// relative paths; the circles found must be exactly [`KNOWN_CIRCLES`], so a new circle
/// fails here, and so does a removed one until it is struck from the list.
#[test]
fn no_file_imports_round_a_circle() {
    let found = circles(&file_graph());
    let new: Vec<&String> = found
        .iter()
        .filter(|c| !KNOWN_CIRCLES.contains(&c.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN_CIRCLES
        .iter()
        .filter(|c| !found.iter().any(|f| f == *c))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "import circles changed.\nnew (break them):\n  {}\ngone (strike them from \
         KNOWN_CIRCLES):\n  {}",
        new.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        gone.iter().map(|c| **c).collect::<Vec<_>>().join("\n  ")
    );
}

/// The resolver follows what a `use` brings in: grouped, renamed, `self`, `super::super`,
/// an alias built on another, a declared module; and leaves other crates and strings alone.
#[test]
fn paths_are_resolved_through_aliases_and_relative_imports() {
    let module: Vec<String> = ["store", "copy"].map(String::from).to_vec();
    let code = code_of(
        "use super::{sqlite, postgres as pg, self as st};\nuse crate::domain::{self, Id};\n\
         use st::hub_ish;\nuse std::fmt;\nmod inner;\n\
         fn f() { sqlite::export::read(); pg::import::write(); fmt::Display; \
         hub_ish::x(); super::super::clock::now(); inner::g(); domain::Status; \
         let s = \"crate::http::nope\"; } // crate::grpc::nope\n",
    );
    let mut paths: Vec<String> = named_paths(&module, &code)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths,
        [
            "clock::now",
            "domain",
            "domain::Id",
            "domain::Status",
            "store",
            "store::copy::inner::g",
            "store::hub_ish",
            "store::hub_ish::x",
            "store::postgres",
            "store::postgres::import::write",
            "store::sqlite",
            "store::sqlite::export::read",
        ]
    );
}
