//! A raw h2 client: frames and header blocks written byte by byte, so tests can send what
//! no well-behaved client library would (bad pseudo-headers, rapid resets, endless
//! CONTINUATION frames) and read what the gateway answers frame by frame.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame as read from the gateway.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// What the gateway did with one stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this `:status`.
    Status(u16),
    /// The stream was reset with this error code.
    Reset(u32),
    /// The connection was closed with GOAWAY and this error code.
    GoAway(u32),
    /// The connection ended without either.
    Closed,
}

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub struct H2 {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Settings the gateway announced: (identifier, value).
    pub settings: Vec<(u16, u32)>,
}

impl H2 {
    /// Sends the preface and empty settings over a TLS connection that chose h2.
    pub async fn start(mut tls: TlsStream<TcpStream>) -> Self {
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut h2 = Self { tls, buf: Vec::new(), settings: Vec::new() };
        h2.send(SETTINGS, 0, 0, &[]).await;
        h2
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let _ = self.tls.write_all(&frame(kind, flags, stream, payload)).await;
    }

    /// Writes many frames at once, as an attacker would.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// A request's header block, with END_HEADERS and END_STREAM.
    pub async fn request(&mut self, stream: u32, fields: &[(&str, &str)]) {
        self.send(HEADERS, END_HEADERS | END_STREAM, stream, &block(fields)).await;
    }

    /// The next frame, acknowledging the gateway's SETTINGS on the way; `None` once the
    /// connection is closed or nothing arrives for 10 s.
    pub async fn read(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
                    let frame = Frame { kind: head[3], flags: head[4], stream, payload: head[9..].to_vec() };
                    if frame.kind == SETTINGS && frame.flags & 0x1 == 0 {
                        for s in frame.payload.chunks_exact(6) {
                            let id = u16::from_be_bytes([s[0], s[1]]);
                            self.settings.push((id, u32::from_be_bytes(s[2..6].try_into().unwrap())));
                        }
                        self.send(SETTINGS, 0x1, 0, &[]).await;
                    }
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(Duration::from_secs(10), self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads until the gateway answers `stream`, resets it, or closes the connection.
    pub async fn outcome(&mut self, stream: u32) -> Outcome {
        while let Some(frame) = self.read().await {
            match frame.kind {
                HEADERS if frame.stream == stream => return Outcome::Status(status(&frame.payload)),
                RST_STREAM if frame.stream == stream => return Outcome::Reset(frame.error_code()),
                GOAWAY => return Outcome::GoAway(frame.error_code()),
                _ => {}
            }
        }
        Outcome::Closed
    }

    /// Reads until the connection ends; the GOAWAY error code if one came.
    pub async fn until_closed(&mut self) -> Option<u32> {
        let mut goaway = None;
        while let Some(frame) = self.read().await {
            if frame.kind == GOAWAY {
                goaway = Some(frame.error_code());
            }
        }
        goaway
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields without indexing (RFC 7541 §6.2.2), names and
/// values exactly as given: upper-case names, empty values and duplicates included.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name.as_bytes());
        string(&mut out, value.as_bytes());
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

fn integer(out: &mut Vec<u8>, mut n: usize, prefix_bits: u32, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

/// The `:status` of a response header block that starts with it, as h2 servers write it:
/// an indexed field (RFC 7541 static table 8–14) or a literal with the indexed name
/// `:status`, plain or Huffman-coded.
fn status(block: &[u8]) -> u16 {
    let indexed = [(0x88, 200), (0x89, 204), (0x8a, 206), (0x8b, 304), (0x8c, 400), (0x8d, 404), (0x8e, 500)];
    if let Some((_, code)) = indexed.iter().find(|(b, _)| *b == block[0]) {
        return *code;
    }
    assert!(matches!(block[0], 0x48 | 0x08 | 0x18), "the block starts with :status: {block:02x?}");
    let (huffman, len) = (block[1] & 0x80 != 0, (block[1] & 0x7f) as usize);
    let raw = &block[2..2 + len];
    let digits = if huffman { huffman_digits(raw) } else { String::from_utf8(raw.to_vec()).unwrap() };
    digits.parse().unwrap()
}

/// Decodes a Huffman string of decimal digits (RFC 7541 Appendix B: `0`–`2` take five bits,
/// `3`–`9` six), stopping at the padding.
fn huffman_digits(raw: &[u8]) -> String {
    let bits: Vec<u8> = raw.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
    let (mut out, mut at) = (String::new(), 0);
    while at + 5 <= bits.len() {
        let five = bits[at..at + 5].iter().fold(0u8, |acc, b| acc << 1 | b);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
        } else if at + 6 <= bits.len() {
            let six = five << 1 | bits[at + 5];
            if !(0b011001..=0b011111).contains(&six) {
                break;
            }
            out.push(char::from(b'3' + six - 0b011001));
            at += 6;
        } else {
            break;
        }
    }
    out
}
