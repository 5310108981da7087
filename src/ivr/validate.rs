//! Loading flow files and checking them: what `switchboard check` reports.
//!
//! This module owns every rule a flow must pass before it may answer a call, and the
//! wording of each complaint (`file:line:column: plain-English reason`). It reads flow
//! files and, when asked, looks for prompt files; it never runs a flow and never changes
//! a file. A flow set that comes out of [`load_dir`] without errors is safe to hand to the
//! interpreter: every target exists, every regex compiles, every schedule parses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::model::{At, Condition, Flow, Node, Prompt, SayKind};
use super::{say, schedule, template, FlowSet};

pub use crate::diagnostic::Diagnostic;

/// Everything found in a set of flows. Errors stop a flow from being used; warnings are
/// worth reading but do not.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn sort(&mut self) {
        let key = |d: &Diagnostic| (d.file.clone(), d.line, d.column, d.message.clone());
        self.errors.sort_by_key(key);
        self.warnings.sort_by_key(key);
        self.errors.dedup();
        self.warnings.dedup();
    }
}

/// What the validator knows about the world outside the flows. Each `None` turns the
/// matching check off (e.g. before the ACD configuration exists).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prompt files are looked for under this directory.
    pub prompt_root: Option<PathBuf>,
    /// Queue names the ACD knows.
    pub queues: Option<BTreeSet<String>>,
    /// Skill names the ACD knows.
    pub skills: Option<BTreeSet<String>>,
}

/// Variables every call has from the start; flows may read but not set them.
pub const BUILT_INS: &[&str] = &["caller", "dialed", "started_at", "now"];

/// Variables the interpreter sets as the call goes; flows may read them.
const SET_BY_STEPS: &[&str] = &["language", "agent", "csat", "resolved", "voicemail_file"];

// The ACD's skill levels (src/acd/skill.rs); repeated so the IVR does not depend on the
// ACD's internals.
const SKILL_LEVELS: std::ops::RangeInclusive<u8> = 1..=10;

/// Parses one flow file's text.
pub fn parse_flow(path: &Path, text: &str) -> Result<Flow, Diagnostic> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        Diagnostic {
            file: path.to_path_buf(),
            line,
            column,
            message: plain_reason(&e.without_snippet().to_string()),
        }
    })
}

/// The YAML library's message without its own position decorations (we print ours).
fn plain_reason(s: &str) -> String {
    let mut s = s.lines().next().unwrap_or(s).trim();
    if let Some(rest) = s.strip_prefix("error: ") {
        s = rest.split_once(": ").map(|(_, r)| r).unwrap_or(rest);
    }
    if let Some(i) = s.rfind(" at line ") {
        s = &s[..i];
    }
    s.replace('`', "\"")
}

/// Loads every `*.yaml` / `*.yml` file in `dir` and checks them together (a `goto` may
/// name another flow). The flow set is returned only when there are no errors.
pub fn load_dir(dir: &Path, opts: &Options) -> (Option<FlowSet>, Report) {
    let mut report = Report::default();
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect(),
        Err(e) => {
            report.errors.push(Diagnostic {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read the flow directory: {e}"),
            });
            return (None, report);
        }
    };
    entries.sort();
    let mut flows = Vec::new();
    for path in entries {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_flow(&path, &text) {
                Ok(flow) => flows.push((path, flow)),
                Err(d) => report.errors.push(d),
            },
            Err(e) => report.errors.push(Diagnostic {
                file: path.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }),
        }
    }
    let checked = check(&flows, opts);
    report.errors.extend(checked.errors);
    report.warnings.extend(checked.warnings);
    report.sort();
    if report.is_ok() {
        let set = FlowSet::from_flows(flows.into_iter().map(|(_, f)| f));
        (Some(set), report)
    } else {
        (None, report)
    }
}

/// Checks parsed flows together. Each flow comes with the path it was read from, which
/// is used in messages and must be named after the flow.
pub fn check(flows: &[(PathBuf, Flow)], opts: &Options) -> Report {
    let mut report = Report::default();
    let mut by_name: BTreeMap<&str, &Flow> = BTreeMap::new();
    for (path, flow) in flows {
        if by_name.insert(&flow.name.value, flow).is_some() {
            push(
                &mut report.errors,
                path,
                &flow.name,
                format!("another file also defines the flow \"{}\"", flow.name.value),
            );
        }
    }
    // Variables survive a goto into another flow, so any flow may set what another reads.
    let mut defined: BTreeSet<String> = BUILT_INS
        .iter()
        .chain(SET_BY_STEPS)
        .map(|s| s.to_string())
        .collect();
    for (_, flow) in flows {
        defined.extend(variables_set(flow));
    }
    // Nodes entered from another flow count as reachable.
    let mut entered_from_outside: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, flow) in flows {
        for node in flow.nodes.values() {
            if let Node::Goto(g) = &node.value {
                if let (Some(f), Some(n)) = (&g.flow, &g.node) {
                    entered_from_outside.insert((f.value.clone(), n.value.clone()));
                }
            }
        }
    }
    for (path, flow) in flows {
        let mut c = Checker {
            file: path,
            flow,
            flows: &by_name,
            opts,
            defined: &defined,
            report: &mut report,
        };
        c.run(&entered_from_outside);
    }
    report.sort();
    report
}

fn push<T>(into: &mut Vec<Diagnostic>, file: &Path, at: &At<T>, message: String) {
    into.push(Diagnostic {
        file: file.to_path_buf(),
        line: at.line,
        column: at.column,
        message,
    });
}

fn variables_set(flow: &Flow) -> Vec<String> {
    let mut out = Vec::new();
    for node in flow.nodes.values() {
        match &node.value {
            Node::Set(s) => out.extend(s.vars.keys().map(|k| k.value.clone())),
            Node::Collect(c) => out.push(c.variable.value.clone()),
            Node::Http(h) => out.extend(h.save.keys().map(|k| k.value.clone())),
            _ => {}
        }
    }
    out
}

/// The closest name within a small edit distance, for "did you mean".
fn suggest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(wrong, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

/// The last line of a regex error is the reason; the lines before draw the pattern.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.lines().next().unwrap_or(""))
        .to_string()
}

struct Checker<'a> {
    file: &'a Path,
    flow: &'a Flow,
    flows: &'a BTreeMap<&'a str, &'a Flow>,
    opts: &'a Options,
    defined: &'a BTreeSet<String>,
    report: &'a mut Report,
}

impl Checker<'_> {
    /// Reports at `at`, or at `fallback` when `at` came from a default and has no position.
    fn error_or<T, U>(&mut self, at: &At<T>, fallback: &At<U>, message: String) {
        let (line, column) = if at.line == 0 {
            (fallback.line, fallback.column)
        } else {
            (at.line, at.column)
        };
        self.report.errors.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            message,
        });
    }

    fn error<T>(&mut self, at: &At<T>, message: String) {
        push(&mut self.report.errors, self.file, at, message);
    }

    fn warning<T>(&mut self, at: &At<T>, message: String) {
        push(&mut self.report.warnings, self.file, at, message);
    }

    fn run(&mut self, entered_from_outside: &BTreeSet<(String, String)>) {
        let flow = self.flow;
        let stem = self.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if flow.name.value != stem {
            self.error(
                &flow.name,
                format!(
                    "the flow is named \"{}\" but its file is {}; name the file {}.yaml or the flow \"{}\"",
                    flow.name.value,
                    self.file.file_name().and_then(|s| s.to_str()).unwrap_or(""),
                    flow.name.value,
                    stem
                ),
            );
        }
        if !flow.nodes.contains_key(&flow.entry) {
            let hint = did_you_mean(suggest(&flow.entry, self.node_names()));
            self.error(
                &flow.entry,
                format!(
                    "the entry node \"{}\" is not a node of this flow{hint}",
                    flow.entry.value
                ),
            );
        }
        self.check_dir(&flow.prompts, "prompts");
        for (name, node) in &flow.nodes {
            if !template::is_name(name) {
                self.error(
                    name,
                    format!(
                        "\"{}\" is not a node name; use letters, digits and underscores, starting with a letter",
                        name.value
                    ),
                );
            }
            self.check_targets(node);
            self.check_node(node);
            self.check_prompts(node);
        }
        // With no valid entry everything would be "unreachable"; the entry error says it all.
        if flow.nodes.contains_key(&flow.entry) {
            self.check_reachable(entered_from_outside);
        }
        self.check_loops();
    }

    fn node_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.flow.nodes.keys().map(|k| k.value.as_str())
    }

    fn check_targets(&mut self, node: &At<Node>) {
        for (label, target) in node.targets() {
            if !self.flow.nodes.contains_key(target) {
                let hint = did_you_mean(suggest(&target.value, self.node_names()));
                self.error(
                    target,
                    format!(
                        "{} {label} goes to \"{}\", which is not a node{hint}",
                        node.kind(),
                        target.value
                    ),
                );
            }
        }
    }

    fn check_reachable(&mut self, entered_from_outside: &BTreeSet<(String, String)>) {
        let flow = self.flow;
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = vec![flow.entry.value.as_str()];
        for (f, n) in entered_from_outside {
            if *f == flow.name.value {
                todo.push(n);
            }
        }
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            if let Some(node) = flow.nodes.get(&At::new(name.to_string())) {
                todo.extend(node.targets().into_iter().map(|(_, t)| t.value.as_str()));
            }
        }
        for name in flow.nodes.keys() {
            if !seen.contains(name.value.as_str()) {
                self.warning(
                    name,
                    format!(
                        "node \"{}\" is never reached from the entry \"{}\"",
                        name.value, flow.entry.value
                    ),
                );
            }
        }
    }

    /// A cycle among nodes none of which waits for the caller would spin forever (or
    /// hammer a web service), so it is an error wherever it is.
    fn check_loops(&mut self) {
        let flow = self.flow;
        let edges = |name: &str| -> Vec<&str> {
            match flow.nodes.get(&At::new(name.to_string())) {
                Some(n) if !n.waits_for_caller() => n
                    .targets()
                    .into_iter()
                    .map(|(_, t)| t.value.as_str())
                    .filter(|t| {
                        flow.nodes
                            .get(&At::new(t.to_string()))
                            .is_some_and(|n| !n.waits_for_caller())
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let reach = |from: &str| -> BTreeSet<&str> {
            let mut seen = BTreeSet::new();
            let mut todo = edges(from);
            while let Some(n) = todo.pop() {
                if seen.insert(n) {
                    todo.extend(edges(n));
                }
            }
            seen
        };
        let reaches: BTreeMap<&str, BTreeSet<&str>> = flow
            .nodes
            .keys()
            .map(|k| (k.value.as_str(), reach(&k.value)))
            .collect();
        let mut reported: BTreeSet<&str> = BTreeSet::new();
        for (name, r) in &reaches {
            if !r.contains(name) || reported.contains(name) {
                continue;
            }
            let mut members: Vec<&At<String>> = flow
                .nodes
                .keys()
                .filter(|k| {
                    r.contains(k.value.as_str()) && reaches[k.value.as_str()].contains(name)
                })
                .collect();
            members.sort_by_key(|k| (k.line, k.column));
            reported.extend(members.iter().map(|k| k.value.as_str()));
            let list = members
                .iter()
                .map(|k| format!("\"{}\"", k.value))
                .collect::<Vec<_>>()
                .join(" → ");
            let first = members[0];
            self.error(
                first,
                format!(
                    "{list} go round in a loop that never waits for the caller; \
                     put a menu, collect or survey in it, or end it"
                ),
            );
        }
    }

    fn check_dir(&mut self, dir: &At<String>, what: &str) {
        let p = Path::new(&dir.value);
        if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            self.error(
                dir,
                format!(
                    "{what} directory \"{}\" must be inside the prompt root (relative, without \"..\")",
                    dir.value
                ),
            );
        }
    }

    /// The prompt directories this flow may play from: its own and every `language` it
    /// switches to.
    fn prompt_dirs(&self) -> Vec<String> {
        let mut dirs = vec![self.flow.prompts.value.clone()];
        for node in self.flow.nodes.values() {
            if let Node::Language(l) = &node.value {
                if !dirs.contains(&l.dir.value) {
                    dirs.push(l.dir.value.clone());
                }
            }
        }
        dirs
    }

    fn check_prompts(&mut self, node: &At<Node>) {
        let mut said: BTreeSet<(String, &'static str)> = BTreeSet::new();
        for prompt in node.prompts() {
            match &prompt.value {
                Prompt::File(name) => {
                    self.check_template(prompt, name);
                    let p = Path::new(name);
                    if name.is_empty()
                        || p.is_absolute()
                        || p.components().any(|c| c.as_os_str() == "..")
                    {
                        self.error(
                            prompt,
                            format!(
                                "prompt \"{name}\" must be a file name inside the prompt directory (relative, without \"..\")"
                            ),
                        );
                        continue;
                    }
                    if template::is_templated(name) {
                        continue;
                    }
                    let Some(root) = self.opts.prompt_root.clone() else {
                        continue;
                    };
                    for dir in self.prompt_dirs() {
                        let rel = prompt_path(&dir, name);
                        if !root.join(&rel).is_file() {
                            self.error(
                                prompt,
                                format!(
                                    "prompt \"{name}\" has no audio file: {rel} is missing under {}",
                                    root.display()
                                ),
                            );
                        }
                    }
                }
                Prompt::Say(s) => {
                    self.check_template(prompt, &s.value);
                    let Some(root) = self.opts.prompt_root.clone() else {
                        continue;
                    };
                    let kind = match s.say {
                        SayKind::Number => "a number",
                        SayKind::Digits => "digits",
                        SayKind::Date => "a date",
                    };
                    for dir in self.prompt_dirs() {
                        let missing: Vec<String> = say::set_files(s.say)
                            .iter()
                            .map(|f| prompt_path(&dir, f))
                            .filter(|rel| !root.join(rel).is_file())
                            .collect();
                        if let Some(first) = missing.first() {
                            if said.insert((dir.clone(), kind)) {
                                let more = match missing.len() - 1 {
                                    0 => String::new(),
                                    n => format!(" (and {n} more)"),
                                };
                                self.error(
                                    prompt,
                                    format!(
                                        "saying {kind} needs the prompt set, but {first}{more} is missing under {}",
                                        root.display()
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks a template's syntax and that the variables it reads are set somewhere.
    fn check_template<T>(&mut self, at: &At<T>, text: &str) {
        if let Err(e) = template::parse(text) {
            self.error(at, e);
            return;
        }
        for var in template::variables(text) {
            self.check_read(at, var);
        }
    }

    fn check_read<T>(&mut self, at: &At<T>, var: &str) {
        if !self.defined.contains(var) {
            let hint = did_you_mean(suggest(var, self.defined.iter().map(String::as_str)));
            self.warning(
                at,
                format!("variable \"{var}\" is never set by any flow, so it reads as empty{hint}"),
            );
        }
    }

    fn check_var_name(&mut self, at: &At<String>) {
        if !template::is_name(at) {
            self.error(
                at,
                format!(
                    "\"{}\" is not a variable name; use letters, digits and underscores, starting with a letter",
                    at.value
                ),
            );
        } else if BUILT_INS.contains(&at.value.as_str()) {
            self.error(
                at,
                format!(
                    "\"{}\" is set by the call itself and cannot be changed",
                    at.value
                ),
            );
        }
    }

    fn check_range<U>(&mut self, at: &At<u32>, node: &At<U>, what: &str, min: u32, max: u32) {
        if at.value < min || at.value > max {
            self.error_or(
                at,
                node,
                format!("{what} is {} but must be between {min} and {max}", at.value),
            );
        }
    }

    fn check_regex(&mut self, at: &At<String>) {
        if let Err(e) = regex::Regex::new(&at.value) {
            self.error(
                at,
                format!(
                    "\"{}\" is not a valid regular expression: {}",
                    at.value,
                    regex_reason(&e)
                ),
            );
        }
    }

    fn check_key(&mut self, at: &At<String>, what: &str) {
        let ok = at.value.len() == 1 && matches!(at.value.as_bytes()[0], b'0'..=b'9' | b'*' | b'#');
        if !ok {
            self.error(
                at,
                format!(
                    "{what} \"{}\" is not a key; use one of 0-9, * or #",
                    at.value
                ),
            );
        }
    }

    fn check_node(&mut self, at: &At<Node>) {
        match &at.value {
            Node::Play(p) => {
                if p.prompts.is_empty() {
                    self.error(at, "play has no prompts; list at least one".into());
                }
            }
            Node::Menu(m) => {
                if m.prompts.is_empty() {
                    self.error(at, "menu has no prompts; callers would hear silence".into());
                }
                if m.options.is_empty() {
                    self.error(at, "menu has no options; add keys under options".into());
                }
                for key in m.options.keys() {
                    self.check_key(key, "menu option");
                }
                self.check_range(&m.timeout_secs, at, "timeout_secs", 1, 300);
                self.check_range(&m.retries, at, "retries", 0, 10);
            }
            Node::Collect(c) => {
                self.check_var_name(&c.variable);
                self.check_range(&c.max_digits, at, "max_digits", 1, 64);
                if c.min_digits.value > c.max_digits.value {
                    self.error_or(
                        &c.min_digits,
                        at,
                        format!(
                            "min_digits ({}) is more than max_digits ({}); no input could pass",
                            c.min_digits.value, c.max_digits.value
                        ),
                    );
                }
                if let Some(t) = &c.terminator {
                    if t.value != "#" && t.value != "*" {
                        self.error_or(
                            t,
                            at,
                            format!(
                                "terminator \"{}\" must be # or * (a digit could not be entered)",
                                t.value
                            ),
                        );
                    }
                }
                self.check_range(
                    &c.first_digit_timeout_secs,
                    at,
                    "first_digit_timeout_secs",
                    1,
                    300,
                );
                self.check_range(
                    &c.inter_digit_timeout_secs,
                    at,
                    "inter_digit_timeout_secs",
                    1,
                    60,
                );
                self.check_range(&c.retries, at, "retries", 0, 10);
                if let Some(p) = &c.pattern {
                    self.check_regex(p);
                }
            }
            Node::Set(s) => {
                if s.vars.is_empty() {
                    self.error(at, "set has no vars".into());
                }
                for (name, value) in &s.vars {
                    self.check_var_name(name);
                    self.check_template(value, value);
                }
            }
            Node::Branch(b) => {
                for case in &b.cases {
                    self.check_condition(&case.when);
                }
            }
            Node::Schedule(s) => {
                if jiff::tz::TimeZone::get(&s.timezone.value).is_err() {
                    self.error(
                        &s.timezone,
                        format!(
                            "\"{}\" is not an IANA time zone; use a name such as Europe/Istanbul, America/New_York or UTC",
                            s.timezone.value
                        ),
                    );
                }
                for r in s.hours.values().chain(s.special_days.values()).flatten() {
                    if let Err(e) = schedule::parse_range(r) {
                        self.error(r, e);
                    }
                }
                for d in s.holidays.iter().chain(s.special_days.keys()) {
                    if let Err(e) = schedule::parse_date(d) {
                        self.error(d, e);
                    }
                }
            }
            Node::Http(h) => {
                self.check_template(&h.url, &h.url);
                let url = h.url.value.trim_start();
                if !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("${"))
                {
                    self.error(
                        &h.url,
                        format!(
                            "url \"{}\" must start with http:// or https://",
                            h.url.value
                        ),
                    );
                }
                for value in h.headers.values() {
                    self.check_template(value, value);
                }
                if let Some(body) = &h.body {
                    if h.method == super::model::HttpMethod::Get {
                        self.error(
                            body,
                            "a GET request cannot have a body; use method: POST".into(),
                        );
                    }
                    let mut strings = Vec::new();
                    json_strings(body, &mut strings);
                    for s in strings {
                        self.check_template(body, s);
                    }
                }
                self.check_range(&h.timeout_secs, at, "timeout_secs", 1, 60);
                for (var, pointer) in &h.save {
                    self.check_var_name(var);
                    if !(pointer.is_empty() || pointer.starts_with('/')) {
                        self.error(
                            pointer,
                            format!(
                                "\"{}\" is not a JSON pointer; write it like /account/balance",
                                pointer.value
                            ),
                        );
                    }
                }
            }
            Node::Queue(q) => {
                if let Some(known) = &self.opts.queues {
                    if !known.contains(&q.queue.value) {
                        let hint =
                            did_you_mean(suggest(&q.queue, known.iter().map(String::as_str)));
                        self.error(
                            &q.queue,
                            format!(
                                "queue \"{}\" is not a configured queue{hint}",
                                q.queue.value
                            ),
                        );
                    }
                }
                for (skill, level) in &q.skills {
                    if let Some(known) = &self.opts.skills {
                        if !known.contains(&skill.value) {
                            let hint =
                                did_you_mean(suggest(skill, known.iter().map(String::as_str)));
                            self.error(
                                skill,
                                format!(
                                    "skill \"{}\" is not a configured skill{hint}",
                                    skill.value
                                ),
                            );
                        }
                    }
                    if !SKILL_LEVELS.contains(&level.value) {
                        self.error(
                            level,
                            format!(
                                "skill level {} for \"{}\" must be between {} and {}",
                                level.value,
                                skill.value,
                                SKILL_LEVELS.start(),
                                SKILL_LEVELS.end()
                            ),
                        );
                    }
                }
            }
            Node::Transfer(t) => match (&t.extension, &t.number) {
                (Some(_), Some(_)) | (None, None) => self.error(
                    at,
                    "transfer needs exactly one of extension or number".into(),
                ),
                (Some(ext), None) => {
                    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
                        self.error(
                            ext,
                            format!("extension \"{}\" must be digits, e.g. \"2001\"", ext.value),
                        );
                    }
                }
                (None, Some(num)) => {
                    self.check_template(num, num);
                    let digits = num.strip_prefix('+').unwrap_or(num);
                    if !template::is_templated(num)
                        && (digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()))
                    {
                        self.error(
                            num,
                            format!(
                                "number \"{}\" must be digits with an optional leading +, e.g. \"+902125550100\"",
                                num.value
                            ),
                        );
                    }
                }
            },
            Node::Voicemail(v) => {
                self.check_template(&v.mailbox, &v.mailbox);
                self.check_range(&v.max_secs, at, "max_secs", 1, 3600);
                self.check_range(&v.silence_secs, at, "silence_secs", 1, 60);
            }
            Node::Survey(s) => {
                if s.csat.is_empty() {
                    self.error(at, "survey needs a csat question prompt".into());
                }
                if s.resolved.as_ref().is_some_and(|r| r.is_empty()) {
                    self.error(
                        at,
                        "resolved has no question prompt; give one or leave resolved out".into(),
                    );
                }
                self.check_range(&s.timeout_secs, at, "timeout_secs", 1, 300);
                self.check_range(&s.retries, at, "retries", 0, 10);
            }
            Node::Language(l) => {
                if l.dir.is_empty() {
                    self.error(&l.dir, "language dir is empty".into());
                }
                self.check_dir(&l.dir, "language");
            }
            Node::Goto(g) => self.check_goto(at, g),
            Node::Hangup(_) => {}
        }
    }

    fn check_goto(&mut self, at: &At<Node>, g: &super::model::Goto) {
        let Some(flow_name) = &g.flow else {
            if g.node.is_none() {
                self.error(at, "goto needs a node, a flow, or both".into());
            }
            return;
        };
        let Some(other) = self.flows.get(flow_name.value.as_str()) else {
            let hint = did_you_mean(suggest(flow_name, self.flows.keys().copied()));
            self.error(
                flow_name,
                format!(
                    "goto names the flow \"{}\", which does not exist{hint}",
                    flow_name.value
                ),
            );
            return;
        };
        if let Some(node) = &g.node {
            if !other.nodes.contains_key(node) {
                let hint =
                    did_you_mean(suggest(node, other.nodes.keys().map(|k| k.value.as_str())));
                self.error(
                    node,
                    format!(
                        "goto names \"{}\", which is not a node of the flow \"{}\"{hint}",
                        node.value, flow_name.value
                    ),
                );
            }
        }
    }

    fn check_condition(&mut self, c: &At<Condition>) {
        match &c.value {
            Condition::Eq(cmp) | Condition::Ne(cmp) => {
                self.check_read(&cmp.var, &cmp.var);
            }
            Condition::Lt(cmp) | Condition::Le(cmp) | Condition::Gt(cmp) | Condition::Ge(cmp) => {
                self.check_read(&cmp.var, &cmp.var);
                if !matches!(cmp.value.value, super::model::Literal::Number(_)) {
                    let op = match &c.value {
                        Condition::Lt(_) => "lt",
                        Condition::Le(_) => "le",
                        Condition::Gt(_) => "gt",
                        _ => "ge",
                    };
                    self.error(
                        &cmp.value,
                        format!(
                            "{op} compares numbers, but \"{}\" is not a number; write a number \
                             such as 100 (unquoted), or use eq/ne to compare text",
                            cmp.value.value
                        ),
                    );
                }
            }
            Condition::Matches(m) => {
                self.check_read(&m.var, &m.var);
                self.check_regex(&m.pattern);
            }
            Condition::In(m) => {
                self.check_read(&m.var, &m.var);
                if m.values.is_empty() {
                    self.error(&m.var, "in has no values, so it can never hold".into());
                }
            }
            Condition::All(cs) | Condition::Any(cs) => {
                if cs.is_empty() {
                    self.error(c, "all/any needs at least one condition".into());
                }
                for inner in cs {
                    self.check_condition(inner);
                }
            }
            Condition::Not(inner) => self.check_condition(inner),
        }
    }
}

/// A prompt's path relative to the prompt root: `DIR/NAME`, with `.wav` added when the
/// name has no extension.
pub fn prompt_path(dir: &str, name: &str) -> String {
    let file = if Path::new(name).extension().is_some() {
        name.to_string()
    } else {
        format!("{name}.wav")
    };
    if dir.is_empty() {
        file
    } else {
        format!("{}/{file}", dir.trim_end_matches('/'))
    }
}

fn json_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
