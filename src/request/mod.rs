//! What the gateway does to every request before routing (README: Architecture, a request's journey, step 2): path
//! normalization, removal of hop-by-hop and spoofable headers, client address resolution.

pub mod client_ip;
pub mod conn;
pub mod framing;
pub mod headers;
pub mod normalize;
pub mod upgrade;
