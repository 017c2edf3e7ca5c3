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
