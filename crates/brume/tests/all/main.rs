//! `brume` as a user runs it: the real binary, real files, real pipes.

mod util;

mod accounts;
mod bench;
mod billing;
mod cli;
mod console;
mod containers;
mod deposits;
mod devnet;
mod escrow;
mod evm;
mod exec;
mod fairness;
mod federation;
mod hub;
mod keys;
mod lambda;
mod leases;
mod ledger;
mod market;
mod net;
mod network;
mod offers;
mod openapi;
mod ownership;
mod postgres;
mod provider_policy;
mod settlement;
mod signed_services;
mod tls;
mod trust;
