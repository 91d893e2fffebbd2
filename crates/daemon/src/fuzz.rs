//! Randomized inputs for every parser a user reaches through the daemon:
//! push options, ref update lines, SSH exec commands, variable names and
//! values. Each must answer (accept or refuse with a message), never
//! panic. Seeds are printed so a failure can be replayed.

use rand::{Rng, RngExt as _, SeedableRng as _};

use crate::policy::parse_push_options;
use crate::variables::check;

const ALPHABET: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "=",
    ".",
    ":",
    "/",
    "-",
    "_",
    " ",
    "\n",
    "\0",
    "\t",
    "é",
    "💥",
    "..",
    "env:",
    "environment.",
    "status",
    "active",
    "refs/heads/",
    "git-receive-pack",
    "'",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    "%",
    "$(",
    "`",
];

fn random_text(rng: &mut impl Rng, max: usize) -> String {
    let len = rng.random_range(0..max);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

#[test]
fn no_user_input_makes_a_parser_panic() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..20_000 {
        let options: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| random_text(&mut rng, 40))
            .collect();
        let parsed = parse_push_options(&options);
        assert!(parsed.errors.len() + parsed.warnings.len() <= options.len() * 2);

        let line = random_text(&mut rng, 120);
        let _ = launchway_git::RefUpdate::parse(&line);
        let oid = |rng: &mut rand::rngs::StdRng| -> String {
            (0..40)
                .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
                .collect()
        };
        let plausible = format!("{} {} {}", oid(&mut rng), oid(&mut rng), line);
        let _ = launchway_git::RefUpdate::parse(&plausible);

        let command = random_text(&mut rng, 80);
        let _ = launchway_ssh::parse_exec(command.as_bytes());
        let mut bytes = command.into_bytes();
        if !bytes.is_empty() {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        let _ = launchway_ssh::parse_exec(&bytes);

        let name = random_text(&mut rng, 30);
        let value = random_text(&mut rng, 60);
        if let Err(message) = check(&name, &value, rng.random()) {
            assert!(!message.is_empty());
        }
    }
}
