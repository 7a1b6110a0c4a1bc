//! Small builders for the OTLP protobuf types.

use crate::topology::{ENVIRONMENT, NAMESPACE};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub(crate) fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

pub(crate) fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

pub(crate) fn resource(service: &str, version: &str, pod: &str) -> Resource {
    Resource {
        attributes: vec![
            kv_str("service.name", service),
            kv_str("service.version", version),
            kv_str("deployment.environment", ENVIRONMENT),
            kv_str("k8s.namespace.name", NAMESPACE),
            kv_str("k8s.pod.name", pod),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "culprit-sim".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}
