//! Tower layers and request extensions every request passes through:
//! the source address (behind trusted proxies only), and (added here, not in
//! endpoint files) request ids, tracing, limits and security headers.

pub mod body_deadline;
pub mod path;
pub mod serve;
pub mod source;

pub use source::{SourceAddr, TrustedProxies};
