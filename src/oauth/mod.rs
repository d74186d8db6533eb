//! Protocol rules shared by the endpoints, each testable alone.

pub mod audience;
pub mod authorization_request;
pub mod client_auth;
pub mod client_metadata_document;
pub mod consent;
pub mod errors;
pub mod machine;
pub mod params;
pub mod pkce;
pub mod redirect_uri;
pub mod registration;
pub mod resource;
pub mod scope;
pub mod unused_clients;
