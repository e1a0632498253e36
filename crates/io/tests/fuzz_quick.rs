//! The fuzz targets (`attrib_io::fuzzing`), run without libFuzzer: over the seed
//! corpus (`fuzz/seeds/`), every kept finding (`fuzz/regressions/`), and a few
//! hundred deterministic mutations of each seed. The long runs are cargo-fuzz's
//! (`fuzz/README.md`); this keeps every finding fixed and catches the shallow ones in
//! CI. `ATTRIB_FUZZ_ITERS` sets the mutations per seed (default 300).

use std::path::{Path, PathBuf};

use attrib_io::fuzzing::{run, TARGETS};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'(', b'.', b'q', b'h', b'2', b'e', b'}',
];
const WIDE: [u64; 6] = [0, 1 << 31, 1 << 32, 1 << 62, u64::MAX, u64::MAX / 2];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = d.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                d[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => d.truncate(rng.below(n + 1)),
            3 if n > 0 => {
                let (a, b) = (rng.below(n), rng.below(n));
                let (a, b) = (a.min(b), a.max(b).min(a + 4096));
                let chunk = d[a..b].to_vec();
                let at = rng.below(n + 1);
                d.splice(at..at, chunk);
            }
            4 => {
                let at = rng.below(n + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            5 if n >= 8 => {
                let i = rng.below(n - 7);
                d[i..i + 8].copy_from_slice(&WIDE[rng.below(WIDE.len())].to_le_bytes());
            }
            6 if n >= 4 => {
                let i = rng.below(n - 3);
                let v = WIDE[rng.below(WIDE.len())] as u32;
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    d
}

#[test]
fn fuzz_targets_on_seeds_findings_and_mutations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let iters: usize = std::env::var("ATTRIB_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut total = 0;
    for target in TARGETS {
        let seeds = files(&root.join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for f in files(&root.join("regressions").join(target))
            .iter()
            .chain(&seeds)
        {
            run(target, &std::fs::read(f).unwrap());
            total += 1;
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        for f in &seeds {
            let seed = std::fs::read(f).unwrap();
            for _ in 0..iters {
                run(target, &mutate(&seed, &mut rng));
                total += 1;
            }
        }
    }
    eprintln!("{total} inputs, no panic");
}
