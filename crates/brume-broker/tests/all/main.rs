//! The broker in this process, against scripted providers that speak the
//! provider protocol (`brume_localnet::scripted`), and requesters over its
//! REST API.

mod util;

mod billing;
mod cancel;
mod failover;
mod reputation;
