//! Offline tools over a configuration: the dry run behind `trace` ([`dryrun`]), the fixture
//! runner behind `test` ([`fixture`]), the load generator behind `bench` ([`loadtest`]), the
//! APIM policy importer ([`apim`]) and the development PKI ([`pki`]).

pub mod apim;
pub mod apim_subscriptions;
pub mod dryrun;
pub mod fixture;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod loadtest;
pub mod pki;
