//! TLS ClientHellos as a workload's client sends them, for lab traffic to
//! WebGroup destinations: the gateway reads the server name (SNI) of a
//! flow's first message, so lab clients name the host they resolved.

/// A TLS 1.3-shaped ClientHello (one record) naming `name`, with `pad`
/// bytes of a padding extension before the `server_name` extension, so
/// that tests can put the name late in the message.
pub fn client_hello(name: &str, pad: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    push16(&mut ext, 21);
    push16(&mut ext, pad);
    ext.resize(ext.len() + pad, 0);
    let n = name.as_bytes();
    push16(&mut ext, 0);
    push16(&mut ext, n.len() + 5);
    push16(&mut ext, n.len() + 3);
    ext.push(0);
    push16(&mut ext, n.len());
    ext.extend_from_slice(n);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    // No session id; one suite (TLS_AES_128_GCM_SHA256); null compression.
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    push16(&mut body, ext.len());
    body.extend_from_slice(&ext);
    let mut hs = vec![1, 0];
    push16(&mut hs, body.len());
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    push16(&mut rec, hs.len());
    rec.extend_from_slice(&hs);
    rec
}

fn push16(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u16).to_be_bytes());
}

/// TCP flags of [`tcp_segment`].
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH_ACK: u8 = 0x18;
pub const URG: u8 = 0x20;

/// The server's initial sequence number in [`tcp_segment`]s: segments with
/// ACK acknowledge its SYN.
pub const SERVER_ISN: u32 = 5_000_000;

/// One IPv4 TCP segment from `src` to `dst` (Ethernet frame, checksums
/// left zero: the datapath does not check them) with sequence number `seq`.
pub fn tcp_segment(src: [u8; 4], dst: ([u8; 4], u16), sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = 20 + 20 + payload.len();
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    let ack = if flags & ACK != 0 { SERVER_ISN + 1 } else { 0 };
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_add_up() {
        let h = client_hello("api.example.com", 10);
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), h.len() - 5, "record length");
        assert_eq!(usize::from(u16::from_be_bytes([h[7], h[8]])), h.len() - 9, "handshake length");
        assert!(h.ends_with(b"api.example.com"));
    }
}
