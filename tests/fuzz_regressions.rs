//! Replays every fuzz seed (`fuzz/corpus/<target>/`) and every input that once crashed
//! a target (`fuzz/regressions/<target>/`, each named after what it broke) through the
//! same checks the fuzzers run, on every test run: a fixed crash stays fixed.

use std::path::Path;

/// A fuzz target's checks, as `src/fuzz.rs` has them.
type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("sip_message", switchboard::fuzz::sip_message),
    ("sip_stream", switchboard::fuzz::sip_stream),
    ("sdp", switchboard::fuzz::sdp),
    ("rtp", switchboard::fuzz::rtp),
    ("flow_yaml", switchboard::fuzz::flow_yaml),
    ("config_yaml", switchboard::fuzz::config_yaml),
    ("stun", switchboard::fuzz::stun),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_past_crash_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = 0;
    for (name, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seeds");
        seeds += corpus.len();
        for file in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", file.display());
        }
    }
    assert!(seeds >= 50, "only {seeds} seeds");
}
