//! The prompt set: how numbers, digits and dates become a list of short recordings.
//!
//! Owns the file names of the prompt set (`digits/`, `numbers/`, `months/`, `ordinals/`,
//! each under the call's prompt directory) and the English-style composition rules. It
//! never touches the file system; the validator checks the files exist.

use super::model::SayKind;

/// The prompt-set files (without `.wav`) a kind of saying can use, for the validator.
pub fn set_files(kind: SayKind) -> Vec<String> {
    match kind {
        SayKind::Digits => (0..=9)
            .map(|d| format!("digits/{d}"))
            .chain(["digits/star".into(), "digits/hash".into()])
            .collect(),
        SayKind::Number => number_set(),
        SayKind::Date => {
            let mut v: Vec<String> = (1..=12).map(|m| format!("months/{m}")).collect();
            v.extend((1..=31).map(|d| format!("ordinals/{d}")));
            v.extend(number_set());
            v
        }
    }
}

fn number_set() -> Vec<String> {
    let mut v: Vec<String> = (0..=20).map(|n| format!("numbers/{n}")).collect();
    v.extend((30..=90).step_by(10).map(|n| format!("numbers/{n}")));
    v.extend(["numbers/hundred", "numbers/thousand", "numbers/million"].map(String::from));
    v
}

/// The recordings that say `value`, or `None` when the value cannot be said that way
/// (a number that is not a whole number up to 999,999,999, a date not YYYY-MM-DD).
pub fn expand(kind: SayKind, value: &str) -> Option<Vec<String>> {
    let value = value.trim();
    match kind {
        SayKind::Digits => Some(
            value
                .chars()
                .filter_map(|c| match c {
                    '0'..='9' => Some(format!("digits/{c}")),
                    '*' => Some("digits/star".into()),
                    '#' => Some("digits/hash".into()),
                    // Spaces, dashes and the like in phone numbers are not said.
                    _ => None,
                })
                .collect(),
        ),
        SayKind::Number => {
            let n: u64 = value.parse().ok()?;
            (n <= 999_999_999).then(|| number(n))
        }
        SayKind::Date => {
            let d: jiff::civil::Date = value.parse().ok()?;
            let mut out = vec![
                format!("months/{}", d.month()),
                format!("ordinals/{}", d.day()),
            ];
            out.extend(number(u64::try_from(d.year()).ok()?));
            Some(out)
        }
    }
}

fn number(n: u64) -> Vec<String> {
    if n == 0 {
        return vec!["numbers/0".into()];
    }
    let mut out = Vec::new();
    let mut rest = n;
    for (size, word) in [(1_000_000, "million"), (1_000, "thousand")] {
        if rest >= size {
            out.extend(below_thousand(rest / size));
            out.push(format!("numbers/{word}"));
            rest %= size;
        }
    }
    out.extend(below_thousand(rest));
    out
}

fn below_thousand(n: u64) -> Vec<String> {
    let mut out = Vec::new();
    if n >= 100 {
        out.push(format!("numbers/{}", n / 100));
        out.push("numbers/hundred".into());
    }
    let r = n % 100;
    match r {
        0 => {}
        1..=20 => out.push(format!("numbers/{r}")),
        _ => {
            out.push(format!("numbers/{}", r / 10 * 10));
            if !r.is_multiple_of(10) {
                out.push(format!("numbers/{}", r % 10));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(expand(SayKind::Number, "0").unwrap(), ["numbers/0"]);
        // one million two hundred thirty-four thousand five hundred sixty-seven
        assert_eq!(
            expand(SayKind::Number, "1234567").unwrap(),
            [
                "numbers/1",
                "numbers/million",
                "numbers/2",
                "numbers/hundred",
                "numbers/30",
                "numbers/4",
                "numbers/thousand",
                "numbers/5",
                "numbers/hundred",
                "numbers/60",
                "numbers/7"
            ]
        );
        assert_eq!(expand(SayKind::Number, "15").unwrap(), ["numbers/15"]);
        assert!(expand(SayKind::Number, "12.5").is_none());
        assert!(expand(SayKind::Number, "1000000000").is_none());
    }

    #[test]
    fn digits_and_dates() {
        assert_eq!(
            expand(SayKind::Digits, "1-2*#").unwrap(),
            ["digits/1", "digits/2", "digits/star", "digits/hash"]
        );
        assert_eq!(
            expand(SayKind::Date, "2026-12-31").unwrap(),
            [
                "months/12",
                "ordinals/31",
                "numbers/2",
                "numbers/thousand",
                "numbers/20",
                "numbers/6"
            ]
        );
        assert!(expand(SayKind::Date, "31/12/2026").is_none());
    }

    #[test]
    fn every_expansion_is_in_the_set() {
        let set = set_files(SayKind::Date);
        for n in [0u64, 7, 19, 20, 99, 101, 999_999_999] {
            for f in expand(SayKind::Number, &n.to_string()).unwrap() {
                assert!(set.contains(&f), "{f}");
            }
        }
    }
}
