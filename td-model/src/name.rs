//! Names: databases and tables `^[a-z0-9_]{3,128}$` (sources say 128, 255 or 256: stay within
//! 128), columns `^[a-z_][a-z0-9_]*$` with `time` and `v` reserved (docs/td-api.md §3).

/// The longest database or table name.
pub const MAX_NAME: usize = 128;
/// The shortest database or table name.
pub const MIN_NAME: usize = 3;
/// The JSON Schema pattern of the rule (the task schema uses it).
pub const NAME_PATTERN: &str = "^[a-z0-9_]{3,128}$";
/// What a name may hold, for messages.
pub const NAME_RULE: &str = "3 to 128 characters of lowercase a-z, 0-9 and _";

/// A database or table name TD accepts.
pub fn is_td_name(name: &str) -> bool {
    (MIN_NAME..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A name TD would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid TD name for a {kind} (use {NAME_RULE})")]
pub struct NameError {
    /// `database`, `table`, `bulk import session`, …
    pub kind: &'static str,
    pub name: String,
}

/// Checks a database, table or session name.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if is_td_name(name) {
        Ok(())
    } else {
        Err(NameError {
            kind,
            name: name.to_string(),
        })
    }
}

/// Columns TD keeps for itself: `time` (every row's) and `v` (the row as a map, in Hive).
pub fn is_reserved_column(name: &str) -> bool {
    name == "time" || name == "v"
}

/// A TD column name for `name`: lowercase, other characters `_`, no leading digit; `v` is
/// reserved and becomes `v_`.
pub fn normalize_column(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out == "v" {
        out.push('_');
    }
    out
}

/// Normalized names for `names`, made unique with `_1`, `_2` … in order of appearance.
pub fn unique_columns<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut out = Vec::new();
    let mut taken = HashSet::new();
    // Per base name, the suffix to try next: n same names cost n tries, not n² (or n³).
    let mut next: HashMap<String, usize> = HashMap::new();
    for name in names {
        let base = normalize_column(name);
        let mut target = base.clone();
        if taken.contains(&target) {
            let n = next.entry(base.clone()).or_insert(0);
            loop {
                *n += 1;
                target = format!("{base}_{n}");
                if !taken.contains(&target) {
                    break;
                }
            }
        }
        taken.insert(target.clone());
        out.push(target);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn td_names_follow_the_td_rule() {
        assert!(is_td_name("output_table") && is_td_name("abc") && !is_td_name("ab"));
        assert!(!is_td_name("Output") && !is_td_name("a-b-c") && !is_td_name(&"a".repeat(129)));
        assert!(is_td_name(&"a".repeat(128)));
        let e = check_name("table", "Bad").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`Bad` is not a valid TD name for a table (use 3 to 128 characters of lowercase a-z, 0-9 and _)"
        );
    }

    #[test]
    fn thousands_of_same_named_columns_are_numbered_in_linear_time() {
        // 20,000 same names: numbering that rescans what is taken for every try would not end
        // in the test's lifetime (n³ ≈ 10¹³ steps).
        let unique = unique_columns(vec!["x"; 20_000]);
        assert_eq!(unique[0], "x");
        assert_eq!(unique[19_999], "x_19999");
        let distinct: std::collections::HashSet<_> = unique.iter().collect();
        assert_eq!(distinct.len(), 20_000);
        // A name that a numbering would also make keeps its place: the numbering goes around it.
        assert_eq!(unique_columns(["a", "a_1", "a", "a"]), ["a", "a_1", "a_2", "a_3"]);
    }

    #[test]
    fn column_names_are_normalized_and_v_is_renamed() {
        assert_eq!(normalize_column("Code"), "code");
        assert_eq!(normalize_column("COUNT(1)"), "count_1_");
        assert_eq!(normalize_column("user-id"), "user_id");
        assert_eq!(normalize_column("1st"), "_1st");
        assert_eq!(normalize_column(""), "_");
        assert_eq!(normalize_column("v"), "v_");
        assert_eq!(normalize_column("V"), "v_");
        assert_eq!(normalize_column("vv"), "vv");
        assert!(is_reserved_column("time") && is_reserved_column("v") && !is_reserved_column("v_"));
    }

    #[test]
    fn duplicate_names_get_numbered_suffixes() {
        assert_eq!(
            unique_columns(["a", "A", "a ", "a_1"]),
            ["a", "a_1", "a_", "a_1_1"]
        );
    }
}
