//! What the gateway does to every request before routing (DESIGN §3, steps 2–3): path
//! normalization, removal of hop-by-hop and spoofable headers, client address resolution.

pub mod client_ip;
pub mod conn;
pub mod framing;
pub mod headers;
pub mod normalize;
