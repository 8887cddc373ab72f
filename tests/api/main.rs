mod audit;
mod cli;
mod helpers;
mod resources;
mod tls;
mod tokens;
