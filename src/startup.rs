//! `Application`: builds stores, keys, policy, the audit writer and the TLS frontend, wires the
//! three listeners (mTLS, public TLS, ops) and exposes the ports it bound.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{Extensions, HttpService};
use actix_server::{Server, ServerHandle};
use actix_service::{ServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use crate::app::{AppState, ReloadHandle, ReloadRequests, RouteTable};
use crate::audit::{AuditError, AuditEvent, AuditLog};
use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::oauth::keys::{KeyError, SigningAlg, SigningKeys};
use crate::oauth::metadata;
use crate::oauth::token::{TokenService, certificate_revocation_key};
use crate::ops;
use crate::policy::{Policy, PolicyError};
use crate::routes;
use crate::routes::deadline::RequestTimeout;
use crate::state::{SharedState, StateError};
use crate::store::{Migrations, Store, StoreError};
use crate::tls::{Listener, Thumbprint, TlsError, TlsFrontend, TlsIo};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("upstream HTTP client: {0}")]
    Upstream(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr} ({which}): {source}{}",
        if source.kind() == std::io::ErrorKind::AddrInUse {
            "; is another obgate running? Stop it, or choose another port for this setting"
        } else { "" })]
    Bind {
        which: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How often registered self-signed certificates are re-read, so a `clients register` made by
/// another process is honoured at the handshake without a restart.
const SELF_SIGNED_REFRESH: Duration = Duration::from_secs(10);

/// How often the signing keys are re-read from `oauth.keys_dir` (a token naming a key not yet
/// seen prompts a read at once).
const KEYS_REFRESH: Duration = Duration::from_secs(10);

/// Checks that every listener's address can be bound, before anything is created on disk: a
/// port in use is reported first, not after a dev PKI was made and the sandbox seeded.
pub fn check_listeners(settings: &Settings) -> Result<(), StartupError> {
    for (which, addr) in [
        ("server.listen", settings.server.listen),
        ("server.public_listen", settings.server.public_listen),
        ("server.ops_listen", settings.server.ops_listen),
    ] {
        TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            which,
            addr,
            source,
        })?;
    }
    Ok(())
}

pub struct Application {
    server: Server,
    mtls_addr: SocketAddr,
    public_addr: SocketAddr,
    ops_addr: SocketAddr,
    state: web::Data<AppState>,
    tls: Arc<TlsFrontend>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`] on a given clock (tests move it instead of sleeping).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        let metrics = Metrics::new()?;
        let store = Store::connect_with(&settings.database.url, Migrations::RequireCurrent).await?;
        let shared = SharedState::connect(&settings.state.url)?;
        if let Err(e) = load_revocations(&store, &shared, clock.unix()).await {
            // Tokens are refused (503) until the revocations are in; the keeper below retries.
            tracing::warn!(error = %e, "could not load revocations into shared state yet");
        }
        revoke_crl_listed(&store, &shared, &settings.tls, clock.unix()).await?;
        let policy = Policy::load(&settings.policy.dir, &ops::openapi::protected_routes())?;
        let alg: SigningAlg = settings.oauth.signing_alg.parse()?;
        let keys = Arc::new(SigningKeys::load(&settings.oauth.keys_dir, alg)?);
        let tokens = TokenService::new(
            Arc::clone(&keys),
            settings.server.public_url.clone(),
            settings.server.mtls_url.clone(),
        );
        let audit = AuditLog::start(
            store.clone(),
            metrics.audit_events.clone(),
            &settings.database.audit_spool,
        )
        .await?;

        let tls = {
            let audit = audit.clone();
            let failures = metrics.cert_failures.clone();
            let clock = clock.clone();
            Arc::new(TlsFrontend::new(
                &settings.tls,
                Arc::new(move |failure| {
                    if failure.certificate_check {
                        failures.with_label_values(&[failure.reason]).inc();
                        let event = AuditEvent::handshake_refused(
                            clock.now(),
                            failure.peer.map(|p| p.ip()),
                            failure.cert.clone(),
                            failure.reason,
                            &failure.detail,
                        );
                        if !audit.record_detached(event) {
                            tracing::error!(
                                "audit queue full: a refused handshake went unrecorded"
                            );
                        }
                    }
                    tracing::info!(peer = ?failure.peer, reason = failure.reason, detail = %failure.detail, "TLS handshake refused");
                }),
            )?)
        };
        refresh_self_signed(&store, &tls).await?;
        tokio::spawn(keep_self_signed_fresh(store.clone(), Arc::downgrade(&tls)));
        tokio::spawn(keep_keys_fresh(Arc::downgrade(&keys)));

        let metadata = metadata::document(
            &settings.server.public_url,
            &settings.server.mtls_url,
            alg,
            policy.require_signed_request_object(),
        )
        .to_string();
        let upstream_http = reqwest::Client::builder()
            .tls_backend_native()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartupError::Upstream(e.to_string()))?;
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let bind = |which, addr| {
            TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| StartupError::Bind {
                    which,
                    addr,
                    source,
                })
        };
        let mtls_listener = bind("server.listen", settings.server.listen)?;
        let public_listener = bind("server.public_listen", settings.server.public_listen)?;
        let ops_listener = bind("server.ops_listen", settings.server.ops_listen)?;
        let local = |l: &TcpListener, which| {
            l.local_addr().map_err(|source| StartupError::Bind {
                which,
                addr: settings.server.listen,
                source,
            })
        };
        let mtls_addr = local(&mtls_listener, "server.listen")?;
        let public_addr = local(&public_listener, "server.public_listen")?;
        let ops_addr = local(&ops_listener, "server.ops_listen")?;

        let (reload, reload_requests) = ReloadHandle::channel();
        let state = web::Data::new(AppState {
            settings,
            store,
            tokens,
            policy: ArcSwap::from_pointee(policy),
            state: shared,
            audit,
            metrics,
            metadata,
            upstream_http,
            clock,
            routes: RouteTable::new(ops::openapi::routes()),
            password_checks: crate::resources::signin::PasswordChecks::new(2),
            reload,
        });
        tokio::spawn(serve_reloads(
            reload_requests,
            Arc::downgrade(&state.clone().into_inner()),
            Arc::clone(&tls),
        ));

        let mtls_factory = {
            let (state, tls) = (state.clone(), Arc::clone(&tls));
            move || tls_service(state.clone(), Arc::clone(&tls), Listener::Mtls, mtls_addr)
        };
        let public_factory = {
            let (state, tls) = (state.clone(), Arc::clone(&tls));
            move || {
                tls_service(
                    state.clone(),
                    Arc::clone(&tls),
                    Listener::Public,
                    public_addr,
                )
            }
        };
        let ops_factory = {
            let state = state.clone();
            move || {
                let timeout = RequestTimeout(Duration::from_secs(
                    state.settings.server.request_timeout_secs,
                ));
                let app = App::new()
                    .app_data(state.clone())
                    .app_data(web::Data::new(timeout))
                    .wrap(from_fn(routes::deadline::deadline))
                    .configure(ops::configure);
                HttpService::<TcpStream, _, BoxBody>::build()
                    .client_request_timeout(timeout.0)
                    .local_addr(ops_addr)
                    .finish(map_config(app, |()| AppConfig::default()))
                    .tcp()
            }
        };
        tokio::spawn(keep_revocations_loaded(Arc::downgrade(
            &state.clone().into_inner(),
        )));
        let server = Server::build()
            .workers(workers)
            .shutdown_timeout(5)
            .listen("mtls", mtls_listener, mtls_factory)
            .and_then(|b| b.listen("public", public_listener, public_factory))
            .and_then(|b| b.listen("ops", ops_listener, ops_factory))
            .map_err(|source| StartupError::Bind {
                which: "listeners",
                addr: mtls_addr,
                source,
            })?
            .run();
        Ok(Self {
            server,
            mtls_addr,
            public_addr,
            ops_addr,
            state,
            tls,
        })
    }

    pub fn mtls_addr(&self) -> SocketAddr {
        self.mtls_addr
    }
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The audit writer, so shutdown can flush it after the listeners have drained.
    pub fn audit_log(&self) -> crate::audit::AuditLog {
        self.state.audit.clone()
    }

    /// What SIGHUP does: re-read certificates, trust anchors, CRLs and policy. On any error
    /// the running configuration stays in force.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: self.state.clone(),
            tls: Arc::clone(&self.tls),
        }
    }

    /// Runs until the server is stopped (SIGINT/SIGTERM, or `handle().stop()`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

#[derive(Clone)]
pub struct Reloader {
    state: web::Data<AppState>,
    tls: Arc<TlsFrontend>,
}

impl Reloader {
    pub async fn reload(&self) -> Result<(), StartupError> {
        let settings = &self.state.settings;
        let policy = Policy::load(&settings.policy.dir, &ops::openapi::protected_routes())?;
        self.tls.reload(&settings.tls)?;
        revoke_crl_listed(
            &self.state.store,
            &self.state.state,
            &settings.tls,
            self.state.clock.unix(),
        )
        .await?;
        self.state.policy.store(Arc::new(policy));
        refresh_self_signed(&self.state.store, &self.tls).await?;
        self.state.tokens.keys().reload()?;
        Ok(())
    }
}

/// Answers `POST /admin/reload`: the same reload as SIGHUP, one at a time, until the gateway
/// is gone.
async fn serve_reloads(mut requests: ReloadRequests, state: Weak<AppState>, tls: Arc<TlsFrontend>) {
    while let Some(reply) = requests.next().await {
        let Some(state) = state.upgrade() else { return };
        let reloader = Reloader {
            state: web::Data::from(state),
            tls: Arc::clone(&tls),
        };
        let outcome = reloader.reload().await.map_err(|e| e.to_string());
        match &outcome {
            Ok(()) => tracing::info!("reloaded certificates, trust anchors, CRLs and policy"),
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the previous configuration stays")
            }
        }
        // The operator may have gone; the reload stands either way.
        let _ = reply.send(outcome);
    }
}

/// One connection's service on a TLS listener: our handshake, then actix-web over it, with the
/// peer identity attached to every request of the connection.
fn tls_service(
    state: web::Data<AppState>,
    tls: Arc<TlsFrontend>,
    listener: Listener,
    addr: SocketAddr,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()> {
    let timeout = RequestTimeout(Duration::from_secs(
        state.settings.server.request_timeout_secs,
    ));
    // The edge is the outer layer: a request cut off by the deadline is still counted and
    // audited.
    let app = App::new()
        .app_data(state)
        .app_data(listener)
        .app_data(web::Data::new(timeout))
        .wrap(from_fn(routes::deadline::deadline))
        .wrap(from_fn(routes::edge::edge))
        .configure(routes::for_listener(listener));
    let identify = Arc::clone(&tls);
    let http = HttpService::<TlsIo, _, BoxBody>::build()
        .client_request_timeout(timeout.0)
        .local_addr(addr)
        .on_connect_ext(move |io: &TlsIo, ext: &mut Extensions| {
            ext.insert(identify.identify(io.ssl()));
        })
        .finish(map_config(app, |()| AppConfig::default()));
    fn_service(move |tcp: TcpStream| {
        let tls = Arc::clone(&tls);
        async move { tls.accept(listener, tcp).await.ok_or(()) }
    })
    .and_then(http.map_err(|_| ()))
}

/// How soon lost revocations are noticed and reloaded, and certificates revoked elsewhere (the
/// CLI, another instance) are read from the database: well inside the one second SPEC §6
/// allows, for one small query per instance.
const REVOCATIONS_CHECK: Duration = Duration::from_millis(250);

/// Copies every live revocation from the database into shared state, then marks it complete.
async fn load_revocations(
    store: &Store,
    shared: &SharedState,
    now: i64,
) -> Result<(), StartupError> {
    let mut live = store.live_revocations(now).await?;
    live.extend(
        store
            .revoked_certificates(now)
            .await?
            .into_iter()
            .map(|(thumbprint, not_after)| (certificate_revocation_key(&thumbprint), not_after)),
    );
    shared.load_revocations(&live, now).await?;
    Ok(())
}

/// Revokes, in the client registry and shared state, every registered certificate a configured
/// CRL lists: the handshake already refuses it, and this refuses its tokens too (introspection
/// included). Run at start and on every reload.
async fn revoke_crl_listed(
    store: &Store,
    shared: &SharedState,
    tls: &crate::config::TlsSettings,
    now: i64,
) -> Result<(), StartupError> {
    if tls.crl.is_empty() {
        return Ok(());
    }
    let listed = crate::tls::crl_listed(tls)?;
    for (client_id, cert) in store.client_certificates().await? {
        if !listed.contains(&(cert.issuer.clone(), cert.serial.clone())) {
            continue;
        }
        let Ok(client_id) = client_id.parse::<crate::registry::ClientId>() else {
            continue;
        };
        store
            .revoke_client_certificate(&client_id, &cert.thumbprint)
            .await?;
        // The database is the record; should shared state be away, the keeper copies it
        // from there within a quarter second of its return.
        let key = certificate_revocation_key(&cert.thumbprint);
        if let Err(e) = shared.revoke(&key, cert.not_after, now).await {
            tracing::warn!(error = %e, "revoked in the database; shared state follows");
        }
        tracing::warn!(client = %client_id, thumbprint = %cert.thumbprint,
            "a CRL lists this registered certificate; revoked with its tokens");
    }
    Ok(())
}

/// Marks in shared state the certificates revoked in the database since it last looked, so a
/// revocation made elsewhere (the CLI, another instance) reaches this one within a second.
async fn sync_revoked_certificates(
    store: &Store,
    shared: &SharedState,
    known: &mut HashSet<String>,
    now: i64,
) -> Result<(), StartupError> {
    for (thumbprint, not_after) in store.revoked_certificates(now).await? {
        if !known.contains(&thumbprint) {
            shared
                .revoke(&certificate_revocation_key(&thumbprint), not_after, now)
                .await?;
            known.insert(thumbprint);
        }
    }
    Ok(())
}

/// Reloads the revocations whenever shared state has lost them (Redis restarted without its
/// data, keys evicted or flushed); until then tokens are refused with 503, never accepted.
async fn keep_revocations_loaded(state: Weak<AppState>) {
    let mut certificates = HashSet::new();
    loop {
        tokio::time::sleep(REVOCATIONS_CHECK).await;
        let Some(state) = state.upgrade() else { return };
        if let Ok(false) = state.state.revocations_loaded().await {
            match load_revocations(&state.store, &state.state, state.clock.unix()).await {
                Ok(()) => tracing::warn!("shared state had lost its revocations; reloaded"),
                Err(e) => tracing::warn!(error = %e, "could not reload revocations yet"),
            }
        }
        let now = state.clock.unix();
        if let Err(e) =
            sync_revoked_certificates(&state.store, &state.state, &mut certificates, now).await
        {
            tracing::warn!(error = %e, "could not read revoked certificates yet");
        }
    }
}

async fn refresh_self_signed(store: &Store, tls: &TlsFrontend) -> Result<(), StoreError> {
    let set: HashSet<Thumbprint> = store
        .self_signed_thumbprints()
        .await?
        .iter()
        .filter_map(|t| Thumbprint::from_b64url(t))
        .collect();
    tls.set_self_signed(set);
    Ok(())
}

async fn keep_self_signed_fresh(store: Store, tls: Weak<TlsFrontend>) {
    loop {
        tokio::time::sleep(SELF_SIGNED_REFRESH).await;
        let Some(tls) = tls.upgrade() else { return };
        if let Err(e) = refresh_self_signed(&store, &tls).await {
            tracing::warn!(error = %e, "could not refresh self-signed client certificates");
        }
    }
}

/// Re-reads the signing keys now and then, so instances sharing the keys directory converge on
/// one active key after a rotation and stop publishing a key an operator deleted.
async fn keep_keys_fresh(keys: Weak<SigningKeys>) {
    loop {
        tokio::time::sleep(KEYS_REFRESH).await;
        let Some(keys) = keys.upgrade() else { return };
        match tokio::task::spawn_blocking(move || keys.reload()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "signing keys could not be re-read; the previous keys stay")
            }
            Err(e) => tracing::error!(error = %e, "signing-key reload panicked"),
        }
    }
}
