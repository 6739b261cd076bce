//! The runtime's layers (ARCHITECTURE.md): `multiproc/src/lib.rs` declares its modules bottom
//! up, and a module may only use (`crate::x`) the modules declared before it. A text scan of
//! the non-test code, not the compiler: it reads `crate::` paths, with the root re-exports
//! (`crate::Error` is `error`'s) resolved through `lib.rs`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../multiproc/src")
}

/// The code of a file without comments and without its trailing `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `code`.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    code.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The modules of `lib.rs`, in order, and the module each root re-export comes from.
fn layers(lib: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut order = Vec::new();
    let mut reexports = HashMap::new();
    let mut path_attr = None;
    for line in lib.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#[path = \"") {
            path_attr = rest.split('.').next().map(str::to_string);
            continue;
        }
        let decl = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = decl.and_then(|d| d.strip_suffix(';')) {
            let module = path_attr.take().unwrap_or_else(|| name.to_string());
            reexports.insert(name.to_string(), module.clone());
            order.push(module);
        }
        if let Some(rest) = line.strip_prefix("pub use self::") {
            let (module, names) = rest.split_once("::").expect("pub use self::m::...");
            for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if !name.is_empty() {
                    reexports.insert(name.to_string(), module.to_string());
                }
            }
        }
    }
    (order, reexports)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("multiproc/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn each_module_uses_only_the_modules_below_it() {
    let root = src();
    let lib = fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let (order, reexports) = layers(&lib);
    assert!(order.len() > 10, "lib.rs lists the layers: {order:?}");
    let rank = |module: &str| order.iter().position(|m| m == module);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || rel.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let Some(here) = rank(&module) else {
            panic!("{} is not declared in lib.rs", rel.display());
        };
        let text = fs::read_to_string(&file).expect("a source file");
        for name in paths_after(&code(&text), "crate::") {
            let target = reexports.get(name).map_or(name, String::as_str);
            if let Some(there) = rank(target)
                && there > here
            {
                upward.push(format!(
                    "{}: {module} uses crate::{name} ({target})",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that reach up the layers of lib.rs (move the code, or the module):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scan_sees_an_upward_path() {
    let lib = "mod low;\nmod high;\npub use self::high::{Thing, Other};\n";
    let (order, reexports) = layers(lib);
    assert_eq!(order, ["low", "high"]);
    assert_eq!(reexports["Thing"], "high");
    let low = "use crate::high::x; // crate::ignored\nfn f() -> crate::Thing {}\n\
               #[cfg(test)]\nmod tests {\n use crate::high::y;\n}\n";
    assert_eq!(paths_after(&code(low), "crate::"), ["high", "Thing"]);
}
