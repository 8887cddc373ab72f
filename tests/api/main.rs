mod audit;
mod cli;
mod flows;
mod helpers;
mod ops;
mod resources;
mod tls;
mod tokens;
