//! The provider against a fake broker that speaks the wire protocol.

mod fake_broker;
mod policy;
mod protocol;
