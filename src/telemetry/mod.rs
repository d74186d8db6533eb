//! What the process tells operators about itself: Prometheus metrics and
//! the management listener that serves them, logs, traces, and the layers
//! every request, grant, store and upstream call runs in.

pub mod http_metrics;
pub mod logs;
pub mod management;
pub mod metrics;
pub mod request;
pub mod store;
pub mod trace;
pub mod upstream;
