//! TLS load for `bench compare`: new TLS connections (a full handshake,
//! a 16-byte request, a 16-byte reply) as fast as clients can make them,
//! with rustls on both ends: the client in the workload namespace names
//! the server (SNI), the server in the upstream namespace holds a
//! self-signed certificate for that name, which the client trusts. No
//! resumption and no tickets: every connection is a full handshake, as a
//! fresh client's first one is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::loadgen::{Exchange, conn_rate};
use super::netns::within;

/// Both ends' configurations for one certificate.
#[derive(Clone)]
pub struct TlsPair {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl TlsPair {
    /// From a PEM certificate and key (e.g. made by `openssl req -x509`):
    /// the server presents it, the client trusts it as its only root.
    pub fn from_pem(cert: &Path, key: &Path) -> anyhow::Result<TlsPair> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| cert.display().to_string())?
            .collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| key.display().to_string())?;
        #[allow(deprecated, reason = "ring has no post-quantum key exchange; these handshakes need none")]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)?;
        server.send_tls13_tickets = 0;
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots.add(c)?;
        }
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        Ok(TlsPair { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// Serves `threads` at a time on `addr` in `ns`: the handshake, reads 16
/// bytes, writes them back, closes.
pub fn serve_tls_echo(ns: &str, addr: SocketAddr, threads: usize, pair: &TlsPair) -> std::io::Result<()> {
    let listener = within(ns, move || TcpListener::bind(addr))??;
    for _ in 0..threads {
        let (l, config) = (listener.try_clone()?, pair.server.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            for tcp in l.incoming().flatten() {
                // The handshake's flights are several small writes: no Nagle.
                let _ = tcp.set_nodelay(true);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
                let Ok(conn) = ServerConnection::new(config.clone()) else { continue };
                let mut tls = StreamOwned::new(conn, tcp);
                if tls.read_exact(&mut buf).is_ok() && tls.write_all(&buf).is_ok() {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
    }
    Ok(())
}

/// New TLS connections per second made by `clients` threads in `ns`
/// against `server`, naming `name`, for `secs`, and the p99 of their
/// latency in microseconds (see [`conn_rate`]).
pub fn tls_conn_rate(
    ns: &str,
    server: SocketAddr,
    name: &str,
    pair: &TlsPair,
    clients: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    let name = ServerName::try_from(name.to_string())?;
    let config = pair.client.clone();
    let exchange: Exchange = Arc::new(move || {
        let tcp = TcpStream::connect_timeout(&server, Duration::from_secs(1)).ok()?;
        tcp.set_nodelay(true).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let conn = ClientConnection::new(config.clone(), name.clone()).ok()?;
        let mut tls = StreamOwned::new(conn, tcp);
        let (req, mut resp) = ([7u8; 16], [0u8; 16]);
        tls.write_all(&req).ok()?;
        tls.read_exact(&mut resp).ok()?;
        Some(())
    });
    conn_rate(ns, &exchange, clients, secs)
}
