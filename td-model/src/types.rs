//! Column types: what a query result's (Presto/Hive) types become in a TD table (docs/architecture.md §4),
//! and which TD column types a table schema may name (docs/td-api.md §3).

/// Maps a Presto/Hive result type to a TD column type: integers and booleans → `long`,
/// floating point → `double`, `array(T)`/`array<T>` → `array<T'>`, `map(K,V)`/`map<K,V>` →
/// `map<K',V'>`, everything else (varchar, decimal, date, timestamp, json, row) → `string`.
pub fn td_type(result_type: &str) -> String {
    let t = result_type.trim().to_ascii_lowercase();
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

/// Whether a result type holds integers (what a `time` column must be).
pub fn is_integer_type(result_type: &str) -> bool {
    matches!(
        result_type.trim().to_ascii_lowercase().as_str(),
        "bigint" | "integer" | "int" | "smallint" | "tinyint"
    )
}

/// Whether a result type is boolean (TD stores it as a 0/1 `long`).
pub fn is_boolean_type(result_type: &str) -> bool {
    result_type.trim().eq_ignore_ascii_case("boolean")
}

/// Whether a table schema may name this TD column type: `int`, `long`, `float`, `double`,
/// `string`, `array<T>`, `map<K,V>`.
pub fn is_column_type(td_type: &str) -> bool {
    let ty = td_type.trim();
    matches!(ty, "int" | "long" | "float" | "double" | "string")
        || (ty.starts_with("array<") && ty.ends_with('>'))
        || (ty.starts_with("map<") && ty.ends_with('>'))
}

/// Whether values written as TD type `written` read as NULL from a column of TD type `column`.
/// TD stores what a bulk import brings and applies the column's type when it reads
/// (schema-on-read; docs/td-semantics.md, "mistyped values"): a value that does not fit reads as
/// NULL. Integers fit a `double` column, anything reads as text from a `string` column (an
/// assumption: Presto casts to varchar), and an array (map) reads from any array (map) column —
/// the element types are not compared, as td-local reads them; every other difference loses the
/// values.
pub fn reads_as_null(written: &str, column: &str) -> bool {
    let kind = |t: &str| match t.trim().to_ascii_lowercase().as_str() {
        "int" | "long" => "long".to_string(),
        "float" | "double" => "double".to_string(),
        other => other.split('<').next().unwrap_or(other).trim().to_string(),
    };
    let (written, column) = (kind(written), kind(column));
    !(written == column || column == "string" || (written == "long" && column == "double"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_do_not_fit_the_columns_type_read_as_null() {
        for (written, column) in [
            ("string", "long"),
            ("double", "long"),
            ("string", "double"),
            ("long", "array<string>"),
            ("array<long>", "long"),
            ("map<string,long>", "array<long>"),
            ("double", "map<string,long>"),
        ] {
            assert!(reads_as_null(written, column), "{written} into {column}");
        }
        for (written, column) in [
            ("long", "long"),
            ("long", "int"),
            ("long", "double"),
            ("double", "float"),
            ("long", "string"),
            ("array<long>", "string"),
            ("array<long>", "array<long>"),
            ("array<long>", "array<string>"),
            ("map<string, long>", "map<string,double>"),
        ] {
            assert!(!reads_as_null(written, column), "{written} into {column}");
        }
    }

    #[test]
    fn result_types_map_to_td_types() {
        for (from, to) in [
            ("bigint", "long"),
            ("INTEGER", "long"),
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
            ("map<string,array<bigint>>", "map<string,array<long>>"),
        ] {
            assert_eq!(td_type(from), to, "{from}");
        }
    }

    #[test]
    fn integer_boolean_and_column_types_are_recognised() {
        assert!(is_integer_type(" BIGINT ") && !is_integer_type("double") && !is_integer_type("boolean"));
        assert!(is_boolean_type("Boolean") && !is_boolean_type("bigint"));
        assert!(
            is_column_type("long") && is_column_type("array<string>") && is_column_type("map<string,long>")
        );
        assert!(!is_column_type("bigint") && !is_column_type("varchar"));
    }
}
