//! (in progress: the pricing helper owns this file)
