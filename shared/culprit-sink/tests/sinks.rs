mod common;

use culprit_core::RcaAlert;
use culprit_sink::{AlertSink, FanOut, GraphFilesSink, JsonLinesSink, SinkError, SummarySink};
use pollster::block_on;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// A writer whose bytes the test can read back after the sink took ownership of it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Broken;

#[async_trait::async_trait]
impl AlertSink for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    async fn emit(&self, _: &RcaAlert) -> Result<(), SinkError> {
        Err(SinkError::Write {
            sink: "broken".into(),
            source: io::Error::other("disk full"),
        })
    }
}

/// A destination that refuses every alert for good, as PagerDuty does a malformed event.
struct Refusing;

#[async_trait::async_trait]
impl AlertSink for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    async fn emit(&self, _: &RcaAlert) -> Result<(), SinkError> {
        Err(SinkError::Rejected {
            sink: "refusing".into(),
            reason: "400 invalid event".into(),
        })
    }
}

#[test]
fn json_lines_round_trip_to_the_same_alert() -> Result<(), Box<dyn std::error::Error>> {
    let buf = Shared::default();
    let sink = JsonLinesSink::new("jsonl:test", Box::new(buf.clone()));
    let first = common::alert();
    let mut second = common::alert();
    second.revision = 4;
    second.status = culprit_core::IncidentStatus::Resolved;
    block_on(sink.emit(&first))?;
    block_on(sink.emit(&second))?;
    block_on(sink.flush())?;

    let text = buf.text();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(serde_json::from_str::<RcaAlert>(lines[0])?, first);
    assert_eq!(serde_json::from_str::<RcaAlert>(lines[1])?, second);
    Ok(())
}

#[test]
fn json_lines_file_creates_directories_and_appends() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/out/alerts.jsonl");
    let alert = common::alert();
    block_on(JsonLinesSink::file(&path)?.emit(&alert))?;
    let reopened = JsonLinesSink::file(&path)?;
    assert!(reopened.name().ends_with("alerts.jsonl"));
    block_on(reopened.emit(&alert))?;

    let text = std::fs::read_to_string(&path)?;
    assert_eq!(
        text.lines().count(),
        2,
        "the second sink appended instead of truncating"
    );
    for line in text.lines() {
        assert_eq!(serde_json::from_str::<RcaAlert>(line)?, alert);
    }
    Ok(())
}

#[test]
fn summary_sink_writes_the_rendered_summary() -> Result<(), SinkError> {
    let buf = Shared::default();
    let alert = common::alert();
    block_on(SummarySink::new("summary:test", Box::new(buf.clone())).emit(&alert))?;
    assert_eq!(
        buf.text(),
        format!("{}\n", culprit_sink::render_summary(&alert))
    );
    Ok(())
}

#[test]
fn graph_files_sink_writes_dot_and_html_per_incident() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sink = GraphFilesSink::new(dir.path().join("graphs"));
    assert_eq!(sink.last_paths(), None);
    let mut alert = common::alert();
    block_on(sink.emit(&alert))?;

    let (dot, html) = sink.last_paths().ok_or("no paths remembered")?;
    assert_eq!(
        dot,
        dir.path().join("graphs/prod-cartservice-1714564800.dot")
    );
    assert_eq!(
        html,
        dir.path().join("graphs/prod-cartservice-1714564800.html")
    );
    assert_eq!(std::fs::read_to_string(&dot)?, culprit_sink::to_dot(&alert));
    assert_eq!(
        std::fs::read_to_string(&html)?,
        culprit_sink::to_html(&alert)
    );

    // A new revision replaces the files in place and leaves no temporary files behind.
    alert.revision = 4;
    block_on(sink.emit(&alert))?;
    assert_eq!(sink.last_paths(), Some((dot, html.clone())));
    assert!(std::fs::read_to_string(&html)?.contains("revision 4"));
    assert_eq!(std::fs::read_dir(dir.path().join("graphs"))?.count(), 2);
    Ok(())
}

#[test]
fn graph_files_sink_keeps_hostile_ids_inside_its_directory(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sink = GraphFilesSink::new(dir.path());
    let mut alert = common::alert();
    alert.incident_id = "../../escape".into();
    block_on(sink.emit(&alert))?;
    let (dot, _) = sink.last_paths().ok_or("no paths remembered")?;
    assert_eq!(dot.parent(), Some(dir.path()));

    alert.incident_id = "..".into();
    assert!(matches!(
        block_on(sink.emit(&alert)),
        Err(SinkError::BadIncidentId(_))
    ));
    Ok(())
}

#[test]
fn fan_out_continues_past_a_failing_sink_and_reports_it() {
    let (before, after) = (Shared::default(), Shared::default());
    let fan = FanOut::new(vec![
        Arc::new(JsonLinesSink::new("before", Box::new(before.clone()))),
        Arc::new(Broken),
        Arc::new(JsonLinesSink::new("after", Box::new(after.clone()))),
    ]);
    let result = block_on(fan.emit(&common::alert()));

    assert!(
        matches!(&result, Err(SinkError::Write { sink, .. }) if sink == "broken"),
        "{result:?}"
    );
    assert_eq!(before.text().lines().count(), 1);
    assert_eq!(
        after.text().lines().count(),
        1,
        "the sink after the failing one still got the alert"
    );
    assert!(block_on(fan.flush()).is_ok());
}

#[test]
fn a_rejected_alert_is_given_up_and_counted_while_the_other_sinks_still_get_it() {
    let after = Shared::default();
    let fan = FanOut::new(vec![
        Arc::new(Refusing),
        Arc::new(JsonLinesSink::new("after", Box::new(after.clone()))),
    ]);
    // Retrying would be rejected again and hold back every later alert: not an error to retry.
    assert!(block_on(fan.emit(&common::alert())).is_ok());
    assert_eq!(fan.given_up(), 1);
    assert_eq!(after.text().lines().count(), 1);
    // A transient failure is still returned, for the caller to retry.
    let fan = FanOut::new(vec![Arc::new(Refusing), Arc::new(Broken)]);
    let result = block_on(fan.emit(&common::alert()));
    assert!(matches!(&result, Err(e) if e.is_retriable()), "{result:?}");
    assert_eq!(fan.given_up(), 1);
}
