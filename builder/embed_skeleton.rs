//! The Cargo build script: embeds the example stack (sites/, images/,
//! templates/) for `sov init`.

use std::fmt::Write;
use std::path::Path;

fn walk(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out);
        } else if let Some(s) = path.to_str() {
            out.push(s.to_string());
        }
    }
}

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let mut files = Vec::new();
    for dir in ["sites", "images", "templates"] {
        println!("cargo:rerun-if-changed={dir}");
        walk(&root.join(dir), &mut files);
    }
    let mut code = String::from("static SKELETON: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let rel = Path::new(file)
            .strip_prefix(root)
            .expect("walked under the root");
        let rel = rel.to_str().expect("UTF-8 path");
        writeln!(code, "    ({rel:?}, include_bytes!({file:?})),").expect("write to String");
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("skeleton.rs"), code).expect("write skeleton.rs");
}
