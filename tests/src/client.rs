//! Lab client for DNS tests: for each name, resolve it with the system
//! resolver (glibc `getaddrinfo`: A and AAAA in parallel on one socket),
//! then open a TCP connection to the first address of the wanted family,
//! as an application would. Run inside a workload namespace through
//! `ip netns exec`, so that the namespace's `resolv.conf` applies.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Resolves and connects to each name; one JSON record per name:
/// `name`, `resolved`, `addr`, `connected`, `error`, `resolve_ms`, `connect_ms`.
pub fn resolve_connect(names: &[String], port: u16, timeout: Duration, family: u8) -> Vec<serde_json::Value> {
    names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|name| {
            let t0 = Instant::now();
            let resolved: Result<Vec<SocketAddr>, String> =
                (name.as_str(), port).to_socket_addrs().map(Iterator::collect).map_err(|e| e.to_string());
            let resolve_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let addrs = match resolved {
                Err(e) => {
                    return serde_json::json!({"name": name, "resolved": false, "error": e, "resolve_ms": resolve_ms});
                }
                Ok(a) => a,
            };
            let Some(addr) = addrs.iter().find(|a| if family == 6 { a.is_ipv6() } else { a.is_ipv4() }).copied() else {
                return serde_json::json!({"name": name, "resolved": true, "connected": false,
                    "error": "no address of that family", "resolve_ms": resolve_ms});
            };
            let t1 = Instant::now();
            let conn = TcpStream::connect_timeout(&addr, timeout);
            let connect_ms = t1.elapsed().as_secs_f64() * 1000.0;
            serde_json::json!({"name": name, "resolved": true, "addr": addr.ip().to_string(),
                "connected": conn.is_ok(), "error": conn.err().map(|e| e.to_string()),
                "resolve_ms": resolve_ms, "connect_ms": connect_ms})
        })
        .collect()
}
