//! Which scheduled backups to keep, pure: "keep 7 daily, 4 weekly, 6
//! monthly", as restic's and borg's `--keep-*` options mean it.
//!
//! Each rule walks the backups newest first and keeps the newest one of
//! each period (a UTC calendar day, a Monday-to-Sunday week, a calendar
//! month) until it has kept that many periods; a backup kept by any rule
//! stays. `last` keeps the newest N whatever their dates. Periods with no
//! backup are not counted: after a week without backups, "7 daily" still
//! keeps seven. A policy that keeps nothing is refused when parsed, so a
//! mistyped setting never deletes every backup.

use std::collections::BTreeSet;

/// How many of each period to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The newest N, whatever their dates.
    pub last: u32,
    /// The newest of each of the last N days that have one.
    pub daily: u32,
    /// The newest of each of the last N weeks that have one.
    pub weekly: u32,
    /// The newest of each of the last N months that have one.
    pub monthly: u32,
}

/// A backup as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dated {
    /// Its ID.
    pub id: String,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_unix: i64,
}

impl Retention {
    /// Parses `7d,4w,6m,3l` (any order, each at most once; `d` daily, `w`
    /// weekly, `m` monthly, `l` the newest N).
    pub fn parse(text: &str) -> Result<Retention, String> {
        let mut retention = Retention::default();
        let mut seen = BTreeSet::new();
        for part in text.split(',').map(str::trim) {
            let Some(unit) = part.chars().last().filter(char::is_ascii_alphabetic) else {
                return Err(format!(
                    "'{part}' is no retention rule: write a count and a unit, as in 7d,4w,6m (d daily, w weekly, m monthly, l the newest N)"
                ));
            };
            let count: u32 = part[..part.len() - 1]
                .parse()
                .map_err(|_| format!("'{part}': '{}' is no count", &part[..part.len() - 1]))?;
            if !seen.insert(unit) {
                return Err(format!("'{text}' names '{unit}' twice"));
            }
            match unit {
                'd' => retention.daily = count,
                'w' => retention.weekly = count,
                'm' => retention.monthly = count,
                'l' => retention.last = count,
                other => {
                    return Err(format!(
                        "'{part}': '{other}' is no unit (d daily, w weekly, m monthly, l the newest N)"
                    ));
                }
            }
        }
        if retention == Retention::default() {
            return Err(format!("'{text}' keeps no backup at all"));
        }
        Ok(retention)
    }

    /// The IDs of `backups` to keep.
    pub fn keep(&self, backups: &[Dated]) -> BTreeSet<String> {
        let mut newest_first: Vec<&Dated> = backups.iter().collect();
        newest_first.sort_by(|a, b| {
            b.created_unix
                .cmp(&a.created_unix)
                .then_with(|| b.id.cmp(&a.id))
        });
        let mut kept: BTreeSet<String> = newest_first
            .iter()
            .take(self.last as usize)
            .map(|b| b.id.clone())
            .collect();
        let rules: [(u32, PeriodOf); 3] = [
            (self.daily, day_of),
            (self.weekly, week_of),
            (self.monthly, month_of),
        ];
        for (count, period_of) in rules {
            let mut periods = BTreeSet::new();
            for backup in &newest_first {
                if periods.len() >= count as usize {
                    break;
                }
                if periods.insert(period_of(backup.created_unix)) {
                    kept.insert(backup.id.clone());
                }
            }
        }
        kept
    }
}

/// The period a time falls in, as a number that grows with time.
type PeriodOf = fn(i64) -> i64;

/// Days since the epoch (UTC).
fn day_of(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

/// Weeks since the Monday before the epoch (1970-01-01 was a Thursday).
fn week_of(unix: i64) -> i64 {
    (day_of(unix) + 3).div_euclid(7)
}

/// Months since January 1970 (UTC), from the civil date of the day
/// (Howard Hinnant's `civil_from_days`).
fn month_of(unix: i64) -> i64 {
    let z = day_of(unix) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year - 1970) * 12 + (month - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-12-07, a Monday, 00:00 UTC.
    const MONDAY: i64 = 1_796_601_600;

    fn at(id: &str, created_unix: i64) -> Dated {
        Dated {
            id: id.into(),
            created_unix,
        }
    }

    fn ids(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn calendar_periods() {
        assert_eq!(month_of(0), 0);
        assert_eq!(month_of(31 * DAY - 1), 0);
        assert_eq!(month_of(31 * DAY), 1);
        // 2026-12-07 is December 2026; 2024-02-29 is February 2024.
        assert_eq!(month_of(MONDAY), 56 * 12 + 11);
        assert_eq!(month_of(1_709_164_800), 54 * 12 + 1);
        assert_eq!(month_of(-1), -1);
        assert_eq!(week_of(MONDAY), week_of(MONDAY + 6 * DAY + DAY - 1));
        assert_ne!(week_of(MONDAY), week_of(MONDAY - 1));
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn the_newest_of_each_period_is_kept() {
        // Two backups a day for 30 days before Monday's.
        let mut backups = Vec::new();
        for day in 0..30 {
            let start = MONDAY - day * DAY;
            backups.push(at(&format!("d{day:02}-am"), start + 3_600));
            backups.push(at(&format!("d{day:02}-pm"), start + 15 * 3_600));
        }
        let daily = Retention {
            daily: 3,
            ..Retention::default()
        };
        assert_eq!(ids(&daily.keep(&backups)), ["d00-pm", "d01-pm", "d02-pm"]);
        let weekly = Retention {
            weekly: 3,
            ..Retention::default()
        };
        // Day 0 is a Monday: its own week, then the Sundays before it.
        assert_eq!(ids(&weekly.keep(&backups)), ["d00-pm", "d01-pm", "d08-pm"]);
        let both = Retention {
            last: 1,
            daily: 2,
            weekly: 3,
            monthly: 2,
        };
        // December's newest is d00; November's is d07 (Monday the 30th).
        assert_eq!(
            ids(&both.keep(&backups)),
            ["d00-pm", "d01-pm", "d07-pm", "d08-pm"]
        );
        assert!(Retention::parse("2l").unwrap().keep(&[]).is_empty());
    }

    #[test]
    fn gaps_do_not_count_as_periods() {
        let backups = [
            at("new", MONDAY),
            at("old", MONDAY - 40 * DAY),
            at("older", MONDAY - 41 * DAY),
        ];
        let daily = Retention::parse("2d").unwrap();
        assert_eq!(ids(&daily.keep(&backups)), ["new", "old"]);
    }

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        assert_eq!(
            Retention::parse("7d, 4w,6m,2l"),
            Ok(Retention {
                last: 2,
                daily: 7,
                weekly: 4,
                monthly: 6
            })
        );
        for (bad, reason) in [
            ("", "no retention rule"),
            ("7", "no retention rule"),
            ("xd", "no count"),
            ("-1d", "no count"),
            ("7d,3d", "twice"),
            ("7y", "no unit"),
            ("0d,0w", "keeps no backup"),
        ] {
            let error = Retention::parse(bad).unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }
}
