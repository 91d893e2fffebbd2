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

#[cfg(test)]
mod tests {
    use super::check;

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
