//! The layer order written in `src/lib.rs`, kept: each top-level module of `src/` may name
//! (`crate::…`) only modules of a lower layer, so dependencies point one way and no import
//! circle can form between them. It reads the sources, so a new upward import fails here
//! with the file that made it.

use std::path::Path;

/// Lowest first; a module may use only modules of strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["clock", "secret", "metrics"],
    &["tls"],
    &["config"],
    &["domain"],
    &["error"],
    &["fintoc"],
    &["store", "simulator"],
    &["hub"],
    &["app"],
    &["refresh"],
    &["http", "grpc", "tasks"],
    &["server"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The `crate::<name>` modules a source file names in code (comments and its unit tests
/// aside).
fn named_modules(source: &str) -> Vec<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names = match rest.strip_prefix('{') {
                // `crate::{a, b::c}`: each item's first segment.
                Some(list) => list.split('}').next().unwrap_or_default(),
                None => rest,
            };
            for item in names.split(',') {
                let name: String = item
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
                if !rest.starts_with('{') {
                    break;
                }
            }
        }
    }
    found
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
        for used in named_modules(&std::fs::read_to_string(&file).unwrap()) {
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

/// The module paths a file names: `crate::a::b…` and `super::x…`, resolved to the longest
/// prefix that is a module of its own file.
fn file_dependencies(
    module: &[String],
    source: &str,
    modules: &std::collections::HashSet<Vec<String>>,
) -> Vec<Vec<String>> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut full = base.clone();
                full.extend(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                while !full.is_empty() && !modules.contains(&full) {
                    full.pop();
                }
                // Its own file, an ancestor (the parent's items) or nothing: not an edge.
                if !full.is_empty() && !module.starts_with(&full) {
                    found.push(full);
                }
            }
        }
    }
    found
}

/// No two source files import each other, directly or round a longer circle: within a
/// layer too, dependencies point one way.
#[test]
fn no_file_imports_round_a_circle() {
    use std::collections::{HashMap, HashSet};
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
    // Depth-first search for a back edge.
    fn visit_module(
        at: &Vec<String>,
        edges: &HashMap<Vec<String>, HashSet<Vec<String>>>,
        state: &mut HashMap<Vec<String>, bool>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match state.get(at) {
            Some(true) => return None,
            Some(false) => {
                let start = path.iter().position(|m| m == at).unwrap();
                let mut circle: Vec<String> = path[start..].iter().map(|m| m.join("::")).collect();
                circle.push(at.join("::"));
                return Some(circle);
            }
            None => {}
        }
        state.insert(at.clone(), false);
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(circle) = visit_module(next, edges, state, path) {
                return Some(circle);
            }
        }
        path.pop();
        state.insert(at.clone(), true);
        None
    }
    let mut state = HashMap::new();
    let mut sorted: Vec<&Vec<String>> = edges.keys().collect();
    sorted.sort();
    for module in sorted {
        if let Some(circle) = visit_module(module, &edges, &mut state, &mut Vec::new()) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}
