//! The broker in this process, against scripted providers that speak the
//! provider protocol, and requesters over its REST API.

mod provider;
mod util;

mod billing;
mod cancel;
mod failover;
mod reputation;
