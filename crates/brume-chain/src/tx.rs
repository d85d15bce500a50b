//! Transactions: the calls, their canonical encoding, hash and signature.
//!
//! # The canonical encoding
//!
//! A transaction is encoded as the concatenation of fixed-width fields, with
//! integers big-endian and no padding or length prefix anywhere (every
//! field's width follows from the kind byte):
//!
//! | field      | bytes | value                                          |
//! |------------|-------|------------------------------------------------|
//! | domain     | 16    | the ASCII text `brume-dev-tx-v1\n`             |
//! | chain id   | 8     | u64                                            |
//! | from       | 20    | the sender's address                           |
//! | nonce      | 8     | u64, the sender's count of earlier txs         |
//! | kind       | 1     | 1 transfer, 2 approve, 3 transferFrom, 4 mint  |
//! | fields     | …     | by kind, below                                 |
//!
//! - transfer (1): `to` (20), `amount` (32), `anchor` (32);
//! - approve (2): `spender` (20), `amount` (32);
//! - transferFrom (3): `owner` (20), `to` (20), `amount` (32), `anchor` (32);
//!   `from` is the spender;
//! - mint (4, the devnet faucet): `to` (20), `amount` (32); `from` is the
//!   zero address.
//!
//! `amount` is a uint256, big-endian (as in the EVM ABI); amounts are token
//! base units and above `u128::MAX` none is valid.
//!
//! The **tx hash** is `keccak256(encoding)`. The **signature** is EIP-191
//! `personal_sign` over the 32 bytes of the tx hash, that is a secp256k1
//! signature (`r || s || v`, 65 bytes) of
//! `keccak256("\x19Ethereum Signed Message:\n32" || tx_hash)`; the address
//! it recovers to must be `from`. A mint is not signed: its signature is 65
//! zero bytes, and only a chain whose genesis enables the faucet accepts it.
//!
//! To re-verify a tx with any Ethereum tool: encode it as above, hash it,
//! and check the signature with `personal_sign`'s recovery over the hash's
//! bytes (`ecrecover`, `cast wallet verify --address FROM 0xHASH SIG`).

use alloy_primitives::{Address, B256, U256, keccak256};
use brume_identity::Identity;
use serde::{Deserialize, Serialize};

use crate::ChainError;

/// The 32 bytes a transfer carries (the ledger aggregate it settles).
pub type Anchor = B256;

/// The domain prefix of the canonical encoding.
pub const TX_DOMAIN: &[u8; 16] = b"brume-dev-tx-v1\n";

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// ERC-20 `transfer(to, amount)` from the sender, with an anchor.
    Transfer {
        to: Address,
        #[serde(with = "amount")]
        amount: u128,
        anchor: Anchor,
    },
    /// ERC-20 `approve(spender, amount)`: sets (not adds to) the allowance.
    Approve {
        spender: Address,
        #[serde(with = "amount")]
        amount: u128,
    },
    /// ERC-20 `transferFrom(owner, to, amount)` by the sender, who spends
    /// the owner's allowance to it, with an anchor.
    TransferFrom {
        owner: Address,
        to: Address,
        #[serde(with = "amount")]
        amount: u128,
        anchor: Anchor,
    },
    /// New tokens to `to` (the devnet faucet; sender: the zero address).
    Mint {
        to: Address,
        #[serde(with = "amount")]
        amount: u128,
    },
}

impl Call {
    /// The kind byte of the encoding.
    pub fn kind(&self) -> u8 {
        match self {
            Call::Transfer { .. } => 1,
            Call::Approve { .. } => 2,
            Call::TransferFrom { .. } => 3,
            Call::Mint { .. } => 4,
        }
    }

    /// The kind's name, as in the JSON (`transfer`, `approve`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Call::Transfer { .. } => "transfer",
            Call::Approve { .. } => "approve",
            Call::TransferFrom { .. } => "transfer_from",
            Call::Mint { .. } => "mint",
        }
    }

    pub fn amount(&self) -> u128 {
        match *self {
            Call::Transfer { amount, .. }
            | Call::Approve { amount, .. }
            | Call::TransferFrom { amount, .. }
            | Call::Mint { amount, .. } => amount,
        }
    }

    /// The anchor of a transfer or transferFrom.
    pub fn anchor(&self) -> Option<Anchor> {
        match *self {
            Call::Transfer { anchor, .. } | Call::TransferFrom { anchor, .. } => Some(anchor),
            Call::Approve { .. } | Call::Mint { .. } => None,
        }
    }
}

/// An unsigned transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    pub chain_id: u64,
    pub from: Address,
    pub nonce: u64,
    #[serde(flatten)]
    pub call: Call,
}

impl Tx {
    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 20 + 8 + 1 + 136);
        out.extend_from_slice(TX_DOMAIN);
        out.extend_from_slice(&self.chain_id.to_be_bytes());
        out.extend_from_slice(self.from.as_slice());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.push(self.call.kind());
        let amount = |out: &mut Vec<u8>, a: u128| {
            out.extend_from_slice(&U256::from(a).to_be_bytes::<32>());
        };
        match self.call {
            Call::Transfer {
                to,
                amount: a,
                anchor,
            } => {
                out.extend_from_slice(to.as_slice());
                amount(&mut out, a);
                out.extend_from_slice(anchor.as_slice());
            }
            Call::Approve { spender, amount: a } => {
                out.extend_from_slice(spender.as_slice());
                amount(&mut out, a);
            }
            Call::TransferFrom {
                owner,
                to,
                amount: a,
                anchor,
            } => {
                out.extend_from_slice(owner.as_slice());
                out.extend_from_slice(to.as_slice());
                amount(&mut out, a);
                out.extend_from_slice(anchor.as_slice());
            }
            Call::Mint { to, amount: a } => {
                out.extend_from_slice(to.as_slice());
                amount(&mut out, a);
            }
        }
        out
    }

    /// Decodes the canonical encoding (exactly: no trailing bytes).
    pub fn decode(b: &[u8]) -> Result<Tx, DecodeError> {
        let mut r = Reader(b);
        if r.take(16)? != TX_DOMAIN {
            return Err(DecodeError::NotATx);
        }
        let chain_id = r.u64()?;
        let from = r.address()?;
        let nonce = r.u64()?;
        let kind = r.take(1)?[0];
        let call = match kind {
            1 => Call::Transfer {
                to: r.address()?,
                amount: r.amount()?,
                anchor: r.b256()?,
            },
            2 => Call::Approve {
                spender: r.address()?,
                amount: r.amount()?,
            },
            3 => Call::TransferFrom {
                owner: r.address()?,
                to: r.address()?,
                amount: r.amount()?,
                anchor: r.b256()?,
            },
            4 => Call::Mint {
                to: r.address()?,
                amount: r.amount()?,
            },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Tx {
            chain_id,
            from,
            nonce,
            call,
        })
    }

    /// `keccak256` of the canonical encoding.
    pub fn hash(&self) -> B256 {
        keccak256(self.encode())
    }

    /// Signs the tx hash with `signer` (EIP-191). `from` must be the
    /// signer's address for the chain to accept it.
    pub fn sign(self, signer: &Identity) -> Result<SignedTx, ChainError> {
        let hash = self.hash();
        let signature = signer
            .sign_message(hash.as_slice())
            .map_err(|e| ChainError::BadSignature(e.to_string()))?;
        Ok(SignedTx {
            tx: self,
            signature,
            hash,
        })
    }
}

/// A signed transaction and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    #[serde(flatten)]
    pub tx: Tx,
    #[serde(with = "sig")]
    pub signature: [u8; 65],
    /// `tx.hash()`, kept so that it is computed once.
    pub hash: B256,
}

/// The signature of a mint (no signer).
pub const NO_SIGNATURE: [u8; 65] = [0; 65];

impl SignedTx {
    /// A faucet mint (unsigned).
    pub fn mint(chain_id: u64, nonce: u64, to: Address, amount: u128) -> SignedTx {
        let tx = Tx {
            chain_id,
            from: Address::ZERO,
            nonce,
            call: Call::Mint { to, amount },
        };
        SignedTx {
            hash: tx.hash(),
            tx,
            signature: NO_SIGNATURE,
        }
    }

    /// Builds a signed tx from its parts, computing its hash.
    pub fn from_parts(tx: Tx, signature: [u8; 65]) -> SignedTx {
        SignedTx {
            hash: tx.hash(),
            tx,
            signature,
        }
    }

    /// Checks that the hash is the tx's and that the signature recovers to
    /// `from` (or, for a mint, that it is from the zero address and
    /// unsigned; whether mints are allowed is the chain's business).
    pub fn check_signature(&self) -> Result<(), ChainError> {
        if self.hash != self.tx.hash() {
            return Err(ChainError::BadSignature(
                "the hash is not the tx's hash".into(),
            ));
        }
        if let Call::Mint { .. } = self.tx.call {
            if self.tx.from != Address::ZERO || self.signature != NO_SIGNATURE {
                return Err(ChainError::BadSignature(
                    "a mint is from the zero address and unsigned".into(),
                ));
            }
            return Ok(());
        }
        let signer = brume_identity::recover(self.hash.as_slice(), &self.signature)
            .map_err(|e| ChainError::BadSignature(e.to_string()))?;
        if signer != self.tx.from {
            return Err(ChainError::BadSignature(format!(
                "signed by {signer}, not by the sender {}",
                self.tx.from
            )));
        }
        Ok(())
    }
}

/// Why bytes are not a canonical tx encoding ([`Tx::decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first 16 bytes are not the domain `brume-dev-tx-v1\n`.
    #[error("not a brume-dev-tx-v1 encoding")]
    NotATx,
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    /// The bytes end before the last field of the kind.
    #[error("truncated")]
    Truncated,
    /// Bytes follow the last field of the kind.
    #[error("trailing bytes")]
    TrailingBytes,
    #[error("amount over u128::MAX")]
    AmountOverflow,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn address(&mut self) -> Result<Address, DecodeError> {
        Ok(Address::from_slice(self.take(20)?))
    }

    fn b256(&mut self) -> Result<B256, DecodeError> {
        Ok(B256::from_slice(self.take(32)?))
    }

    fn amount(&mut self) -> Result<u128, DecodeError> {
        let v = U256::from_be_slice(self.take(32)?);
        u128::try_from(v).map_err(|_| DecodeError::AmountOverflow)
    }
}

/// Amounts as decimal strings in JSON (they overflow JavaScript numbers).
pub(crate) mod amount {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 65-byte signature as `0x` hex in JSON.
mod sig {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 65], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("0x{}", alloy_primitives::hex::encode(v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 65], D::Error> {
        let s = String::deserialize(d)?;
        let b = alloy_primitives::hex::decode(s.trim_start_matches("0x"))
            .map_err(serde::de::Error::custom)?;
        <[u8; 65]>::try_from(b.as_slice())
            .map_err(|_| serde::de::Error::custom("a signature is 65 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Tx> {
        let a = Address::repeat_byte(0xaa);
        let b = Address::repeat_byte(0xbb);
        let anchor = B256::repeat_byte(0x42);
        [
            Call::Transfer {
                to: b,
                amount: 7,
                anchor,
            },
            Call::Approve {
                spender: b,
                amount: u128::MAX,
            },
            Call::TransferFrom {
                owner: b,
                to: a,
                amount: 1,
                anchor,
            },
            Call::Mint { to: a, amount: 9 },
        ]
        .into_iter()
        .map(|call| Tx {
            chain_id: 5,
            from: a,
            nonce: 3,
            call,
        })
        .collect()
    }

    #[test]
    fn the_encoding_round_trips_and_has_the_documented_layout() {
        for tx in sample() {
            let enc = tx.encode();
            assert_eq!(Tx::decode(&enc), Ok(tx));
            let fields = match tx.call.kind() {
                1 => 20 + 32 + 32,
                2 | 4 => 20 + 32,
                _ => 20 + 20 + 32 + 32,
            };
            assert_eq!(enc.len(), 16 + 8 + 20 + 8 + 1 + fields);
            assert_eq!(&enc[16..24], &5u64.to_be_bytes());
            assert_eq!(&enc[44..52], &3u64.to_be_bytes());
            let mut longer = enc.clone();
            longer.push(0);
            assert!(Tx::decode(&longer).is_err());
            assert!(Tx::decode(&enc[..enc.len() - 1]).is_err());
            assert_eq!(Tx::decode(&longer), Err(DecodeError::TrailingBytes));
            assert_eq!(
                Tx::decode(&enc[..enc.len() - 1]),
                Err(DecodeError::Truncated)
            );
        }
    }

    #[test]
    fn bad_encodings_say_what_is_wrong() {
        let enc = sample()[0].encode();
        let mut other_domain = enc.clone();
        other_domain[0] ^= 1;
        assert_eq!(Tx::decode(&other_domain), Err(DecodeError::NotATx));
        // The kind byte follows domain, chain id, from and nonce.
        let mut unknown = enc.clone();
        unknown[16 + 8 + 20 + 8] = 9;
        assert_eq!(Tx::decode(&unknown), Err(DecodeError::UnknownKind(9)));
        // A transfer's amount follows its `to`.
        let mut huge = enc.clone();
        huge[16 + 8 + 20 + 8 + 1 + 20] = 1;
        assert_eq!(Tx::decode(&huge), Err(DecodeError::AmountOverflow));
        assert_eq!(Tx::decode(&[]), Err(DecodeError::Truncated));
        let texts: Vec<String> = [
            DecodeError::NotATx,
            DecodeError::UnknownKind(9),
            DecodeError::Truncated,
            DecodeError::TrailingBytes,
            DecodeError::AmountOverflow,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            texts,
            [
                "not a brume-dev-tx-v1 encoding",
                "unknown kind 9",
                "truncated",
                "trailing bytes",
                "amount over u128::MAX"
            ]
        );
    }

    /// A worked example a third party can check: the encoding's hex and its
    /// keccak256.
    #[test]
    fn a_transfer_encodes_as_documented() {
        let tx = Tx {
            chain_id: 1,
            from: Address::repeat_byte(0x11),
            nonce: 0,
            call: Call::Transfer {
                to: Address::repeat_byte(0x22),
                amount: 1000,
                anchor: B256::repeat_byte(0x33),
            },
        };
        let hex = alloy_primitives::hex::encode(tx.encode());
        let expect = format!(
            "{}{}{}{}01{}{}03e8{}",
            alloy_primitives::hex::encode(b"brume-dev-tx-v1\n"),
            "0000000000000001",
            "11".repeat(20),
            "0000000000000000",
            "22".repeat(20),
            "0".repeat(60),
            "33".repeat(32),
        );
        assert_eq!(hex, expect);
        assert_eq!(tx.hash(), keccak256(tx.encode()));
    }

    #[test]
    fn signatures_recover_to_the_sender() {
        let id = Identity::random();
        let mut tx = sample()[0];
        tx.from = id.address();
        let signed = tx.sign(&id).expect("sign");
        signed.check_signature().expect("valid");
        let mut forged = signed;
        forged.tx.nonce += 1;
        forged.hash = forged.tx.hash();
        assert!(matches!(
            forged.check_signature(),
            Err(ChainError::BadSignature(_))
        ));
        let mut stale = signed;
        stale.tx.nonce += 1;
        assert!(stale.check_signature().is_err());
        let json = serde_json::to_string(&signed).expect("json");
        let back: SignedTx = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, signed);
    }
}
