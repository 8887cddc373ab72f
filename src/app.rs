//! The application's state: what every handler reaches, built once by `startup` and shared by
//! every worker of every listener (the TLS listeners' routes and the ops listener alike).

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::oauth::token::TokenService;
use crate::policy::Policy;
use crate::state::SharedState;
use crate::store::Store;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    pub tokens: TokenService,
    pub policy: ArcSwap<Policy>,
    pub state: SharedState,
    pub audit: AuditLog,
    pub metrics: Metrics,
    /// RFC 8414 metadata, rendered once.
    pub metadata: String,
    /// HTTP client for upstream core-banking systems (policy `upstreams`).
    pub upstream_http: reqwest::Client,
    /// The time every expiry is judged by.
    pub clock: crate::clock::Clock,
    /// Every route and its methods, for `405 Allow` and wrong-listener answers.
    pub routes: RouteTable,
    /// Bounds concurrent password checks (each scrypt holds 32 MiB), one per peer at a time.
    pub password_checks: crate::resources::signin::PasswordChecks,
}

/// Every route template with its methods, matched the way actix matches routes.
pub struct RouteTable(Vec<(actix_web::dev::ResourceDef, String, Vec<&'static str>)>);

impl RouteTable {
    pub fn new(routes: Vec<(String, Vec<&'static str>)>) -> Self {
        Self(
            routes
                .into_iter()
                .map(|(path, methods)| {
                    (
                        actix_web::dev::ResourceDef::new(path.as_str()),
                        path,
                        methods,
                    )
                })
                .collect(),
        )
    }

    /// The route template `path` matches, and its methods.
    pub fn lookup(&self, path: &str) -> Option<(&str, &[&'static str])> {
        self.0
            .iter()
            .find(|(def, _, _)| def.is_match(path))
            .map(|(_, template, methods)| (template.as_str(), methods.as_slice()))
    }
}
