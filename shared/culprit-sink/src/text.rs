//! Small formatting helpers shared by the renderers.

use chrono::{DateTime, SecondsFormat};
use culprit_core::{Severity, UnixNanos, NANOS_PER_SEC};

/// RFC 3339 in UTC, to the second: `2024-05-01T12:00:00Z`.
pub(crate) fn rfc3339(t: UnixNanos) -> String {
    DateTime::from_timestamp_nanos(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `1h02m`, `5m30s`, `12s`; negative spans (clock skew between sources) read as `0s`.
pub(crate) fn duration(from: UnixNanos, to: UnixNanos) -> String {
    let secs = to.saturating_sub(from).max(0) / NANOS_PER_SEC;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Escapes text for HTML element content and quoted attribute values alike.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces control characters: a hostile service name must not move a terminal's cursor or
/// inject escape sequences, and must not break a line-oriented format.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Shortens to at most `max` characters, marking the cut with an ellipsis.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Fill colour per severity, worst the hottest; `None` (no anomaly of its own) is grey.
pub(crate) fn severity_fill(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Sev1) => "#d62828",
        Some(Severity::Sev2) => "#f77f00",
        Some(Severity::Sev3) => "#fcbf49",
        Some(Severity::Sev4) => "#ffe8a3",
        Some(Severity::Sev5) => "#cfe8fc",
        None => "#d9d9d9",
    }
}

/// Text colour that stays readable on [`severity_fill`].
pub(crate) fn severity_ink(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Sev1) | Some(Severity::Sev2) => "#ffffff",
        _ => "#1b1b1b",
    }
}

pub(crate) fn severity_label(severity: Option<Severity>) -> String {
    severity.map_or_else(|| "none".to_string(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(
            rfc3339(1_714_564_800 * NANOS_PER_SEC + 123),
            "2024-05-01T12:00:00Z"
        );
    }

    #[test]
    fn duration_picks_the_two_largest_units() {
        assert_eq!(duration(0, 330 * NANOS_PER_SEC), "5m30s");
        assert_eq!(duration(0, 3720 * NANOS_PER_SEC), "1h02m");
        assert_eq!(duration(10, 0), "0s");
    }

    #[test]
    fn html_escape_neutralises_markup() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn printable_strips_terminal_escapes() {
        assert_eq!(printable("cart\x1b[2J\nsvc"), "cart?[2J?svc");
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("äöüäöü", 4), "äöü…");
        assert_eq!(truncate("cart", 4), "cart");
    }
}
