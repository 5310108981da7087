//! Wire bytes ⇄ SIP messages, and the header accessors the rest of the stack relies on.
//!
//! `rsip` does the tokenising, but it trusts its input too much: it does not expand compact
//! header names (`v:`, `i:` …), does not split comma-joined Via/Contact/Route values, and
//! takes whatever follows the blank line as the body. [`parse`] therefore normalises the head
//! first and enforces Content-Length, so no layer above ever sees a header rsip misread.

use std::net::{IpAddr, SocketAddr};

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::prelude::HeadersExt;
use rsip::{Header, Method, Request, Response, SipMessage};

/// Why a datagram or stream chunk is not a SIP message we can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no blank line ends the header section")]
    NoHeaderEnd,
    #[error("the message is not valid UTF-8 in its headers")]
    NotText,
    #[error("Content-Length says {declared} bytes but {actual} arrived")]
    Truncated { declared: usize, actual: usize },
    #[error("Content-Length \"{0}\" is not a number")]
    BadContentLength(String),
    #[error("malformed header line: {0:?}")]
    BadHeaderLine(String),
    #[error("{0}")]
    Syntax(String),
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    #[error("SIP version {0} is not supported")]
    Version(String),
}

impl ParseError {
    /// The status a request that failed this way is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            _ => 400,
        }
    }
}

/// RFC 3261 §7.3.3 compact forms.
fn expand_compact(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "i" => "Call-ID",
        "m" => "Contact",
        "f" => "From",
        "t" => "To",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "e" => "Content-Encoding",
        "s" => "Subject",
        "k" => "Supported",
        "o" => "Event",
        "r" => "Refer-To",
        "b" => "Referred-By",
        "u" => "Allow-Events",
        "x" => "Session-Expires",
        "a" => "Accept-Contact",
        "j" => "Reject-Contact",
        "d" => "Request-Disposition",
        "y" => "Identity",
        _ => return None,
    })
}

/// Headers whose comma-joined values are separate entries that rsip would treat as one.
fn is_list_header(name: &str) -> bool {
    ["via", "contact", "route", "record-route", "path"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers whose parameters rsip reads only when written without optional whitespace.
fn is_param_header(name: &str) -> bool {
    [
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "from",
        "to",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Removes the optional whitespace RFC 3261 allows around `;`, `=` (and `/` in Via's
/// sent-protocol) outside quoted strings, e.g. `SIP / 2.0 / UDP host ; branch = x`.
fn tighten(value: &str, is_via: bool) -> String {
    let tight = |c: char| c == ';' || c == '=' || (is_via && c == '/');
    let mut out = String::with_capacity(value.len());
    let (mut quoted, mut escaped, mut pending_space) = (false, false, false);
    for ch in value.chars() {
        if quoted {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                quoted = false;
            }
            continue;
        }
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !tight(ch) && !out.is_empty() && !out.ends_with(tight) {
            out.push(' ');
        }
        pending_space = false;
        if ch == '"' {
            quoted = true;
        }
        out.push(ch);
    }
    out
}

/// Splits a header value at top-level commas (not inside quotes or `<...>`).
pub fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0i32, false, false, 0usize);
    for (i, ch) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// Finds the end of the header section: the index after the blank line, and the head length.
pub fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    // Bare-LF messages are tolerated (RFC 4475 is lenient about this for receivers).
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Normalises a complete message (one datagram, or one frame cut from a stream) and parses it.
pub fn parse(raw: &[u8]) -> Result<SipMessage, ParseError> {
    let (head_len, body_start) = header_end(raw).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&raw[..head_len]).map_err(|_| ParseError::NotText)?;
    let head = encode_v6_references(head);
    let mut body = &raw[body_start..];

    // Unfold continuation lines, then rewrite each header in canonical form.
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) && !lines.is_empty() {
            let last = lines.last_mut().expect("checked non-empty");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            lines.push(line.to_string());
        }
    }
    let mut lines = lines.into_iter();
    let start_line = lines.next().unwrap_or_default();
    if start_line.trim().is_empty() {
        return Err(ParseError::Syntax("empty start line".into()));
    }
    let start_line = normalize_start_line(&start_line)?;
    let mut out = String::with_capacity(raw.len() + 64);
    out.push_str(&start_line);
    out.push_str("\r\n");
    let mut content_length = None;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::BadHeaderLine(line.clone()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::BadHeaderLine(line.clone()));
        }
        let name = expand_compact(name).unwrap_or(name);
        let value = value.trim();
        if name.eq_ignore_ascii_case("Content-Length") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| ParseError::BadContentLength(value.to_string()))?;
            content_length = Some(n);
            continue; // re-emitted below from the body we actually keep
        }
        let tightened;
        let value = if is_param_header(name) {
            tightened = tighten(value, name.eq_ignore_ascii_case("via"));
            tightened.as_str()
        } else {
            value
        };
        if is_list_header(name) {
            for part in split_list(value) {
                out.push_str(name);
                out.push_str(": ");
                out.push_str(part);
                out.push_str("\r\n");
            }
        } else {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
    }
    if let Some(n) = content_length {
        if n > body.len() {
            return Err(ParseError::Truncated {
                declared: n,
                actual: body.len(),
            });
        }
        // Over UDP, bytes past Content-Length are discarded (RFC 3261 §18.3).
        body = &body[..n];
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let msg =
        SipMessage::try_from(bytes).map_err(|e| ParseError::Syntax(first_line(&e.to_string())))?;
    // rsip must have read the message as framed here (found by the fuzzer: a start line
    // it misread took part of the body for headers).
    let kept = match &msg {
        SipMessage::Request(r) => &r.body,
        SipMessage::Response(r) => &r.body,
    };
    if kept.as_slice() != body {
        return Err(ParseError::Syntax(
            "the message does not read as one start line, headers and a body".into(),
        ));
    }
    check_mandatory(&msg)?;
    Ok(msg)
}

fn first_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or(s);
    s.chars().take(160).collect()
}

/// Checks the version and escapes what rsip cannot read in a Request-URI.
fn normalize_start_line(line: &str) -> Result<String, ParseError> {
    let line = line.trim();
    let parts: Vec<&str> = line.split_whitespace().collect();
    let is_response = parts.first().is_some_and(|p| p.starts_with("SIP/"));
    let version = if is_response {
        parts.first()
    } else {
        parts.get(2)
    };
    if let Some(v) = version {
        if v.starts_with("SIP/") && !v.eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::Version(v.to_string()));
        }
    }
    if is_response {
        // Status-Code is three digits (RFC 3261 §25.1), 100–699 (§21): anything else
        // ("002", "4294967301") would be read as some other code and written back so.
        let code = parts.get(1).copied().unwrap_or_default();
        let valid = code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
            && (b'1'..=b'6').contains(&code.as_bytes()[0]);
        if !valid {
            return Err(ParseError::Syntax(format!(
                "status code {code:?} is not 100-699"
            )));
        }
        return Ok(line.to_string());
    }
    match parts.get(2) {
        Some(v) if v.eq_ignore_ascii_case("SIP/2.0") && parts.len() == 3 => {}
        _ => {
            return Err(ParseError::Syntax(
                "a request line is METHOD URI SIP/2.0".to_string(),
            ))
        }
    }
    Ok(format!(
        "{} {} {}",
        parts[0],
        escape_user_part(parts[1]),
        parts[2]
    ))
}

/// RFC 3261 allows `;`, `?` and `.` unescaped in a SIP URI's user part (RFC 4475
/// "semiuri"); rsip reads the first two as the start of parameters and stops its user at a
/// dot, so they are percent-escaped, which RFC 3261 §19.1.4 defines as the same URI.
pub fn escape_user_part(uri: &str) -> String {
    let lower = uri.to_ascii_lowercase();
    let Some(scheme_end) = ["sip:", "sips:"]
        .iter()
        .find(|s| lower.starts_with(*s))
        .map(|s| s.len())
    else {
        return uri.to_string();
    };
    let Some(at) = uri[scheme_end..].rfind('@').map(|i| i + scheme_end) else {
        return uri.to_string();
    };
    let user = &uri[scheme_end..at];
    if !user.contains([';', '?', '.']) {
        return uri.to_string();
    }
    format!(
        "{}{}{}",
        &uri[..scheme_end],
        user.replace(';', "%3B")
            .replace('?', "%3F")
            .replace('.', "%2E"),
        &uri[at..]
    )
}

/// Headers that may appear once only; two of them make a message ambiguous (RFC 4475 multi01).
const SINGLE: [(&str, &str); 5] = [
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("max-forwards", "Max-Forwards"),
];

/// A request or response without these cannot be matched to a transaction or dialog.
fn check_mandatory(msg: &SipMessage) -> Result<(), ParseError> {
    let headers = match msg {
        SipMessage::Request(r) => &r.headers,
        SipMessage::Response(r) => &r.headers,
    };
    for (lower, name) in SINGLE {
        let count = headers
            .iter()
            .filter(|h| {
                let text = h.to_string();
                text.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(lower))
            })
            .count();
        if count > 1 {
            return Err(ParseError::Duplicate(name));
        }
    }
    if msg.via_header().is_err() {
        return Err(ParseError::Missing("Via"));
    }
    if msg.from_header().is_err() {
        return Err(ParseError::Missing("From"));
    }
    if msg.to_header().is_err() {
        return Err(ParseError::Missing("To"));
    }
    if msg.call_id_header().is_err() {
        return Err(ParseError::Missing("Call-ID"));
    }
    let cseq = msg
        .cseq_header()
        .map_err(|_| ParseError::Missing("CSeq"))?
        .typed()
        .map_err(|_| ParseError::Syntax("CSeq is not \"number METHOD\"".into()))?;
    if let SipMessage::Request(r) = msg {
        if cseq.method != r.method {
            return Err(ParseError::Syntax(format!(
                "CSeq method {} does not match the request method {}",
                cseq.method, r.method
            )));
        }
    }
    msg.via_header()
        .and_then(|v| v.typed())
        .map_err(|_| ParseError::Syntax("the top Via cannot be parsed".into()))?;
    Ok(())
}

/// The 400 (or 505, 413…) for a request that failed to parse, built from the few headers
/// a response needs and nothing else, with the reason in a Warning; `None` when not even
/// those can be read (then the request is only logged). Returns the salvaged request too,
/// for where the response goes.
pub fn bad_request_response(raw: &[u8], e: &ParseError) -> Option<(Request, Response)> {
    let text = String::from_utf8_lossy(raw);
    let head = encode_v6_references(text.split("\r\n\r\n").next().unwrap_or(""));
    let mut keep = String::new();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("").trim().to_string();
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str()) {
            keep.push_str(line.trim());
            keep.push_str("\r\n");
        }
    }
    // Answer with our version and a URI rsip can read, whatever the request had.
    let method = first.split_whitespace().next().unwrap_or("OPTIONS");
    let salvage = format!("{method} sip:invalid SIP/2.0\r\n{keep}Content-Length: 0\r\n\r\n");
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(salvage.as_str()) else {
        return None;
    };
    req.via_header().ok()?;
    let mut resp = response_to(&req, e.status(), None);
    let reason: String = e
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    resp.headers
        .push(Header::Warning(rsip::headers::Warning::new(format!(
            "399 switchboard \"{}\"",
            reason.replace('"', "'")
        ))));
    Some((req, resp))
}

/// Best effort: the top Via of bytes that failed to parse, so a 400 can still be sent back.
/// Only used when the start line is a request line.
pub fn is_request_line(raw: &[u8]) -> bool {
    let first = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    matches!((parts.next(), parts.next(), parts.next()), (Some(m), Some(_), Some(v))
        if v.starts_with("SIP/") && m.chars().all(|c| c.is_ascii_uppercase()))
        && !first.starts_with("ACK ")
}

/// Serialises a message for the wire, with a correct Content-Length.
pub fn to_bytes(msg: &SipMessage) -> Vec<u8> {
    let text = msg.to_string();
    // rsip prints the body as (lossy) text; the body goes out as the bytes it is, so a
    // body that is not UTF-8 keeps its length and its Content-Length stays true.
    let head_end = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let head = &text[..head_end];
    let mut out = if head.contains(V6_SUFFIX) {
        decode_v6_hosts(head).into_bytes()
    } else {
        head.as_bytes().to_vec()
    };
    let body = match msg {
        SipMessage::Request(r) => &r.body,
        SipMessage::Response(r) => &r.body,
    };
    out.extend_from_slice(body);
    out
}

// rsip splits `host:port` at the first colon, so it cannot read an IPv6 reference such as
// `[::1]:5060` anywhere. At the wire boundary each bracketed IPv6 address in the header
// section becomes a host name `0-0-0-0-0-0-0-1.ip6.invalid` (`.invalid` can never be a real
// name, RFC 6761) and back again when a message is serialised; nothing between sees brackets.
const V6_SUFFIX: &str = ".ip6.invalid";

fn encode_v6(v6: std::net::Ipv6Addr) -> String {
    let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
    format!("{}{V6_SUFFIX}", groups.join("-"))
}

/// `[2001:db8::1]` → `2001-db8-0-0-0-0-0-1.ip6.invalid` throughout a header section.
pub(crate) fn encode_v6_references(head: &str) -> std::borrow::Cow<'_, str> {
    if !head.contains('[') {
        return std::borrow::Cow::Borrowed(head);
    }
    let mut out = String::with_capacity(head.len() + 32);
    let mut rest = head;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']').and_then(|close| {
            after[..close]
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|a| (a, close))
        }) {
            Some((addr, close)) => {
                out.push_str(&encode_v6(addr));
                rest = &after[close + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The inverse of [`encode_v6_references`].
fn decode_v6_hosts(head: &str) -> String {
    let mut out = String::with_capacity(head.len());
    let mut rest = head;
    while let Some(at) = rest.find(V6_SUFFIX) {
        let before = &rest[..at];
        // The encoded address is the run of ASCII hex digits and dashes before the suffix;
        // whatever precedes it may be any UTF-8 a peer sent.
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_hexdigit() || *c == '-'))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let groups: Option<Vec<u16>> = before[start..]
            .split('-')
            .map(|g| u16::from_str_radix(g, 16).ok())
            .collect();
        match groups.filter(|g| g.len() == 8) {
            Some(g) => {
                let addr = std::net::Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
                out.push_str(&before[..start]);
                out.push_str(&format!("[{addr}]"));
            }
            None => {
                out.push_str(before);
                out.push_str(V6_SUFFIX);
            }
        }
        rest = &rest[at + V6_SUFFIX.len()..];
    }
    out.push_str(rest);
    out
}

// ---- Accessors ----

pub fn call_id(msg: &SipMessage) -> String {
    msg.call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default()
}

pub fn cseq(msg: &SipMessage) -> (u32, Method) {
    msg.cseq_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .map(|c| (c.seq, c.method))
        .unwrap_or((0, Method::Options))
}

pub fn top_via(msg: &SipMessage) -> Option<rsip::typed::Via> {
    msg.via_header().ok()?.typed().ok()
}

pub fn branch(msg: &SipMessage) -> String {
    top_via(msg)
        .and_then(|v| v.branch().map(|b| b.to_string()))
        .unwrap_or_default()
}

pub fn from_tag(msg: &SipMessage) -> Option<String> {
    msg.from_header()
        .ok()?
        .typed()
        .ok()?
        .tag()
        .map(|t| t.to_string())
}

pub fn to_tag(msg: &SipMessage) -> Option<String> {
    msg.to_header()
        .ok()?
        .typed()
        .ok()?
        .tag()
        .map(|t| t.to_string())
}

pub fn from_uri(msg: &SipMessage) -> Option<rsip::Uri> {
    Some(msg.from_header().ok()?.typed().ok()?.uri)
}

pub fn to_uri(msg: &SipMessage) -> Option<rsip::Uri> {
    Some(msg.to_header().ok()?.typed().ok()?.uri)
}

/// The first value of a header rsip does not know (kept as `Header::Other`).
pub fn other_header<'a>(headers: &'a rsip::Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| match h {
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
        _ => None,
    })
}

pub fn content_type(msg: &SipMessage) -> Option<String> {
    let headers = match msg {
        SipMessage::Request(r) => &r.headers,
        SipMessage::Response(r) => &r.headers,
    };
    headers.iter().find_map(|h| match h {
        Header::ContentType(c) => Some(c.value().to_ascii_lowercase()),
        _ => None,
    })
}

/// Where a response to this request must go: the top Via's `received`/`rport`
/// (RFC 3581) as filled in on arrival, else its sent-by.
pub fn response_target(req: &Request, source: SocketAddr) -> SocketAddr {
    let Some(via) = req.via_header().ok().and_then(|v| v.typed().ok()) else {
        return source;
    };
    let mut ip = source.ip();
    let mut port = None;
    for p in &via.params {
        match p {
            rsip::Param::Received(r) => {
                if let Ok(r) = r.value().parse::<IpAddr>() {
                    ip = r;
                }
            }
            rsip::Param::Other(k, Some(v)) if k.value().eq_ignore_ascii_case("rport") => {
                port = v.value().parse().ok();
            }
            _ => {}
        }
    }
    let port = port
        .or_else(|| via.uri.host_with_port.port.map(|p| *p.value()))
        .unwrap_or(5060);
    SocketAddr::new(ip, port)
}

/// On arrival: stamp the top Via with `received` (RFC 3261 §18.2.1) and, when the client
/// asked for it with an empty `rport`, the source port (RFC 3581 §4), so responses find
/// their way back through NAT.
pub fn stamp_received(req: &mut Request, source: SocketAddr) {
    let Some(pos) = req.headers.iter().position(|h| matches!(h, Header::Via(_))) else {
        return;
    };
    let Some(Header::Via(via)) = req.headers.iter().nth(pos).cloned() else {
        return;
    };
    let Ok(mut typed) = via.typed() else { return };
    let is_rport = |p: &rsip::Param| matches!(p, rsip::Param::Other(k, _) if k.value().eq_ignore_ascii_case("rport"));
    let wants_rport = typed.params.iter().any(is_rport);
    typed
        .params
        .retain(|p| !matches!(p, rsip::Param::Received(_)) && !is_rport(p));
    typed
        .params
        .push(rsip::Param::Received(rsip::param::Received::new(
            source.ip().to_string(),
        )));
    if wants_rport {
        typed.params.push(rsip::Param::Other(
            rsip::param::OtherParam::new("rport"),
            Some(rsip::param::OtherParamValue::new(source.port().to_string())),
        ));
    }
    if let Some(h) = req.headers.iter_mut().nth(pos) {
        *h = Header::Via(typed.into());
    }
}

/// A response to `req` carrying its Via, From, To (with `to_tag` if given), Call-ID and CSeq.
pub fn response_to(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::RecordRoute(_) if (101..300).contains(&code) => headers.push(h.clone()),
            Header::To(to) => {
                let mut to = to.clone();
                if let Some(tag) = to_tag {
                    if !to.value().to_ascii_lowercase().contains(";tag=") {
                        to = rsip::headers::To::new(format!("{};tag={tag}", to.value()));
                    }
                }
                headers.push(Header::To(to));
            }
            _ => {}
        }
    }
    headers.push(Header::Server(rsip::headers::Server::new("Switchboard")));
    Response {
        status_code: rsip::StatusCode::from(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Sets the body and its Content-Type; Content-Length is added on serialisation by `finish`.
pub fn set_body(headers: &mut rsip::Headers, body: &mut Vec<u8>, content_type: &str, new: Vec<u8>) {
    headers.retain(|h| !matches!(h, Header::ContentType(_) | Header::ContentLength(_)));
    if !new.is_empty() {
        headers.push(Header::ContentType(rsip::headers::ContentType::new(
            content_type,
        )));
    }
    *body = new;
}

/// Adds the Content-Length matching the body (replacing any other) before sending.
pub fn finish(msg: &mut SipMessage) {
    let (headers, len) = match msg {
        SipMessage::Request(r) => (&mut r.headers, r.body.len()),
        SipMessage::Response(r) => (&mut r.headers, r.body.len()),
    };
    headers.retain(|h| !matches!(h, Header::ContentLength(_)));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        len.to_string(),
    )));
}

/// A fresh RFC 3261 branch (magic cookie prefix) or tag.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

pub fn new_tag() -> String {
    random_token(10)
}

pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `host` for a URI or Via: IPv6 in brackets.
/// The host of a URI or Via for `ip`. IPv6 uses the internal host-name form that
/// [`to_bytes`] turns back into a bracketed reference on the wire.
pub fn host_str(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => encode_v6(v6),
        v4 => v4.to_string(),
    }
}

/// An INVITE to `uri` with `headers` and an SDP offer.
pub fn invite_with_sdp(uri: rsip::Uri, headers: rsip::Headers, sdp: String) -> rsip::Request {
    let mut req = rsip::Request {
        method: rsip::Method::Invite,
        uri,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    set_body(
        &mut req.headers,
        &mut req.body,
        "application/sdp",
        sdp.into_bytes(),
    );
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4475 §3.1.1.2 style: compact forms, folded lines, comma-joined Via.
    const WSINV: &str = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n\
TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
MaX-fOrWaRdS: 0068\r\n\
Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
Content-Length   : 150\r\n\
cseq: 0009\r\n  INVITE\r\n\
Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
s :\r\n\
NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\
Content-Type: application/sdp\r\n\
Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n\
v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n\
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\n\
v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";

    const COMPACT: &[u8] = b"INVITE sip:2001@127.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1,SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa0\r\n\
f: <sip:caller@127.0.0.1>;tag=abc\r\n\
t: <sip:2001@127.0.0.1>\r\n\
i: compact-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:caller@127.0.0.1:5070>, <sip:caller@127.0.0.1:5072>\r\n\
l: 4\r\n\r\nabcdEXTRA";

    #[test]
    fn compact_forms_and_lists_are_expanded() {
        let SipMessage::Request(r) = parse(COMPACT).unwrap() else {
            panic!()
        };
        let msg = SipMessage::Request(r.clone());
        assert_eq!(call_id(&msg), "compact-1@127.0.0.1");
        assert_eq!(branch(&msg), "z9hG4bKa1");
        assert_eq!(from_tag(&msg).as_deref(), Some("abc"));
        let vias = r
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .count();
        assert_eq!(vias, 2);
        assert_eq!(r.contact_headers().len(), 2);
        // Bytes past Content-Length are discarded.
        assert_eq!(r.body, b"abcd");
    }

    #[test]
    fn rfc4475_wide_range_of_valid_elements() {
        // RFC 4475 §3.1.1.1 says Content-Length 150 for this body; count ours exactly.
        let body_len = WSINV.split("\r\n\r\n").nth(1).unwrap().len();
        let raw = WSINV.replace(
            "Content-Length   : 150",
            &format!("Content-Length   : {body_len}"),
        );
        let msg = parse(raw.as_bytes()).unwrap();
        assert_eq!(call_id(&msg), "wsinv.ndaksdj@192.0.2.1");
        assert_eq!(cseq(&msg), (9, Method::Invite));
        let SipMessage::Request(r) = msg else {
            panic!()
        };
        let vias: Vec<_> = r
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .collect();
        assert_eq!(vias.len(), 3, "{vias:?}");
    }

    #[test]
    fn truncated_and_broken_messages_are_refused() {
        let short = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nContent-Length: 50\r\n\r\nhi";
        assert!(matches!(
            parse(short),
            Err(ParseError::Truncated {
                declared: 50,
                actual: 2
            })
        ));
        assert_eq!(parse(b"garbage"), Err(ParseError::NoHeaderEnd));
        let no_colon = b"OPTIONS sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP 1.2.3.4\r\n\r\n";
        assert!(matches!(parse(no_colon), Err(ParseError::BadHeaderLine(_))));
        let no_callid = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(parse(no_callid), Err(ParseError::Missing("Call-ID")));
        let random: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(parse(&random).is_err());
    }

    #[test]
    fn received_and_rport_route_the_response() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;rport;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let SipMessage::Request(mut r) = parse(raw).unwrap() else {
            panic!()
        };
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        stamp_received(&mut r, src);
        assert_eq!(response_target(&r, src), src);
        let resp = response_to(&r, 200, Some("t1"));
        let text = resp.to_string();
        assert!(text.contains("received=127.0.0.1"), "{text}");
        assert!(text.contains("rport=40000"), "{text}");
        assert!(text.contains("tag=t1"), "{text}");
        // Without rport, the response goes to the sent-by port at the received address.
        let raw = String::from_utf8(raw.to_vec())
            .unwrap()
            .replace(";rport", "");
        let SipMessage::Request(mut r) = parse(raw.as_bytes()).unwrap() else {
            panic!()
        };
        stamp_received(&mut r, src);
        assert_eq!(response_target(&r, src), "127.0.0.1:5062".parse().unwrap());
        assert!(!r.to_string().contains("rport"));
    }

    #[test]
    fn rfc4475_semiuri_duplicates_and_version() {
        let semi = b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\r\nTo: sip:j_user@example.com\r\nFrom: sip:caller@example.org;tag=33242\r\nMax-Forwards: 3\r\nCall-ID: semiuri.0ha0isndaksdj\r\nCSeq: 8 OPTIONS\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\r\nl: 0\r\n\r\n";
        let SipMessage::Request(r) = parse(semi).unwrap() else {
            panic!()
        };
        assert_eq!(r.uri.host().to_string(), "example.com");
        let multi = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nFrom: <sip:c@d>;tag=2\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(parse(multi), Err(ParseError::Duplicate("From")));
        let v7 = b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\r\n";
        let e = parse(v7).unwrap_err();
        assert_eq!(
            (e.clone(), e.status()),
            (ParseError::Version("SIP/7.0".into()), 505)
        );
    }

    #[test]
    fn ipv6_references_survive_parsing_and_come_back_on_the_wire() {
        let raw = b"OPTIONS sip:2001@[2001:db8::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5070;branch=z9hG4bKv6;rport\r\nFrom: <sip:a@[::1]>;tag=1\r\nTo: <sip:2001@[2001:db8::1]>\r\nCall-ID: v6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(mut r) = parse(raw).unwrap() else {
            panic!()
        };
        assert_eq!(r.uri.port().map(|p| *p.value()), Some(5060));
        let src: SocketAddr = "[::1]:5070".parse().unwrap();
        stamp_received(&mut r, src);
        assert_eq!(response_target(&r, src), src);
        let wire = String::from_utf8(to_bytes(&SipMessage::Request(r))).unwrap();
        assert!(
            wire.starts_with("OPTIONS sip:2001@[2001:db8::1]:5060 SIP/2.0"),
            "{wire}"
        );
        assert!(
            wire.contains("Via: SIP/2.0/UDP [::1]:5070;branch=z9hG4bKv6"),
            "{wire}"
        );
        assert!(!wire.contains("ip6.invalid"), "{wire}");
        assert_eq!(decode_v6_hosts(&host_str("::1".parse().unwrap())), "[::1]");
        // Peer text that merely looks like the encoding is left alone, whatever precedes it.
        assert_eq!(
            decode_v6_hosts("Call-ID: é.ip6.invalid"),
            "Call-ID: é.ip6.invalid"
        );
        assert_eq!(
            decode_v6_hosts("x: é0-0-0-0-0-0-0-1.ip6.invalid"),
            "x: é[::1]"
        );
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        assert_eq!(
            split_list("\"a, b\" <sip:x@y;p=1,2>, <sip:z@w>"),
            vec!["\"a, b\" <sip:x@y;p=1,2>", "<sip:z@w>"]
        );
    }

    /// Found by the fuzzer: "SIP/2.0 002" parsed as status 2 and was written back as
    /// "SIP/2.0 2", which nothing (rsip included) reads.
    #[test]
    fn status_codes_are_three_digits_from_100_to_699() {
        let response = |code: &str| {
            format!(
                "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
                 From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n\
                 Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for bad in ["002", "2", "0200", "099", "700", "4294967301", "2x0"] {
            assert!(
                parse(response(bad).as_bytes()).is_err(),
                "status {bad} accepted"
            );
        }
        for good in ["100", "180", "200", "486", "699"] {
            let msg = parse(response(good).as_bytes()).unwrap();
            let Ok(SipMessage::Response(again)) = parse(&to_bytes(&msg)) else {
                panic!("status {good} not written back as a response");
            };
            assert_eq!(again.status_code.code().to_string(), good);
        }
    }

    /// Found by the fuzzer: a body that is not UTF-8 was written back as lossy text, so
    /// it grew and no longer matched its Content-Length.
    #[test]
    fn a_binary_body_is_written_back_byte_for_byte() {
        let mut raw =
            b"MESSAGE sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK2\r\n\
From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: bin\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n"
                .to_vec();
        let body = [0xff, 0x00, 0xc3, 0x28];
        raw.extend_from_slice(&body);
        let msg = parse(&raw).unwrap();
        let wire = to_bytes(&msg);
        assert!(wire.ends_with(b"Content-Length: 4\r\n\r\n\xff\x00\xc3\x28"));
        let Ok(SipMessage::Request(again)) = parse(&wire) else {
            panic!("written back unreadable");
        };
        assert_eq!(again.body, body);
    }

    #[test]
    fn a_request_line_needs_its_version() {
        let raw =
            "OPTIONS sip:a@127.0.0.1 sipsdp\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3\r\n\
                   From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: v\r\n\
                   CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert!(parse(raw.as_bytes()).is_err());
        assert!(parse(raw.replace(" sipsdp", "").as_bytes()).is_err());
        assert!(parse(raw.replace("sipsdp", "SIP/2.0").as_bytes()).is_ok());
    }
}
