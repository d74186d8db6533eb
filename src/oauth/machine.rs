//! Grants without a user. `client_credentials`, and a token exchange whose
//! subject is a client rather than a person, yield tokens on nobody's
//! consent. A client that registered itself (dynamic registration or a
//! Client ID Metadata Document) is vouched for by no one, so by default it
//! may not use them: anyone could register one and mint tokens for any
//! resource. A tenant may allow it in `[tenants.registration.machine_clients]`,
//! for the resources and scopes named there, or only for clients that
//! registered with an initial access token. Administrator-configured
//! clients are not affected.
//!
//! The rule is checked where such a token is issued (so clients registered
//! before a policy change are covered) and at registration (so a client
//! learns early).

use crate::oauth::client_auth::Client;
use crate::oauth::errors::OAuthError;
use crate::oauth::resource;
use crate::oauth::scope::ScopeSet;
use crate::tenants::{MachineClientPolicy, RegistrationPolicy, Tenant, GRANT_CLIENT_CREDENTIALS};

/// Grant types that never involve a user.
pub const MACHINE_GRANTS: [&str; 1] = [GRANT_CLIENT_CREDENTIALS];

/// Why a machine grant was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineRefusal {
    /// The tenant has no machine-client policy.
    NotAllowed,
    /// The policy wants an initial access token at registration.
    NeedsInitialAccessToken,
    /// The resource is not one the policy names.
    Resource(String),
    /// These scopes are not ones the policy names.
    Scope(ScopeSet),
}

impl MachineRefusal {
    /// Short snake_case reason, for audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            MachineRefusal::NotAllowed => "not_allowed",
            MachineRefusal::NeedsInitialAccessToken => "needs_initial_access_token",
            MachineRefusal::Resource(_) => "resource_not_allowed",
            MachineRefusal::Scope(_) => "scope_not_allowed",
        }
    }
}

impl From<MachineRefusal> for OAuthError {
    fn from(r: MachineRefusal) -> Self {
        match r {
            MachineRefusal::NotAllowed => OAuthError::unauthorized_client(
                "a self-registered client may not use a grant without a user here; \
                 ask the administrator for a client",
            ),
            MachineRefusal::NeedsInitialAccessToken => OAuthError::unauthorized_client(
                "a self-registered client may use a grant without a user only when it \
                 registered with an initial access token",
            ),
            MachineRefusal::Resource(r) => OAuthError::invalid_target(format!(
                "self-registered clients may not get tokens without a user for '{r}'"
            )),
            MachineRefusal::Scope(s) => OAuthError::invalid_scope(format!(
                "self-registered clients may not get these scopes without a user: {s}"
            )),
        }
    }
}

/// The tenant's policy for this client's grants without a user: `None` when
/// the client is admin-configured (nothing to check).
fn policy_for<'p>(
    registration: &'p RegistrationPolicy,
    client: &Client,
) -> Option<Result<&'p MachineClientPolicy, MachineRefusal>> {
    if !client.meta.dynamic {
        return None;
    }
    Some(
        registration
            .machine_clients
            .as_ref()
            .ok_or(MachineRefusal::NotAllowed),
    )
}

/// May `client` get a token for `resource` with `scope` from a grant that
/// involves no user? `registration` is the tenant's policy.
pub fn check_machine_grant(
    registration: &RegistrationPolicy,
    client: &Client,
    resource: &str,
    scope: &ScopeSet,
) -> Result<(), MachineRefusal> {
    let policy = match policy_for(registration, client) {
        None => return Ok(()),
        Some(p) => p?,
    };
    if policy.require_initial_access_token && !client.meta.initial_access_token {
        return Err(MachineRefusal::NeedsInitialAccessToken);
    }
    if let Some(resources) = &policy.resources {
        if !resources
            .iter()
            .any(|r| resource::same_resource(r, resource))
        {
            return Err(MachineRefusal::Resource(resource.to_string()));
        }
    }
    if let Some(scopes) = &policy.scopes {
        let allowed: ScopeSet = scopes.iter().map(String::as_str).collect();
        let extra = scope.difference(&allowed);
        if !extra.is_empty() {
            return Err(MachineRefusal::Scope(extra));
        }
    }
    Ok(())
}

/// The scopes the policy lets this client hold without a user, when it
/// names them: a request that names no scope gets its defaults narrowed to
/// these rather than refused.
pub fn scope_ceiling(tenant: &Tenant, client: &Client) -> Option<ScopeSet> {
    match policy_for(&tenant.settings.registration, client)? {
        Ok(policy) => policy
            .scopes
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect()),
        Err(_) => None,
    }
}

/// At registration (RFC 7591 §3.2.2 `invalid_client_metadata`): a client
/// asking for a grant without a user on a tenant that would refuse it
/// every time.
pub fn check_machine_registration(
    policy: &RegistrationPolicy,
    grant_types: &[String],
    with_initial_access_token: bool,
) -> Result<(), String> {
    let Some(machine) = grant_types
        .iter()
        .find(|g| MACHINE_GRANTS.contains(&g.as_str()))
    else {
        return Ok(());
    };
    match &policy.machine_clients {
        None => Err(format!(
            "grant_types: '{machine}' involves no user and is not available to \
             self-registered clients on this server; ask the administrator for a client"
        )),
        Some(p) if p.require_initial_access_token && !with_initial_access_token => Err(format!(
            "grant_types: '{machine}' involves no user and needs an initial access token \
             at registration (Authorization: Bearer ...)"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::ClientMetadata;

    fn client(dynamic: bool, iat: bool) -> Client {
        Client {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret_hash: None,
            meta: ClientMetadata {
                client_name: None,
                redirect_uris: vec![],
                grant_types: vec![GRANT_CLIENT_CREDENTIALS.into()],
                token_endpoint_auth_method: crate::tenants::AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                resources: None,
                scopes: None,
                default_scopes: None,
                access_token_format: Default::default(),
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                dynamic,
                initial_access_token: iat,
                introspect_any: false,
            },
            source: String::new(),
        }
    }

    fn registration(machine: Option<MachineClientPolicy>) -> RegistrationPolicy {
        RegistrationPolicy {
            machine_clients: machine,
            ..Default::default()
        }
    }

    const RS: &str = "https://mcp.example.com/mcp";

    fn check(
        policy: Option<MachineClientPolicy>,
        c: &Client,
        scope: &str,
    ) -> Result<(), MachineRefusal> {
        check_machine_grant(
            &registration(policy),
            c,
            RS,
            &ScopeSet::parse(scope).unwrap(),
        )
    }

    #[test]
    fn self_registered_clients_are_refused_by_default() {
        assert_eq!(
            check(None, &client(true, false), "mcp:read"),
            Err(MachineRefusal::NotAllowed)
        );
    }

    #[test]
    fn admin_configured_clients_are_not_affected() {
        assert_eq!(check(None, &client(false, false), "mcp:read"), Ok(()));
    }

    #[test]
    fn the_policy_bounds_resources_and_scopes() {
        let p = MachineClientPolicy {
            resources: Some(vec![RS.into()]),
            scopes: Some(vec!["mcp:read".into()]),
            require_initial_access_token: false,
        };
        let c = client(true, false);
        assert_eq!(check(Some(p.clone()), &c, "mcp:read"), Ok(()));
        assert!(matches!(
            check(Some(p.clone()), &c, "mcp:read mcp:write"),
            Err(MachineRefusal::Scope(_))
        ));
        let other = MachineClientPolicy {
            resources: Some(vec!["https://other.example.com/mcp".into()]),
            ..p
        };
        assert!(matches!(
            check(Some(other), &c, "mcp:read"),
            Err(MachineRefusal::Resource(_))
        ));
    }

    #[test]
    fn an_initial_access_token_can_be_required() {
        let p = MachineClientPolicy {
            resources: None,
            scopes: None,
            require_initial_access_token: true,
        };
        assert_eq!(
            check(Some(p.clone()), &client(true, false), "mcp:read"),
            Err(MachineRefusal::NeedsInitialAccessToken)
        );
        assert_eq!(check(Some(p), &client(true, true), "mcp:read"), Ok(()));
    }

    #[test]
    fn registration_refuses_machine_grants_early() {
        let cc = vec![GRANT_CLIENT_CREDENTIALS.to_string()];
        let code = vec!["authorization_code".to_string()];
        assert!(check_machine_registration(&registration(None), &cc, false).is_err());
        assert!(check_machine_registration(&registration(None), &code, false).is_ok());
        let iat = registration(Some(MachineClientPolicy {
            require_initial_access_token: true,
            ..Default::default()
        }));
        assert!(check_machine_registration(&iat, &cc, false).is_err());
        assert!(check_machine_registration(&iat, &cc, true).is_ok());
    }
}
