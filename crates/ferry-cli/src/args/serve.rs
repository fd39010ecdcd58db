//! `ferry serve` and `ferry token …`: the admin API's flags and the tokens it is called
//! with. A token's scope is chosen when it is created, so reading and acting stay separate
//! grants.

use clap::{Args, Subcommand, ValueEnum};

use super::JsonFlag;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback (the default) or behind a TLS proxy: tokens
    /// travel in a header.
    #[arg(long, default_value = "127.0.0.1:7070", env = "FERRY_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Seconds between the samples the dashboard charts (ten minutes of history are kept at 5).
    #[arg(long, default_value_t = 5)]
    pub sample_every: u64,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 64 * 1024)]
    pub body_limit: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// GET routes and /metrics.
    Read,
    /// Everything: phase changes, rollouts, copy controls, buffer operations.
    Operator,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it. It is shown this once; only its SHA-256 is stored.
    Create {
        /// Who or what holds it (audit entries name it): letters, digits, '-', '_', '.', '@'.
        name: String,
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// Print {"token": ..., "name": ..., "scope": ...}.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (names, scopes, creation, revocation; never the tokens).
    List(JsonFlag),
    /// Revoke a token; requests with it are refused from then on.
    Revoke { name: String },
}
