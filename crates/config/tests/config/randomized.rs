//! Mutating the fixtures' bytes never makes `load` panic, and it always returns.

use proptest::prelude::*;

use launchway_config::MemSource;

use crate::{cases, files, load_dir};

/// Every YAML file of every fixture, as (its repository, path, bytes).
fn corpus() -> Vec<(MemSource, String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["valid", "invalid"] {
        for dir in cases(kind) {
            let source = load_dir(&dir);
            for (path, bytes) in files(&dir) {
                if path.ends_with(".yaml") {
                    out.push((source.clone(), path, bytes));
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b":".to_vec(),
        b"- ".to_vec(),
        b"\n".to_vec(),
        b"  ".to_vec(),
        b"&a ".to_vec(),
        b"*a".to_vec(),
        b"!include ".to_vec(),
        b"<<: ".to_vec(),
        b"[".to_vec(),
        b"{".to_vec(),
        b"'".to_vec(),
        b"\"".to_vec(),
        b"../".to_vec(),
        b"\t".to_vec(),
        b"\xff".to_vec(),
        b"~".to_vec(),
        b"|".to_vec(),
        b"%TAG ".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Replace(i, b) => {
            if !bytes.is_empty() {
                bytes[i % len] = *b;
            }
        }
        Mutation::Insert(i, s) => {
            let at = i % (bytes.len() + 1);
            bytes.splice(at..at, s.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i % len;
            let end = (at + n).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Duplicate(i, n) => {
            let at = i % len;
            let end = (at + n).min(bytes.len());
            let chunk: Vec<u8> = bytes.get(at..end).unwrap_or_default().to_vec();
            bytes.splice(end..end, chunk);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic(pick in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let corpus = corpus_cached();
        let (source, path, bytes) = &corpus[pick.index(corpus.len())];
        let mut bytes = bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let mut source = source.clone();
        source.insert(path, bytes);
        let loaded = launchway_config::load(&source);
        // Whatever happened, the outcome is consistent: a config exactly when there is no error.
        prop_assert_eq!(loaded.config.is_some(), !loaded.diagnostics.has_errors());
    }
}

fn corpus_cached() -> &'static Vec<(MemSource, String, Vec<u8>)> {
    static CORPUS: std::sync::OnceLock<Vec<(MemSource, String, Vec<u8>)>> =
        std::sync::OnceLock::new();
    CORPUS.get_or_init(corpus)
}
