//! One module per HTTP endpoint: HTTP in, HTTP out; the rules live in `oauth`.

pub mod authorize;
pub mod callback;
pub mod consent;
pub mod device;
pub mod discovery;
pub mod flow;
pub mod health;
pub mod introspect;
pub mod jwks;
pub mod login;
pub mod register;
pub mod resource_metadata;
pub mod revoke;
pub mod saml;
pub mod token;
pub mod userinfo;
