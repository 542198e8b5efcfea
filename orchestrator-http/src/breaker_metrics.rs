//! The circuit-breaker block of `GET /metrics`, read from
//! [`Executor::breakers`](orchestrator_core::Executor::breakers) at every
//! scrape.
//!
//! Breakers live in the scheduler task, which already counts their
//! transitions, so asking it at scrape time is exact and needs no state
//! here (the event feed can lag; this cannot drift).

use std::fmt::Write as _;

use orchestrator_core::breaker::BreakerState;
use orchestrator_core::executor::BreakerStatus;

const STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
];

/// A metric's name, type, help text, and how to read it off a breaker.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BreakerStatus) -> u64,
);

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Appends the breaker metrics of `breakers` to `out`: one state series per
/// (dependency, state) valued 1 for the current state and 0 otherwise, the
/// transitions counter, the ready nodes waiting, and the window's counts.
pub(crate) fn render(out: &mut String, breakers: &[BreakerStatus]) {
    out.push_str("# HELP orchestrator_breaker_state Circuit breaker state by dependency: 1 for the current state, 0 for the others.\n# TYPE orchestrator_breaker_state gauge\n");
    for b in breakers {
        let dep = label(&b.dependency);
        for state in STATES {
            let v = u8::from(b.state == state);
            let _ = writeln!(
                out,
                "orchestrator_breaker_state{{dependency=\"{dep}\",state=\"{}\"}} {v}",
                state.as_str()
            );
        }
    }
    let series: [Series; 4] = [
        (
            "orchestrator_breaker_transitions_total",
            "counter",
            "Circuit breaker state changes by dependency.",
            |b| b.transitions,
        ),
        (
            "orchestrator_breaker_waiting_nodes",
            "gauge",
            "Ready nodes waiting for the dependency's breaker.",
            |b| b.waiting as u64,
        ),
        (
            "orchestrator_breaker_window_calls",
            "gauge",
            "Outcomes in the breaker's window.",
            |b| u64::from(b.calls),
        ),
        (
            "orchestrator_breaker_window_failures",
            "gauge",
            "Failures in the breaker's window.",
            |b| u64::from(b.failures),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in breakers {
            let _ = writeln!(
                out,
                "{name}{{dependency=\"{}\"}} {}",
                label(&b.dependency),
                value(b)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label("farm"), "farm");
    }
}
