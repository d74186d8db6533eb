//! The development connector: a login form for users listed in configuration.
//! Passwords are configured only as argon2 hashes. It exists for local
//! development and tests and says so loudly when enabled.

use async_trait::async_trait;
use serde::Deserialize;

use crate::{Connector, ConnectorError, Identity, LoginMethod};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    pub email: String,
    /// argon2 PHC string, e.g. from `gatehouse hash-password`.
    pub password_hash: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

pub struct DevConnector {
    id: String,
    display_name: String,
    users: Vec<DevUser>,
    /// Verified against when the user is unknown, so timing does not reveal
    /// which email addresses exist.
    decoy_hash: String,
}

impl DevConnector {
    pub fn new(
        id: &str,
        display_name: Option<&str>,
        users: Vec<DevUser>,
    ) -> Result<Self, ConnectorError> {
        for user in &users {
            crate::password::check_phc(&user.password_hash).map_err(|e| {
                ConnectorError::Config(format!(
                    "password_hash of dev user '{}' is not a usable argon2 PHC string: {e}",
                    user.email
                ))
            })?;
        }
        let decoy_hash = users
            .first()
            .map(|u| u.password_hash.clone())
            .unwrap_or_default();
        Ok(Self {
            id: id.to_string(),
            display_name: display_name.unwrap_or("Development login").to_string(),
            users,
            decoy_hash,
        })
    }
}

#[async_trait]
impl Connector for DevConnector {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "dev"
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn login_method(&self) -> LoginMethod {
        LoginMethod::PasswordForm
    }

    async fn password_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, ConnectorError> {
        let wanted = username.trim().to_ascii_lowercase();
        let user = self
            .users
            .iter()
            .find(|u| u.email.to_ascii_lowercase() == wanted);
        let (hash, user) = match user {
            Some(u) => (u.password_hash.clone(), Some(u.clone())),
            None => (self.decoy_hash.clone(), None),
        };
        // argon2 is deliberately slow and memory-hard: it runs on the
        // process's bounded hashing pool, never on the async executor.
        let ok = crate::password::verify(password, &hash)
            .await
            .map_err(|_| ConnectorError::Busy)?;
        match (ok, user) {
            (true, Some(user)) => Ok(Identity {
                connector_id: self.id.clone(),
                upstream_subject: user.email.to_ascii_lowercase(),
                email: Some(user.email.clone()),
                email_verified: true,
                name: user.name.clone(),
                groups: user.groups.clone(),
                claims: Default::default(),
                session: Default::default(),
            }),
            _ => Err(ConnectorError::InvalidCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    use argon2::Argon2;

    fn hash(p: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(p.as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap()
    }

    fn connector() -> DevConnector {
        DevConnector::new(
            "dev",
            None,
            vec![DevUser {
                email: "Admin@Example.com".into(),
                password_hash: hash("password"),
                name: Some("Admin".into()),
                groups: vec!["admins".into()],
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn right_password_logs_in_with_lowercased_subject() {
        let id = connector()
            .password_login("admin@example.com", "password")
            .await
            .unwrap();
        assert_eq!(id.upstream_subject, "admin@example.com");
        assert_eq!(id.groups, vec!["admins"]);
    }

    #[tokio::test]
    async fn wrong_password_is_refused() {
        let err = connector()
            .password_login("admin@example.com", "nope")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::InvalidCredentials));
    }

    #[tokio::test]
    async fn unknown_user_is_refused_like_a_wrong_password() {
        let err = connector()
            .password_login("who@example.com", "password")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::InvalidCredentials));
    }

    #[test]
    fn plaintext_password_in_config_is_rejected() {
        let err = DevConnector::new(
            "dev",
            None,
            vec![DevUser {
                email: "a@b".into(),
                password_hash: "password".into(),
                name: None,
                groups: vec![],
            }],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("argon2"));
    }
}
