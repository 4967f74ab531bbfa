//! Where `serve` listens and how: an address or `off`, and the `[tls]` table.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// An address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        match text {
            "off" => Ok(Listen::Off),
            _ => text
                .parse()
                .map(Listen::At)
                .map_err(|_| format!("{text:?} is neither an address (host:port) nor off")),
        }
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(text: String) -> Result<Listen, String> {
        text.parse()
    }
}

impl Listen {
    pub(super) fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

/// The `[tls]` table: TLS on every gRPC port, and with `client_ca`, mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, a client
    /// without such a certificate is refused at the handshake. Default: none (no client
    /// certificates asked for).
    pub client_ca: Option<PathBuf>,
}
