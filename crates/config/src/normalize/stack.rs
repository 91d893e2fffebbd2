//! A composable app's `stack`, checked at push: each runtime is
//! `family@version` of a family the catalog builds, each package one
//! [`crate::stack::STACK_PACKAGES`] names; anything else is an error at
//! the entry.

use super::{Normalizer, is_numeric_version};
use crate::model::StackConfig;
use crate::stack::{STACK_PACKAGES, STACK_RUNTIMES, stack_entries, stack_package};

impl Normalizer<'_> {
    pub(super) fn check_stack(&mut self, name: &str, stack: &StackConfig) {
        let entries = stack_entries(stack);
        for entry in &entries {
            let mut path: Vec<&str> = vec!["applications", name, "stack"];
            path.extend(entry.path.iter().map(String::as_str));
            let span = if entry.path.last() == Some(&entry.name) {
                self.key_span(&path)
            } else {
                self.value_span(&path)
            }
            .or_else(|| self.key_span(&["applications", name, "stack"]));
            if entry.runtime {
                let (family, version) = entry.name.split_once('@').unwrap_or((&entry.name, ""));
                if !STACK_RUNTIMES.contains(&family) {
                    self.diags
                        .error(
                            span,
                            format!("`{family}` is not a runtime a composable image can have"),
                        )
                        .hint = Some(format!(
                        "the stack's runtimes are {}, each as `family@version`",
                        STACK_RUNTIMES.join(", ")
                    ));
                } else if !is_numeric_version(version) {
                    self.diags.error(
                        span,
                        format!(
                            "`{}`: a stack runtime is `{family}@` and a version in numbers, such as `{family}@{}`",
                            entry.name,
                            super::example_version(family)
                        ),
                    );
                }
                continue;
            }
            if stack_package(&entry.name).is_some() {
                continue;
            }
            let suggestion = STACK_PACKAGES
                .iter()
                .map(|(nix, _)| *nix)
                .min_by_key(|known| strsim::levenshtein(known, &entry.name))
                .filter(|known| strsim::levenshtein(known, &entry.name) <= 2);
            let diagnostic = self.diags.error(
                span,
                format!(
                    "`{}` is not a package Launchway's composable images offer",
                    entry.name
                ),
            );
            diagnostic.hint = Some(match suggestion {
                Some(known) => format!("did you mean `{known}`?"),
                None => format!(
                    "the packages are: {}",
                    STACK_PACKAGES
                        .iter()
                        .map(|(nix, _)| *nix)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
}
