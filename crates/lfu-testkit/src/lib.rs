//! The test kit, one module tree shared by the integration tests, the benchmarks and the demo:
//! `support` holds the test databases, production-shaped Langfuse data and the stand-in worker;
//! `e2e_support` the local control plane, the v2 layouts, the stand-in web, the operator
//! process and the invariant observer.

pub mod e2e_support;
pub mod support;
