//! Gatehouse: an OAuth 2.1 authorization server and identity federation
//! broker for the Model Context Protocol.

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod grants;
pub mod http;
pub mod keys;
pub mod limits;
pub mod oauth;
pub mod pages;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tokens;

pub use app::AppState;
