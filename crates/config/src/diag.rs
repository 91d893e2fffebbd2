//! Diagnostics: every problem found in a repository's config, with its location.
//!
//! Validation never stops at the first problem: every pass pushes into one
//! [`Diagnostics`] list, and the caller decides from its errors whether the
//! config is usable. Rendering follows compilers (`file:line:col: error: message`)
//! so editors and terminals can jump to the spot.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A position in a file of the repository: 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// Path of the file, relative to the repository root.
    #[serde(serialize_with = "serialize_file")]
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

fn serialize_file<S: serde::Serializer>(file: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(file)
}

impl Span {
    /// The start of a file, for problems that concern the file as a whole.
    pub fn file_start(file: &Arc<str>) -> Span {
        Span {
            file: Arc::clone(file),
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// How bad a diagnostic is. Only errors make a config unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works, but probably not as its author meant.
    Warning,
    /// Information, such as a key that is kept but not acted on yet.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// One problem, located in a file when it can be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// Where it is; `None` for problems of the repository as a whole.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// What is wrong, lowercase, without a final period.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(span) => write!(f, "{span}: {}: {}", self.severity, self.message)?,
            None => write!(f, "<repository>: {}: {}", self.severity, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// The list every validation pass appends to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// Records an error at `span`.
    pub fn error(&mut self, span: Option<Span>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, span, message)
    }

    /// Records a warning at `span`.
    pub fn warning(&mut self, span: Option<Span>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, span, message)
    }

    /// Records a note at `span`.
    pub fn note(&mut self, span: Option<Span>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Note, span, message)
    }

    fn push(
        &mut self,
        severity: Severity,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.0.push(Diagnostic {
            severity,
            span,
            message: message.into(),
            hint: None,
        });
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of diagnostics of the given severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.0.iter().filter(|d| d.severity == severity).count()
    }

    /// Orders diagnostics by file and position, then severity, and drops exact
    /// duplicates (one bad node reached through two aliases reports once).
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.span, a.severity, &a.message).cmp(&(&b.span, b.severity, &b.message))
        });
        self.0.dedup();
    }

    /// The diagnostics, in the order they were recorded or sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, when one is close enough to be a likely
/// typo: few edits for its length (transpositions count as one), or a long shared prefix.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    let allowed = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_lowercase();
            let distance = strsim::damerau_levenshtein(&word, &lower);
            let similar = strsim::jaro_winkler(&word, &lower);
            (distance <= allowed || similar >= 0.9).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["web", "hooks", "mounts", "relationships"];
        assert_eq!(did_you_mean("wbe", keys), Some("web"));
        assert_eq!(did_you_mean("relationship", keys), Some("relationships"));
        assert_eq!(did_you_mean("zzzzzz", keys), None);
    }

    #[test]
    fn renders_like_a_compiler() {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from(".upsun/config.yaml");
        d.error(
            Some(Span {
                file,
                line: 3,
                column: 5,
            }),
            "unknown key `wbe`",
        )
        .hint = Some("did you mean `web`?".into());
        assert_eq!(
            d.to_string(),
            ".upsun/config.yaml:3:5: error: unknown key `wbe`\n  help: did you mean `web`?\n"
        );
    }
}
