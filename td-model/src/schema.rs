//! Schemas as JSON text: a job's `hive_result_schema` (`[["code","integer"],["cnt","bigint"]]`)
//! and a table's `schema` (`[[name, type]|[name, type, alias], …]`, without `time`).

use serde_json::Value;

use crate::name::is_reserved_column;
use crate::types::is_column_type;

/// One column of a query result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    pub name: String,
    /// The engine's type: `bigint`, `varchar`, `array(double)`, …
    pub result_type: String,
}

/// A schema text that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Not JSON, not a list, or an item that is not `[name, type(, alias)]`.
    #[error("{0}")]
    Malformed(String),
    /// A table column named `time` or `v` (TD answers 422).
    #[error("column name `{0}` is reserved")]
    Reserved(String),
    /// A table column type TD does not have (TD answers 422).
    #[error("invalid column type `{0}`: use int, long, float, double, string, array<T> or map<K,V>")]
    Type(String),
}

/// Reads `hive_result_schema`. An empty text is an error: a finished job always has one.
pub fn parse_result_schema(text: &str) -> Result<Vec<ResultColumn>, SchemaError> {
    let bad = |detail: String| SchemaError::Malformed(detail);
    if text.trim().is_empty() {
        return Err(bad("it is empty".into()));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    value
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?
        .iter()
        .map(|col| match col.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(ty), ..]) => Ok(ResultColumn {
                name: name.clone(),
                result_type: ty.clone(),
            }),
            _ => Err(bad(format!("column {col} is not [name, type]"))),
        })
        .collect()
}

/// A column of a table schema: TD's tuple `[key, type(, alias)]` (td-client-java's
/// `TDColumn.parseTuple`; docs/td-semantics.md, "the schema tuple").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The key the column reads in the stored records (the tuple's first element).
    pub name: String,
    /// A TD column type: long, double, string, array<…>, map<…>.
    pub td_type: String,
    /// The column's SQL name, when it differs from its key (the tuple's third element).
    pub alias: Option<String>,
}

impl TableColumn {
    pub fn new(name: impl Into<String>, td_type: impl Into<String>) -> TableColumn {
        TableColumn {
            name: name.into(),
            td_type: td_type.into(),
            alias: None,
        }
    }
}

/// Reads a table schema, refusing reserved names (`time`, `v`) and unknown types.
pub fn parse_table_schema(text: &str) -> Result<Vec<TableColumn>, SchemaError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| SchemaError::Malformed(format!("schema must be a JSON array of [name, type]: {e}")))?;
    let items = value
        .as_array()
        .ok_or_else(|| SchemaError::Malformed("schema must be a JSON array of [name, type]".into()))?;
    items
        .iter()
        .map(|item| {
            let parts: Vec<&str> = item
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let (name, ty, alias) = match parts.as_slice() {
                [n, t] => (*n, *t, None),
                [n, t, a] => (*n, *t, Some((*a).to_string())),
                _ => {
                    return Err(SchemaError::Malformed(format!(
                        "schema column must be [name, type] or [name, type, alias], got {item}"
                    )))
                }
            };
            let key = alias.as_deref().unwrap_or(name);
            if is_reserved_column(key) {
                return Err(SchemaError::Reserved(key.to_string()));
            }
            if !is_column_type(ty) {
                return Err(SchemaError::Type(ty.trim().to_string()));
            }
            Ok(TableColumn {
                name: name.to_string(),
                td_type: ty.to_string(),
                alias,
            })
        })
        .collect()
}

/// A table schema as TD's JSON text.
pub fn table_schema_json(columns: &[TableColumn]) -> String {
    let items: Vec<Value> = columns
        .iter()
        .map(|c| {
            let mut v = vec![Value::from(c.name.as_str()), Value::from(c.td_type.as_str())];
            if let Some(a) = &c.alias {
                v.push(Value::from(a.as_str()));
            }
            Value::Array(v)
        })
        .collect();
    Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_schemas_read_as_named_typed_columns() {
        let cols = parse_result_schema(r#"[["code","integer"],["cnt","bigint"]]"#).unwrap();
        assert_eq!(
            cols[1],
            ResultColumn {
                name: "cnt".into(),
                result_type: "bigint".into()
            }
        );
        assert_eq!(parse_result_schema("[]").unwrap(), []);
        for bad in ["", "{}", "[[1,2]]", "[\"x\"]", "nope"] {
            assert!(
                matches!(parse_result_schema(bad), Err(SchemaError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn table_schemas_refuse_reserved_names_and_unknown_types() {
        let cols = parse_table_schema(r#"[["a","long"],["b","string","b_key"]]"#).unwrap();
        assert_eq!(cols[1].alias.as_deref(), Some("b_key"));
        assert_eq!(
            table_schema_json(&cols),
            r#"[["a","long"],["b","string","b_key"]]"#
        );
        assert_eq!(
            parse_table_schema(r#"[["v","long"]]"#),
            Err(SchemaError::Reserved("v".into()))
        );
        assert_eq!(
            parse_table_schema(r#"[["x","long","time"]]"#),
            Err(SchemaError::Reserved("time".into()))
        );
        assert_eq!(
            parse_table_schema(r#"[["x","bigint"]]"#),
            Err(SchemaError::Type("bigint".into()))
        );
        assert!(matches!(
            parse_table_schema("[1]"),
            Err(SchemaError::Malformed(_))
        ));
    }
}
