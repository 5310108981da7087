//! The validator against a directory of broken flows (`src/ivr/testdata/broken`), each
//! problem checked at its exact `file:line:column`, and against the demo flows.

use super::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ivr/testdata")
}

fn known(names: &[&str]) -> Option<BTreeSet<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

/// `(file, line, column, start of the message)` for every diagnostic, in report order.
fn summary(ds: &[Diagnostic]) -> Vec<(String, u64, u64, String)> {
    ds.iter()
        .map(|d| {
            (
                d.file.file_name().unwrap().to_string_lossy().into_owned(),
                d.line,
                d.column,
                d.message.clone(),
            )
        })
        .collect()
}

fn assert_diagnostics(got: &[Diagnostic], want: &[(&str, u64, u64, &str)]) {
    let got = summary(got);
    let rendered = got
        .iter()
        .map(|(f, l, c, m)| format!("{f}:{l}:{c}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.len(), want.len(), "got:\n{rendered}");
    for ((f, l, c, m), (wf, wl, wc, wm)) in got.iter().zip(want) {
        assert_eq!(
            (f.as_str(), *l, *c),
            (*wf, *wl, *wc),
            "for {wm:?}; got:\n{rendered}"
        );
        assert!(
            m.starts_with(wm),
            "{f}:{l}:{c}: {m}\ndoes not start with {wm:?}"
        );
    }
}

#[test]
fn broken_flows_are_reported_at_file_line_column() {
    let opts = Options {
        prompt_root: Some(testdata().join("prompts")),
        queues: known(&["billing", "support"]),
        skills: known(&["billing", "technical"]),
    };
    let (set, report) = load_dir(&testdata().join("broken"), &opts);
    assert!(set.is_none(), "a set with errors is never handed out");
    assert_diagnostics(
        &report.errors,
        &[
            ("loops.yaml", 4, 3, "\"start\" → \"check\" → \"fetch\" go round in a loop that never waits for the caller"),
            ("loops.yaml", 15, 23, "prompt \"m\" has no audio file: m.wav is missing under"),
            ("misnamed.yaml", 1, 7, "the flow is named \"other\" but its file is misnamed.yaml"),
            ("prompts.yaml", 6, 30, "prompt \"missing\" has no audio file: en/missing.wav is missing"),
            ("prompts.yaml", 6, 39, "prompt \"../etc/passwd\" must be a file name inside the prompt directory"),
            ("prompts.yaml", 6, 56, "saying digits needs the prompt set, but en/digits/0.wav (and 11 more) is missing"),
            ("syntax.yaml", 5, 5, "unknown variant \"plya\", expected one of \"play\""),
            ("targets.yaml", 2, 8, "the entry node \"welcom\" is not a node of this flow (did you mean \"welcome\"?)"),
            ("targets.yaml", 5, 23, "prompt \"welcome\" has no audio file"),
            ("targets.yaml", 8, 17, "prompt \"menu\" has no audio file"),
            ("targets.yaml", 10, 14, "menu option \"1\" goes to \"biling\", which is not a node (did you mean \"billing\"?)"),
            ("targets.yaml", 11, 9, "menu option \"22\" is not a key; use one of 0-9, * or #"),
            ("targets.yaml", 14, 21, "queue \"billng\" is not a configured queue (did you mean \"billing\"?)"),
            ("targets.yaml", 14, 48, "skill level 11 for \"billing\" must be between 1 and 10"),
            ("targets.yaml", 14, 52, "skill \"billign\" is not a configured skill (did you mean \"billing\"?)"),
            ("targets.yaml", 16, 19, "goto names the flow \"mian\", which does not exist"),
            ("types.yaml", 6, 17, "prompt \"enter\" has no audio file"),
            ("types.yaml", 7, 17, "\"caller\" is set by the call itself and cannot be changed"),
            ("types.yaml", 8, 19, "min_digits (8) is more than max_digits (4)"),
            ("types.yaml", 10, 19, "terminator \"5\" must be # or *"),
            ("types.yaml", 11, 33, "first_digit_timeout_secs is 0 but must be between 1 and 300"),
            ("types.yaml", 12, 16, "\"([0-9]\" is not a valid regular expression: unclosed group"),
            ("types.yaml", 18, 46, "gt compares numbers, but \"lots\" is not a number"),
            ("types.yaml", 20, 52, "\"*x\" is not a valid regular expression"),
            ("types.yaml", 25, 17, "\"Mars/Olympus\" is not an IANA time zone"),
            ("types.yaml", 26, 22, "\"17:00-09:00\" ends before it starts"),
            ("types.yaml", 26, 44, "\"9-5\" is not a time range; write HH:MM-HH:MM"),
            ("types.yaml", 27, 18, "\"2026-02-30\" is not a day of the calendar"),
            ("types.yaml", 32, 12, "\"${\" in \"ftp://x.example.com/${account\" is never closed"),
            ("types.yaml", 32, 12, "url \"ftp://x.example.com/${account\" must start with http:// or https://"),
            ("types.yaml", 33, 13, "a GET request cannot have a body; use method: POST"),
            ("types.yaml", 34, 21, "timeout_secs is 0 but must be between 1 and 60"),
            ("types.yaml", 35, 24, "\"balance\" is not a JSON pointer"),
            ("types.yaml", 39, 28, "extension \"20a1\" must be digits"),
        ],
    );
    assert_diagnostics(
        &report.warnings,
        &[
            (
                "prompts.yaml",
                9,
                3,
                "node \"spare\" is never reached from the entry \"hi\"",
            ),
            (
                "types.yaml",
                18,
                30,
                "variable \"account\" is never set by any flow",
            ),
            (
                "types.yaml",
                20,
                35,
                "variable \"acount\" is never set by any flow",
            ),
        ],
    );
    // The printed form is what `switchboard check` shows.
    let first = report.errors[0].to_string();
    assert!(
        first.ends_with("broken/loops.yaml:4:3: \"start\" → \"check\" → \"fetch\" go round in a loop that never waits for the caller; put a menu, collect or survey in it, or end it"),
        "{first}"
    );
}

#[test]
fn checks_that_need_outside_knowledge_can_be_left_off() {
    // Without a prompt root or ACD lists, only the flows themselves are judged.
    let (_, report) = load_dir(&testdata().join("broken"), &Options::default());
    assert!(report
        .errors
        .iter()
        .all(|e| !e.message.contains("audio file")
            && !e.message.contains("prompt set")
            && !e.message.contains("configured")));
    assert!(report
        .errors
        .iter()
        .any(|e| e.message.contains("skill level 11")));
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ivr-flows")
}

/// The prompt files the demo flows play, relative to the prompt root.
const DEMO_PROMPTS: &[&str] = &[
    "en/welcome.wav",
    "en/closed.wav",
    "en/leave_message.wav",
    "en/main_menu.wav",
    "en/no_input.wav",
    "en/invalid.wav",
    "en/enter_account.wav",
    "en/invalid_account.wav",
    "en/survey_csat.wav",
    "en/survey_resolved.wav",
    "en/thanks.wav",
];

#[test]
fn the_demo_flows_are_clean() {
    // The queues and skills the shipped configuration defines, as the server checks.
    let config = crate::config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.yaml"),
    )
    .expect("the demo configuration loads");
    let queues: Vec<&str> = config.queues.iter().map(|q| q.name.as_str()).collect();
    let skills: Vec<&str> = config
        .users
        .iter()
        .flat_map(|u| u.skills.iter().map(|(s, _)| s.as_str()))
        .collect();
    let opts = Options {
        prompt_root: None,
        queues: known(&queues),
        skills: known(&skills),
    };
    let (set, report) = load_dir(&demo_dir(), &opts);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    assert!(set.unwrap().get("main").is_some());
}

#[test]
fn the_demo_needs_exactly_its_prompt_files() {
    let root = tempfile::tempdir().unwrap();
    for p in DEMO_PROMPTS {
        let path = root.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let opts = Options {
        prompt_root: Some(root.path().to_path_buf()),
        ..Default::default()
    };
    let (_, report) = load_dir(&demo_dir(), &opts);
    assert!(report.is_ok(), "{:#?}", report.errors);
    std::fs::remove_file(root.path().join("en/thanks.wav")).unwrap();
    let (_, report) = load_dir(&demo_dir(), &opts);
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0]
        .message
        .contains("en/thanks.wav is missing"));
}

#[test]
fn suggestions_are_close_names_only() {
    assert_eq!(suggest("biling", ["billing", "support"]), Some("billing"));
    assert_eq!(suggest("xyz", ["billing", "support"]), None);
}
