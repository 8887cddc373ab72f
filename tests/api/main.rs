mod audit;
mod cli;
mod helpers;
mod ops;
mod resources;
mod tls;
mod tokens;
