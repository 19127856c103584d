//! The contract (AsyncAPI) lives here.
