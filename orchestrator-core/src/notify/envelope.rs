//! The JSON envelope every sink receives.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::executor::Notification;
use crate::journal::Record;
use crate::spec::JobSpec;
use crate::time::{JobId, Timestamp};

/// One event as notifications carry it. The JSON form is stable: fields
/// may be added, none is renamed or removed.
///
/// ```json
/// {
///   "id": "01JD…-42",
///   "type": "recovery.initiated",
///   "time": "2026-11-23T06:22:56.123Z",
///   "job": "01JD…",
///   "seq": 42,
///   "node": "unit-tests",
///   "details": {"kind": "infrastructure_retry"}
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    /// Unique and stable per event (`{job}-{seq}`; for a report that is not
    /// journaled, `{job}-unjournaled-{epoch ms}`): a receiver that sees an
    /// id twice (a retried delivery) can drop the copy.
    pub id: String,
    /// The event type, e.g. `escalation.required`, `recovery.completed`,
    /// `node.failed`, `execution.completed` (see [`crate::Event::name`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was journaled, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The job.
    pub job: JobId,
    /// The record's position in the job's journal (`GET /job/{id}/events`);
    /// 0 for a report that is not journaled.
    pub seq: u64,
    /// Whether the event is in the job's journal; `false` (and only then
    /// present in the JSON) for a report the executor published although it
    /// could not journal it — a stuck job's `escalation.required` (see
    /// [`crate::sweep`]). Such a report is delivered again, journaled, if
    /// the journal takes it later.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub journaled: bool,
    /// The node's id, for node events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The event's own fields: e.g. `attempt` and `failure` of a
    /// `node.failed`, `kind` and `outcome` of a `recovery.completed`,
    /// `cause` and `reason` of an `escalation.required`. Nodes appear by
    /// id in `node`, and by index here as `node_index`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Map<String, Value>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Envelope {
    /// The envelope of a notification of the executor's feed: of its
    /// record ([`Envelope::new`]), or of a report that is not journaled.
    pub fn of(n: &Notification, spec: Option<&JobSpec>) -> Self {
        let mut envelope = Self::new(&n.job, &n.record, spec);
        if !n.journaled {
            envelope.journaled = false;
            envelope.id = format!("{}-unjournaled-{}", n.job, n.record.at.as_millis());
        }
        envelope
    }

    /// The envelope of `record` of `job`; `spec` (the job's) names the node.
    pub fn new(job: &JobId, record: &Record, spec: Option<&JobSpec>) -> Self {
        let mut details = match serde_json::to_value(&record.event) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        details.remove("type");
        let index = record.event.node();
        if let Some(i) = details.remove("node") {
            details.insert("node_index".into(), i);
        }
        // The header repeats the whole spec: too big for a notification.
        if let Some(Value::Object(header)) = details.remove("header") {
            for key in ["owner", "created_at"] {
                if let Some(v) = header.get(key) {
                    details.insert(key.into(), v.clone());
                }
            }
            if let Some(name) = header.get("spec").and_then(|s| s.get("name")) {
                details.insert("name".into(), name.clone());
            }
        }
        let node = index.and_then(|i| {
            spec.and_then(|s| s.nodes().get(i as usize))
                .map(|n| n.id.clone())
        });
        Self {
            id: format!("{job}-{}", record.seq),
            kind: record.event.name().to_owned(),
            time: rfc3339(record.at),
            job: job.clone(),
            seq: record.seq,
            journaled: true,
            node,
            details,
        }
    }
}

/// `at` as RFC 3339 in UTC with milliseconds, e.g.
/// `2026-11-23T06:22:56.123Z`.
pub fn rfc3339(at: Timestamp) -> String {
    let ms = at.as_millis();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_that_is_not_journaled_says_so_and_has_its_own_id() {
        let job: JobId = "01JD0000000000000000000000".parse().unwrap();
        let record = Record {
            seq: 0,
            at: Timestamp(1_795_933_376_123),
            event: crate::recovery::stuck_job_escalation(90_000),
        };
        let journaled = Notification {
            job: job.clone(),
            record: Record {
                seq: 7,
                ..record.clone()
            },
            journaled: true,
        };
        let e = Envelope::of(&journaled, None);
        assert_eq!(e.id, format!("{job}-7"));
        assert!(e.journaled);
        let json = serde_json::to_value(&e).unwrap();
        assert!(json.get("journaled").is_none(), "absent when journaled");

        let report = Notification {
            job: job.clone(),
            record,
            journaled: false,
        };
        let e = Envelope::of(&report, None);
        assert_eq!(e.id, format!("{job}-unjournaled-1795933376123"));
        assert_eq!((e.seq, e.journaled), (0, false));
        assert_eq!(e.details["cause"], "job_stuck");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["journaled"], false);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Timestamp(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(Timestamp(1_795_933_376_123)),
            "2026-11-29T06:22:56.123Z"
        );
        assert_eq!(
            rfc3339(Timestamp(253_402_300_799_999)),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
