//! The walls of the house stay where they are: arrows point down the data path (`api` → `gate`
//! → `store` / `ledger` → `record` → `domain`). The domain knows nothing of gRPC, Redis or SQL;
//! store and ledger never import each other (nor does the store mark the gate's cache: it
//! publishes events, which the cache follows), and what they exchange (`record`) imports only
//! the domain. Read from the source: code only, without comments or test modules.

use std::path::{Path, PathBuf};

/// The `.rs` files at `path` (a file, or every file under a folder).
fn sources(path: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if root.is_file() {
        return vec![root];
    }
    let mut files = Vec::new();
    let mut folders = vec![root];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "no sources under {path}");
    files
}

/// A file's code: up to its test module, without comment lines. A test module in a file of its
/// own (`#[cfg(test)] mod tests;`, a `tests.rs`) is not code either.
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|name| name == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut code = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            if lines.peek().is_some_and(|next| next.trim() == "mod tests;") {
                lines.next();
                continue;
            }
            break;
        }
        if !line.trim_start().starts_with("//") {
            code.push(line);
        }
    }
    code.join("\n")
}

/// Fails naming every file under `path` whose code mentions one of `forbidden`.
fn assert_never(path: &str, forbidden: &[&str]) {
    let mut found = Vec::new();
    for file in sources(path) {
        let code = code(&file);
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{} uses {word}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "walls broken:\n{}", found.join("\n"));
}

#[test]
fn the_domain_stands_alone() {
    assert_never(
        "src/domain",
        &[
            "tonic",
            "prost",
            "redis",
            "sqlx",
            "tokio",
            "crate::api",
            "crate::gate",
            "crate::store",
            "crate::ledger",
            "crate::record",
            "crate::sync",
            "crate::events",
        ],
    );
}

#[test]
fn what_store_and_ledger_exchange_imports_only_the_domain() {
    assert_never(
        "src/record.rs",
        &[
            "crate::api",
            "crate::gate",
            "crate::store",
            "crate::ledger",
            "crate::sync",
            "crate::events",
            "redis",
            "sqlx",
        ],
    );
}

#[test]
fn store_and_ledger_never_import_each_other_or_what_sits_above() {
    assert_never(
        "src/store",
        &[
            "crate::ledger",
            "crate::gate",
            "crate::api",
            "crate::sync",
            "crate::cache",
            "sqlx",
        ],
    );
    assert_never(
        "src/ledger",
        &[
            "crate::store",
            "crate::gate",
            "crate::api",
            "crate::sync",
            "redis::",
        ],
    );
}

#[test]
fn the_sync_loop_and_the_gate_look_only_down() {
    assert_never("src/sync.rs", &["crate::gate", "crate::api"]);
    assert_never("src/gate", &["crate::api", "tonic", "prost"]);
}
