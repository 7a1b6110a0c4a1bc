//! Fuzzing of the Nezha CSV readers: log and trace minute files, metric files, the case labels
//! and the dependency list, each read from a file as the importer and `culprit eval` read them
//! (plain or gzipped). A few thousand seeded inputs per reader here, `CULPRIT_FUZZ_ITERS` more
//! in `scripts/fuzz.sh`.
//!
//! What every input must satisfy: no panic; an error that names the file, or an outcome whose
//! skipped rows each name the file and line and whose OTLP request `culprit_otlp` converts
//! without error (a bad row is skipped here, it must not fail the whole minute downstream);
//! memory and time within budgets proportional to the input.

#[path = "../../culprit-otlp/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::CountingAlloc;
use culprit_nezha::{
    dependency_edges, read_logs, read_metrics, read_spans, Dataset, MetricOptions,
};
use culprit_otlp::fuzzing::{self, Budget, Check, Config, Mutator, Target, Verdict};
use culprit_otlp::{logs_to_events, metrics_to_events, traces_to_events};
use std::io::Write;
use std::path::Path;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const DEFAULT_ITERATIONS: u64 = 3000;

fn config() -> Config<'static> {
    Config::from_env(DEFAULT_ITERATIONS, Some(&ALLOC))
}

fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("CULPRIT_FUZZ_MAX_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 10);
    vec![max / 64, max / 16, max / 4, max]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// Each seed as written, and gzipped (the readers sniff the gzip magic).
fn with_gzip(seeds: &[String]) -> Vec<Vec<u8>> {
    seeds
        .iter()
        .flat_map(|s| [s.as_bytes().to_vec(), gzip(s.as_bytes())])
        .collect()
}

fn csv_dictionary(columns: &[&str]) -> Vec<Vec<u8>> {
    columns
        .iter()
        .copied()
        .chain([
            ",",
            "\n",
            "\r\n",
            "\"",
            "\"\"",
            "root",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "-1",
            "9223372036854775807",
            "9223372036854775808",
            "-6795364578871345152",
            "1674981670.0",
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            "00000000000000000000000000000000",
            "2023-01-29T09:20:29.299583319Z",
            "2023-01-29T09:20:29+08:00",
            "9999-12-31T23:59:60.9Z",
            "{\"log\":\"",
            "\\n\",\"time\":\"",
        ])
        .map(|t| t.as_bytes().to_vec())
        .chain([b"\x1f\x8b\x08\x00".to_vec()])
        .collect()
}

fn fuzz(target: &Target<'_>) {
    let report = fuzzing::run(target, &config());
    println!("{report}");
    report.assert_clean();
    assert!(
        report.inputs == 0 || report.accepted > 0,
        "{}: not one input was read, so the seeds are broken: {report}",
        target.name
    );
}

/// Checks how decoding scales; failures are collected so every check of a decoder runs.
fn scale(
    failures: &mut Vec<String>,
    name: &str,
    make: &dyn Fn(usize) -> Vec<u8>,
    check: &Check<'_>,
) {
    match fuzzing::scaling(
        name,
        make,
        check,
        &sizes(),
        &Budget::default(),
        Some(&ALLOC),
    ) {
        Ok(s) => println!("{s}"),
        Err(e) => failures.push(e),
    }
}

fn assert_scales(failures: &[String]) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rows repeated after a header to about `size` bytes.
fn rows(header: &str, row: &str, size: usize) -> Vec<u8> {
    let mut out = String::from(header);
    while out.len() < size {
        out.push_str(row);
    }
    out.into_bytes()
}

/// The properties of a reader's outcome: skipped rows name the file and line, and the request
/// converts. `convert` returns the conversion's error.
fn check_outcome(
    path: &Path,
    rows: usize,
    skipped: &[String],
    convert: Result<(), culprit_otlp::DecodeError>,
) -> Result<Verdict, String> {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if skipped.len() > rows {
        return Err(format!("{} rows skipped of {rows}", skipped.len()));
    }
    if let Some(bad) = skipped
        .iter()
        .find(|s| !s.contains(&*file) || !s.contains("line "))
    {
        return Err(format!("a skipped row does not name file and line: {bad}"));
    }
    convert.map_err(|e| format!("the reader's request does not convert: {e}"))?;
    Ok(Verdict::Accepted)
}

fn named_error(path: &Path, e: &culprit_nezha::NezhaError) -> Result<Verdict, String> {
    let text = e.to_string();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if text.contains(&*file) {
        Ok(Verdict::Rejected)
    } else {
        Err(format!("error does not name the file: {text}"))
    }
}

// ---- logs -----------------------------------------------------------------------------------

const LOG_HEADER: &str = "Timestamp,TimeUnixNano,Node,PodName,Container,TraceID,SpanID,Log\n";
const LOG_ROW: &str = "2023-01-29T09:20:29.295,1674984029295000000,n1,ts-a-service-1f-xy,server,0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,\"{\"\"log\"\":\"\"10:00:00.000 ERROR c.A#1 boom\\n\"\",\"\"stream\"\":\"\"stdout\"\",\"\"time\"\":\"\"2023-01-29T09:20:29.299583319Z\"\"}\"\n";

fn log_seeds() -> Vec<String> {
    vec![
        format!("{LOG_HEADER}{LOG_ROW}{LOG_ROW}"),
        format!(
            "{LOG_HEADER}t,100,n1,ts-b-service-2e-zz,server,,,plain line WARN x\n\
             2023-01-29T09:20:29.295,-6795364578871345152,n,p-a-b,c,,,\"{{\"\"log\"\":\"\"x ERROR y\\n\"\",\"\"time\"\":\"\"2023-01-29T09:20:29.299583319Z\"\"}}\"\n\
             t,soon,n,p-a-b,c,zz,zz,y\n\
             t,5,n,,c,,,no pod\n\
             t,6,n,p-a-b,c,,,\"{{\"\"log\"\":\"\"broken \"quote\"\" INFO\"\"}}\",extra,fields\n"
        ),
        "Timestamp,PodName,Log\nt,p,x\n".to_string(),
    ]
}

#[test]
fn fuzz_nezha_logs() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("09_20_log.csv");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write the input: {e}"))?;
        match read_logs(&path) {
            Ok(o) => check_outcome(
                &path,
                o.rows,
                &o.skipped,
                logs_to_events(&o.request).map(drop),
            ),
            Err(e) => named_error(&path, &e),
        }
    };
    let columns = [
        "Timestamp",
        "TimeUnixNano",
        "PodName",
        "Log",
        "TraceID",
        "SpanID",
    ];
    fuzz(&Target {
        name: "nezha-logs",
        mutator: Mutator::new(with_gzip(&log_seeds()), csv_dictionary(&columns)),
        check: &check,
        budget: Budget::default(),
    });
    scale(
        &mut failures,
        "nezha-logs rows",
        &|n| rows(LOG_HEADER, LOG_ROW, n),
        &check,
    );
    scale(
        &mut failures,
        "nezha-logs one long line",
        &|n| format!("{LOG_HEADER}t,1,n,p-a-b,c,,,{}\n", "x,".repeat(n / 2)).into_bytes(),
        &check,
    );
    scale(
        &mut failures,
        "nezha-logs gzip rows",
        &|n| gzip(&rows(LOG_HEADER, LOG_ROW, n * 8)),
        &check,
    );
    assert_scales(&failures);
}

// ---- traces ---------------------------------------------------------------------------------

const TRACE_HEADER: &str =
    "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n";
const TRACE_ROW: &str = "0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,b7ad6b7169203331,svc-3c-4d,GET /api/v1/x,1674984029295000000,1674984029395000000,100\n";

fn trace_seeds() -> Vec<String> {
    vec![
        format!(
            "{TRACE_HEADER}0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,root,gw-1a-2b,/*,10,30,0\n{TRACE_ROW}"
        ),
        format!(
            "{TRACE_HEADER}nothex,00f067aa0ba902b7,root,svc-3c-4d,GET,12,20,0\n\
             0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,zz,svc-3c-4d,GET,20,12,0\n\
             0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,root,,GET,1,2,0\n\
             0af7651916cd43dd8448eb211c80319c,00f067aa0ba902b7,root,p,GET,-1,1.5e3,0\n"
        ),
    ]
}

#[test]
fn fuzz_nezha_traces() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("09_20_trace.csv");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write the input: {e}"))?;
        match read_spans(&path) {
            Ok(o) => check_outcome(
                &path,
                o.rows,
                &o.skipped,
                traces_to_events(&o.request).map(drop),
            ),
            Err(e) => named_error(&path, &e),
        }
    };
    let columns = [
        "TraceID",
        "SpanID",
        "ParentID",
        "StartTimeUnixNano",
        "EndTimeUnixNano",
    ];
    fuzz(&Target {
        name: "nezha-traces",
        mutator: Mutator::new(with_gzip(&trace_seeds()), csv_dictionary(&columns)),
        check: &check,
        budget: Budget::default(),
    });
    scale(
        &mut failures,
        "nezha-traces rows",
        &|n| rows(TRACE_HEADER, TRACE_ROW, n),
        &check,
    );
    assert_scales(&failures);
}

// ---- metrics --------------------------------------------------------------------------------

/// Metric files: the input's first byte picks the file (a pod's metrics, the entry-point SLIs,
/// a call-edge latency table), the rest is its content; the whole folder is then read.
const METRIC_FILES: [&str; 4] = [
    "api-5f-ab_metric.csv",
    "front_service.csv",
    "source_50.csv",
    "destination_90.csv.gz",
];
const POD_METRICS: &str = "Time,TimeStamp,PodName,CpuUsageRate(%),PodServerLatencyP90(s)\n\
                           x,120,api-5f-ab,2.5,NaN\nx,60,api-5f-ab,1.5,0.2\nx,oops,api-5f-ab,1,1\nx,180,,,0.3\n";
const FRONT: &str =
    "Time,TimeStamp,ServiceName,SuccessRate(%),LatencyP50(s)\nx,61,Frontend,99,0.1\nx,62,,1,1\n";
const EDGES: &str = "time,timestamp,api_db,bogus,web_api\nx,62,0.01,1,inf\nx,1674984029,0.5,,2\n";

fn metric_seeds() -> Vec<Vec<u8>> {
    let with_file = |i: u8, body: &[u8]| [&[i][..], body].concat();
    vec![
        with_file(0, POD_METRICS.as_bytes()),
        with_file(1, FRONT.as_bytes()),
        with_file(2, EDGES.as_bytes()),
        with_file(3, &gzip(EDGES.as_bytes())),
        with_file(0, &gzip(POD_METRICS.as_bytes())),
    ]
}

#[test]
fn fuzz_nezha_metrics() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |bytes: &[u8]| {
        let Some((&selector, body)) = bytes.split_first() else {
            return Ok(Verdict::Rejected);
        };
        let path = dir
            .path()
            .join(METRIC_FILES[selector as usize % METRIC_FILES.len()]);
        std::fs::write(&path, body).map_err(|e| format!("cannot write the input: {e}"))?;
        let result = read_metrics(dir.path(), i64::MIN, i64::MAX, MetricOptions::default());
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove the input: {e}"))?;
        match result {
            Ok(o) => {
                // (Empty cells are not bounded by the input's size: a short row of a wide table
                // counts every missing cell.)
                let skipped: Vec<String> = o
                    .skipped
                    .iter()
                    .filter(|s| !s.ends_with("; ignored"))
                    .cloned()
                    .collect();
                check_outcome(&path, o.rows.max(skipped.len()), &skipped, {
                    metrics_to_events(&o.request).map(drop)
                })
            }
            Err(e) => named_error(&path, &e),
        }
    };
    let columns = ["TimeStamp", "PodName", "ServiceName", "a_b", "_", "x_"];
    fuzz(&Target {
        name: "nezha-metrics",
        mutator: Mutator::new(metric_seeds(), csv_dictionary(&columns)),
        check: &check,
        budget: Budget::default(),
    });
    scale(
        &mut failures,
        "nezha-metrics rows",
        &|n| [vec![0], rows(POD_METRICS, "x,240,api-5f-ab,2.5,0.1\n", n)].concat(),
        &check,
    );
    scale(
        &mut failures,
        "nezha-metrics wide edge table",
        &|n| {
            let columns: Vec<String> = (0..n / 16).map(|i| format!("svc{i}_db{i}")).collect();
            let values = vec!["0.5"; columns.len()].join(",");
            format!("\x02time,timestamp,{}\nx,60,{values}\n", columns.join(",")).into_bytes()
        },
        &check,
    );
    // Every point of an edge column carries the column's caller and callee: a long header
    // over many rows must not multiply.
    scale(
        &mut failures,
        "nezha-metrics long edge header",
        &|n| {
            let header = format!(
                "time,timestamp,{}_{}\n",
                "a".repeat(n / 4),
                "b".repeat(n / 4)
            );
            [vec![2], rows(&header, "x,60,1\n", n)].concat()
        },
        &check,
    );
    assert_scales(&failures);
}

// ---- labels and dependencies ----------------------------------------------------------------

const CASES_HEADER: &str = "case_id,date,inject_time_utc,inject_unix_s,root_cause_service,root_cause_pod,fault_type,fault_category,inner_service_label,minute_files\n";

#[test]
fn fuzz_nezha_cases() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("labels")).expect("labels dir");
    let path = dir.path().join("labels").join("cases.csv");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write the input: {e}"))?;
        let dataset = Dataset::open(dir.path()).map_err(|e| format!("cannot open: {e}"))?;
        match dataset.cases() {
            Ok(cases) if cases.iter().any(|c| c.id.is_empty()) => {
                Err("a case without an id".to_string())
            }
            Ok(_) => Ok(Verdict::Accepted),
            Err(e) => named_error(&path, &e),
        }
    };
    let seeds = vec![
        format!("{CASES_HEADER}c1,2023-01-29,2023-01-29 16:42:22,1674981742,ts-a,ts-a-5f-xy,cpu,resource,,08_42;08_43\n\n"),
        format!("{CASES_HEADER}c2,d,x,yesterday,s,p,t,code,label,\n"),
        "case_id,date,inject_unix_s,root_cause_service,root_cause_pod,fault_type,fault_category\n\
         c3,d,1,s,p,t,code\n,d,2,s,p,t,code\n"
            .to_string(),
    ];
    fuzz(&Target {
        name: "nezha-cases",
        mutator: Mutator::new(
            with_gzip(&seeds),
            csv_dictionary(&["case_id", "inject_unix_s", ";"]),
        ),
        check: &check,
        budget: Budget::default(),
    });
    let row = "c1,2023-01-29,x,1674981742,ts-a,ts-a-5f-xy,cpu,resource,,08_42;08_43\n";
    scale(
        &mut failures,
        "nezha-cases rows",
        &|n| rows(CASES_HEADER, row, n),
        &check,
    );
    assert_scales(&failures);
}

#[test]
fn fuzz_nezha_dependencies() {
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dependency.csv");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write the input: {e}"))?;
        match dependency_edges(dir.path()) {
            Ok(edges) if edges.iter().any(|(s, t)| s.is_empty() || t.is_empty()) => {
                Err("an edge with an empty end".to_string())
            }
            Ok(_) => Ok(Verdict::Accepted),
            Err(e) => named_error(&path, &e),
        }
    };
    let seeds = vec![
        "Source,Target,Weight\napi,db,1\nweb,api,2\n,,\n".to_string(),
        "Source,Target\napi,\n".to_string(),
    ];
    fuzz(&Target {
        name: "nezha-dependencies",
        mutator: Mutator::new(with_gzip(&seeds), csv_dictionary(&["Source", "Target"])),
        check: &check,
        budget: Budget::default(),
    });
    scale(
        &mut failures,
        "nezha-dependencies rows",
        &|n| rows("Source,Target\n", "api,db\n", n),
        &check,
    );
    assert_scales(&failures);
}
