//! The chain's integration tests, in one binary.

mod persist;
mod semantics;
mod verify;

use brume_chain::{Anchor, DevChain, DevConfig};
use brume_identity::Identity;

/// A chain in a temp dir, with two funded accounts.
#[derive(Debug)]
pub struct Net {
    pub dir: tempfile::TempDir,
    pub chain: DevChain,
    pub alice: Identity,
    pub bob: Identity,
}

pub const ALICE_FUNDS: u128 = 1_000_000;
pub const BOB_FUNDS: u128 = 500;

pub fn config(alice: &Identity, bob: &Identity, faucet: bool) -> DevConfig {
    let genesis = vec![(alice.address(), ALICE_FUNDS), (bob.address(), BOB_FUNDS)];
    if faucet {
        DevConfig::devnet(genesis)
    } else {
        DevConfig::fixed_supply(genesis)
    }
}

fn net_with(faucet: bool) -> Net {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob) = (Identity::random(), Identity::random());
    let chain = DevChain::open(dir.path(), &config(&alice, &bob, faucet)).expect("open");
    Net {
        dir,
        chain,
        alice,
        bob,
    }
}

/// A devnet (faucet on).
pub fn devnet() -> Net {
    net_with(true)
}

/// A fixed-supply chain (faucet off).
pub fn fixed() -> Net {
    net_with(false)
}

pub fn anchor(n: u8) -> Anchor {
    Anchor::repeat_byte(n)
}
