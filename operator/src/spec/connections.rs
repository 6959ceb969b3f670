//! The `--connections FILE`: `NAME: {type: treasure_data, api_key, api_hostname}`, read,
//! interpolated and validated like the spec's own `connections:` (same schema, same messages).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::interpolate::Interpolator;
use super::locate::Locator;
use super::schema::Schema;
use super::{
    all_errors, interpolate_tree, parse_yaml, read_text, refuse_shape, ConnectionSpec, MAX_SPEC_BYTES,
};
use crate::error::{At, SpecError, SpecPath};

/// A connections file that passed its checks.
#[derive(Debug)]
pub struct ConnectionsFile {
    connections: BTreeMap<String, ConnectionSpec>,
    file: Arc<str>,
    locator: Locator,
}

impl ConnectionsFile {
    pub fn get(&self, name: &str) -> Option<&ConnectionSpec> {
        self.connections.get(name)
    }

    /// Location of a path in the file (`NAME.api_key`, say).
    pub fn at(&self, path: &SpecPath) -> At {
        At {
            file: self.file.clone(),
            line: self.locator.line(path),
            path: path.clone(),
        }
    }
}

/// Reads, interpolates and validates a connections file.
pub(crate) fn load(path: &Path, interpolator: &Interpolator) -> Result<ConnectionsFile, SpecError> {
    let file: Arc<str> = path.display().to_string().into();
    let text = read_text(path, "connections file", MAX_SPEC_BYTES)?;
    let (locator, shape) = Locator::scan(&text);
    refuse_shape(&shape, &file)?;
    let mut doc = parse_yaml(&text, &file)?;
    if doc.is_null() {
        doc = serde_json::json!({});
    }
    let loaded = ConnectionsFile {
        connections: BTreeMap::new(),
        file,
        locator,
    };
    let at = |p: &SpecPath| loaded.at(p);
    interpolate_tree(interpolator, &mut doc, &SpecPath::root(), &at)?;
    if let Some(err) = all_errors(Schema::connections_file().check(&doc, &at)) {
        return Err(err);
    }
    let connections = serde_json::from_value(doc).map_err(|e| SpecError::Invalid {
        at: at(&SpecPath::root()),
        problem: e.to_string(),
        fix: "Write NAME: {type: treasure_data, api_key: …, api_hostname: …}.".to_string(),
    })?;
    Ok(ConnectionsFile {
        connections,
        ..loaded
    })
}
