//! Webhooks: telling a caller's HTTP endpoint how its command ended.
//!
//! This module holds the parts that both sides of a webhook share: signing and
//! verifying per the Standard Webhooks spec ([`signing`]), so receivers written
//! against Courier's library check signatures exactly as Courier makes them.

pub mod signing;
