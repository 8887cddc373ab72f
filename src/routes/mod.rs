//! The HTTP edge: thin handlers, one file per endpoint group, wired per listener. [`mtls`],
//! [`public`] and `ops::routes` are the route table: each handler is listed once there, and
//! registering it also documents it (`ops::openapi` collects the document from these lists,
//! and the policy's protected routes from the document).

pub mod admin;
pub mod authorize;
pub mod banking;
pub mod connected_apps;
pub mod consents;
mod customer;
pub mod deadline;
pub mod discovery;
pub mod edge;
pub mod error;
pub mod guard;
pub mod oauth;
pub mod pages;
pub mod upstream;

use actix_web::web;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::tls::Listener;

/// Where a route is served (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedOn {
    Mtls,
    Public,
    /// Discovery: both TLS listeners.
    BothTls,
    Ops,
}

impl ServedOn {
    pub fn of(path: &str) -> Self {
        if edge::is_customer_page(path) {
            Self::Public
        } else if path.starts_with("/.well-known/") || path == "/jwks" {
            Self::BothTls
        } else if matches!(path, "/metrics" | "/healthz" | "/readyz" | "/openapi.json")
            || path.starts_with("/docs")
        {
            Self::Ops
        } else {
            Self::Mtls
        }
    }

    pub fn includes(self, listener: Listener) -> bool {
        matches!(
            (self, listener),
            (Self::BothTls, _) | (Self::Mtls, Listener::Mtls) | (Self::Public, Listener::Public)
        )
    }
}

/// The routes a listener serves, registered as [`mtls`] and [`public`] list them (the same lists
/// the OpenAPI document and `policy check` read).
pub fn for_listener(listener: Listener) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let mut cfg = ServiceConfig::new(cfg);
        match listener {
            Listener::Mtls => mtls(&mut cfg),
            Listener::Public => public(&mut cfg),
        }
    }
}

/// The mTLS listener: authorization server, resource APIs (and, harmlessly, discovery).
pub fn mtls(cfg: &mut ServiceConfig) {
    cfg.service(oauth::token)
        .service(oauth::par)
        .service(oauth::introspect)
        .service(oauth::revoke)
        .service(consents::create_account_access_consent)
        .service(consents::get_account_access_consent)
        .service(consents::delete_account_access_consent)
        .service(consents::create_domestic_payment_consent)
        .service(consents::get_domestic_payment_consent)
        .service(consents::create_funds_confirmation_consent)
        .service(consents::get_funds_confirmation_consent)
        .service(banking::list_accounts)
        .service(banking::get_account)
        .service(banking::get_balances)
        .service(banking::get_transactions)
        .service(banking::create_payment)
        .service(banking::get_payment)
        .service(banking::confirm_funds)
        .service(admin::list_clients)
        .service(admin::get_client)
        .service(admin::approve_client)
        .service(admin::suspend_client)
        .service(admin::activate_client)
        .service(admin::delete_client)
        .service(admin::reload)
        .service(admin::list_certificates)
        .service(admin::add_certificate)
        .service(admin::revoke_certificate);
    discovery::configure(cfg);
    cfg.default_service(web::to(error::not_found));
}

/// The public TLS listener: discovery, JWKS and the customer's pages; never a client
/// certificate.
pub fn public(cfg: &mut ServiceConfig) {
    cfg.service(authorize::authorize)
        .service(authorize::authorize_login)
        .service(authorize::authorize_decision)
        .service(connected_apps::connected_apps)
        .service(connected_apps::connected_apps_login)
        .service(connected_apps::connected_apps_revoke)
        .service(connected_apps::connected_apps_logout);
    discovery::configure(cfg);
    cfg.default_service(web::to(error::not_found));
}
