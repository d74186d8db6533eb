//! Verify access tokens issued by Gatehouse in an MCP server (an OAuth
//! 2.1 protected resource).
//!
//! * [`Verifier`]: discovers the issuer (RFC 8414), caches its JWKS, and
//!   verifies RFC 9068 JWT access tokens locally or opaque tokens by RFC
//!   7662 introspection, checking `typ`, `alg`, signature, `iss`, `aud`
//!   (canonical resource URI), `exp`/`nbf`/`iat`.
//! * [`RequireBearer`] (feature `axum`, on by default): a tower layer that
//!   answers 401/403 with MCP-style `WWW-Authenticate` challenges pointing
//!   at your RFC 9728 metadata, and hands the [`VerifiedToken`] to handlers
//!   through the [`Authenticated`] extractor.
//! * [`protected_resource_metadata`] / [`protected_resource_router`]: the
//!   RFC 9728 document MCP clients use to find Gatehouse.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod challenge;
mod config;
mod discovery;
mod error;
mod fetch;
mod introspection;
mod jwks;
mod metadata;
pub mod resource;
mod token;
mod verifier;

#[cfg(feature = "axum")]
mod middleware;

pub use challenge::Challenge;
pub use config::{IntrospectionConfig, VerifierConfig, MAX_LEEWAY};
pub use discovery::ServerMetadata;
pub use error::VerifyError;
pub use jsonwebtoken::Algorithm;
pub use metadata::{bearer_token, protected_resource_metadata};
pub use token::{Actor, VerifiedToken};
pub use verifier::Verifier;

#[cfg(feature = "axum")]
pub use middleware::{
    challenge_response, protected_resource_router, protected_resource_router_for, require_scope,
    require_scopes, Authenticated, RequireBearer, RequireBearerService,
};

/// Compiles the README example.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
