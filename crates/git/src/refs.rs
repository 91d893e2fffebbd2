//! Ref updates as git hands them to `pre-receive` and `post-receive`: one line
//! `<old-id> <new-id> <ref-name>` each.

/// The id git uses for "no object": a created ref's old id, a deleted ref's new id.
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// One ref update of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    /// The id before the push ([`ZERO_ID`] when the ref is created).
    pub old: String,
    /// The id after the push ([`ZERO_ID`] when the ref is deleted).
    pub new: String,
    /// The full ref name, `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Parses one hook input line; `None` when it is not `<id> <id> <ref>`.
    pub fn parse(line: &str) -> Option<RefUpdate> {
        let mut parts = line.trim_end_matches(['\r', '\n']).splitn(3, ' ');
        let old = parts.next()?;
        let new = parts.next()?;
        let name = parts.next()?;
        let is_id = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        (is_id(old) && is_id(new) && !name.is_empty()).then(|| RefUpdate {
            old: old.to_ascii_lowercase(),
            new: new.to_ascii_lowercase(),
            name: name.to_owned(),
        })
    }

    /// The branch name for `refs/heads/<branch>`.
    pub fn branch(&self) -> Option<&str> {
        self.name
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
    }

    /// True when the push deletes the ref.
    pub fn is_delete(&self) -> bool {
        self.new == ZERO_ID
    }

    /// True when the push creates the ref.
    pub fn is_create(&self) -> bool {
        self.old == ZERO_ID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hook_lines() {
        let a = "a".repeat(40);
        let update = RefUpdate::parse(&format!("{ZERO_ID} {a} refs/heads/feature/x\n")).unwrap();
        assert_eq!(update.branch(), Some("feature/x"));
        assert!(update.is_create() && !update.is_delete());
        let tag = RefUpdate::parse(&format!("{a} {ZERO_ID} refs/tags/v1")).unwrap();
        assert_eq!(tag.branch(), None);
        assert!(tag.is_delete());
        for bad in [
            "",
            "x y z",
            &format!("{a} {a}"),
            &format!("{a} {}g refs/heads/x", &a[1..]),
        ] {
            assert_eq!(RefUpdate::parse(bad), None, "{bad}");
        }
    }
}
