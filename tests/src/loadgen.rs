//! Load for `bench compare`: new TCP connections as fast as clients can
//! make them, and a flood of small UDP datagrams, each from the workload
//! namespace to a server in the upstream namespace.

#![allow(clippy::cast_precision_loss, reason = "rates and latencies of counts far below 2^52")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::netns::within;

/// Serves `threads` at a time: reads 16 bytes, writes them back, closes.
pub fn serve_tcp_echo(ns: &str, addr: SocketAddr, threads: usize) -> std::io::Result<()> {
    let listener = within(ns, move || TcpListener::bind(addr))??;
    for _ in 0..threads {
        let l = listener.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            for mut c in l.incoming().flatten() {
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            }
        });
    }
    Ok(())
}

/// One connection's whole exchange, from a client thread already in the
/// client's namespace: `Some` when it completed.
pub type Exchange = Arc<dyn Fn() -> Option<()> + Send + Sync>;

/// New connections per second made by `clients` threads in `ns` against
/// `server` for `secs` (connect, 16-byte request, 16-byte reply, close),
/// and the p99 of their latency in microseconds. Fails if more than 1% fail.
pub fn tcp_conn_rate(ns: &str, server: SocketAddr, clients: usize, secs: f64) -> anyhow::Result<(f64, f64)> {
    let exchange: Exchange = Arc::new(move || {
        let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(1)).ok()?;
        let (req, mut resp) = ([7u8; 16], [0u8; 16]);
        c.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        c.write_all(&req).ok()?;
        c.read_exact(&mut resp).ok()
    });
    conn_rate(ns, &exchange, clients, secs)
}

/// Exchanges per second made by `clients` threads in `ns`, each running
/// `exchange` over and over for `secs`, and the p99 of their latency in
/// microseconds. Fails if more than 1% fail.
pub fn conn_rate(ns: &str, exchange: &Exchange, clients: usize, secs: f64) -> anyhow::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (stop, ns, exchange) = (stop.clone(), ns.to_string(), exchange.clone());
        threads.push(std::thread::spawn(move || {
            within(&ns, move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut failed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if exchange().is_some() { lat.push(t.elapsed().as_nanos() as u64) } else { failed += 1 }
                }
                (lat, failed)
            })
            .unwrap_or_default()
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in threads {
        let (l, f) = t.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
        lat.extend(l);
        failed += f;
    }
    anyhow::ensure!(
        failed * 100 <= lat.len() as u64 + 1,
        "{failed} failed connections against {} completed",
        lat.len()
    );
    lat.sort_unstable();
    let p99 = lat.get(lat.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0) as f64 / 1e3;
    Ok((lat.len() as f64 / secs, p99))
}

/// The first byte of a sender's greeting, which the sink answers.
const HELLO: u8 = 1;

/// A UDP server that counts datagrams. It answers each sender's greeting,
/// so that a stateful firewall sees the flow established, as it does for
/// real UDP traffic (DNS, QUIC) that has replies.
pub struct UdpSink {
    received: Arc<AtomicU64>,
}

impl UdpSink {
    pub fn start(ns: &str, addr: SocketAddr) -> std::io::Result<UdpSink> {
        let socket = within(ns, move || UdpSocket::bind(addr))??;
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                count.fetch_add(1, Ordering::Relaxed);
                if n > 0 && buf[0] == HELLO {
                    let _ = socket.send_to(b"ok", from);
                }
            }
        });
        Ok(UdpSink { received })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Datagrams per second `sink` receives while `senders` threads in `ns`
/// send 18-byte datagrams to `server` for `secs`, each from its own port
/// and only once its greeting was answered.
pub fn udp_pps(ns: &str, server: SocketAddr, senders: usize, secs: f64, sink: &UdpSink) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..senders {
        let (stop, ns) = (stop.clone(), ns.to_string());
        threads.push(std::thread::spawn(move || {
            within(&ns, move || -> std::io::Result<()> {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(server)?;
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                let (hello, payload) = ([HELLO; 18], [9u8; 18]);
                let mut reply = [0u8; 16];
                // Until the flow is answered (the first datagram may be judged slowly).
                let answered = (0..25).any(|_| s.send(&hello).is_ok() && s.recv(&mut reply).is_ok());
                if !answered {
                    return Err(std::io::Error::other("no answer from the UDP sink"));
                }
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let _ = s.send(&payload); // a full queue drops, as on a wire
                    }
                }
                Ok(())
            })
        }));
    }
    std::thread::sleep(Duration::from_millis(300)); // every sender answered and sending
    let (start, t) = (sink.received(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let pps = (sink.received() - start) as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("sender panicked"))???;
    }
    Ok(pps)
}

/// Busy and total jiffies of all CPUs so far (`/proc/stat`).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().take(8).sum();
    Some((total - idle, total))
}

/// Waits until the machine is quiet (under 10% busy over two windows of
/// 250 ms in a row), for at most `max`: work a system leaves behind when
/// it starts or stops (freeing a killed agent's maps, say) must not be
/// charged to the next measurement. Returns the time waited.
pub fn settle(max: Duration) -> Duration {
    let started = Instant::now();
    let mut quiet = 0;
    let mut last = cpu_jiffies();
    while started.elapsed() < max && quiet < 2 {
        std::thread::sleep(Duration::from_millis(250));
        let now = cpu_jiffies();
        let busy = match (last, now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        quiet = if busy < 0.10 { quiet + 1 } else { 0 };
        last = now;
    }
    started.elapsed()
}
