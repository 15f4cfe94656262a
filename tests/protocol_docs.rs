//! `docs/protocol.md` and `unibus::protocol` say the same: every operation, refusal code and
//! HTTP error code in the tables is the one the types define, with the same status, and the
//! other way round.

use std::collections::BTreeSet;

use unibus::protocol::admin::OPERATIONS as ADMIN_OPERATIONS;
use unibus::protocol::codes::{ApiCode, RefusalCode};
use unibus::protocol::control::Operation;

const PROTOCOL: &str = include_str!("../docs/protocol.md");

/// The text of the section that starts with the heading `start`, up to the next heading of the
/// same or a higher level.
fn section(start: &str) -> &'static str {
    let from = PROTOCOL
        .find(&format!("\n{start}"))
        .unwrap_or_else(|| panic!("no section {start:?} in docs/protocol.md"));
    let level = start.split(' ').next().unwrap().len();
    let rest = &PROTOCOL[from + 1 + start.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let hashes = rest[i..].bytes().take_while(|b| *b == b'#').count();
            hashes > 0 && hashes <= level && rest.as_bytes()[i..].get(hashes) == Some(&b' ')
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The table rows of `text`: each row's cells, trimmed.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|---"))
        .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect()
}

/// A cell that is one code in backticks.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    inner
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'_')
        .then_some(inner)
}

#[test]
fn the_operations_table_lists_exactly_the_operations() {
    let documented: Vec<&str> = rows(section("### 12.2"))
        .iter()
        .filter_map(|row| code(row[0]))
        .collect();
    let defined: Vec<&str> = Operation::ALL.iter().map(|op| op.name()).collect();
    assert_eq!(documented, defined);
}

#[test]
fn the_admin_operations_table_lists_exactly_the_admin_operations_and_their_params() {
    // §13's operations table: `name` | params in backticks, each with its type and default in
    // parentheses (or "none") | result.
    let outside_parentheses = |cell: &str| {
        let mut depth = 0;
        cell.chars()
            .filter(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => return depth == 0,
                }
                false
            })
            .collect::<String>()
    };
    let documented: Vec<(String, Vec<String>)> = rows(section("## 13."))
        .iter()
        .filter(|row| row.len() == 3 && row[0].contains('.'))
        .filter_map(|row| {
            let name = row[0].strip_prefix('`')?.strip_suffix('`')?;
            let params = outside_parentheses(row[1])
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            Some((name.to_owned(), params))
        })
        .collect();
    let defined: Vec<(String, Vec<String>)> = ADMIN_OPERATIONS
        .iter()
        .map(|(name, params)| {
            let params = params.iter().map(|p| p.to_string()).collect();
            (name.to_string(), params)
        })
        .collect();
    assert_eq!(documented, defined);
}

#[test]
fn the_refusal_table_lists_exactly_the_refusal_codes() {
    let documented: BTreeSet<&str> = rows(section("### 12.3"))
        .iter()
        .filter_map(|row| code(row[0]))
        .collect();
    let defined: BTreeSet<&str> = RefusalCode::KNOWN.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, defined);
}

#[test]
fn every_http_error_code_is_documented_with_its_status() {
    // §10's table: status, code, meaning.
    let mut documented = BTreeSet::new();
    for row in rows(section("## 10.")) {
        let (Some(status), Some(code)) =
            (row[0].parse::<u16>().ok(), row.get(1).and_then(|c| code(c)))
        else {
            continue;
        };
        let known = ApiCode::parse(code);
        assert!(
            !matches!(known, ApiCode::Unknown(_)),
            "§10 documents unknown code {code}"
        );
        assert_eq!(known.status(), status, "{code}");
        documented.insert(code);
    }
    // §13 names the admin API's codes with their statuses in its checks table and its text.
    let admin = section("## 13.");
    for code in ApiCode::KNOWN {
        let name = code.as_str();
        if documented.contains(name) {
            continue;
        }
        let status = code.status().to_string();
        let mentioned = admin
            .lines()
            .any(|line| line.contains(&format!("`{name}`")) && line.contains(&status));
        assert!(
            mentioned,
            "{name} ({status}) is documented in neither §10 nor §13"
        );
    }
}
