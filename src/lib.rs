//! obgate: an Open Banking partner API gateway. A request's story, top to bottom:
//! `tls` verifies the client certificate at the handshake and hands a `VerifiedClientCert` to the
//! request; `routes::guard` verifies the bearer token and its `cnf.x5t#S256` binding (a
//! `BoundToken`, built only by `oauth::token`), checks the client and asks `policy` for a
//! `Permit`; the handler calls `resources`; `audit` commits the event before the response leaves.

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consent;
pub mod digest;
pub mod metrics;
pub mod oauth;
pub mod ops;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod resources;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod tls;
pub mod tpp;
