//! `metric/`: per-pod metric files covering a whole day, entry-point SLIs, per call-edge latency,
//! and the service dependency list. Loaded once per date into a [`MetricStore`] and sliced into
//! time windows.

use crate::csvio::{cell, open_csv, parse_int, CsvFile};
use crate::error::{NezhaError, Result};
use crate::otlp::{pod_resource, scope, service_resource};
use crate::ReadOutcome;
use culprit_otlp::build::{self, str_attr, Number};
use culprit_otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use culprit_otlp::proto::metrics::v1::NumberDataPoint;
use culprit_otlp::proto::resource::v1::Resource;
use culprit_otlp::MAX_METRIC_NAME_BYTES;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Which metric files besides the per-pod ones to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricOptions {
    /// `front_service.csv`: entry-point SLIs as a resource named after its `ServiceName`.
    pub include_front_service: bool,
    /// `source_<q>.csv` / `destination_<q>.csv`: per call-edge latency on the callee's resource.
    pub include_edge_latency: bool,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            include_front_service: true,
            include_edge_latency: true,
        }
    }
}

/// Columns that describe a row rather than measure something.
const KEY_COLUMNS: [&str; 4] = ["time", "timestamp", "podname", "servicename"];

const NO_EDGE: u32 = u32::MAX;

/// The last second whose nanoseconds fit an i64 (2262-04-11).
const MAX_UNIX_S: i64 = i64::MAX / 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Point {
    time_s: i64,
    resource: u32,
    name: u32,
    edge: u32,
    value: f64,
}

/// Every metric of one date in memory, sorted by time, so many small windows cost no re-reading.
#[derive(Debug, Clone, Default)]
pub struct MetricStore {
    resources: Vec<Resource>,
    resource_index: HashMap<String, u32>,
    names: Vec<String>,
    name_index: HashMap<String, u32>,
    /// (caller, callee) of edge points.
    edges: Vec<(String, String)>,
    points: Vec<Point>,
    /// (time, empty cells) per CSV row, sorted by time.
    rows: Vec<(i64, u32)>,
    skipped: Vec<String>,
}

impl MetricStore {
    /// Reads every metric file of a date's `metric/` folder.
    pub fn load(dir: &Path, opts: MetricOptions) -> Result<MetricStore> {
        let entries = std::fs::read_dir(dir).map_err(|source| NezhaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .collect();
        files.sort();
        let mut store = MetricStore::default();
        for (name, path) in &files {
            let stem = name.strip_suffix(".gz").unwrap_or(name);
            let Some(stem) = stem.strip_suffix(".csv") else {
                continue;
            };
            if let Some(pod) = stem.strip_suffix("_metric") {
                store.load_table(path, Table::Pod(pod))?;
            } else if stem == "front_service" && opts.include_front_service {
                store.load_table(path, Table::Front)?;
            } else if opts.include_edge_latency {
                if let Some(q) = stem.strip_prefix("source_").filter(|q| is_number(q)) {
                    store.load_table(path, Table::Edge(format!("edge.client_latency_p{q}(s)")))?;
                } else if let Some(q) = stem.strip_prefix("destination_").filter(|q| is_number(q)) {
                    store.load_table(path, Table::Edge(format!("edge.server_latency_p{q}(s)")))?;
                }
            }
        }
        // Stable: points of one time keep file and column order.
        store.points.sort_by_key(|p| p.time_s);
        store.rows.sort_by_key(|r| r.0);
        Ok(store)
    }

    /// Rows that could not be used at all (bad timestamp), and ignored columns.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Number of data points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// First and last row time, epoch seconds.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        Some((self.rows.first()?.0, self.rows.last()?.0))
    }

    /// Every point with `from <= TimeStamp < to` (epoch seconds), one `ResourceMetrics` per pod or
    /// service, one gauge per column.
    pub fn window(&self, from_unix_s: i64, to_unix_s: i64) -> ExportMetricsServiceRequest {
        let lo = self.points.partition_point(|p| p.time_s < from_unix_s);
        let hi = self
            .points
            .partition_point(|p| p.time_s < to_unix_s)
            .max(lo);
        let mut by_resource: BTreeMap<u32, BTreeMap<u32, Vec<NumberDataPoint>>> = BTreeMap::new();
        for p in &self.points[lo..hi] {
            let attributes = match self.edges.get(p.edge as usize) {
                Some((caller, callee)) => {
                    vec![
                        str_attr("peer.caller", caller.as_str()),
                        str_attr("peer.callee", callee.as_str()),
                    ]
                }
                None => Vec::new(),
            };
            let time_unix_nano = (p.time_s.max(0) as u64).saturating_mul(1_000_000_000);
            let point = build::point(time_unix_nano, Number::Double(p.value), attributes);
            by_resource
                .entry(p.resource)
                .or_default()
                .entry(p.name)
                .or_default()
                .push(point);
        }
        let resource_metrics = by_resource
            .into_iter()
            .map(|(r, metrics)| {
                let metrics = metrics
                    .into_iter()
                    .map(|(n, points)| build::gauge(self.names[n as usize].clone(), "", points))
                    .collect();
                build::resource_metrics(self.resources[r as usize].clone(), scope(), metrics)
            })
            .collect();
        build::metrics_request(resource_metrics)
    }

    /// [`MetricStore::window`] with the window's row and empty-cell counts, and the load's skipped
    /// rows.
    pub fn window_outcome(
        &self,
        from_unix_s: i64,
        to_unix_s: i64,
    ) -> ReadOutcome<ExportMetricsServiceRequest> {
        let lo = self.rows.partition_point(|r| r.0 < from_unix_s);
        let hi = self.rows.partition_point(|r| r.0 < to_unix_s).max(lo);
        let rows = &self.rows[lo..hi];
        ReadOutcome {
            request: self.window(from_unix_s, to_unix_s),
            rows: rows.len(),
            skipped: self.skipped.clone(),
            empty_cells: rows.iter().map(|r| r.1 as usize).sum(),
        }
    }

    fn resource(&mut self, key: String, make: impl FnOnce() -> Resource) -> u32 {
        let next = self.resources.len() as u32;
        *self.resource_index.entry(key).or_insert_with(|| {
            self.resources.push(make());
            next
        })
    }

    fn name(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.name_index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.name_index
            .insert(name.to_string(), self.names.len() as u32 - 1);
        self.names.len() as u32 - 1
    }

    fn load_table(&mut self, path: &Path, table: Table<'_>) -> Result<()> {
        let mut f = open_csv(path)?;
        let c_time = f.column("TimeStamp")?;
        let c_pod = f.find("PodName");
        let c_service = match table {
            Table::Front => Some(f.column("ServiceName")?),
            _ => None,
        };
        let columns = self.value_columns(&f, &table);
        let mut rec = csv::ByteRecord::new();
        while f.next(&mut rec)? {
            let time = cell(&rec, c_time);
            // OTLP times are nanoseconds since 1970 that fit an i64 (until 2262).
            let Some(time_s) = parse_int(time).filter(|t| (0..=MAX_UNIX_S).contains(t)) else {
                self.skipped.push(
                    f.row_error(&rec, format!("bad TimeStamp '{time}'"))
                        .to_string(),
                );
                continue;
            };
            let resource = match (&table, c_service) {
                (Table::Pod(file_pod), _) => {
                    // The column wins; the file name is the fallback for an empty cell.
                    let pod = c_pod.map(|i| cell(&rec, i)).filter(|p| !p.is_empty());
                    let pod = pod.unwrap_or(file_pod).to_string();
                    Some(self.resource(format!("pod\u{1f}{pod}"), || pod_resource(&pod, "", "")))
                }
                (Table::Front, Some(i)) => {
                    let service = cell(&rec, i).to_ascii_lowercase();
                    if service.is_empty() {
                        self.skipped
                            .push(f.row_error(&rec, "empty ServiceName").to_string());
                        continue;
                    }
                    Some(self.service_resource(&service))
                }
                _ => None, // edge rows: resource per column
            };
            let mut empty = 0u32;
            for col in &columns {
                let text = cell(&rec, col.index);
                let value = match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => v,
                    // NaN means "no traffic this minute": absent, not an error.
                    _ => {
                        empty += 1;
                        continue;
                    }
                };
                let Some(resource) = col.resource.or(resource) else {
                    continue;
                };
                self.points.push(Point {
                    time_s,
                    resource,
                    name: col.name,
                    edge: col.edge,
                    value,
                });
            }
            self.rows.push((time_s, empty));
        }
        Ok(())
    }

    fn service_resource(&mut self, service: &str) -> u32 {
        self.resource(format!("service\u{1f}{service}"), || {
            service_resource(service)
        })
    }

    fn value_columns(&mut self, f: &CsvFile, table: &Table<'_>) -> Vec<Column> {
        let mut columns = Vec::new();
        for index in 0..f.headers.len() {
            let header = f.header(index);
            if header.is_empty() || KEY_COLUMNS.iter().any(|k| header.eq_ignore_ascii_case(k)) {
                continue;
            }
            // Every point of a column carries its header (as the metric name, or as caller and
            // callee): a header past OTLP's name limit would be refused downstream, and copied
            // once per row until then.
            if header.len() > MAX_METRIC_NAME_BYTES {
                self.skipped.push(format!(
                    "{}: column of a {}-byte name (at most {MAX_METRIC_NAME_BYTES}); ignored",
                    f.path.display(),
                    header.len()
                ));
                continue;
            }
            match table {
                Table::Edge(metric) => {
                    // `caller_callee`: Kubernetes names cannot hold `_`, so the first one splits.
                    let Some((caller, callee)) = header
                        .split_once('_')
                        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                    else {
                        self.skipped.push(format!(
                            "{}: column '{header}' is not caller_callee; ignored",
                            f.path.display()
                        ));
                        continue;
                    };
                    // An edge's latency belongs to the callee, where a slow call is explained.
                    let resource = Some(self.service_resource(callee));
                    self.edges.push((caller.to_string(), callee.to_string()));
                    let edge = self.edges.len() as u32 - 1;
                    columns.push(Column {
                        index,
                        name: self.name(metric),
                        edge,
                        resource,
                    });
                }
                _ => columns.push(Column {
                    index,
                    name: self.name(&header),
                    edge: NO_EDGE,
                    resource: None,
                }),
            }
        }
        columns
    }
}

enum Table<'a> {
    Pod(&'a str),
    Front,
    Edge(String),
}

struct Column {
    index: usize,
    name: u32,
    edge: u32,
    /// Set for edge columns; per-row tables take the row's resource.
    resource: Option<u32>,
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Every metric row with `from <= TimeStamp < to` in a date's `metric/` folder. Loads the whole
/// folder: for many windows of one date, load a [`MetricStore`] once and call
/// [`MetricStore::window`].
pub fn read_metrics(
    date_dir_metric: &Path,
    from_unix_s: i64,
    to_unix_s: i64,
    opts: MetricOptions,
) -> Result<ReadOutcome<ExportMetricsServiceRequest>> {
    Ok(MetricStore::load(date_dir_metric, opts)?.window_outcome(from_unix_s, to_unix_s))
}

/// Service edges `(source, target)` from `dependency.csv`, in file order; empty when the folder
/// has no such file.
pub fn dependency_edges(date_dir_metric: &Path) -> Result<Vec<(String, String)>> {
    let Some(path) = ["dependency.csv.gz", "dependency.csv"]
        .iter()
        .map(|n| date_dir_metric.join(n))
        .find(|p| p.is_file())
    else {
        return Ok(Vec::new());
    };
    let mut f = open_csv(&path)?;
    let (c_source, c_target) = (f.column("Source")?, f.column("Target")?);
    let mut edges = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while f.next(&mut rec)? {
        let (source, target) = (cell(&rec, c_source), cell(&rec, c_target));
        if source.is_empty() || target.is_empty() {
            if rec.iter().any(|c| !c.is_empty()) {
                return Err(f.row_error(&rec, "empty Source or Target"));
            }
            continue;
        }
        edges.push((source.to_string(), target.to_string()));
    }
    Ok(edges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_otlp::proto::common::v1::{any_value::Value, KeyValue};
    use culprit_otlp::proto::metrics::v1::metric;

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match &kv.value.as_ref()?.value {
                Some(Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w(
            "api-5f-ab_metric.csv",
            "Time,TimeStamp,PodName,CpuUsageRate(%),PodServerLatencyP90(s)\n\
             x,120,api-5f-ab,2.5,NaN\nx,60,api-5f-ab,1.5,0.2\nx,oops,api-5f-ab,1,1\nx,180,api-5f-ab,,0.3\n",
        );
        w(
            "front_service.csv",
            "Time,TimeStamp,ServiceName,SuccessRate(%)\nx,61,Frontend,99\n",
        );
        w(
            "source_50.csv",
            "time,timestamp,api_db,bogus\nx,62,0.01,1\n",
        );
        w("dependency.csv", "Source,Target,Weight\napi,db,1\n");
        dir
    }

    #[test]
    fn window_keeps_rows_in_range_and_counts_nan_cells() {
        let dir = folder();
        let store = MetricStore::load(dir.path(), MetricOptions::default()).unwrap();
        let out = store.window_outcome(60, 180);
        // Rows at 60, 61, 62, 120; the 180 row is outside; NaN at 120.
        assert_eq!((out.rows, out.empty_cells), (4, 1));
        assert!(out
            .skipped
            .iter()
            .any(|s| s.contains("line 4") && s.contains("'oops'")));
        assert!(out.skipped.iter().any(|s| s.contains("'bogus'")));
        let pod = &out.request.resource_metrics[0];
        let attrs = &pod.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(attrs, "service.name"), Some("api"));
        let cpu = &pod.scope_metrics[0].metrics[0];
        assert_eq!(cpu.name, "CpuUsageRate(%)");
        let Some(metric::Data::Gauge(g)) = &cpu.data else {
            panic!("not a gauge")
        };
        let times: Vec<u64> = g.data_points.iter().map(|p| p.time_unix_nano).collect();
        assert_eq!(times, vec![60_000_000_000, 120_000_000_000]);
    }

    #[test]
    fn front_service_and_edge_latency_become_service_resources() {
        let dir = folder();
        let out = read_metrics(dir.path(), 0, 1000, MetricOptions::default()).unwrap();
        let services: Vec<_> = out
            .request
            .resource_metrics
            .iter()
            .map(|r| attr(&r.resource.as_ref().unwrap().attributes, "service.name").unwrap())
            .collect();
        assert_eq!(services, vec!["api", "frontend", "db"]);
        let edge = &out.request.resource_metrics[2].scope_metrics[0].metrics[0];
        assert_eq!(edge.name, "edge.client_latency_p50(s)");
        let Some(metric::Data::Gauge(g)) = &edge.data else {
            panic!("not a gauge")
        };
        assert_eq!(
            attr(&g.data_points[0].attributes, "peer.caller"),
            Some("api")
        );
        assert_eq!(
            attr(&g.data_points[0].attributes, "peer.callee"),
            Some("db")
        );

        let only_pods = MetricOptions {
            include_front_service: false,
            include_edge_latency: false,
        };
        let out = read_metrics(dir.path(), 0, 1000, only_pods).unwrap();
        assert_eq!(out.request.resource_metrics.len(), 1);
    }

    #[test]
    fn dependency_edges_read_source_target_or_nothing() {
        let dir = folder();
        assert_eq!(
            dependency_edges(dir.path()).unwrap(),
            vec![("api".into(), "db".into())]
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(dependency_edges(empty.path()).unwrap().is_empty());
    }

    #[test]
    fn timestamps_outside_1970_to_2262_are_skipped() {
        // Found by the fuzzer: a TimeStamp past 2262 overflowed the nanosecond time and a
        // negative one became 1970, and culprit_otlp refused the whole window.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("source_50.csv"),
            "time,timestamp,api_db\nx,62,0.01\nx,16749840290,0.5\nx,-5,0.5\nx,9223372036854775807,1\n",
        )
        .unwrap();
        let out = read_metrics(dir.path(), i64::MIN, i64::MAX, MetricOptions::default()).unwrap();
        assert_eq!(out.rows, 1);
        let skipped: Vec<&String> = out
            .skipped
            .iter()
            .filter(|s| s.contains("TimeStamp"))
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("line 3") && skipped[0].contains("16749840290"));
        let events = culprit_otlp::metrics_to_events(&out.request).unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn columns_named_past_the_otlp_limit_are_ignored() {
        // Found by the fuzzer: such a column became a metric culprit_otlp refuses, and every
        // point of an edge column copied its caller and callee names.
        let dir = tempfile::tempdir().unwrap();
        let long = "c".repeat(MAX_METRIC_NAME_BYTES + 1);
        std::fs::write(
            dir.path().join("api-5f-ab_metric.csv"),
            format!("Time,TimeStamp,{long},Cpu\nx,60,1,2\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("source_50.csv"),
            format!("time,timestamp,a_{long}\nx,60,1\n"),
        )
        .unwrap();
        let out = read_metrics(dir.path(), 0, 1000, MetricOptions::default()).unwrap();
        let ignored = out
            .skipped
            .iter()
            .filter(|s| s.contains("-byte name"))
            .count();
        assert_eq!(ignored, 2, "{:?}", out.skipped);
        let events = culprit_otlp::metrics_to_events(&out.request).unwrap();
        assert_eq!(events.len(), 1, "only the Cpu column is left");
    }
}
