//! (in progress: the ledger-core helper owns this file)
