//! Query strings, parsed strictly: an unknown parameter, a repeated
//! single-valued one, an unknown status, a bad date or a limit out of range
//! is a 400 listing every problem — never silently ignored.

use std::collections::BTreeMap;

use chrono::DateTime;
use orchestrator_core::store::{Cursor, JobQuery};
use orchestrator_core::{JobState, Timestamp};

use crate::error::{ApiError, FieldProblem};

/// Largest `limit` of `GET /jobs`.
pub const MAX_LIST_LIMIT: usize = 100;
/// Default `limit` of `GET /jobs`.
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Largest `limit` of `GET /job/{id}/events`.
pub const MAX_EVENTS_LIMIT: usize = 1000;
/// Default `limit` of `GET /job/{id}/events`.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

/// Parameters as given, in order, keyed by name.
struct Params {
    values: BTreeMap<String, Vec<String>>,
    problems: Vec<FieldProblem>,
}

impl Params {
    fn parse(raw: Option<&str>, known: &[&str]) -> Self {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut problems = Vec::new();
        match serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")) {
            Ok(pairs) => {
                for (k, v) in pairs {
                    if known.contains(&k.as_str()) {
                        values.entry(k).or_default().push(v);
                    } else {
                        let shown: String = k.chars().take(64).collect();
                        problems.push(FieldProblem::new(
                            format!("?{shown}"),
                            "unknown_parameter",
                            format!("unknown parameter {shown:?}; known: {}", known.join(", ")),
                        ));
                    }
                }
            }
            Err(_) => problems.push(FieldProblem::new(
                "?",
                "invalid_value",
                "the query string is not valid URL encoding",
            )),
        }
        Self { values, problems }
    }

    fn problem(&mut self, name: &str, code: &str, message: String) {
        self.problems
            .push(FieldProblem::new(format!("?{name}"), code, message));
    }

    /// The single value of `name`, if given.
    fn one(&mut self, name: &str) -> Option<String> {
        let mut values = self.values.remove(name)?;
        if values.len() > 1 {
            self.problem(
                name,
                "duplicate_parameter",
                format!("{name} may be given once"),
            );
            return None;
        }
        values.pop()
    }

    /// Every value of `name`.
    fn all(&mut self, name: &str) -> Vec<String> {
        self.values.remove(name).unwrap_or_default()
    }

    fn number(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        let raw = self.one(name)?;
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    name,
                    "invalid_value",
                    format!(
                        "{name} must be an integer from {min} to {max}, got {:?}",
                        clip(&raw)
                    ),
                );
                None
            }
        }
    }

    /// `name` as a time ([`parse_time`]), or a problem.
    fn time(&mut self, name: &str) -> Option<Timestamp> {
        let raw = self.one(name)?;
        let t = parse_time(&raw);
        if t.is_none() {
            self.problem(
                name,
                "invalid_value",
                format!(
                    "{name} must be an RFC 3339 time or milliseconds since the epoch, got {:?}",
                    clip(&raw)
                ),
            );
        }
        t
    }

    /// `cursor` as a `next_cursor` a previous page gave, or a problem.
    fn cursor<C: std::str::FromStr>(&mut self) -> Option<C> {
        let raw = self.one("cursor")?;
        let c = raw.parse().ok();
        if c.is_none() {
            self.problem(
                "cursor",
                "invalid_value",
                "malformed cursor; pass `next_cursor` from a previous page".into(),
            );
        }
        c
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidParameters(self.problems))
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An RFC 3339 time (`2025-01-31T12:00:00Z`) or integer milliseconds since
/// the epoch.
fn parse_time(raw: &str) -> Option<Timestamp> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().ok().map(Timestamp);
    }
    let t = DateTime::parse_from_rfc3339(raw).ok()?;
    u64::try_from(t.timestamp_millis()).ok().map(Timestamp)
}

/// How `GET /jobs` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Paging {
    /// By cursor (the default): the response carries `next_cursor`.
    Cursor,
    /// By page number from 1: the response carries `total` too.
    Page(u64),
}

/// Parses `GET /jobs` parameters into a store query (owner left unset).
pub(crate) fn list_query(raw: Option<&str>) -> Result<(JobQuery, Paging), ApiError> {
    let mut p = Params::parse(
        raw,
        &[
            "status",
            "name",
            "label",
            "created_after",
            "created_before",
            "limit",
            "cursor",
            "page",
        ],
    );
    let mut query = JobQuery {
        limit: DEFAULT_LIST_LIMIT,
        ..JobQuery::default()
    };
    for value in p.all("status") {
        for name in value.split(',').map(str::trim) {
            match JobState::ALL.into_iter().find(|s| s.as_str() == name) {
                Some(s) if !query.states.contains(&s) => query.states.push(s),
                Some(_) => {}
                None => {
                    let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                    p.problem(
                        "status",
                        "invalid_value",
                        format!(
                            "unknown status {:?}; one of: {}",
                            clip(name),
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if let Some(name) = p.one("name") {
        if name.is_empty() || name.len() > 256 {
            p.problem(
                "name",
                "invalid_value",
                "name must be 1 to 256 bytes".into(),
            );
        } else {
            query.name = Some(name);
        }
    }
    for label in p.all("label") {
        match label.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                query.labels.insert(k.to_owned(), v.to_owned());
            }
            _ => p.problem(
                "label",
                "invalid_value",
                format!("label must be key=value, got {:?}", clip(&label)),
            ),
        }
    }
    query.created_after = p.time("created_after");
    query.created_before = p.time("created_before");
    if let Some(n) = p.number("limit", 1, MAX_LIST_LIMIT as u64) {
        query.limit = n as usize;
    }
    query.cursor = p.cursor::<Cursor>();
    let mut paging = Paging::Cursor;
    if let Some(n) = p.number("page", 1, 1_000_000) {
        if query.cursor.is_some() {
            p.problem(
                "page",
                "invalid_value",
                "give either cursor or page, not both".into(),
            );
        }
        paging = Paging::Page(n);
    }
    p.finish()?;
    Ok((query, paging))
}

/// Parses `GET /dlq` parameters into a store query (owner left unset).
pub(crate) fn dlq_query(
    raw: Option<&str>,
) -> Result<orchestrator_core::store::dead_letter::DeadLetterQuery, ApiError> {
    use orchestrator_core::store::dead_letter::{
        DeadLetterCursor, DeadLetterQuery, DeadLetterReason, DeadLetterStatus,
    };
    let mut p = Params::parse(
        raw,
        &[
            "job",
            "status",
            "reason",
            "node_type",
            "created_after",
            "created_before",
            "limit",
            "cursor",
        ],
    );
    let mut query = DeadLetterQuery {
        limit: DEFAULT_LIST_LIMIT,
        ..DeadLetterQuery::default()
    };
    if let Some(job) = p.one("job") {
        match job.parse() {
            Ok(j) => query.job = Some(j),
            Err(_) => p.problem(
                "job",
                "invalid_value",
                format!("invalid job id {:?}", clip(&job)),
            ),
        }
    }
    if let Some(t) = p.one("node_type") {
        if t.is_empty() || t.len() > 256 {
            p.problem(
                "node_type",
                "invalid_value",
                "node_type must be 1 to 256 bytes".into(),
            );
        } else {
            query.node_type = Some(t);
        }
    }
    for value in p.all("status") {
        for name in value.split(',').map(str::trim) {
            match name.parse::<DeadLetterStatus>() {
                Ok(s) if !query.statuses.contains(&s) => query.statuses.push(s),
                Ok(_) => {}
                Err(e) => p.problem("status", "invalid_value", e),
            }
        }
    }
    for value in p.all("reason") {
        for name in value.split(',').map(str::trim) {
            match name.parse::<DeadLetterReason>() {
                Ok(r) if !query.reasons.contains(&r) => query.reasons.push(r),
                Ok(_) => {}
                Err(e) => p.problem("reason", "invalid_value", e),
            }
        }
    }
    query.created_after = p.time("created_after");
    query.created_before = p.time("created_before");
    if let Some(n) = p.number("limit", 1, MAX_LIST_LIMIT as u64) {
        query.limit = n as usize;
    }
    query.cursor = p.cursor::<DeadLetterCursor>();
    p.finish()?;
    Ok(query)
}

/// Largest `max_jobs` of `GET /stats`.
pub const MAX_STATS_JOBS: usize = 10_000;

/// Parses `GET /stats` parameters: the jobs to read (owner as given, for the
/// handler to scope) and how many at most.
pub(crate) fn stats_query(raw: Option<&str>) -> Result<(JobQuery, usize), ApiError> {
    let mut p = Params::parse(raw, &["since", "until", "owner", "max_jobs"]);
    let mut query = JobQuery {
        created_after: p.time("since"),
        created_before: p.time("until"),
        ..JobQuery::default()
    };
    if let Some(owner) = p.one("owner") {
        if owner.is_empty() || owner.len() > 256 {
            p.problem(
                "owner",
                "invalid_value",
                "owner must be 1 to 256 bytes".into(),
            );
        } else {
            query.owner = Some(owner);
        }
    }
    let max_jobs = p
        .number("max_jobs", 1, MAX_STATS_JOBS as u64)
        .map_or(orchestrator_core::analytics::DEFAULT_MAX_JOBS, |n| {
            n as usize
        });
    p.finish()?;
    Ok((query, max_jobs))
}

/// Parses `GET /job/{id}/events` parameters: `(after, limit)`.
pub(crate) fn events_query(raw: Option<&str>) -> Result<(u64, usize), ApiError> {
    let mut p = Params::parse(raw, &["after", "limit"]);
    let after = p.number("after", 0, u64::MAX).unwrap_or(0);
    let limit = p
        .number("limit", 1, MAX_EVENTS_LIMIT as u64)
        .map_or(DEFAULT_EVENTS_LIMIT, |n| n as usize);
    p.finish()?;
    Ok((after, limit))
}

/// Largest `limit` of `GET /flaky`.
pub const MAX_FLAKY_LIMIT: usize = 1000;
/// Default `limit` of `GET /flaky`.
pub const DEFAULT_FLAKY_LIMIT: usize = 100;

/// Parses `GET /flaky` parameters (owner left unset): `job_name`,
/// `prefix`, `min_score`, `class`, `limit`, `cursor`.
pub(crate) fn flaky_query(
    raw: Option<&str>,
) -> Result<orchestrator_core::flaky::FlakyQuery, ApiError> {
    use orchestrator_core::flaky::{Classification, FlakyQuery, MAX_KEY_LEN};
    let mut p = Params::parse(
        raw,
        &[
            "job_name",
            "prefix",
            "min_score",
            "class",
            "limit",
            "cursor",
        ],
    );
    let mut query = FlakyQuery {
        limit: DEFAULT_FLAKY_LIMIT,
        ..FlakyQuery::default()
    };
    for (name, slot) in [
        ("job_name", &mut query.job_name),
        ("prefix", &mut query.prefix),
        ("cursor", &mut query.cursor),
    ] {
        if let Some(v) = p.one(name) {
            if v.is_empty() || v.len() > MAX_KEY_LEN {
                p.problem(
                    name,
                    "invalid_value",
                    format!("{name} must be 1 to {MAX_KEY_LEN} bytes"),
                );
            } else {
                *slot = Some(v);
            }
        }
    }
    if let Some(raw) = p.one("min_score") {
        match raw.parse::<f64>() {
            Ok(m) if (0.0..=1.0).contains(&m) => query.min_score = Some(m),
            _ => p.problem(
                "min_score",
                "invalid_value",
                format!(
                    "min_score must be a number from 0 to 1, got {:?}",
                    clip(&raw)
                ),
            ),
        }
    }
    if let Some(raw) = p.one("class") {
        let all = [
            Classification::New,
            Classification::Stable,
            Classification::Flaky,
            Classification::Failing,
        ];
        match all.into_iter().find(|c| c.as_str() == raw) {
            Some(c) => query.class = Some(c),
            None => p.problem(
                "class",
                "invalid_value",
                format!(
                    "unknown class {:?}; one of: new, stable, flaky, failing",
                    clip(&raw)
                ),
            ),
        }
    }
    if let Some(n) = p.number("limit", 1, MAX_FLAKY_LIMIT as u64) {
        query.limit = n as usize;
    }
    p.finish()?;
    Ok(query)
}

/// Parses `GET /policies` parameters: whether every version is wanted.
pub(crate) fn policies_query(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut p = Params::parse(raw, &["all"]);
    let all = match p.one("all").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            let shown = clip(other);
            p.problem(
                "all",
                "invalid_value",
                format!("all must be true or false, got {shown:?}"),
            );
            false
        }
    };
    p.finish()?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaky_parameters_parse_strictly() {
        let q = flaky_query(Some(
            "job_name=ci&prefix=ci%2F&min_score=0.25&class=flaky&limit=5&cursor=ci%2Fa",
        ))
        .unwrap();
        assert_eq!(q.job_name.as_deref(), Some("ci"));
        assert_eq!(q.prefix.as_deref(), Some("ci/"));
        assert_eq!(q.min_score, Some(0.25));
        assert_eq!(
            q.class,
            Some(orchestrator_core::flaky::Classification::Flaky)
        );
        assert_eq!((q.limit, q.cursor.as_deref()), (5, Some("ci/a")));
        assert_eq!(flaky_query(None).unwrap().limit, DEFAULT_FLAKY_LIMIT);
        let Err(ApiError::InvalidParameters(p)) =
            flaky_query(Some("min_score=2&class=odd&limit=0&prefix=&owner=bob"))
        else {
            panic!("bad parameters accepted");
        };
        let mut paths: Vec<String> = p.into_iter().map(|p| p.path).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["?class", "?limit", "?min_score", "?owner", "?prefix"]
        );
    }

    fn problems(raw: &str) -> Vec<(String, String)> {
        match list_query(Some(raw)) {
            Err(ApiError::InvalidParameters(p)) => {
                p.into_iter().map(|p| (p.path, p.code)).collect()
            }
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_filter() {
        let (q, paging) = list_query(Some(
            "status=running,queued&status=failed&name=Suite&label=team%3Dqa&label=env=ci&created_after=2025-01-01T00:00:00Z&created_before=1800000000000&limit=100",
        ))
        .unwrap();
        assert_eq!(
            q.states,
            [JobState::Running, JobState::Queued, JobState::Failed]
        );
        assert_eq!(q.name.as_deref(), Some("Suite"));
        assert_eq!(q.labels.len(), 2);
        assert_eq!(q.created_after, Some(Timestamp(1_735_689_600_000)));
        assert_eq!(q.created_before, Some(Timestamp(1_800_000_000_000)));
        assert_eq!(q.limit, 100);
        assert_eq!(paging, Paging::Cursor);
        let (q, paging) = list_query(None).unwrap();
        assert_eq!((q.limit, paging), (DEFAULT_LIST_LIMIT, Paging::Cursor));
        assert_eq!(list_query(Some("page=3")).unwrap().1, Paging::Page(3));
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(problems("status=done"), [s("?status", "invalid_value")]);
        assert_eq!(problems("limit=0"), [s("?limit", "invalid_value")]);
        assert_eq!(problems("limit=101"), [s("?limit", "invalid_value")]);
        assert_eq!(problems("limit=ten"), [s("?limit", "invalid_value")]);
        assert_eq!(
            problems("created_after=yesterday"),
            [s("?created_after", "invalid_value")]
        );
        assert_eq!(problems("cursor=nope"), [s("?cursor", "invalid_value")]);
        assert_eq!(problems("sort=name"), [s("?sort", "unknown_parameter")]);
        assert_eq!(
            problems("name=a&name=b"),
            [s("?name", "duplicate_parameter")]
        );
        assert_eq!(problems("label=novalue"), [s("?label", "invalid_value")]);
        assert_eq!(problems("page=0"), [s("?page", "invalid_value")]);
        // Every problem at once.
        assert_eq!(problems("status=x&limit=1000&foo=1").len(), 3);
        assert!(events_query(Some("after=-1")).is_err());
        assert_eq!(events_query(Some("after=5&limit=10")).unwrap(), (5, 10));
    }
}
