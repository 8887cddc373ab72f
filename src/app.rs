//! The application's state: what every handler reaches, built once by `startup` and shared by
//! every worker of every listener (the TLS listeners' routes and the ops listener alike).

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

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
    /// Asks for what SIGHUP does (`POST /admin/reload`).
    pub reload: ReloadHandle,
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

type ReloadReply = oneshot::Sender<Result<(), String>>;

/// Asks the running gateway to re-read certificates, trust anchors, CRLs and policy, as SIGHUP
/// does, and waits for the outcome. `startup` serves the requests; on error the running
/// configuration stays in force and the answer names what was wrong.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadReply>);

/// Where `startup` receives reload requests.
pub struct ReloadRequests(mpsc::Receiver<ReloadReply>);

impl ReloadHandle {
    pub fn channel() -> (Self, ReloadRequests) {
        let (tx, rx) = mpsc::channel(4);
        (Self(tx), ReloadRequests(rx))
    }

    pub async fn reload(&self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(reply)
            .await
            .map_err(|_| "the reloader is not running".to_string())?;
        answer
            .await
            .map_err(|_| "the reloader stopped before answering".to_string())?
    }
}

impl ReloadRequests {
    /// The next request, with where its answer goes; `None` once the gateway is gone.
    pub async fn next(&mut self) -> Option<oneshot::Sender<Result<(), String>>> {
        self.0.recv().await
    }
}
