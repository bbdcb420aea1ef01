//! Name and tag-value templates: literal text with `$1`, `${1}` and `${name}` references to a
//! rule's captures, parsed and checked against the rule's pattern once, at load.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text copied as it is.
    Text(String),
    /// The capture of this index (0 = the whole name).
    Capture(usize),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a template may refer to: the pattern's capture count (not counting the whole match)
/// and, for a regex, its group names.
pub trait Captures {
    /// Captures `$1..=$N`.
    fn count(&self) -> usize;
    /// The index of the named group `name`, if there is one.
    fn index_of(&self, name: &str) -> Option<usize>;
}

impl Template {
    /// Parses `text`: `$N` (digits, as many as follow), `${N}`, `${name}`, `$$` for a `$`.
    /// Errors say what is wrong in words (the caller names the rule and key).
    pub fn parse(text: &str, caps: &dyn Captures) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (reference, tail) = if let Some(braced) = after.strip_prefix('{') {
                let Some(close) = braced.find('}') else {
                    return Err(format!("`${{` without a closing `}}` in {text:?}"));
                };
                (&braced[..close], &braced[close + 1..])
            } else if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
                continue;
            } else {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return Err(format!(
                        "a `$` must be followed by a capture number, `{{name}}` or `$` in {text:?}"
                    ));
                }
                after.split_at(digits)
            };
            let index = match reference.parse::<usize>() {
                Ok(n) if n <= caps.count() => n,
                Ok(n) => {
                    return Err(format!(
                        "capture ${n} does not exist (the pattern has {})",
                        caps.count()
                    ))
                }
                Err(_) => caps
                    .index_of(reference)
                    .ok_or_else(|| format!("capture `{reference}` does not exist"))?,
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Capture(index));
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Whether the template is empty text.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The literal text, for checking it (captures come from a valid name).
    pub fn text(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            Piece::Capture(_) => None,
        })
    }

    /// Appends the template with `caps` (index 0 = the whole name; a missing one is empty).
    pub fn render(&self, caps: &[&str], out: &mut String) {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Capture(i) => out.push_str(caps.get(*i).copied().unwrap_or("")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Caps(usize, &'static [&'static str]);
    impl Captures for Caps {
        fn count(&self) -> usize {
            self.0
        }
        fn index_of(&self, name: &str) -> Option<usize> {
            self.1.iter().position(|n| *n == name).map(|i| i + 1)
        }
    }

    fn render(t: &str, caps: &[&str]) -> Result<String, String> {
        let t = Template::parse(t, &Caps(caps.len() - 1, &["route", "code"]))?;
        let mut out = String::new();
        t.render(caps, &mut out);
        Ok(out)
    }

    #[test]
    fn references_in_every_form() {
        let caps = ["api.pay.200", "pay", "200"];
        assert_eq!(
            render("api.${1}.latency", &caps).unwrap(),
            "api.pay.latency"
        );
        assert_eq!(render("$1_$2", &caps).unwrap(), "pay_200");
        // Digits run on: `$1_foo` is capture 1 then `_foo` (statsd_exporter would read a group
        // named `1_foo`).
        assert_eq!(render("$1_foo", &caps).unwrap(), "pay_foo");
        assert_eq!(render("${route}/${code}", &caps).unwrap(), "pay/200");
        assert_eq!(render("$0", &caps).unwrap(), "api.pay.200");
        assert_eq!(render("cost$$", &caps).unwrap(), "cost$");
        assert_eq!(render("plain", &caps).unwrap(), "plain");
        assert!(Template::parse("", &Caps(0, &[])).unwrap().is_empty());
    }

    #[test]
    fn missing_captures_are_errors() {
        let caps = ["a.b", "a", "b"];
        assert!(render("$3", &caps)
            .unwrap_err()
            .contains("$3 does not exist"));
        assert!(render("${x}", &caps)
            .unwrap_err()
            .contains("`x` does not exist"));
        assert!(render("${1", &caps).unwrap_err().contains("closing"));
        assert!(render("a$", &caps)
            .unwrap_err()
            .contains("must be followed"));
        assert!(render("$x", &caps)
            .unwrap_err()
            .contains("must be followed"));
    }
}
