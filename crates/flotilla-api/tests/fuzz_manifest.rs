//! Mutation fuzzing of the manifest parser on stable Rust: the golden
//! corpus, mutated by a seeded generator (byte flips, truncation, spliced
//! lines, YAML punctuation), must never panic, and every error must point
//! at a line of the input.
//!
//! CI runs a short pass; a long one:
//!   FUZZ_ITERATIONS=2000000 cargo test --release -p flotilla-api --test fuzz_manifest -- --nocapture

use std::path::Path;

use flotilla_api::manifest::{self, ValidateMode};

const TOKENS: &[&str] = &[
    ":", "- ", "[", "]", "{", "}", "&a ", "*a", "!!str ", "|", ">", "\"", "'", "#", "---\n", "\t", "~", "null", "0x1F",
    "1e999", "-1", "99999999999999999999", "kind: Pod\n", "metadata:\n  name: x\n", "  ", "\n", "? ", "%YAML 1.2\n",
];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.extend(std::fs::read_dir(dir.join("broken")).unwrap().map(|e| e.unwrap().path()));
    files.sort();
    files.into_iter().filter(|p| p.is_file()).map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(rng.below(bytes.len() + 1)),
            2 => {
                let at = rng.below(bytes.len() + 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            3 => {
                let lines: Vec<&[u8]> = input.as_bytes().split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())];
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, line.iter().copied().chain([b'\n']));
            }
            _ if !bytes.is_empty() => {
                let at = rng.below(bytes.len());
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_manifests_never_panic_and_errors_point_into_the_input() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x005e_edf1_071a);
    let corpus = corpus();
    let mut rng = Rng(seed | 1);
    for i in 0..iterations {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base);
        let lines = input.lines().count().max(1) + 1;
        for mode in [ValidateMode::Strict, ValidateMode::Warn] {
            let parsed = std::panic::catch_unwind(|| manifest::parse(&input, "fuzz.yaml", "", mode))
                .unwrap_or_else(|_| panic!("iteration {i} (seed {seed}) panicked on:\n{input}"));
            for e in parsed.errors.iter().chain(&parsed.warnings) {
                let line = e.line.expect("every problem has a line");
                assert!(line >= 1 && line <= lines, "iteration {i}: line {line} outside 1..={lines}: {e}\n{input}");
            }
        }
    }
    println!("{iterations} mutated manifests parsed without a panic (seed {seed})");
}
