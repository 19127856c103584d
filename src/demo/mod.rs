//! The embedded experience: example handlers and librdkafka's in-process mock
//! cluster, used by `courier dev` / `demo` to show commands flowing with nothing
//! installed, and by the tests as the workload.

mod embedded;
mod handlers;

pub use embedded::Embedded;
pub use handlers::{
    example_router, Echo, Echoed, Fail, FailInput, Flaky, FlakyInput, FlakyOutput, Panic, Primes, PrimesInput, PrimesOutput, Sleep,
    SleepInput, SleepOutput,
};
