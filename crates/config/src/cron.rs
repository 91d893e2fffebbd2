//! Cron spec checking: five fields (minute, hour, day of month, month, day of
//! week), each a `,` list of `*`, `H`, `H(a-b)`, a value or a range `a-b`, with an
//! optional `/step`. Month and weekday names (`jan`, `mon`) are accepted, as are
//! the `@hourly`-style shortcuts. `H` is Upsun's hashed-but-stable value.

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const SHORTCUTS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks a cron spec; the error says which field is wrong and why.
pub(crate) fn check(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    if spec.starts_with('@') {
        return if SHORTCUTS.contains(&spec) {
            Ok(())
        } else {
            Err(format!(
                "unknown shortcut `{spec}`; use one of {}",
                SHORTCUTS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (index, (field, (name, min, max))) in fields.iter().zip(FIELDS).enumerate() {
        for item in field.split(',') {
            check_item(item, index, min, max)
                .map_err(|why| format!("{name} field `{field}`: {why}"))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, field: usize, min: u32, max: u32) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(s) if s >= 1 && s <= max.max(1) => {}
            _ => return Err(format!("step `{step}` must be a number from 1 to {max}")),
        }
    }
    if range == "*" || range == "H" {
        return Ok(());
    }
    let hashed = range.strip_prefix("H(").and_then(|r| r.strip_suffix(')'));
    let bounds = hashed.unwrap_or(range);
    let (low, high) = match bounds.split_once('-') {
        Some((low, high)) => (
            value(low, field, min, max)?,
            Some(value(high, field, min, max)?),
        ),
        None if hashed.is_some() => return Err("`H(…)` needs a range such as `H(0-29)`".into()),
        None => (value(bounds, field, min, max)?, None),
    };
    if let Some(high) = high
        && high < low
    {
        return Err(format!("range `{bounds}` goes backwards"));
    }
    if step.is_some() && high.is_none() && hashed.is_none() {
        // `5/15` means "from 5, every 15": valid in Vixie cron.
        return Ok(());
    }
    Ok(())
}

fn value(text: &str, field: usize, min: u32, max: u32) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let named = match field {
        3 => MONTHS
            .iter()
            .position(|m| *m == lower)
            .map(|i| i as u32 + 1),
        4 => DAYS.iter().position(|d| *d == lower).map(|i| i as u32),
        _ => None,
    };
    let number = match named {
        Some(n) => n,
        None => text
            .parse::<u32>()
            .map_err(|_| format!("`{text}` is not a number"))?,
    };
    if number < min || number > max {
        return Err(format!("{number} is out of range {min}-{max}"));
    }
    Ok(number)
}

/// A checked cron spec, ready to match minutes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Allowed values per field (minute, hour, day of month, month, day
    /// of week with Sunday 0), as bit sets.
    fields: [u64; 5],
    /// Whether day of month and day of week were both restricted (then
    /// either matching is enough, as in Vixie cron).
    either_day: bool,
}

/// A stable number from `seed` for `H` in field `field`.
fn hashed(seed: &str, field: usize) -> u32 {
    // FNV-1a: stable across builds and platforms.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in seed.bytes().chain([field as u8]) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl Schedule {
    /// Parses `spec` (checked by [`check`]); `seed` (the app and cron's
    /// names) picks the values of `H`, the same every time.
    pub fn parse(spec: &str, seed: &str) -> Result<Schedule, String> {
        check(spec)?;
        let spec = spec.trim();
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let mut fields = [0u64; 5];
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        for (index, part) in parts.iter().enumerate() {
            let (_, min, max) = FIELDS[index];
            for item in part.split(',') {
                fields[index] |= item_bits(item, index, min, max, seed)?;
            }
        }
        // Sunday is 0 and 7.
        if fields[4] & (1 << 7) != 0 {
            fields[4] |= 1;
        }
        let restricted = |part: &str| !matches!(part, "*" | "H") && !part.starts_with("*/");
        Ok(Schedule {
            fields,
            either_day: restricted(parts[2]) && restricted(parts[4]),
        })
    }

    /// Whether the schedule fires at this minute (`weekday`: Sunday 0).
    pub fn matches(&self, minute: u32, hour: u32, day: u32, month: u32, weekday: u32) -> bool {
        let has = |field: usize, value: u32| value < 64 && self.fields[field] & (1 << value) != 0;
        let day_ok = if self.either_day {
            has(2, day) || has(4, weekday)
        } else {
            has(2, day) && has(4, weekday)
        };
        has(0, minute) && has(1, hour) && has(3, month) && day_ok
    }
}

fn item_bits(item: &str, field: usize, min: u32, max: u32, seed: &str) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, step.parse::<u32>().map_err(|e| e.to_string())?),
        None => (item, 1),
    };
    // Sunday as 7 is folded later; ranges use 0-6 as the base.
    let top = if field == 4 { 6 } else { max };
    let (low, high) = if range == "*" {
        (min, top)
    } else if range == "H" {
        if step > 1 {
            let offset = hashed(seed, field) % step;
            (min + offset, top)
        } else {
            let value = min + hashed(seed, field) % (top - min + 1);
            (value, value)
        }
    } else if let Some(bounds) = range.strip_prefix("H(").and_then(|r| r.strip_suffix(')')) {
        let (low, high) = bounds
            .split_once('-')
            .ok_or_else(|| "`H(…)` needs a range".to_owned())?;
        let (low, high) = (value(low, field, min, max)?, value(high, field, min, max)?);
        let value = low + hashed(seed, field) % (high - low + 1);
        (value, value)
    } else {
        match range.split_once('-') {
            Some((low, high)) => (value(low, field, min, max)?, value(high, field, min, max)?),
            // `5/15`: from 5 to the end, every 15.
            None if item.contains('/') => (value(range, field, min, max)?, top.max(min)),
            None => {
                let v = value(range, field, min, max)?;
                (v, v)
            }
        }
    };
    let mut bits = 0u64;
    let mut current = low;
    while current <= high {
        bits |= 1 << current;
        current += step.max(1);
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::{Schedule, check};

    #[test]
    fn schedules_match_their_minutes() {
        let every = Schedule::parse("* * * * *", "a").unwrap();
        assert!(every.matches(0, 0, 1, 1, 0) && every.matches(59, 23, 31, 12, 6));
        let quarter = Schedule::parse("*/15 * * * *", "a").unwrap();
        assert!(quarter.matches(45, 3, 5, 5, 2) && !quarter.matches(44, 3, 5, 5, 2));
        let daily = Schedule::parse("@daily", "a").unwrap();
        assert!(daily.matches(0, 0, 9, 9, 3) && !daily.matches(0, 1, 9, 9, 3));
        let weekdays = Schedule::parse("30 9 * * mon-fri", "a").unwrap();
        assert!(weekdays.matches(30, 9, 7, 12, 1) && !weekdays.matches(30, 9, 6, 12, 0));
        let sunday = Schedule::parse("0 0 * * 7", "a").unwrap();
        assert!(sunday.matches(0, 0, 6, 12, 0));
        // Day of month or day of week, when both are given.
        let either = Schedule::parse("0 0 1 * mon", "a").unwrap();
        assert!(either.matches(0, 0, 1, 12, 3) && either.matches(0, 0, 7, 12, 1));
        assert!(!either.matches(0, 0, 2, 12, 3));
        let from = Schedule::parse("5/20 * * * *", "a").unwrap();
        assert!(from.matches(5, 0, 1, 1, 1) && from.matches(45, 0, 1, 1, 1));
        assert!(!from.matches(0, 0, 1, 1, 1));
    }

    #[test]
    fn hashed_values_are_stable_per_seed_and_in_range() {
        let a = Schedule::parse("H H(2-4) * * *", "app/cron").unwrap();
        let again = Schedule::parse("H H(2-4) * * *", "app/cron").unwrap();
        assert_eq!(a, again);
        let hits = (0..60)
            .flat_map(|m| (0..24).map(move |h| (m, h)))
            .filter(|(m, h)| a.matches(*m, *h, 1, 1, 1))
            .collect::<Vec<_>>();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!((2..=4).contains(&hits[0].1));
    }

    #[test]
    fn accepts_real_specs() {
        for spec in [
            "*/19 * * * *",
            "0 0 * * *",
            "H H * * *",
            "H(0-29) 3 * * mon-fri",
            "15,45 */2 1-15 jan-jun 0",
            "@daily",
            "5/10 * * * 7",
        ] {
            assert_eq!(check(spec), Ok(()), "{spec}");
        }
    }

    #[test]
    fn explains_bad_specs() {
        assert_eq!(
            check("* * * *").unwrap_err(),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
        assert_eq!(
            check("0 24 * * *").unwrap_err(),
            "hour field `24`: 24 is out of range 0-23"
        );
        assert_eq!(
            check("*/0 * * * *").unwrap_err(),
            "minute field `*/0`: step `0` must be a number from 1 to 59"
        );
        assert_eq!(
            check("0 0 * foo *").unwrap_err(),
            "month field `foo`: `foo` is not a number"
        );
        assert_eq!(
            check("30-10 * * * *").unwrap_err(),
            "minute field `30-10`: range `30-10` goes backwards"
        );
        assert!(check("@sometimes").is_err());
    }
}
