//! Remembered consent: what a user allowed a client, kept per
//! (client, resource, scope).
//!
//! A scope is only meaningful together with the resource (MCP server) whose
//! token it ends up in: `mcp:write` allowed for server B says nothing about
//! server A. So each resource scope is remembered with its resource, and
//! access to a resource at all (even with no scope) is an item of its own.
//!
//! The OpenID Connect scopes about the user (`openid`, `profile`, `email`)
//! are remembered per client: they decide what the client learns about the
//! user (ID token, userinfo), whichever MCP server the access token is for.
//! `offline_access` is not one of them: it lets the client keep access to a
//! resource while the user is away (a refresh token for that grant), so it
//! is remembered per resource like the resource's own scopes.
//!
//! Stored as JSON `{"v":2,"user":[...],"resources":{"<uri>":[...]}}`. The
//! earlier format (a flat array of scopes and `resource:<uri>` items, which
//! did not say which scope went with which resource) is read back only when
//! it names exactly one resource, in which case every scope in it went with
//! that resource; anything else grants nothing and the user is asked again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::authorization_request::AuthorizationRequest;
use crate::tenants::Tenant;

/// The scopes remembered per client rather than per resource.
pub const USER_SCOPES: [&str; 3] = ["openid", "profile", "email"];

/// The version written in the stored JSON.
const FORMAT_VERSION: u8 = 2;

/// One thing a user can allow a client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConsentItem {
    /// An OpenID Connect scope about the user, for the client as a whole.
    User(String),
    /// Access to a resource (its canonical URI), with no scope in particular.
    Resource(String),
    /// A scope on one resource.
    Scope { resource: String, scope: String },
}

impl ConsentItem {
    /// The scope this item names, if any (for the consent page).
    pub fn scope(&self) -> Option<&str> {
        match self {
            ConsentItem::User(s) | ConsentItem::Scope { scope: s, .. } => Some(s),
            ConsentItem::Resource(_) => None,
        }
    }

    /// The resource this item is about, if any.
    pub fn resource(&self) -> Option<&str> {
        match self {
            ConsentItem::Resource(r) | ConsentItem::Scope { resource: r, .. } => Some(r),
            ConsentItem::User(_) => None,
        }
    }
}

pub type ConsentItems = BTreeSet<ConsentItem>;

/// What an authorization request asks the user to allow. Each resource
/// gets the requested scopes that belong to it (its own scopes, and
/// `offline_access`); scopes of another resource in the same request are not
/// attributed to it, since its tokens never carry them.
pub fn requested_items(tenant: &Tenant, req: &AuthorizationRequest) -> ConsentItems {
    let mut items = ConsentItems::new();
    for scope in req.scope.iter() {
        if USER_SCOPES.contains(&scope) {
            items.insert(ConsentItem::User(scope.to_string()));
        }
    }
    for resource in &req.resources {
        items.insert(ConsentItem::Resource(resource.clone()));
        let own = tenant.resource(resource).map(|r| &r.settings.scopes);
        for scope in req.scope.iter() {
            let belongs = scope == "offline_access"
                || own.is_some_and(|scopes| scopes.iter().any(|s| s == scope));
            if belongs {
                items.insert(ConsentItem::Scope {
                    resource: resource.clone(),
                    scope: scope.to_string(),
                });
            }
        }
    }
    items
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    v: u8,
    #[serde(default)]
    user: BTreeSet<String>,
    #[serde(default)]
    resources: BTreeMap<String, BTreeSet<String>>,
}

/// Reads a stored consent. Unreadable or ambiguous old records grant
/// nothing.
pub fn decode(stored: &str) -> ConsentItems {
    if let Ok(s) = serde_json::from_str::<Stored>(stored) {
        if s.v != FORMAT_VERSION {
            return ConsentItems::new();
        }
        let mut items: ConsentItems = s.user.into_iter().map(ConsentItem::User).collect();
        for (resource, scopes) in s.resources {
            for scope in scopes {
                items.insert(ConsentItem::Scope {
                    resource: resource.clone(),
                    scope,
                });
            }
            items.insert(ConsentItem::Resource(resource));
        }
        return items;
    }
    match serde_json::from_str::<BTreeSet<String>>(stored) {
        Ok(old) => decode_flat(&old),
        Err(_) => ConsentItems::new(),
    }
}

/// The earlier flat format: safe to read only with exactly one resource.
fn decode_flat(old: &BTreeSet<String>) -> ConsentItems {
    let resources: Vec<&str> = old
        .iter()
        .filter_map(|i| i.strip_prefix("resource:"))
        .collect();
    let [resource] = resources.as_slice() else {
        return ConsentItems::new();
    };
    let mut items = ConsentItems::new();
    items.insert(ConsentItem::Resource(resource.to_string()));
    for scope in old.iter().filter(|i| !i.starts_with("resource:")) {
        if USER_SCOPES.contains(&scope.as_str()) {
            items.insert(ConsentItem::User(scope.clone()));
        } else {
            items.insert(ConsentItem::Scope {
                resource: resource.to_string(),
                scope: scope.clone(),
            });
        }
    }
    items
}

/// The stored form of `items`.
pub fn encode(items: &ConsentItems) -> Result<String, serde_json::Error> {
    let mut stored = Stored {
        v: FORMAT_VERSION,
        ..Stored::default()
    };
    for item in items {
        match item {
            ConsentItem::User(s) => {
                stored.user.insert(s.clone());
            }
            ConsentItem::Resource(r) => {
                stored.resources.entry(r.clone()).or_default();
            }
            ConsentItem::Scope { resource, scope } => {
                stored
                    .resources
                    .entry(resource.clone())
                    .or_default()
                    .insert(scope.clone());
            }
        }
    }
    serde_json::to_string(&stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(resource: &str, scope: &str) -> ConsentItem {
        ConsentItem::Scope {
            resource: resource.into(),
            scope: scope.into(),
        }
    }

    fn items(list: &[ConsentItem]) -> ConsentItems {
        list.iter().cloned().collect()
    }

    #[test]
    fn scopes_are_kept_with_their_resource() {
        let granted = items(&[
            ConsentItem::Resource("https://a/mcp".into()),
            scope("https://a/mcp", "mcp:read"),
            ConsentItem::Resource("https://b/mcp".into()),
            scope("https://b/mcp", "mcp:write"),
        ]);
        let back = decode(&encode(&granted).unwrap());
        assert_eq!(back, granted);
        assert!(!back.contains(&scope("https://a/mcp", "mcp:write")));
    }

    #[test]
    fn user_scopes_are_per_client() {
        let granted = items(&[ConsentItem::User("openid".into())]);
        assert_eq!(decode(&encode(&granted).unwrap()), granted);
    }

    #[test]
    fn old_format_with_two_resources_grants_nothing() {
        let old = r#"["mcp:read","mcp:write","resource:https://a/mcp","resource:https://b/mcp"]"#;
        assert!(decode(old).is_empty());
    }

    #[test]
    fn old_format_with_one_resource_keeps_its_scopes_for_it() {
        let old = r#"["mcp:read","openid","resource:https://a/mcp"]"#;
        assert_eq!(
            decode(old),
            items(&[
                ConsentItem::Resource("https://a/mcp".into()),
                scope("https://a/mcp", "mcp:read"),
                ConsentItem::User("openid".into()),
            ])
        );
    }

    #[test]
    fn old_format_without_resource_grants_nothing() {
        assert!(decode(r#"["mcp:read"]"#).is_empty());
    }

    #[test]
    fn unreadable_or_unknown_versions_grant_nothing() {
        assert!(decode("not json").is_empty());
        assert!(decode(r#"{"v":3,"user":["openid"]}"#).is_empty());
        assert!(decode(r#"{"user":["openid"]}"#).is_empty());
    }
}
