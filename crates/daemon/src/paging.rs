//! Cursor paging of newest-first lists (activities, builds, releases). A
//! cursor is the sort key of the last item a page showed (`TIME-ID`, or the
//! id alone for activities), so the next page is "everything older than
//! that": stable while new items arrive at the head and when old ones are
//! removed, unlike an offset. Pure.

use tonic::Status;

/// One page: the items and where the next one starts (`""`: none).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: String,
}

/// A sort key: time (or a sequence number), then id; lists run from the
/// greatest key down.
pub(crate) type Key = (u64, String);

fn encode(key: &Key) -> String {
    if key.1.is_empty() {
        key.0.to_string()
    } else {
        format!("{}-{}", key.0, key.1)
    }
}

fn decode(cursor: &str) -> Result<Key, Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "`{}` is not a cursor a list gave: list again without it",
            cursor.chars().take(40).collect::<String>()
        ))
    };
    let (time, id) = cursor.split_once('-').unwrap_or((cursor, ""));
    let time = time.parse().map_err(|_| bad())?;
    if id.len() > 128 {
        return Err(bad());
    }
    Ok((time, id.to_owned()))
}

/// The page of in-memory `items` (newest first, by `key`) after `cursor`:
/// [`page_from`] over a list, for its tests.
#[cfg(test)]
pub(crate) fn page<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> Key,
    cursor: &str,
    limit: u32,
    default_limit: usize,
) -> Result<Page<T>, Status> {
    page_from(
        |after, n| {
            Ok(items
                .into_iter()
                .filter(|item| after.is_none_or(|after| key(item) < *after))
                .take(n)
                .collect())
        },
        &key,
        cursor,
        limit,
        default_limit,
    )
}

/// A page read straight from an index: `fetch(after, n)` returns up to `n`
/// items older than the cursor's key (all from the newest when `None`),
/// newest first; one more than the page is asked for to know whether a
/// next page exists.
pub(crate) fn page_from<T>(
    fetch: impl FnOnce(Option<&Key>, usize) -> Result<Vec<T>, Status>,
    key: impl Fn(&T) -> Key,
    cursor: &str,
    limit: u32,
    default_limit: usize,
) -> Result<Page<T>, Status> {
    let limit = if limit == 0 {
        default_limit
    } else {
        limit as usize
    };
    let after = if cursor.trim().is_empty() {
        None
    } else {
        Some(decode(cursor.trim())?)
    };
    let mut items = fetch(after.as_ref(), limit.saturating_add(1))?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|last| encode(&key(last)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(item: &(u64, &str)) -> Key {
        (item.0, item.1.to_owned())
    }

    #[test]
    fn pages_follow_each_other_without_gap_or_repeat() {
        let items = vec![(9, "b"), (9, "a"), (7, "z"), (5, "x"), (5, "w"), (1, "q")];
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = page(items.clone(), key, &cursor, 2, 20).unwrap();
            seen.extend(page.items);
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn new_items_at_the_head_do_not_shift_a_page() {
        let first = page(vec![(5, "c"), (4, "b"), (3, "a")], key, "", 2, 20).unwrap();
        assert_eq!(first.next_cursor, "4-b");
        let grown = vec![(7, "e"), (6, "d"), (5, "c"), (4, "b"), (3, "a")];
        let next = page(grown, key, &first.next_cursor, 2, 20).unwrap();
        assert_eq!(next.items, vec![(3, "a")]);
        assert_eq!(next.next_cursor, "");
    }

    #[test]
    fn numbers_alone_are_cursors_and_junk_is_refused() {
        let ids = |n: &u64| (*n, String::new());
        let got = page(vec![5u64, 4, 3], ids, "4", 0, 20).unwrap();
        assert_eq!(got.items, vec![3]);
        assert!(page(vec![5u64], ids, "x-1", 0, 20).is_err());
        assert!(page(vec![5u64], ids, "-", 0, 20).is_err());
    }
}
