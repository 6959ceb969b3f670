//! From the result's schema to the target table's: TD types and TD column names (design.md §6).

use serde::Serialize;

/// One result column and what it becomes in the target table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedColumn {
    /// Name in the result.
    pub source: String,
    /// Normalized name in the target (`^[a-z_][a-z0-9_]*$`).
    pub target: String,
    /// TD type: long, double, string, array<…>, map<…,…>.
    #[serde(rename = "type")]
    pub td_type: String,
    #[serde(skip)]
    pub source_type: String,
}

impl MappedColumn {
    /// Whether values must be turned from booleans into 0/1 longs.
    pub fn is_boolean(&self) -> bool {
        self.source_type.trim().eq_ignore_ascii_case("boolean")
    }
}

/// Maps a Presto/Hive result type to a TD column type.
pub fn td_type(source_type: &str) -> String {
    let t = source_type.trim().to_ascii_lowercase();
    let base = t.split(['(', '<']).next().unwrap_or("").trim();
    match base {
        "bigint" | "integer" | "int" | "smallint" | "tinyint" | "boolean" => "long".into(),
        "double" | "real" | "float" => "double".into(),
        "array" => format!("array<{}>", td_type(inner(&t))),
        "map" => {
            let (k, v) = split_top_level(inner(&t));
            format!("map<{},{}>", td_type(k), td_type(v))
        }
        _ => "string".into(),
    }
}

/// What is inside the outermost brackets of `array(T)` / `map<K,V>`.
fn inner(t: &str) -> &str {
    match (t.find(['(', '<']), t.rfind([')', '>'])) {
        (Some(open), Some(close)) if close > open => &t[open + 1..close],
        _ => "",
    }
}

/// Splits `K,V` at the first comma that is not nested.
fn split_top_level(s: &str) -> (&str, &str) {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
    }
    (s, "")
}

/// A TD column name for `name`: lowercase, other characters `_`, no leading digit; `v` is
/// reserved and becomes `v_`.
pub fn normalize_name(name: &str) -> String {
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

/// Maps every column of a result schema (`[[name, type], …]`), making names unique with
/// `_1`, `_2` … in order of appearance.
pub fn map_columns(schema: &[(String, String)]) -> Vec<MappedColumn> {
    let mut taken: Vec<String> = Vec::with_capacity(schema.len());
    schema
        .iter()
        .map(|(name, ty)| {
            let base = normalize_name(name);
            let mut target = base.clone();
            let mut n = 0;
            while taken.contains(&target) {
                n += 1;
                target = format!("{base}_{n}");
            }
            taken.push(target.clone());
            MappedColumn {
                source: name.clone(),
                target,
                td_type: td_type(ty),
                source_type: ty.clone(),
            }
        })
        .collect()
}

/// Whether a result type holds integers (what a `time` column must be).
pub fn is_integer_type(source_type: &str) -> bool {
    matches!(
        source_type.trim().to_ascii_lowercase().as_str(),
        "bigint" | "integer" | "int" | "smallint" | "tinyint"
    )
}

/// The TD schema (`[[name, type], …]`) for the mapped columns, without `time` (it is implicit).
pub fn td_schema(columns: &[MappedColumn]) -> serde_json::Value {
    columns
        .iter()
        .filter(|c| c.target != "time")
        .map(|c| serde_json::json!([c.target, c.td_type]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_map_to_td_types() {
        for (from, to) in [
            ("bigint", "long"),
            ("integer", "long"),
            ("smallint", "long"),
            ("tinyint", "long"),
            ("boolean", "long"),
            ("double", "double"),
            ("real", "double"),
            ("varchar", "string"),
            ("varchar(10)", "string"),
            ("decimal(10,2)", "string"),
            ("date", "string"),
            ("timestamp", "string"),
            ("json", "string"),
            ("row(a bigint, b varchar)", "string"),
            ("array(bigint)", "array<long>"),
            ("array(varchar)", "array<string>"),
            ("map(varchar, bigint)", "map<string,long>"),
            ("map(varchar,array(double))", "map<string,array<double>>"),
            ("array<int>", "array<long>"),
        ] {
            assert_eq!(td_type(from), to, "{from}");
        }
    }

    #[test]
    fn column_names_are_normalized_and_v_is_renamed() {
        assert_eq!(normalize_name("Code"), "code");
        assert_eq!(normalize_name("COUNT(1)"), "count_1_");
        assert_eq!(normalize_name("user-id"), "user_id");
        assert_eq!(normalize_name("1st"), "_1st");
        assert_eq!(normalize_name(""), "_");
        assert_eq!(normalize_name("v"), "v_");
        assert_eq!(normalize_name("V"), "v_");
        assert_eq!(normalize_name("vv"), "vv");
    }

    #[test]
    fn duplicate_names_get_numbered_suffixes() {
        let schema: Vec<(String, String)> = [
            ("a", "bigint"),
            ("A", "bigint"),
            ("a ", "varchar"),
            ("a_1", "bigint"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
        let names: Vec<String> = map_columns(&schema).into_iter().map(|c| c.target).collect();
        assert_eq!(names, ["a", "a_1", "a_", "a_1_1"]);
    }
}
