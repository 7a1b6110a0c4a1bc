//! The shop: services, their pods, and the operations each request walks through.

/// Namespace every pod runs in (`k8s.namespace.name`).
pub const NAMESPACE: &str = "shop";
/// `deployment.environment` of every resource.
pub const ENVIRONMENT: &str = "prod";

/// Every service of the topology, callers before callees.
pub const SERVICES: [&str; 9] = [
    "frontend",
    "checkout",
    "catalog",
    "auth",
    "payment",
    "cart",
    "inventory",
    "redis-cache",
    "postgres-db",
];

/// Caller -> callee edges; every one of them appears as CLIENT -> SERVER spans in the traces.
pub const DEPENDENCIES: [(&str, &str); 9] = [
    ("frontend", "checkout"),
    ("frontend", "catalog"),
    ("frontend", "auth"),
    ("checkout", "payment"),
    ("checkout", "cart"),
    ("checkout", "inventory"),
    ("cart", "redis-cache"),
    ("inventory", "postgres-db"),
    ("payment", "auth"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Svc {
    Frontend,
    Checkout,
    Catalog,
    Auth,
    Payment,
    Cart,
    Inventory,
    RedisCache,
    PostgresDb,
}

impl Svc {
    pub(crate) const ALL: [Svc; 9] = [
        Svc::Frontend,
        Svc::Checkout,
        Svc::Catalog,
        Svc::Auth,
        Svc::Payment,
        Svc::Cart,
        Svc::Inventory,
        Svc::RedisCache,
        Svc::PostgresDb,
    ];

    pub(crate) fn name(self) -> &'static str {
        SERVICES[self as usize]
    }

    /// Stateless front tiers run two replicas; stores and the rest one.
    pub(crate) fn replicas(self) -> usize {
        match self {
            Svc::Frontend | Svc::Checkout | Svc::Catalog | Svc::Auth => 2,
            _ => 1,
        }
    }

    /// Idle CPU utilisation (0..1) and the extra utilisation per request/s on one pod.
    pub(crate) fn cpu_profile(self) -> (f64, f64) {
        match self {
            Svc::Frontend => (0.08, 0.012),
            Svc::Checkout => (0.06, 0.03),
            Svc::Catalog => (0.07, 0.02),
            Svc::Auth => (0.05, 0.018),
            Svc::Payment => (0.05, 0.04),
            Svc::Cart => (0.06, 0.03),
            Svc::Inventory => (0.08, 0.04),
            Svc::RedisCache => (0.03, 0.01),
            Svc::PostgresDb => (0.12, 0.05),
        }
    }

    /// Steady resident memory and the container limit, in MiB.
    pub(crate) fn memory_profile(self) -> (f64, f64) {
        match self {
            Svc::Frontend => (180.0, 512.0),
            Svc::Checkout => (260.0, 768.0),
            Svc::Catalog => (240.0, 768.0),
            Svc::Auth => (150.0, 512.0),
            Svc::Payment => (280.0, 768.0),
            Svc::Cart => (320.0, 1024.0),
            Svc::Inventory => (300.0, 768.0),
            Svc::RedisCache => (400.0, 1024.0),
            Svc::PostgresDb => (1400.0, 4096.0),
        }
    }

    /// Version running before any simulated deployment.
    pub(crate) fn base_version(self) -> &'static str {
        match self {
            Svc::Frontend => "4.12.0",
            Svc::Checkout => "1.8.3",
            Svc::Catalog => "3.1.0",
            Svc::Auth => "2.0.7",
            Svc::Payment => "5.4.2",
            Svc::Cart => "1.14.0",
            Svc::Inventory => "2.3.0",
            Svc::RedisCache => "7.2.4",
            Svc::PostgresDb => "16.3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Redis,
    Postgres,
}

/// One outgoing call of an operation.
#[derive(Debug)]
pub(crate) struct Call {
    pub op: OpId,
    /// The caller gives up (and fails the call) after this long.
    pub timeout_ms: f64,
    /// Extra attempts after a failed one.
    pub retries: u8,
    /// A failure of this call is absorbed (fallback) instead of failing the caller.
    pub tolerated: bool,
}

/// A server-side operation: its own processing time and the calls it makes, in order.
#[derive(Debug)]
pub(crate) struct Op {
    pub svc: Svc,
    pub name: &'static str,
    pub protocol: Protocol,
    /// Median of the operation's own (exclusive) time in ms, and the lognormal sigma.
    pub self_ms: f64,
    pub sigma: f64,
    pub calls: &'static [Call],
}

pub(crate) type OpId = usize;

pub(crate) const FE_PRODUCTS: OpId = 0;
pub(crate) const FE_PRODUCT: OpId = 1;
pub(crate) const FE_CHECKOUT: OpId = 2;
const CATALOG_LIST: OpId = 3;
const CATALOG_ITEM: OpId = 4;
const AUTH_VALIDATE: OpId = 5;
const CHECKOUT_PLACE: OpId = 6;
const CART_GET: OpId = 7;
const REDIS_GET: OpId = 8;
const INVENTORY_RESERVE: OpId = 9;
const PG_UPDATE: OpId = 10;
const PAYMENT_CHARGE: OpId = 11;

const fn call(op: OpId, timeout_ms: f64) -> Call {
    Call {
        op,
        timeout_ms,
        retries: 0,
        tolerated: false,
    }
}

/// Auth is cheap to retry, so both of its callers retry it up to three times.
const AUTH_CALL: Call = Call {
    op: AUTH_VALIDATE,
    timeout_ms: 500.0,
    retries: 3,
    tolerated: false,
};

pub(crate) const OPS: [Op; 12] = [
    Op {
        svc: Svc::Frontend,
        name: "GET /api/products",
        protocol: Protocol::Http,
        self_ms: 4.0,
        sigma: 0.3,
        calls: &[AUTH_CALL, call(CATALOG_LIST, 1000.0)],
    },
    Op {
        svc: Svc::Frontend,
        name: "GET /api/products/{id}",
        protocol: Protocol::Http,
        self_ms: 3.0,
        sigma: 0.3,
        calls: &[call(CATALOG_ITEM, 1000.0)],
    },
    Op {
        svc: Svc::Frontend,
        name: "POST /api/checkout",
        protocol: Protocol::Http,
        self_ms: 6.0,
        sigma: 0.3,
        calls: &[call(CHECKOUT_PLACE, 2500.0)],
    },
    Op {
        svc: Svc::Catalog,
        name: "GET /products",
        protocol: Protocol::Http,
        self_ms: 18.0,
        sigma: 0.35,
        calls: &[],
    },
    Op {
        svc: Svc::Catalog,
        name: "GET /products/{id}",
        protocol: Protocol::Http,
        self_ms: 8.0,
        sigma: 0.35,
        calls: &[],
    },
    Op {
        svc: Svc::Auth,
        name: "POST /validate",
        protocol: Protocol::Http,
        // Mostly the identity-provider round trip; sits well under the 500 ms client timeout.
        self_ms: 60.0,
        sigma: 0.3,
        calls: &[],
    },
    Op {
        svc: Svc::Checkout,
        name: "POST /orders",
        protocol: Protocol::Http,
        self_ms: 12.0,
        sigma: 0.3,
        calls: &[
            call(CART_GET, 500.0),
            call(INVENTORY_RESERVE, 300.0),
            call(PAYMENT_CHARGE, 1000.0),
        ],
    },
    Op {
        svc: Svc::Cart,
        name: "GET /cart/{id}",
        protocol: Protocol::Http,
        self_ms: 6.0,
        sigma: 0.3,
        calls: &[Call {
            op: REDIS_GET,
            timeout_ms: 250.0,
            retries: 0,
            tolerated: true,
        }],
    },
    Op {
        svc: Svc::RedisCache,
        name: "GET",
        protocol: Protocol::Redis,
        self_ms: 0.8,
        sigma: 0.3,
        calls: &[],
    },
    Op {
        svc: Svc::Inventory,
        name: "POST /reserve",
        protocol: Protocol::Http,
        self_ms: 20.0,
        sigma: 0.35,
        calls: &[call(PG_UPDATE, 500.0)],
    },
    Op {
        svc: Svc::PostgresDb,
        name: "UPDATE stock",
        protocol: Protocol::Postgres,
        self_ms: 4.0,
        sigma: 0.4,
        calls: &[],
    },
    Op {
        svc: Svc::Payment,
        name: "POST /charge",
        protocol: Protocol::Http,
        self_ms: 45.0,
        sigma: 0.35,
        calls: &[AUTH_CALL],
    },
];

/// Frontend entry points and their share of traffic.
pub(crate) const ENTRY_MIX: [(OpId, f64); 3] =
    [(FE_PRODUCTS, 0.45), (FE_PRODUCT, 0.30), (FE_CHECKOUT, 0.25)];

/// Services a request through `op` visits (each once, in call order).
pub(crate) fn services_on_path(op: OpId, out: &mut Vec<Svc>) {
    let o = &OPS[op];
    if !out.contains(&o.svc) {
        out.push(o.svc);
    }
    for c in o.calls {
        services_on_path(c.op, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dependency_is_an_operation_call_and_vice_versa() {
        let mut seen = Vec::new();
        for op in &OPS {
            for c in op.calls {
                let edge = (op.svc.name(), OPS[c.op].svc.name());
                if !seen.contains(&edge) {
                    seen.push(edge);
                }
            }
        }
        seen.sort();
        let mut expected = DEPENDENCIES.to_vec();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn service_enum_matches_public_names() {
        for (i, s) in Svc::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(s.name(), SERVICES[i]);
        }
    }
}
