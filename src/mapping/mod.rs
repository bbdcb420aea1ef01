//! Mapping rules: turn dotted statsd names (`api.pay.POST.latency`) into a name plus tags, or
//! drop them, between parsing and key encoding.
//!
//! A table of `[[mappings]]` rules is compiled once per (re)load into [`Rules`]: every glob rule
//! into one [`glob::GlobTrie`], regex rules kept in order beside it. [`Rules::resolve`] finds
//! the first rule (in file order) matching a name and type and renders its templates; it
//! allocates, so readers call it through their own [`MappingCache`], which remembers the
//! outcome per distinct (name, type). Only metric lines are mapped; events, service checks and
//! forwarded series never come here. This module knows only [`crate::protocol`].

mod cache;
mod glob;
mod template;

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use cache::{CacheCounts, Cached, MappedKey, MappingCache, CACHE_CAPACITY};
use glob::{Glob, GlobTrie};
use template::{Captures, Template};

use crate::protocol::MetricType;

/// How `match` is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// `*` matches one or more characters other than `.`.
    #[default]
    Glob,
    /// A regular expression (`regex` crate syntax), anchored at both ends.
    Regex,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Rename and tag.
    #[default]
    Map,
    /// Drop the line (counted).
    Drop,
    /// Leave the line as it is and try no later rule.
    Keep,
}

/// `match_metric_type`, in the config's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeName {
    /// `c`.
    Counter,
    /// `g`.
    Gauge,
    /// `ms`.
    Timer,
    /// `h`.
    Histogram,
    /// `d`.
    Distribution,
    /// `s`.
    Set,
}

impl TypeName {
    /// The line type it selects.
    pub const fn kind(self) -> MetricType {
        match self {
            TypeName::Counter => MetricType::Counter,
            TypeName::Gauge => MetricType::Gauge,
            TypeName::Timer => MetricType::Timer,
            TypeName::Histogram => MetricType::Histogram,
            TypeName::Distribution => MetricType::Distribution,
            TypeName::Set => MetricType::Set,
        }
    }
}

/// One `[[mappings]]` table as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The pattern.
    #[serde(rename = "match")]
    pub pattern: String,
    /// How the pattern is read.
    #[serde(default)]
    pub match_type: MatchType,
    /// Only lines of this type; any type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_metric_type: Option<TypeName>,
    /// The new name (a template); the line's own name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tag key → value template, added to the line's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// What a match does.
    #[serde(default)]
    pub action: Action,
}

/// A rule that cannot be compiled: which one (numbered from 1), which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}, key `{key}`: {message}")]
pub struct RuleError {
    /// The rule's position in the file, from 1.
    pub rule: usize,
    /// The key at fault (`match`, `name`, `tags.route`, ...).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug)]
enum Matcher {
    Glob(Glob),
    Regex(Regex),
}

impl Captures for Matcher {
    fn count(&self) -> usize {
        match self {
            Matcher::Glob(g) => g.stars(),
            Matcher::Regex(r) => r.captures_len() - 1,
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        match self {
            Matcher::Glob(_) => None,
            Matcher::Regex(r) => r.capture_names().position(|n| n == Some(name)),
        }
    }
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    kind: Option<MetricType>,
    name: Option<Template>,
    /// Tag keys (sorted) with their value templates.
    tags: Vec<(String, Template)>,
    action: Action,
}

/// A compiled rule table.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    globs: GlobTrie,
    /// Indices of the regex rules, in order.
    regexes: Vec<usize>,
    /// The first segments a name must start with to match any rule, when every rule is a glob
    /// whose first segment is literal; `None` when a rule could match any first segment.
    first_segments: Option<hashbrown::HashSet<Box<[u8]>, foldhash::fast::FixedState>>,
    /// The first bytes of those segments, one bit each: most names are turned away by this
    /// alone, without hashing.
    first_bytes: [u64; 4],
}

/// What the rules make of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No rule matched.
    Unchanged,
    /// A `keep` rule matched (index from 0).
    Kept(usize),
    /// A `drop` rule matched (index from 0).
    Dropped(usize),
    /// A `map` rule matched.
    Mapped(Mapped),
}

/// A mapped name and the tags its rule adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The rule, from 0.
    pub rule: usize,
    /// The new name.
    pub name: String,
    /// `key:value` tags, sorted by key; a tag whose value came out empty is left out.
    pub tags: Vec<String>,
}

/// Characters a rendered name or tag may not hold (they would change how the line reads).
fn bad_char(c: char) -> bool {
    c.is_control() || matches!(c, ':' | '|' | '@' | '#' | ',')
}

impl Rules {
    /// Compiles a table; `None` when it is empty (the readers then skip mapping entirely).
    pub fn compile(configs: &[RuleConfig]) -> Result<Option<Rules>, RuleError> {
        if configs.is_empty() {
            return Ok(None);
        }
        let mut rules = Rules {
            rules: Vec::with_capacity(configs.len()),
            globs: GlobTrie::default(),
            regexes: Vec::new(),
            first_segments: Some(hashbrown::HashSet::with_hasher(
                foldhash::fast::FixedState::with_seed(0x6669_7273),
            )),
            first_bytes: [0; 4],
        };
        for (i, c) in configs.iter().enumerate() {
            let err = |key: &str, message: String| RuleError {
                rule: i + 1,
                key: key.to_owned(),
                message,
            };
            let matcher = match c.match_type {
                MatchType::Glob => {
                    Matcher::Glob(Glob::parse(&c.pattern).map_err(|m| err("match", m))?)
                }
                MatchType::Regex => Matcher::Regex(
                    Regex::new(&format!("^(?:{})$", c.pattern))
                        .map_err(|e| err("match", format!("invalid regex: {e}")))?,
                ),
            };
            if c.action != Action::Map && (c.name.is_some() || !c.tags.is_empty()) {
                let key = if c.name.is_some() { "name" } else { "tags" };
                return Err(err(
                    key,
                    "only `action = \"map\"` renames or tags".to_owned(),
                ));
            }
            let name = match &c.name {
                Some(text) => {
                    let t = Template::parse(text, &matcher).map_err(|m| err("name", m))?;
                    if t.is_empty() {
                        return Err(err("name", "the resulting name is empty".to_owned()));
                    }
                    if let Some(ch) = t.text().flat_map(str::chars).find(|&ch| bad_char(ch)) {
                        return Err(err(
                            "name",
                            format!("{ch:?} cannot be part of a metric name"),
                        ));
                    }
                    Some(t)
                }
                None => None,
            };
            let mut tags = Vec::with_capacity(c.tags.len());
            for (key, value) in &c.tags {
                let at = format!("tags.{key}");
                if key.is_empty() || key.chars().any(bad_char) {
                    return Err(err(
                        &at,
                        "a tag key must be non-empty, without control characters or `:|@#,`"
                            .to_owned(),
                    ));
                }
                let t = Template::parse(value, &matcher).map_err(|m| err(&at, m))?;
                if let Some(ch) = t
                    .text()
                    .flat_map(str::chars)
                    .find(|&ch| ch.is_control() || matches!(ch, '|' | ',' | '#'))
                {
                    return Err(err(&at, format!("{ch:?} cannot be part of a tag")));
                }
                tags.push((key.clone(), t));
            }
            let kind = c.match_metric_type.map(TypeName::kind);
            let first = c.pattern.split('.').next().unwrap_or_default();
            if c.match_type == MatchType::Regex || first.contains('*') {
                rules.first_segments = None;
            } else if let Some(set) = rules.first_segments.as_mut() {
                set.insert(first.as_bytes().into());
                let b = first.as_bytes().first().copied().unwrap_or(0);
                if let Some(word) = rules.first_bytes.get_mut(usize::from(b >> 6)) {
                    *word |= 1 << (b & 63);
                }
            }
            match &matcher {
                Matcher::Glob(g) => rules.globs.insert(g, i, kind),
                Matcher::Regex(_) => rules.regexes.push(i),
            }
            rules.rules.push(Rule {
                matcher,
                kind,
                name,
                tags,
                action: c.action,
            });
        }
        Ok(Some(rules))
    }

    /// Whether any rule could match `name`: false when every rule starts with a literal segment
    /// and none is `name`'s first. The readers' caches ask its two halves apart (the second only
    /// for a name they do not hold); the tests ask it whole.
    #[cfg(test)]
    pub fn may_match(&self, name: &[u8]) -> bool {
        self.may_match_first_byte(name) && self.may_match_first_part(name)
    }

    /// The first half of [`Rules::may_match`], one bit test: false when every rule starts with
    /// a literal segment and none with `name`'s first byte.
    #[inline]
    pub fn may_match_first_byte(&self, name: &[u8]) -> bool {
        if self.first_segments.is_none() {
            return true;
        }
        let b = name.first().copied().unwrap_or(0);
        let word = self
            .first_bytes
            .get(usize::from(b >> 6))
            .copied()
            .unwrap_or(0);
        word & (1 << (b & 63)) != 0
    }

    /// The second half of [`Rules::may_match`], a set lookup: false when every rule starts with
    /// a literal segment and none is `name`'s first.
    #[inline]
    pub fn may_match_first_part(&self, name: &[u8]) -> bool {
        match &self.first_segments {
            None => true,
            Some(set) => set.contains(name.split(|&b| b == b'.').next().unwrap_or(name)),
        }
    }

    /// How many rules the table has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table is empty (never, as compiled).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule matching `name` of type `kind` (`None`: any type filter matches), and
    /// what it makes of the name.
    pub fn resolve(&self, name: &str, kind: Option<MetricType>) -> Outcome {
        let glob = self.globs.find(name, kind).unwrap_or(usize::MAX);
        let type_ok = |r: &Rule| match (r.kind, kind) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        };
        for &i in &self.regexes {
            if i > glob {
                break;
            }
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            let Matcher::Regex(re) = &rule.matcher else {
                continue;
            };
            if !type_ok(rule) {
                continue;
            }
            if let Some(c) = re.captures(name) {
                let caps: Vec<&str> = c.iter().map(|m| m.map_or("", |m| m.as_str())).collect();
                return rule.apply(i, name, &caps);
            }
        }
        match self.rules.get(glob) {
            Some(
                rule @ Rule {
                    matcher: Matcher::Glob(g),
                    ..
                },
            ) => match g.captures(name) {
                Some(caps) => rule.apply(glob, name, &caps),
                None => Outcome::Unchanged,
            },
            _ => Outcome::Unchanged,
        }
    }

    /// `check-config --map`: what `query` (`NAME` or `NAME|TYPE`, TYPE a statsd type letter)
    /// maps to, as one line: `NAME|TYPE -> name tag:v,tag:v (rule N)`, `-> unchanged` or
    /// `-> dropped (rule N)`.
    pub fn explain(rules: Option<&Rules>, query: &str) -> Result<String, String> {
        let (name, kind) = match query.rsplit_once('|') {
            Some((name, t)) => {
                let kind = MetricType::ALL
                    .into_iter()
                    .find(|k| k.as_str() == t)
                    .ok_or_else(|| {
                        format!("{query:?}: unknown type {t:?} (one of c g ms h d s)")
                    })?;
                (name, Some(kind))
            }
            None => (query, None),
        };
        let outcome = rules.map_or(Outcome::Unchanged, |r| r.resolve(name, kind));
        Ok(match outcome {
            Outcome::Unchanged => format!("{query} -> unchanged"),
            Outcome::Kept(r) => format!("{query} -> unchanged (rule {})", r + 1),
            Outcome::Dropped(r) => format!("{query} -> dropped (rule {})", r + 1),
            Outcome::Mapped(m) if m.tags.is_empty() => {
                format!("{query} -> {} (rule {})", m.name, m.rule + 1)
            }
            Outcome::Mapped(m) => {
                format!(
                    "{query} -> {} {} (rule {})",
                    m.name,
                    m.tags.join(","),
                    m.rule + 1
                )
            }
        })
    }
}

impl Rule {
    fn apply(&self, index: usize, source: &str, caps: &[&str]) -> Outcome {
        match self.action {
            Action::Drop => return Outcome::Dropped(index),
            Action::Keep => return Outcome::Kept(index),
            Action::Map => {}
        }
        let name = match &self.name {
            Some(t) => {
                let mut out = String::new();
                t.render(caps, &mut out);
                out
            }
            None => source.to_owned(),
        };
        // A regex capture may be empty: an empty name leaves the line as it was.
        if name.is_empty() {
            return Outcome::Unchanged;
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for (key, t) in &self.tags {
            let mut tag = format!("{key}:");
            t.render(caps, &mut tag);
            if tag.len() > key.len() + 1 {
                tags.push(tag);
            }
        }
        Outcome::Mapped(Mapped {
            rule: index,
            name,
            tags,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
