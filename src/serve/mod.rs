//! Serving: the listeners accept connections, [`pipeline`] decides and forwards each
//! request, [`access`] writes its log line; [`gateway`] holds the live runtime and reloads it,
//! [`admin`] answers health and metrics, [`server`] starts and drains them all;
//! [`tunnel`] joins the two sides of an upgraded (WebSocket) connection, [`credential`] ends
//! long-lived connections with their credential, [`changes`] follows the issuer's store.

pub mod access;
pub mod admin;
pub mod changes;
pub mod credential;
pub mod frames;
pub mod gateway;
pub mod listener;
pub mod pipeline;
pub mod server;
pub mod tunnel;
