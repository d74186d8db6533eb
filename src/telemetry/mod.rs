//! What an operator sees of a running node: Prometheus metrics and the
//! management listener that serves them, and the HTTP layer that counts
//! every request.

pub mod http_metrics;
pub mod management;
pub mod metrics;
pub mod upstream;
