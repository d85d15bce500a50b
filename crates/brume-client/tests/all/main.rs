//! `brume-client` against a canned test double of the broker's REST API.

mod client;
mod util;
