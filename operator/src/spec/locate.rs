//! Finds the YAML line of a spec path. serde_yaml_ng keeps no positions, so the text is walked once
//! more with yaml-rust2's event parser, whose events carry line marks (block and flow style alike).
//! The same walk measures what the spec stage refuses before it parses for real: a key given
//! twice in one map, nesting deeper than [`MAX_DEPTH`], and aliases.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::SpecPath;

/// The deepest nesting of maps and lists a spec may have (a task spec needs 4).
pub(crate) const MAX_DEPTH: usize = 32;

/// Line (1-based) of every key and list item of a YAML document.
#[derive(Debug, Default, Clone)]
pub(crate) struct Locator {
    lines: HashMap<SpecPath, usize>,
}

/// What the walk found that a spec may not hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// A key given twice in one map: its path, the first line and the line that repeats it.
    pub duplicate: Option<(SpecPath, usize, usize)>,
    /// Nesting went deeper than [`MAX_DEPTH`] at this line.
    pub too_deep: Option<usize>,
    /// An alias (`*name`) at this line.
    pub alias: Option<usize>,
}

impl Locator {
    /// Indexes `text`; text that does not parse yields an empty locator (its syntax error is
    /// reported by the real parser).
    #[cfg(test)]
    pub(crate) fn new(text: &str) -> Locator {
        Locator::scan(text).0
    }

    /// Indexes `text` and reports its [`Shape`].
    pub(crate) fn scan(text: &str) -> (Locator, Shape) {
        // Deep flow nesting (`[[[[…`) is found by a linear pass first: YAML parsers take time
        // that grows faster than the text on it.
        if let Some(line) = too_deep_flow(text) {
            let shape = Shape {
                too_deep: Some(line),
                ..Shape::default()
            };
            return (Locator::default(), shape);
        }
        let mut walker = Walker::default();
        let parsed = Parser::new_from_str(text).load(&mut walker, false);
        let lines = if parsed.is_ok() {
            walker.lines
        } else {
            HashMap::new()
        };
        (Locator { lines }, walker.shape)
    }

    /// The line of `path`, or of its nearest ancestor that has one (a key inside JSON text, say).
    pub(crate) fn line(&self, path: &SpecPath) -> Option<usize> {
        let mut path = path.clone();
        loop {
            if let Some(line) = self.lines.get(&path) {
                return Some(*line);
            }
            path = path.parent()?;
        }
    }

    /// The line of exactly `path`.
    #[cfg(test)]
    pub(crate) fn exact_line(&self, path: &SpecPath) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

/// The line where `[`/`{` nesting (outside quotes and comments) goes deeper than [`MAX_DEPTH`].
fn too_deep_flow(text: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let (mut single, mut double, mut comment, mut escaped) = (false, false, false, false);
    let mut previous = '\n';
    for c in text.chars() {
        match c {
            '\n' => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            _ if double => match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => double = false,
                _ => {}
            },
            '\'' if single => single = false,
            _ if single => {}
            '"' => double = true,
            '\'' => single = true,
            '#' if previous.is_whitespace() => comment = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    None
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
    shape: Shape,
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
                        let key_path = path.key(&name);
                        match self.lines.get(&key_path) {
                            Some(first) if self.shape.duplicate.is_none() => {
                                self.shape.duplicate = Some((key_path, *first, line));
                            }
                            Some(_) => {}
                            None => {
                                self.lines.insert(key_path, line);
                            }
                        }
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
        if self.stack.len() >= MAX_DEPTH {
            // Deeper than any spec: stop walking (paths would grow with the depth, and so the work).
            self.shape.too_deep = Some(line);
            self.done = true;
            return;
        }
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
                self.shape.alias.get_or_insert(line);
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
    fn keys_given_twice_deep_nesting_and_aliases_are_found() {
        let (_, shape) = Locator::scan("a: 1\nresult_settings:\n  mode: append\n  mode: replace\n");
        assert_eq!(
            shape.duplicate,
            Some((SpecPath::parse("result_settings.mode"), 3, 4))
        );
        let (_, shape) = Locator::scan("td: {endpoint: a}\ntd: {endpoint: b}\n");
        assert_eq!(shape.duplicate, Some((SpecPath::parse("td"), 1, 2)));
        let deep = format!("a: {}1{}\n", "[".repeat(50), "]".repeat(50));
        assert_eq!(Locator::scan(&deep).1.too_deep, Some(1));
        let quoted = format!(
            "a: '{}'\nb: \"{}\" # {}\n",
            "[".repeat(50),
            "{".repeat(50),
            "[".repeat(50)
        );
        assert_eq!(
            Locator::scan(&quoted).1.too_deep,
            None,
            "brackets in quotes and comments are text"
        );
        let block = (0..40)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>()
            + &" ".repeat(40)
            + "v: 1\n";
        assert!(
            Locator::scan(&block).1.too_deep.is_some(),
            "block nesting counts too"
        );
        let (_, shape) = Locator::scan("a: &x {b: 1}\nc: *x\n");
        assert_eq!(shape.alias, Some(2));
        assert_eq!(Locator::scan(SPEC).1, Shape::default());
    }

    #[test]
    fn broken_yaml_gives_no_lines() {
        assert_eq!(Locator::new("a: [1, 2\nb: {").line(&SpecPath::parse("a")), None);
    }
}
