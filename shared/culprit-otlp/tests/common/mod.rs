//! Fixtures shared by the integration tests: OTLP/JSON documents as the Collector writes them.
#![allow(dead_code)]

/// The brief's Collector file-exporter trace line, verbatim in shape.
pub const COLLECTOR_TRACE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"","name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","status":{"code":2,"message":"boom"}}]}]}]}"#;

pub const COLLECTOR_LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[
  {"key":"service.name","value":{"stringValue":"payments"}},
  {"key":"deployment.environment","value":{"stringValue":"staging"}},
  {"key":"host.name","value":{"stringValue":"vm-7"}},
  {"key":"k8s.pod.name","value":{"stringValue":"payments-5d9f-abcde"}},
  {"key":"process.pid","value":{"intValue":"4242"}}]},
 "scopeLogs":[{"scope":{"name":"app"},"logRecords":[
  {"timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000001","severityNumber":17,"severityText":"Error","body":{"stringValue":"card declined"},"attributes":[{"key":"attempt","value":{"intValue":"2"}}],"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"},
  {"timeUnixNano":"0","observedTimeUnixNano":"1544712660400000000","severityText":"warning","body":{"kvlistValue":{"values":[{"key":"msg","value":{"stringValue":"slow"}},{"key":"ms","value":{"intValue":"950"}}]}}},
  {"timeUnixNano":"1544712660500000000","body":{"stringValue":"no level"},"traceId":"","spanId":""}]}]}]}"#;

pub const COLLECTOR_METRICS: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}},{"key":"deployment.environment.name","value":{"stringValue":"prod"}}]},
 "scopeMetrics":[{"scope":{"name":"meter"},"metrics":[
  {"name":"queue.depth","unit":"1","gauge":{"dataPoints":[
    {"timeUnixNano":"1544712660000000000","asDouble":12.5,"attributes":[{"key":"queue","value":{"stringValue":"orders"}}]},
    {"timeUnixNano":"1544712661000000000","asDouble":"NaN"},
    {"timeUnixNano":"1544712662000000000","asDouble":3,"flags":1}]}},
  {"name":"http.requests","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
    {"startTimeUnixNano":"1544712600000000000","timeUnixNano":"1544712660000000000","asInt":"42"}]}},
  {"name":"http.duration","unit":"ms","histogram":{"aggregationTemporality":2,"dataPoints":[
    {"startTimeUnixNano":"1544712600000000000","timeUnixNano":"1544712660000000000","count":"10","sum":420.5,
     "bucketCounts":["1","2","7","0"],"explicitBounds":[1,5,100],"min":0.5,"max":90,
     "exemplars":[{"timeUnixNano":"1544712659000000000","asDouble":88,"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}],
     "attributes":[{"key":"route","value":{"stringValue":"/cart"}}]}]}},
  {"name":"rpc.latency","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[
    {"timeUnixNano":"1544712660000000000","count":"6","sum":21,"scale":1,"zeroCount":"1","positive":{"offset":1,"bucketCounts":["2","3"]}}]}},
  {"name":"gc.pause","summary":{"dataPoints":[
    {"timeUnixNano":"1544712660000000000","count":"4","sum":10,"quantileValues":[{"quantile":0.5,"value":2},{"quantile":0.999,"value":7}]}]}}
 ]}]}]}"#;
