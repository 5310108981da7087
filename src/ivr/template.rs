//! `${name}` templates in prompts, URLs, headers, bodies and `set` values.
//!
//! This module owns the template syntax and filling templates in. It knows nothing about
//! where values come from: the caller passes a lookup. Every fill produces two strings,
//! the real one (sent to the web service or the phone) and a masked one in which secure
//! values are replaced by [`MASK`] (for traces and logs), so no caller of this module can
//! forget to mask.

/// What a secure value looks like in traces, logs and records.
pub const MASK: &str = "****";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and variable names. `${` always starts a variable; a
/// `$` not followed by `{` is plain text.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("\"${{\" in \"{template}\" is never closed; write ${{name}}"))?;
        let name = &after[..end];
        if !is_name(name) {
            return Err(format!(
                "\"${{{name}}}\" is not a variable; names are letters, digits and underscores, \
                 starting with a letter or underscore"
            ));
        }
        out.push(Piece::Var(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Variable names used by a template (empty if it does not parse).
pub fn variables(template: &str) -> Vec<&str> {
    parse(template)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Whether the template uses any variable.
pub fn is_templated(template: &str) -> bool {
    template.contains("${")
}

/// A valid variable or node name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A variable's value as the lookup returns it.
pub struct Value<'a> {
    pub text: &'a str,
    pub secure: bool,
}

/// A filled-in template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filled {
    /// The real text.
    pub text: String,
    /// The text with secure values replaced by [`MASK`].
    pub masked: String,
    /// Whether any secure value went in (then `text` itself is secret).
    pub secure: bool,
}

/// How values are written into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    /// Percent-encode values (not the template's own text), for URLs.
    Url,
}

/// Fills a template. Unknown variables are empty; a template that does not parse is used
/// as plain text (the validator has already rejected such flows).
pub fn fill<'a>(
    template: &str,
    encoding: Encoding,
    lookup: impl Fn(&str) -> Option<Value<'a>>,
) -> Filled {
    let Ok(pieces) = parse(template) else {
        return Filled {
            text: template.to_string(),
            masked: template.to_string(),
            secure: false,
        };
    };
    let mut out = Filled {
        text: String::with_capacity(template.len()),
        masked: String::with_capacity(template.len()),
        secure: false,
    };
    for piece in pieces {
        match piece {
            Piece::Text(t) => {
                out.text.push_str(t);
                out.masked.push_str(t);
            }
            Piece::Var(name) => {
                let Some(v) = lookup(name) else { continue };
                let encoded = match encoding {
                    Encoding::Plain => v.text.to_string(),
                    Encoding::Url => percent_encode(v.text),
                };
                out.text.push_str(&encoded);
                if v.secure {
                    out.secure = true;
                    out.masked.push_str(MASK);
                } else {
                    out.masked.push_str(&encoded);
                }
            }
        }
    }
    out
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Value<'static>> {
        match name {
            "caller" => Some(Value {
                text: "+90 555",
                secure: false,
            }),
            "card" => Some(Value {
                text: "4111",
                secure: true,
            }),
            _ => None,
        }
    }

    #[test]
    fn fills_and_masks() {
        let f = fill(
            "from ${caller} card ${card}${nope}!",
            Encoding::Plain,
            lookup,
        );
        assert_eq!(f.text, "from +90 555 card 4111!");
        assert_eq!(f.masked, "from +90 555 card ****!");
        assert!(f.secure);
    }

    #[test]
    fn url_encodes_values_only() {
        let f = fill("http://x/?n=${caller}&a=b", Encoding::Url, lookup);
        assert_eq!(f.text, "http://x/?n=%2B90%20555&a=b");
        assert!(!f.secure);
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(parse("${open").is_err());
        assert!(parse("${9x}").is_err());
        assert!(parse("${}").is_err());
        assert_eq!(
            parse("$5 ${a_1}").unwrap(),
            vec![Piece::Text("$5 "), Piece::Var("a_1")]
        );
    }
}
