//! RFC 6455 frame headers, read as bytes pass through a tunnel (README: WebSockets).
//!
//! A [`FrameReader`] follows one direction of an upgraded connection: it reads each frame's
//! header, lets the payload bytes pass without copying or unmasking them, and so knows where
//! messages begin and end. It keeps no buffer of its own: the tunnel's read buffer holds an
//! incomplete header until the rest arrives (a header is at most [`MAX_HEADER`] bytes).

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
pub const MAX_HEADER: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why a direction's frames cannot pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame RFC 6455 forbids: close code 1002.
    Protocol(&'static str),
    /// A message longer than the route allows: close code 1009.
    TooBig,
}

/// Reads the frames of one direction.
#[derive(Debug)]
pub struct FrameReader {
    /// Frames from the client are masked, frames from the server are not (RFC 6455 §5.1).
    from_client: bool,
    max_message: u64,
    /// Payload bytes of the current frame not yet passed.
    remaining: u64,
    /// Payload bytes so far of a data message whose last frame has not come.
    message: Option<u64>,
    /// Data messages completed (their final frame's header read).
    pub messages: u64,
    /// Frames read.
    pub frames: u64,
    /// A close frame was read.
    pub closed: bool,
}

impl FrameReader {
    /// A reader of the frames a client (`from_client`) or a server sends.
    pub fn new(from_client: bool, max_message: u64) -> Self {
        Self { from_client, max_message, remaining: 0, message: None, messages: 0, frames: 0, closed: false }
    }

    /// Whether the bytes passed so far end on a frame boundary: a frame of the gateway's own
    /// (a close) can be written after them.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Reads as far into `buf` as whole headers and any payload go. Returns how many bytes may
    /// pass on: the rest is an incomplete header to keep until more bytes come. On an error
    /// the count is that of the bytes before the offending frame.
    pub fn advance(&mut self, buf: &[u8]) -> (usize, Result<(), FrameError>) {
        let mut pos = 0;
        while pos < buf.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((buf.len() - pos) as u64);
                self.remaining -= take;
                pos += take as usize; // `take` <= buf.len()
                continue;
            }
            match self.header(&buf[pos..]) {
                Ok(Some(len)) => pos += len,
                Ok(None) => break,
                Err(e) => return (pos, Err(e)),
            }
        }
        (pos, Ok(()))
    }

    /// Reads one header at the start of `buf`: its length, or `None` when incomplete.
    fn header(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if masked {
            at += 4;
        }
        if buf.len() < at {
            return Ok(None);
        }
        if len >> 63 != 0 {
            return Err(FrameError::Protocol("64-bit length with the top bit set"));
        }
        if masked != self.from_client {
            return Err(FrameError::Protocol(if self.from_client {
                "unmasked frame from the client"
            } else {
                "masked frame from the server"
            }));
        }
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if len > 125 {
                    return Err(FrameError::Protocol("control frame longer than 125 bytes"));
                }
                if !fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if opcode == OP_CLOSE {
                    self.closed = true;
                }
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let so_far = match (opcode, self.message) {
                    (OP_CONTINUATION, Some(so_far)) => so_far,
                    (OP_CONTINUATION, None) => return Err(FrameError::Protocol("continuation outside a message")),
                    (_, Some(_)) => return Err(FrameError::Protocol("new message inside a fragmented one")),
                    (_, None) => 0,
                };
                let total = so_far.saturating_add(len);
                if total > self.max_message {
                    return Err(FrameError::TooBig);
                }
                if fin {
                    self.message = None;
                    self.messages += 1;
                } else {
                    self.message = Some(total);
                }
            }
            _ => return Err(FrameError::Protocol("reserved opcode")),
        }
        self.frames += 1;
        self.remaining = len;
        Ok(Some(at))
    }
}

/// A close frame with `code` and `reason` (at most 123 bytes; longer is cut), masked with
/// `mask` when it goes to a server.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut reason = reason.as_bytes();
    reason = &reason[..reason.len().min(123)];
    let len = 2 + reason.len();
    let mut out = Vec::with_capacity(6 + len);
    out.push(0x80 | OP_CLOSE);
    out.push(if mask.is_some() { 0x80 } else { 0 } | len as u8); // len <= 125
    let start = out.len() + mask.map_or(0, |_| 4);
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    if let Some(m) = mask {
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        out
    }

    #[test]
    fn whole_frames_pass_and_messages_are_counted() {
        let mut r = FrameReader::new(true, 1 << 20);
        let mut bytes = client_frame(0x81, b"hello");
        bytes.extend(client_frame(0x02, &[0; 300]));
        bytes.extend(client_frame(0x89, b"ping"));
        bytes.extend(client_frame(0x80, &[0; 70_000]));
        assert_eq!(r.advance(&bytes), (bytes.len(), Ok(())));
        assert_eq!((r.messages, r.frames, r.at_boundary()), (2, 4, true));
    }

    #[test]
    fn a_header_split_anywhere_waits_for_the_rest() {
        let bytes = client_frame(0x82, &[7; 200]);
        for cut in 1..8 {
            let mut r = FrameReader::new(true, 1 << 20);
            assert_eq!(r.advance(&bytes[..cut]), (0, Ok(())), "cut at {cut}");
            let (n, ok) = r.advance(&bytes);
            assert_eq!((n, ok), (bytes.len(), Ok(())));
        }
        let mut r = FrameReader::new(true, 1 << 20);
        assert_eq!(r.advance(&bytes[..100]), (100, Ok(())));
        assert!(!r.at_boundary());
        assert_eq!(r.advance(&bytes[100..]), (bytes.len() - 100, Ok(())));
        assert!(r.at_boundary());
    }

    #[test]
    fn forbidden_frames_are_protocol_errors_after_the_good_bytes() {
        let good = client_frame(0x81, b"ok");
        let cases: [(Vec<u8>, bool); 6] = [
            (client_frame(0x83, b""), true),                                 // reserved opcode
            (client_frame(0x89, &[0; 126]), true),                           // control frame too long
            (client_frame(0x09, b""), true),                                 // fragmented control frame
            (vec![0x81, 0x02, b'h', b'i'], true),                            // unmasked from a client
            (client_frame(0x80, b"x"), true),                                // continuation with no message
            (vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], true), // top bit
        ];
        for (bad, _) in cases {
            let mut r = FrameReader::new(true, 1 << 20);
            let mut bytes = good.clone();
            bytes.extend(&bad);
            let (n, res) = r.advance(&bytes);
            assert_eq!(n, good.len());
            assert!(matches!(res, Err(FrameError::Protocol(_))), "{bad:?}");
        }
        let mut server = FrameReader::new(false, 1 << 20);
        assert!(matches!(server.advance(&client_frame(0x81, b"x")).1, Err(FrameError::Protocol(_))));
        assert_eq!(server.advance(&[0x81, 0x01, b'x']), (3, Ok(())));
    }

    #[test]
    fn a_message_over_the_limit_is_too_big_across_its_fragments() {
        let mut r = FrameReader::new(true, 100);
        let mut bytes = client_frame(0x01, &[0; 60]);
        bytes.extend(client_frame(0x89, b"")); // a ping between fragments
        let ok = bytes.len();
        bytes.extend(client_frame(0x80, &[0; 60]));
        assert_eq!(r.advance(&bytes), (ok, Err(FrameError::TooBig)));
        let mut r = FrameReader::new(true, 100);
        assert_eq!(r.advance(&client_frame(0x82, &[0; 100])).1, Ok(()));
        assert_eq!(r.advance(&client_frame(0x82, &[0; 101])).1, Err(FrameError::TooBig));
    }

    #[test]
    fn close_frames_are_masked_toward_servers_only() {
        assert_eq!(close_frame(1001, "idle", None), [0x88, 6, 0x03, 0xE9, b'i', b'd', b'l', b'e']);
        let masked = close_frame(1008, "x", Some([1, 2, 3, 4]));
        let mut r = FrameReader::new(true, 0);
        assert_eq!(r.advance(&masked), (masked.len(), Ok(())));
        assert!(r.closed);
        let unmasked: Vec<u8> = masked[6..].iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]).collect();
        assert_eq!(unmasked, [0x03, 0xF0, b'x']);
        assert_eq!(close_frame(1000, &"r".repeat(300), None).len(), 127);
    }
}
