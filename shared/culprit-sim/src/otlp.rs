//! The simulator's resource and scope, built with `culprit_otlp::build`.

use crate::topology::{ENVIRONMENT, NAMESPACE};
use culprit_otlp::build;
use culprit_otlp::proto::common::v1::InstrumentationScope;
use culprit_otlp::proto::resource::v1::Resource;

pub(crate) fn resource(service: &str, version: &str, pod: &str) -> Resource {
    build::resource(
        service,
        &[
            ("service.version", version),
            ("deployment.environment", ENVIRONMENT),
            ("k8s.namespace.name", NAMESPACE),
            ("k8s.pod.name", pod),
        ],
    )
}

pub(crate) fn scope() -> InstrumentationScope {
    build::scope("culprit-sim", env!("CARGO_PKG_VERSION"))
}
