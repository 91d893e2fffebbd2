//! Content digests (`sha256:<hex>`) and layer chain ids, pure.

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An incremental sha256 that prints as a digest.
#[derive(Clone, Debug, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// Whether `digest` is a well-formed sha256 digest (the only algorithm the
/// platform writes or accepts; anything else could name a path).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The chain ids of a stack of layers, as Go's `identity.ChainIDs`: the first
/// is the first diff id, each next one is `sha256(previous + " " + diff_id)`.
/// An unpacked image has a committed snapshot named by each.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(previous) => sha256_of(format!("{previous} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_input() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = Hasher::default();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), sha256_of(b"abc"));
    }

    #[test]
    fn digest_syntax() {
        assert!(is_sha256_digest(&sha256_of(b"x")));
        assert!(!is_sha256_digest("sha256:../../etc/passwd"));
        assert!(!is_sha256_digest("sha512:00"));
        assert!(!is_sha256_digest(&sha256_of(b"x").to_uppercase()));
    }

    #[test]
    fn chain_ids_match_go_identity() {
        // The values containerd computes for two layers (identity.ChainID).
        let a = sha256_of(b"a");
        let b = sha256_of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
