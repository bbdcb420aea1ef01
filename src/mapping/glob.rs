//! Glob patterns over dotted names, and the one trie every glob rule of a table compiles into.
//!
//! A pattern is split at `.` into segments; `*` matches one or more characters other than `.`
//! (so a pattern only matches names of its own segment count). The trie has one level per
//! segment, with literal edges (a hash map), one edge for a whole-segment `*`, and a short list
//! of edges for segments that mix text and `*` (`web-*`). Looking a name up walks every edge
//! that matches, and keeps the lowest rule index found at the end of the name: the first rule
//! in the file wins, whatever the shape of the others. A subtree whose lowest rule index is not
//! below the best found so far is not entered.

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::protocol::MetricType;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// Exactly this text.
    Literal(String),
    /// `*`: the whole segment, captured.
    Star,
    /// Text and `*` mixed, e.g. `web-*` (each `*` captured).
    Mixed(Vec<Part>),
}

/// A part of a [`Segment::Mixed`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Text(String),
    Star,
}

/// A parsed glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    segments: Vec<Segment>,
    stars: usize,
}

impl Glob {
    /// Parses `pattern`. Errors: empty, `**`, characters a name cannot hold.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("the pattern is empty".to_owned());
        }
        if pattern.contains("**") {
            return Err(format!(
                "`**` in {pattern:?}: a `*` matches one or more characters, two in a row are ambiguous"
            ));
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_control() || matches!(c, ':' | '|' | '@' | '#'))
        {
            return Err(format!("{c:?} cannot be part of a metric name"));
        }
        let mut stars = 0;
        let segments = pattern
            .split('.')
            .map(|s| {
                let n = s.matches('*').count();
                stars += n;
                match (s, n) {
                    ("*", _) => Segment::Star,
                    (_, 0) => Segment::Literal(s.to_owned()),
                    _ => {
                        let mut parts = Vec::new();
                        for (i, text) in s.split('*').enumerate() {
                            if i > 0 {
                                parts.push(Part::Star);
                            }
                            if !text.is_empty() {
                                parts.push(Part::Text(text.to_owned()));
                            }
                        }
                        Segment::Mixed(parts)
                    }
                }
            })
            .collect();
        Ok(Glob { segments, stars })
    }

    /// How many `*` (captures `$1..`) the pattern has.
    pub fn stars(&self) -> usize {
        self.stars
    }

    /// The captures of `name` (index 0 = the whole name), or `None` if it does not match.
    pub fn captures<'n>(&self, name: &'n str) -> Option<SmallVec<[&'n str; 8]>> {
        let mut caps = SmallVec::new();
        caps.push(name);
        let mut segs = name.split('.');
        for pattern in &self.segments {
            let seg = segs.next()?;
            match pattern {
                Segment::Literal(l) if l == seg => {}
                Segment::Literal(_) => return None,
                Segment::Star if seg.is_empty() => return None,
                Segment::Star => caps.push(seg),
                Segment::Mixed(parts) => {
                    if !match_parts(parts, seg, &mut caps) {
                        return None;
                    }
                }
            }
        }
        segs.next().is_none().then_some(caps)
    }
}

/// Matches `seg` against `parts`, each `*` taking as much as it can (one character at least)
/// and backing off: the captures a regex `[^.]+` would give.
fn match_parts<'n>(parts: &[Part], seg: &'n str, caps: &mut SmallVec<[&'n str; 8]>) -> bool {
    match parts.split_first() {
        None => seg.is_empty(),
        Some((Part::Text(t), rest)) => seg
            .strip_prefix(t.as_str())
            .is_some_and(|tail| match_parts(rest, tail, caps)),
        Some((Part::Star, rest)) => {
            let mark = caps.len();
            for end in (1..=seg.len()).rev().filter(|&e| seg.is_char_boundary(e)) {
                caps.push(&seg[..end]);
                if match_parts(rest, &seg[end..], caps) {
                    return true;
                }
                caps.truncate(mark);
            }
            false
        }
    }
}

/// A node of the trie.
#[derive(Debug, Default)]
struct Node {
    literal: HashMap<String, usize>,
    star: Option<usize>,
    mixed: Vec<(Vec<Part>, usize)>,
    /// Rules whose pattern ends here, by rule index, with their type filter.
    ends: Vec<(usize, Option<MetricType>)>,
    /// The lowest rule index at or below this node.
    min_rule: usize,
}

/// Every glob rule of a table in one trie.
#[derive(Debug)]
pub struct GlobTrie {
    nodes: Vec<Node>,
}

impl Default for GlobTrie {
    fn default() -> Self {
        GlobTrie {
            nodes: vec![Node {
                min_rule: usize::MAX,
                ..Node::default()
            }],
        }
    }
}

impl GlobTrie {
    /// Adds rule `rule` (added in increasing order).
    pub fn insert(&mut self, glob: &Glob, rule: usize, kind: Option<MetricType>) {
        let mut at = 0;
        self.touch(at, rule);
        for seg in &glob.segments {
            let existing = match seg {
                Segment::Literal(l) => self.nodes[at].literal.get(l).copied(),
                Segment::Star => self.nodes[at].star,
                Segment::Mixed(parts) => self.nodes[at]
                    .mixed
                    .iter()
                    .find(|(p, _)| p == parts)
                    .map(|(_, n)| *n),
            };
            let next = match existing {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node {
                        min_rule: usize::MAX,
                        ..Node::default()
                    });
                    let node = &mut self.nodes[at];
                    match seg {
                        Segment::Literal(l) => {
                            node.literal.insert(l.clone(), n);
                        }
                        Segment::Star => node.star = Some(n),
                        Segment::Mixed(parts) => node.mixed.push((parts.clone(), n)),
                    }
                    n
                }
            };
            at = next;
            self.touch(at, rule);
        }
        self.nodes[at].ends.push((rule, kind));
    }

    fn touch(&mut self, node: usize, rule: usize) {
        let n = &mut self.nodes[node];
        n.min_rule = n.min_rule.min(rule);
    }

    /// The lowest-index rule matching `name` and `kind` (`None` as kind: any type filter
    /// matches).
    pub fn find(&self, name: &str, kind: Option<MetricType>) -> Option<usize> {
        let segs: SmallVec<[&str; 16]> = name.split('.').collect();
        let mut best = usize::MAX;
        self.walk(0, &segs, kind, &mut best);
        (best != usize::MAX).then_some(best)
    }

    fn walk(&self, node: usize, segs: &[&str], kind: Option<MetricType>, best: &mut usize) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        if n.min_rule >= *best {
            return;
        }
        let Some((seg, rest)) = segs.split_first() else {
            let hit = n.ends.iter().find(|(_, k)| match (k, kind) {
                (Some(want), Some(got)) => *want == got,
                _ => true,
            });
            if let Some(&(rule, _)) = hit {
                *best = (*best).min(rule);
            }
            return;
        };
        if let Some(&next) = n.literal.get(*seg) {
            self.walk(next, rest, kind, best);
        }
        if let (Some(next), false) = (n.star, seg.is_empty()) {
            self.walk(next, rest, kind, best);
        }
        for (parts, next) in &n.mixed {
            if match_parts(parts, seg, &mut SmallVec::new()) {
                self.walk(*next, rest, kind, best);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, name: &str) -> Option<Vec<String>> {
        let g = Glob::parse(pattern).unwrap();
        g.captures(name)
            .map(|c| c.iter().skip(1).map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn stars_take_one_segment_of_one_or_more_characters() {
        assert_eq!(
            caps(
                "test.dispatcher.*.*.*",
                "test.dispatcher.FooProcessor.send.succeeded"
            ),
            Some(vec![
                "FooProcessor".into(),
                "send".into(),
                "succeeded".into()
            ])
        );
        assert_eq!(
            caps("*.*", "foo.bar"),
            Some(vec!["foo".into(), "bar".into()])
        );
        // The segment count must agree; an empty segment matches no `*`.
        assert_eq!(caps("*.*", "foo.bar.baz"), None);
        assert_eq!(caps("*.*", "foo"), None);
        assert_eq!(caps("a.*", "a."), None);
        assert_eq!(caps("a.b", "a.b"), Some(vec![]));
        assert_eq!(caps("a.b", "a.c"), None);
    }

    #[test]
    fn mixed_segments_capture_like_a_greedy_regex() {
        assert_eq!(caps("web-*.cpu", "web-01.cpu"), Some(vec!["01".into()]));
        assert_eq!(caps("web-*.cpu", "web-.cpu"), None);
        assert_eq!(
            caps("*_*.x", "a_b_c.x"),
            Some(vec!["a_b".into(), "c".into()])
        );
        assert_eq!(caps("*-count", "é-count"), Some(vec!["é".into()]));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a.**").is_err());
        assert!(Glob::parse("a|b").is_err());
        assert!(Glob::parse("a:b").is_err());
    }

    fn trie(patterns: &[(&str, Option<MetricType>)]) -> GlobTrie {
        let mut t = GlobTrie::default();
        for (i, (p, k)) in patterns.iter().enumerate() {
            t.insert(&Glob::parse(p).unwrap(), i, *k);
        }
        t
    }

    #[test]
    fn the_first_rule_in_order_wins() {
        // statsd_exporter's ordering cases: a general rule before a specific one wins.
        let t = trie(&[("order.*.*", None), ("order.*.bbb", None)]);
        assert_eq!(t.find("order.good.bbb", None), Some(0));
        let t = trie(&[("noorder.*.bbb", None), ("noorder.ccc.bbb", None)]);
        assert_eq!(t.find("noorder.ccc.bbb", None), Some(0));
        let t = trie(&[("x.ccc.bbb", None), ("x.*.bbb", None), ("x.*.*", None)]);
        assert_eq!(t.find("x.ccc.bbb", None), Some(0));
        assert_eq!(t.find("x.ddd.bbb", None), Some(1));
        assert_eq!(t.find("x.ddd.eee", None), Some(2));
        assert_eq!(t.find("x.ddd", None), None);
        // Backtracking: `*.dummy.*` is tried, fails on `name`, then `full.name.*` matches.
        let t = trie(&[("*.dummy.*", None), ("full.name.*", None)]);
        assert_eq!(t.find("full.name.anothertest", None), Some(1));
        assert_eq!(t.find("whatever.dummy.test", None), Some(0));
        let t = trie(&[("backtrack.*.bbb", None), ("backtrack.justatest.aaa", None)]);
        assert_eq!(t.find("backtrack.justatest.bbb", None), Some(0));
        assert_eq!(t.find("backtrack.justatest.aaa", None), Some(1));
    }

    #[test]
    fn type_filters_skip_to_the_next_rule() {
        use MetricType::{Counter, Timer};
        let t = trie(&[("a.*", Some(Timer)), ("a.*", Some(Counter)), ("*.*", None)]);
        assert_eq!(t.find("a.b", Some(Timer)), Some(0));
        assert_eq!(t.find("a.b", Some(Counter)), Some(1));
        assert_eq!(t.find("a.b", Some(MetricType::Gauge)), Some(2));
        assert_eq!(t.find("a.b", None), Some(0));
    }

    /// One trie of a thousand rules answers as trying each rule in order would.
    #[test]
    fn a_large_table_agrees_with_trying_each_rule() {
        let mut patterns = Vec::new();
        for i in 0..1000 {
            patterns.push(match i % 4 {
                0 => format!("svc{}.*.requests", i % 50),
                1 => format!("svc{}.*.*", i % 50),
                2 => format!("*.host{}.cpu", i % 30),
                _ => format!("svc{}.db-*.latency", i % 50),
            });
        }
        let globs: Vec<Glob> = patterns.iter().map(|p| Glob::parse(p).unwrap()).collect();
        let mut t = GlobTrie::default();
        for (i, g) in globs.iter().enumerate() {
            t.insert(g, i, None);
        }
        let mut names = Vec::new();
        for i in 0..200 {
            names.push(format!("svc{}.x{}.requests", i % 60, i));
            names.push(format!("svc{}.host{}.cpu", i % 60, i % 40));
            names.push(format!("svc{}.db-{}.latency", i % 60, i));
            names.push(format!("other{i}.a.b.c"));
        }
        for n in &names {
            let want = globs.iter().position(|g| g.captures(n).is_some());
            assert_eq!(t.find(n, None), want, "{n}");
        }
    }
}
