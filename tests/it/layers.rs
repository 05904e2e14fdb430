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
            match layer(&used) {
                Some(theirs) if theirs < own => {}
                _ => upward.push(format!("{} uses crate::{used}", relative.display())),
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports against the layer order:\n{}",
        upward.join("\n")
    );
}
