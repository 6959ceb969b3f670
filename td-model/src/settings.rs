//! The TD connector's settings keys (`result_connection_settings`, Digdag's `result_settings`):
//! the names TD reads and the short aliases this project also takes. The operator's spec, its
//! server engine and td-local's result output all read them from here.

/// The target database (TD's name).
pub const DATABASE: &str = "user_database_name";
/// The target table (TD's name).
pub const TABLE: &str = "user_table_name";

/// Aliases and the TD name each stands for.
pub const ALIASES: [(&str, &str); 2] = [("database", DATABASE), ("table", TABLE)];

/// The keys under which a setting may be written: its TD name first, then its aliases.
pub fn spellings(name: &'static str) -> Vec<&'static str> {
    std::iter::once(name)
        .chain(
            ALIASES
                .iter()
                .filter(|(_, to)| *to == name)
                .map(|(alias, _)| *alias),
        )
        .collect()
}

/// The TD name of a key written either way (a key with no alias is its own name).
pub fn canonical(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_read_as_tds_names() {
        assert_eq!(canonical("database"), "user_database_name");
        assert_eq!(canonical("table"), "user_table_name");
        assert_eq!(canonical("mode"), "mode");
        assert_eq!(spellings(TABLE), ["user_table_name", "table"]);
    }
}
