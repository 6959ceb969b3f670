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
pub struct Resolved {
    pub sql: String,
    /// `(database, table)` pairs referenced as `db.table`: views named `"db.table"`.
    pub qualified: BTreeSet<(String, String)>,
    /// Every identifier in the query: the unqualified names that may be tables of the job's database.
    pub identifiers: BTreeSet<String>,
}

/// The view name that stands for `db.table`.
pub fn qualified_view_name(db: &str, table: &str) -> String {
    format!("{db}.{table}")
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rewrites `db.table` references for which `is_table(db, table)` holds.
pub fn resolve(sql: &str, is_table: impl Fn(&str, &str) -> bool) -> Resolved {
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

/// Whether SQLite's name for a result column is a plain identifier (a column or an alias)
/// rather than the text of an unnamed expression such as `COUNT(1)`.
pub fn is_plain_identifier(name: &str) -> bool {
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
    fn tells_names_from_expression_text() {
        assert!(is_plain_identifier("code"));
        assert!(is_plain_identifier("_c0"));
        assert!(!is_plain_identifier("COUNT(1)"));
        assert!(!is_plain_identifier("code + 1"));
        assert!(!is_plain_identifier("'a'"));
        assert!(!is_plain_identifier(""));
    }
}
