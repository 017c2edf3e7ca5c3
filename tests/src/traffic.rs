//! Continuous traffic from the workload while a test disturbs the agent:
//! one long-lived TCP flow to a permitted server exchanging a message every
//! 50 ms, and every 100 ms a new connection to the permitted server, a new
//! connection to a denied one and a UDP datagram to a denied echo server.
//! Counts what got through and what did not; the tests assert on the counts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns::within;

/// What the traffic saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// Echoes on the long-lived flow.
    pub held_ok: AtomicU64,
    /// Failures of the long-lived flow (a reset, a timeout).
    pub held_failed: AtomicU64,
    /// New connections to the permitted server that completed an echo.
    pub new_ok: AtomicU64,
    pub new_failed: AtomicU64,
    /// Denied probes (TCP connects, UDP datagrams) that got an answer.
    pub leaks: AtomicU64,
    /// Denied probes sent.
    pub probes: AtomicU64,
}

/// Running traffic; [`Traffic::stop`] ends it and returns the counts.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a connect or an echo may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(3);

fn exchange(conn: &mut TcpStream, msg: [u8; 8]) -> bool {
    let mut buf = [0u8; 8];
    conn.write_all(&msg).is_ok() && conn.read_exact(&mut buf).is_ok() && buf == msg
}

impl Traffic {
    /// Starts traffic from namespace `ns`: `allowed` is a TCP echo server
    /// every pack permits; `denied_tcp` and `denied_udp` are echo servers
    /// every pack denies.
    pub fn start(
        ns: &str,
        allowed: SocketAddr,
        denied_tcp: SocketAddr,
        denied_udp: SocketAddr,
    ) -> std::io::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut held = within(ns, move || TcpStream::connect_timeout(&allowed, PATIENCE))??;
        held.set_read_timeout(Some(PATIENCE))?;
        let (held_stop, held_counts) = (stop.clone(), counts.clone());
        let held_thread = std::thread::spawn(move || {
            let mut seq = 0u64;
            while !held_stop.load(Ordering::Relaxed) {
                seq += 1;
                if exchange(&mut held, seq.to_be_bytes()) {
                    held_counts.held_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    held_counts.held_failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (probe_stop, probe_counts, ns) = (stop.clone(), counts.clone(), ns.to_string());
        let probe_thread = std::thread::spawn(move || {
            let _ = within(&ns, move || {
                let udp = UdpSocket::bind(if denied_udp.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok();
                if let Some(u) = &udp {
                    let _ = u.set_read_timeout(Some(Duration::from_millis(100)));
                }
                let mut seq = 0u64;
                while !probe_stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let ok = TcpStream::connect_timeout(&allowed, PATIENCE).is_ok_and(|mut c| {
                        c.set_read_timeout(Some(PATIENCE)).is_ok() && exchange(&mut c, seq.to_be_bytes())
                    });
                    let counter = if ok { &probe_counts.new_ok } else { &probe_counts.new_failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    probe_counts.probes.fetch_add(2, Ordering::Relaxed);
                    if TcpStream::connect_timeout(&denied_tcp, Duration::from_millis(100)).is_ok() {
                        probe_counts.leaks.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(u) = &udp {
                        let mut buf = [0u8; 16];
                        if u.send_to(b"leak?", denied_udp).is_ok() && u.recv_from(&mut buf).is_ok() {
                            probe_counts.leaks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        });
        Ok(Traffic { stop, counts, threads: vec![held_thread, probe_thread] })
    }

    /// The counts so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Stops the traffic and returns what it saw.
    pub fn stop(mut self) -> Arc<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.counts.clone()
    }
}

impl Counts {
    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "held ok {} failed {}; new ok {} failed {}; denied probes {} leaked {}",
            load(&self.held_ok),
            load(&self.held_failed),
            load(&self.new_ok),
            load(&self.new_failed),
            load(&self.probes),
            load(&self.leaks)
        )
    }
}
