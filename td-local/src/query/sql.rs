//! Just enough SQL lexing to find the TD tables a query names.
//!
//! TD queries name tables as `table` (in the job's database) or `db.table`. SQLite would read
//! `db.table` as schema `db`, so a qualified reference to a known table is rewritten to one quoted
//! identifier, `"db.table"`, the name of a TEMP VIEW over that table. TD names cannot contain a
//! dot, so these view names never collide with an unqualified table name. Only identifier tokens
//! are looked at: string literals, quoted identifiers and comments are skipped whole, so a
//! `'db.table'` literal is never touched.

use std::collections::BTreeSet;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A bare identifier (lowercased: SQL is case-insensitive) or a quoted one (exact).
    Ident(String),
    Dot,
    /// Whitespace and comments.
    Trivia,
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    span: Range<usize>,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Scans to the closing `quote` (a doubled quote is an escaped one); returns the end index.
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn tokenize(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (kind, end) = match b {
            _ if b.is_ascii_whitespace() => {
                let n = bytes[i..].iter().take_while(|c| c.is_ascii_whitespace()).count();
                (Kind::Trivia, i + n)
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let n = bytes[i..].iter().take_while(|&&c| c != b'\n').count();
                (Kind::Trivia, i + n)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = sql[i + 2..].find("*/").map_or(bytes.len(), |p| i + 2 + p + 2);
                (Kind::Trivia, end)
            }
            b'\'' => (Kind::Other, quoted_end(bytes, i, b'\'')),
            b'"' | b'`' => {
                let end = quoted_end(bytes, i, b);
                let closed = end > i + 1 && bytes[end - 1] == b;
                let inner = &sql[i + 1..if closed { end - 1 } else { end }];
                let quote = char::from(b).to_string();
                (Kind::Ident(inner.replace(&quote.repeat(2), &quote)), end)
            }
            b'.' => (Kind::Dot, i + 1),
            _ if b.is_ascii_digit() => {
                // Numbers (including `1.5`, `1e3`, `0x1f`) are consumed whole so their dot is not a Dot.
                let n = bytes[i..]
                    .iter()
                    .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                    .count();
                (Kind::Other, i + n)
            }
            _ if is_ident_byte(b) => {
                let n = bytes[i..].iter().take_while(|&&c| is_ident_byte(c)).count();
                (Kind::Ident(sql[i..i + n].to_lowercase()), i + n)
            }
            _ => {
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                (Kind::Other, i + len)
            }
        };
        tokens.push(Token { kind, span: i..end });
        i = end;
    }
    tokens
}

/// A query with its qualified table references replaced, and the tables it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub sql: String,
    /// `(database, table)` pairs referenced as `db.table`: views named `"db.table"`.
    pub qualified: BTreeSet<(String, String)>,
    /// Every identifier in the query: the unqualified names that may be tables of the job's database.
    pub identifiers: BTreeSet<String>,
}

/// The view name that stands for `db.table`.
pub(super) fn qualified_view_name(db: &str, table: &str) -> String {
    format!("{db}.{table}")
}

/// `"name"` with inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rewrites `db.table` references for which `is_table(db, table)` holds.
pub(super) fn resolve(sql: &str, is_table: impl Fn(&str, &str) -> bool) -> Resolved {
    let tokens = tokenize(sql);
    let significant: Vec<&Token> = tokens.iter().filter(|t| t.kind != Kind::Trivia).collect();
    let mut out = String::with_capacity(sql.len());
    let mut copied_to = 0;
    let mut qualified = BTreeSet::new();
    let mut identifiers = BTreeSet::new();
    let mut k = 0;
    while k < significant.len() {
        let Kind::Ident(first) = &significant[k].kind else {
            k += 1;
            continue;
        };
        identifiers.insert(first.clone());
        let after_dot = k > 0 && significant[k - 1].kind == Kind::Dot;
        let table = match (significant.get(k + 1), significant.get(k + 2)) {
            (
                Some(dot),
                Some(Token {
                    kind: Kind::Ident(t), ..
                }),
            ) if dot.kind == Kind::Dot => Some(t),
            _ => None,
        };
        match table {
            Some(table) if !after_dot && is_table(first, table) => {
                let span = significant[k].span.start..significant[k + 2].span.end;
                out.push_str(&sql[copied_to..span.start]);
                out.push_str(&quote_ident(&qualified_view_name(first, table)));
                copied_to = span.end;
                qualified.insert((first.clone(), table.clone()));
                k += 3;
            }
            _ => k += 1,
        }
    }
    out.push_str(&sql[copied_to..]);
    Resolved {
        sql: out,
        qualified,
        identifiers,
    }
}

/// What the text of each result column of `sql` says of its Presto type, where that is plain
/// from the text alone: a literal (`1` bigint, `1.5` double, `'a'` varchar, `X'00'` varbinary,
/// `TRUE` boolean), a `CAST(… AS T)`, or a call of a function whose type is fixed (`COUNT`, TD's time functions).
/// Only the outermost SELECT's list is read (the first one of a UNION); `None` for everything
/// else, and an empty list when the list cannot be found.
pub(super) fn column_hints(sql: &str) -> Vec<Option<&'static str>> {
    let tokens: Vec<Token> = tokenize(sql)
        .into_iter()
        .filter(|t| t.kind != Kind::Trivia)
        .collect();
    let text = |t: &Token| &sql[t.span.clone()];
    let is = |t: &Token, word: &str| matches!(&t.kind, Kind::Ident(w) if w == word);
    let mut depth = 0i32;
    let mut start = None;
    for (i, t) in tokens.iter().enumerate() {
        match text(t) {
            "(" => depth += 1,
            ")" => depth -= 1,
            _ if depth == 0 && is(t, "select") => {
                start = Some(i + 1);
                break;
            }
            _ => {}
        }
    }
    let Some(mut i) = start else {
        return Vec::new();
    };
    if tokens.get(i).is_some_and(|t| is(t, "distinct") || is(t, "all")) {
        i += 1;
    }
    const ENDS: [&str; 10] = [
        "from",
        "where",
        "group",
        "having",
        "order",
        "limit",
        "union",
        "intersect",
        "except",
        "window",
    ];
    let mut items: Vec<Vec<&Token>> = vec![Vec::new()];
    let mut depth = 0i32;
    for t in &tokens[i..] {
        match text(t) {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ if depth == 0 && ENDS.iter().any(|w| is(t, w)) => break,
            _ => {}
        }
        items.last_mut().expect("one item at least").push(t);
    }
    items.iter().map(|item| item_hint(sql, item)).collect()
}

/// The type one select item's text names, its alias taken off.
fn item_hint(sql: &str, item: &[&Token]) -> Option<&'static str> {
    let text = |t: &Token| &sql[t.span.clone()];
    let mut item = item;
    if let [rest @ .., Token {
        kind: Kind::Ident(a), ..
    }, Token {
        kind: Kind::Ident(_), ..
    }] = item
    {
        if a == "as" {
            item = rest;
        }
    }
    if let [rest @ .., last, Token {
        kind: Kind::Ident(_), ..
    }] = item
    {
        // `1 n`, `count(*) n`: a literal or a call followed by a bare alias.
        if last.kind == Kind::Other && !rest.is_empty() || text(last) == ")" || is_literal(text(last)) {
            item = &item[..item.len() - 1];
        }
    }
    match item {
        [one] => literal_type(text(one), &one.kind),
        [Token {
            kind: Kind::Ident(x), ..
        }, bytes]
            if x == "x" && text(bytes).starts_with('\'') =>
        {
            Some("varbinary")
        }
        [minus, number] if text(minus) == "-" => literal_type(text(number), &number.kind),
        [Token {
            kind: Kind::Ident(name),
            ..
        }, open, .., close]
            if text(open) == "(" && text(close) == ")" =>
        {
            let args = &item[2..item.len() - 1];
            if name == "cast" {
                let at = args
                    .iter()
                    .rposition(|t| matches!(&t.kind, Kind::Ident(w) if w == "as"))?;
                let target: Vec<&str> = args[at + 1..].iter().map(|t| text(t)).collect();
                cast_type(&target.join(" ").to_ascii_lowercase())
            } else {
                function_type(name)
            }
        }
        _ => None,
    }
}

fn is_literal(text: &str) -> bool {
    text.starts_with('\'') || text.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

fn literal_type(text: &str, kind: &Kind) -> Option<&'static str> {
    match kind {
        Kind::Ident(word) if word == "true" || word == "false" => Some("boolean"),
        Kind::Other if text.starts_with('\'') => Some("varchar"),
        Kind::Other if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() => Some("bigint"),
        Kind::Other if text.starts_with("0x") || text.starts_with("0X") => Some("bigint"),
        Kind::Other if text.bytes().next().is_some_and(|b| b.is_ascii_digit()) => Some("double"),
        _ => None,
    }
}

/// The Presto type of `CAST(… AS target)`.
fn cast_type(target: &str) -> Option<&'static str> {
    let base = target.split(['(', ' ']).next().unwrap_or("");
    Some(match base {
        "bigint" | "integer" | "int" | "smallint" | "tinyint" => "bigint",
        "double" | "real" | "float" => "double",
        "varchar" | "char" | "string" | "text" => "varchar",
        "boolean" => "boolean",
        _ => return None,
    })
}

/// Functions whose result type does not depend on their arguments.
fn function_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "count" | "td_time_add" | "td_time_parse" | "td_date_trunc" | "td_scheduled_time" => "bigint",
        "td_time_format" => "varchar",
        "td_time_range" => "boolean",
        _ => return None,
    })
}

/// Whether SQLite's name for a result column is a plain identifier (a column or an alias)
/// rather than the text of an unnamed expression such as `COUNT(1)`.
pub(crate) fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(db: &str, table: &str) -> bool {
        matches!((db, table), ("sample_datasets", "www_access") | ("mydb", "t1"))
    }

    #[test]
    fn rewrites_qualified_tables_and_keeps_everything_else() {
        let r = resolve(
            "SELECT a.code, 'sample_datasets.www_access' AS s, \"x.y\" -- sample_datasets.www_access\n\
             FROM Sample_Datasets . www_access a JOIN mydb.t1 ON mydb.t1.k = a.k WHERE x.code = 1.5",
            known,
        );
        assert_eq!(
            r.sql,
            "SELECT a.code, 'sample_datasets.www_access' AS s, \"x.y\" -- sample_datasets.www_access\n\
             FROM \"sample_datasets.www_access\" a JOIN \"mydb.t1\" ON \"mydb.t1\".k = a.k WHERE x.code = 1.5"
        );
        let pairs: Vec<_> = r.qualified.iter().map(|(d, t)| format!("{d}.{t}")).collect();
        assert_eq!(pairs, ["mydb.t1", "sample_datasets.www_access"]);
        assert!(r.identifiers.contains("a") && r.identifiers.contains("x.y"));
    }

    #[test]
    fn unknown_prefixes_and_column_paths_are_left_alone() {
        let sql = "SELECT t.www_access, other.t1, x.sample_datasets.www_access FROM t";
        assert_eq!(resolve(sql, known).sql, sql);
    }

    #[test]
    fn quoted_identifiers_match_exactly() {
        let r = resolve("SELECT * FROM \"mydb\".\"t1\"", known);
        assert_eq!(r.sql, "SELECT * FROM \"mydb.t1\"");
    }

    #[test]
    fn column_hints_read_literals_casts_and_typed_functions() {
        let hints = column_hints(
            "SELECT 1, -2 AS n, 1.5 x, 'a', X'00', TRUE, CAST(NULL AS BIGINT) AS time, cast(y as varchar(10)), \
             COUNT(*) c, td_time_parse(s), TD_TIME_FORMAT(t, 'yyyy'), code, a + 1, sum(z) \
             FROM t WHERE x IN (SELECT 1) UNION ALL SELECT 'x', 1",
        );
        assert_eq!(
            hints,
            [
                Some("bigint"),
                Some("bigint"),
                Some("double"),
                Some("varchar"),
                Some("varbinary"),
                Some("boolean"),
                Some("bigint"),
                Some("varchar"),
                Some("bigint"),
                Some("bigint"),
                Some("varchar"),
                None,
                None,
                None
            ]
        );
        assert_eq!(
            column_hints("WITH w AS (SELECT 'x' AS a) SELECT DISTINCT 2, a FROM w"),
            [Some("bigint"), None]
        );
        assert_eq!(column_hints("VALUES (1)"), Vec::<Option<&str>>::new());
    }

    #[test]
    fn tells_names_from_expression_text() {
        assert!(is_plain_identifier("code"));
        assert!(is_plain_identifier("_c0"));
        assert!(!is_plain_identifier("COUNT(1)"));
        assert!(!is_plain_identifier("code + 1"));
        assert!(!is_plain_identifier("'a'"));
        assert!(!is_plain_identifier(""));
    }
}
