//! Finds the YAML line of a spec path. serde_yaml_ng keeps no positions, so the text is walked once
//! more with yaml-rust2's event parser, whose events carry line marks (block and flow style alike).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::SpecPath;

/// Line (1-based) of every key and list item of a YAML document.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    lines: HashMap<SpecPath, usize>,
}

impl Locator {
    /// Indexes `text`; text that does not parse yields an empty locator (its syntax error is
    /// reported by the real parser).
    pub fn new(text: &str) -> Locator {
        let mut walker = Walker::default();
        if Parser::new_from_str(text).load(&mut walker, false).is_err() {
            return Locator::default();
        }
        Locator { lines: walker.lines }
    }

    /// The line of `path`, or of its nearest ancestor that has one (a key inside JSON text, say).
    pub fn line(&self, path: &SpecPath) -> Option<usize> {
        let mut path = path.clone();
        loop {
            if let Some(line) = self.lines.get(&path) {
                return Some(*line);
            }
            path = path.parent()?;
        }
    }

    /// The line of exactly `path`.
    pub fn exact_line(&self, path: &SpecPath) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

enum Frame {
    Mapping {
        path: SpecPath,
        key: Option<String>,
        in_key_node: usize,
    },
    Sequence {
        path: SpecPath,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<SpecPath, usize>,
    done: bool,
}

impl Walker {
    /// The path a node starting now gets, recording its line; None while reading a mapping key.
    fn enter_node(&mut self, line: usize, scalar_key: Option<&str>) -> Option<SpecPath> {
        match self.stack.last_mut() {
            None => Some(SpecPath::root()),
            Some(Frame::Mapping {
                path,
                key,
                in_key_node,
            }) => {
                if *in_key_node > 0 {
                    return None;
                }
                match key.take() {
                    None => {
                        // This node is a key.
                        let name = scalar_key.unwrap_or("?").to_string();
                        self.lines.entry(path.key(&name)).or_insert(line);
                        *key = Some(name);
                        None
                    }
                    Some(name) => Some(path.key(&name)),
                }
            }
            Some(Frame::Sequence { path, next }) => {
                let item = path.index(*next);
                *next += 1;
                self.lines.entry(item.clone()).or_insert(line);
                Some(item)
            }
        }
    }

    fn open(&mut self, line: usize, mapping: bool) {
        let is_key = matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }));
        let in_key =
            matches!(self.stack.last(), Some(Frame::Mapping { in_key_node, .. }) if *in_key_node > 0);
        if is_key || in_key {
            // A complex key (a map or list used as a key): skip its insides.
            if let Some(Frame::Mapping { in_key_node, .. }) = self.stack.last_mut() {
                *in_key_node += 1;
            }
            return;
        }
        let path = self.enter_node(line, None).unwrap_or_default();
        self.stack.push(if mapping {
            Frame::Mapping {
                path,
                key: None,
                in_key_node: 0,
            }
        } else {
            Frame::Sequence { path, next: 0 }
        });
    }

    fn close(&mut self) {
        if let Some(Frame::Mapping { in_key_node, key, .. }) = self.stack.last_mut() {
            if *in_key_node > 0 {
                *in_key_node -= 1;
                if *in_key_node == 0 {
                    *key = Some("?".to_string());
                }
                return;
            }
        }
        self.stack.pop();
        if self.stack.is_empty() {
            self.done = true;
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let line = mark.line();
        match ev {
            Event::MappingStart(..) => self.open(line, true),
            Event::SequenceStart(..) => self.open(line, false),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::Scalar(value, ..) => {
                self.enter_node(line, Some(&value));
            }
            Event::Alias(_) => {
                self.enter_node(line, Some("*"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "\
td_result_export>:
job_id: \"12345\"
# a comment
result_settings:
  user_database_name: testdb
  mode: appendd
td: {endpoint: api.treasuredata.com,
     apikey: x}
_retry:
  limit: 3
list:
  - a
  - {b: 1}
query: |
  SELECT 1
transfer: stream
";

    fn line(path: &str) -> Option<usize> {
        Locator::new(SPEC).line(&SpecPath::parse(path))
    }

    #[test]
    fn block_keys_are_found_on_their_lines() {
        assert_eq!(line("td_result_export>"), Some(1));
        assert_eq!(line("job_id"), Some(2));
        assert_eq!(line("result_settings"), Some(4));
        assert_eq!(line("result_settings.mode"), Some(6));
        assert_eq!(line("_retry.limit"), Some(10));
        assert_eq!(
            line("transfer"),
            Some(16),
            "a block scalar does not shift later lines"
        );
    }

    #[test]
    fn flow_mappings_and_list_items_are_found() {
        assert_eq!(line("td.endpoint"), Some(7));
        assert_eq!(line("td.apikey"), Some(8));
        let loc = Locator::new(SPEC);
        assert_eq!(loc.line(&SpecPath::parse("list").index(1)), Some(13));
        assert_eq!(loc.line(&SpecPath::parse("list").index(1).key("b")), Some(13));
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_ancestor() {
        assert_eq!(line("result_settings.time"), Some(4));
        assert_eq!(
            Locator::new(SPEC).exact_line(&SpecPath::parse("result_settings.time")),
            None
        );
        assert_eq!(line("nothing"), None);
    }

    #[test]
    fn broken_yaml_gives_no_lines() {
        assert_eq!(Locator::new("a: [1, 2\nb: {").line(&SpecPath::parse("a")), None);
    }
}
