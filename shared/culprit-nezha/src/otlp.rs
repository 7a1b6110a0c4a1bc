//! The importer's resources and scope, built with `culprit_otlp::build`.

use culprit_otlp::build;
use culprit_otlp::proto::common::v1::InstrumentationScope;
use culprit_otlp::proto::resource::v1::Resource;

/// The instrumentation scope stamped on everything this crate produces, so a consumer can tell
/// replayed dataset telemetry from live telemetry.
pub(crate) const SCOPE_NAME: &str = "culprit-nezha";

/// Service name of a Kubernetes pod: the pod name without its last two `-` segments (the
/// ReplicaSet hash and the pod suffix): `ts-travel-service-64469b5b48-25zj6` -> `ts-travel-service`.
/// A name with fewer than two `-` (not a Deployment pod) is returned unchanged.
pub fn service_of_pod(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    let (_suffix, _hash, service) = (parts.next(), parts.next(), parts.next());
    match service {
        Some(s) if !s.is_empty() => s,
        _ => pod,
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    build::scope(SCOPE_NAME, "")
}

/// Resource of one pod; empty `node`/`container` are left out.
pub(crate) fn pod_resource(pod: &str, node: &str, container: &str) -> Resource {
    let mut attributes = vec![("k8s.pod.name", pod)];
    if !node.is_empty() {
        attributes.push(("k8s.node.name", node));
    }
    if !container.is_empty() {
        attributes.push(("k8s.container.name", container));
    }
    build::resource(service_of_pod(pod), &attributes)
}

/// Resource of a whole service (entry-point SLIs, call-edge latencies), with no pod.
pub(crate) fn service_resource(service: &str) -> Resource {
    build::resource(service, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_name_loses_replicaset_hash_and_suffix() {
        assert_eq!(
            service_of_pod("ts-travel-service-64469b5b48-25zj6"),
            "ts-travel-service"
        );
        assert_eq!(service_of_pod("frontend-579b9bff58-t2dbm"), "frontend");
        assert_eq!(
            service_of_pod("ts-travel2-service-5b5d6c5c7-abcde"),
            "ts-travel2-service"
        );
    }

    #[test]
    fn pod_name_without_two_segments_is_kept_whole() {
        assert_eq!(service_of_pod("redis-0"), "redis-0");
        assert_eq!(service_of_pod("standalone"), "standalone");
        assert_eq!(service_of_pod("-a-b"), "-a-b");
        assert_eq!(service_of_pod(""), "");
    }
}
