//! What the process tells operators about itself: logs, traces, and the
//! spans every request, grant and store call runs in.

pub mod logs;
pub mod request;
pub mod store;
pub mod trace;
