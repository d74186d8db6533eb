//! The SAML 2.0 connector: Gatehouse is a service provider (SP) of Web
//! Browser SSO. [`SamlConnector::begin`] sends the browser to the identity
//! provider's single sign-on URL with an `AuthnRequest` (HTTP-Redirect
//! binding: deflated, base64, in the `SAMLRequest` query parameter, with a
//! random `RelayState`). The IdP posts the `SAMLResponse` back to the
//! connector's callback URL (HTTP-POST binding), which is also its Assertion
//! Consumer Service (ACS) URL, and [`SamlConnector::complete`] turns it into
//! an [`Identity`].
//!
//! Validation (`validate`, one small named check each, in this order):
//! 1. the document is a SAML protocol `Response` without a DTD;
//! 2. its status is Success (otherwise the IdP refused: `Refused`);
//! 3. its `Destination`, when present, is our ACS URL;
//! 4. its `InResponseTo`, when present, is the `AuthnRequest` we sent;
//! 5. it holds exactly one assertion, plain (no encrypted assertion; a
//!    second assertion is refused before anything else is read), and at
//!    least one signature;
//! 6. the signature(s) verify with the configured IdP certificate (xmlsec,
//!    RSA/ECDSA with SHA-256 or better), and everything read afterwards comes
//!    from the document reduced to what the signatures cover (samael's
//!    `ReduceMode::ValidateAndMarkNoAncestors`): the signed `Response` or
//!    the signed `Assertion`, never an unsigned sibling (signature wrapping);
//! 7. the assertion's `Issuer` (and the response's, when present) is the
//!    IdP's entity id;
//! 8. `Conditions`: `AudienceRestriction` names our SP entity id,
//!    `NotBefore`/`NotOnOrAfter` hold with the allowed clock skew;
//! 9. a bearer `SubjectConfirmation` whose data names our ACS URL as
//!    `Recipient`, the `AuthnRequest` ID as `InResponseTo`, and whose time
//!    window holds;
//! 10. an `AuthnStatement` is present.
//!
//! Checks 1-5 read the unverified document, and can only refuse it. The
//! identity and every value that lets a sign-in through come from check 6's
//! reduced document.
//!
//! Settings (the connector's table in the configuration):
//! ```toml
//! [[tenants.connectors]]
//! id = "corp"
//! type = "saml"
//! display_name = "Corporate login"
//! idp_metadata_url = "https://idp.example.com/saml/metadata"  # or idp_metadata_file, idp_metadata,
//!                                   # or idp_entity_id + idp_sso_url + idp_certificate
//! # sp_entity_id = "https://auth.example.com/saml/corp/metadata"  # the default
//! # name_id_format = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
//! # attributes = { email = "email", name = "name", groups = "groups" }  # subject: the NameID
//! # clock_skew_secs = 60
//! # max_session_lifetime = 28800
//! # timeout_secs = 10
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING};
use samael::schema::{
    Assertion, AuthnRequest, Issuer, NameIdPolicy, Response, SubjectConfirmationData,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::oidc::parse_settings;
use crate::{Connector, ConnectorError, Identity, LoginMethod, RedirectLogin, UpstreamSession};

/// Default allowance for the IdP's clock, in seconds.
pub const DEFAULT_CLOCK_SKEW_SECS: i64 = 60;
/// The largest clock skew an administrator may allow.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Default cap of a sign-in's upstream session: 8 hours.
pub const DEFAULT_MAX_SESSION_LIFETIME: i64 = 8 * 3600;
/// IdP metadata fetched from a URL is refetched after this long.
pub const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Largest metadata document read.
const MAX_METADATA_BYTES: usize = 1024 * 1024;
/// Largest decoded SAML response accepted.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Longest upstream subject accepted (it is stored and indexed).
const MAX_SUBJECT_LEN: usize = 255;

pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const NS_XMLDSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const HTTP_REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
pub const NAME_ID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const NAME_ID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Signature algorithms accepted on responses: no SHA-1, no DSA.
const ALLOWED_ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The path, under the tenant's issuer, of a SAML connector's SP metadata.
pub fn metadata_path(connector_id: &str) -> String {
    format!("/saml/{connector_id}/metadata")
}

/// The SP metadata URL that belongs to a connector's callback (ACS) URL
/// `{issuer}/callback/{id}`: `{issuer}/saml/{id}/metadata`. It is the
/// default SP entity id.
pub fn metadata_url_for(callback_url: &str, connector_id: &str) -> Option<String> {
    callback_url
        .strip_suffix(&format!("/callback/{connector_id}"))
        .map(|issuer| format!("{issuer}{}", metadata_path(connector_id)))
}

/// Which SAML attributes carry what, by attribute `Name`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeNames {
    /// The attribute that identifies the user; the `NameID` when unset.
    pub subject: Option<String>,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for AttributeNames {
    fn default() -> Self {
        Self {
            subject: None,
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
        }
    }
}

/// The connector's settings as configured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlSettings {
    /// Our entity id at the IdP; by default the SP metadata URL.
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// Where the IdP publishes its metadata (fetched at first use, cached).
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    /// A file holding the IdP's metadata (read when the config is loaded).
    #[serde(default)]
    pub idp_metadata_file: Option<String>,
    /// The IdP's metadata XML itself.
    #[serde(default)]
    pub idp_metadata: Option<String>,
    /// Without metadata: the IdP's entity id, SSO URL and signing certificate.
    #[serde(default)]
    pub idp_entity_id: Option<String>,
    #[serde(default)]
    pub idp_sso_url: Option<String>,
    /// PEM; several certificates (a rollover) may be concatenated.
    #[serde(default)]
    pub idp_certificate: Option<String>,
    #[serde(default = "default_name_id_format")]
    pub name_id_format: String,
    #[serde(default)]
    pub attributes: AttributeNames,
    #[serde(default = "default_skew")]
    pub clock_skew_secs: i64,
    #[serde(default = "default_max_session")]
    pub max_session_lifetime: i64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_name_id_format() -> String {
    NAME_ID_PERSISTENT.into()
}
fn default_skew() -> i64 {
    DEFAULT_CLOCK_SKEW_SECS
}
fn default_max_session() -> i64 {
    DEFAULT_MAX_SESSION_LIFETIME
}
fn default_timeout() -> u64 {
    10
}

/// What we know of the identity provider.
#[derive(Clone, Debug)]
pub struct IdpInfo {
    pub entity_id: String,
    pub sso_url: String,
    pub certificates: Vec<CertificateDer>,
}

enum IdpSource {
    Fixed(Arc<IdpInfo>),
    Url {
        url: String,
        cached: RwLock<Option<(Arc<IdpInfo>, Instant)>>,
        http: reqwest::Client,
    },
}

/// What `begin` keeps for `complete` (stored server side by the broker).
#[derive(Serialize, Deserialize)]
struct Kept {
    request_id: String,
    relay_state: String,
}

pub struct SamlConnector {
    id: String,
    display_name: String,
    sp_entity_id: Option<String>,
    name_id_format: String,
    attributes: AttributeNames,
    skew: i64,
    max_session_lifetime: i64,
    timeout: Duration,
    idp: IdpSource,
}

impl std::fmt::Debug for SamlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlConnector")
            .field("id", &self.id)
            .field("sp_entity_id", &self.sp_entity_id)
            .finish_non_exhaustive()
    }
}

fn config(m: impl Into<String>) -> ConnectorError {
    ConnectorError::Config(m.into())
}

/// `https`, or `http` on a loopback host (tests, local development).
fn check_transport(key: &str, value: &str) -> Result<url::Url, ConnectorError> {
    let url = url::Url::parse(value)
        .map_err(|e| config(format!("{key}: '{value}' is not a URL ({e})")))?;
    if url.scheme() == "https" || (url.scheme() == "http" && crate::is_loopback(&url)) {
        Ok(url)
    } else {
        Err(config(format!(
            "{key}: '{value}' must be an https URL (http only for a loopback host: 127.0.0.1, [::1] or localhost)"
        )))
    }
}

/// Certificates from PEM text (one or more `CERTIFICATE` blocks).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer>, ConnectorError> {
    let certs = openssl::x509::X509::stack_from_pem(pem.as_bytes())
        .map_err(|_| config("idp_certificate: not a PEM certificate"))?;
    if certs.is_empty() {
        return Err(config(
            "idp_certificate: no certificate found in the PEM text",
        ));
    }
    certs
        .iter()
        .map(|c| {
            c.to_der()
                .map(CertificateDer::from)
                .map_err(|_| config("idp_certificate: the certificate cannot be encoded"))
        })
        .collect()
}

/// The IdP's entity id, HTTP-Redirect SSO URL and signing certificates from
/// its metadata (an `EntityDescriptor` with an `IDPSSODescriptor`).
pub fn idp_from_metadata(xml: &str) -> Result<IdpInfo, ConnectorError> {
    let bad = |m: &str| ConnectorError::Config(format!("the IdP metadata {m}"));
    if has_doctype(xml) {
        return Err(bad("contains a DTD, which is not accepted"));
    }
    let entity = EntityDescriptor::from_str(xml)
        .map_err(|e| bad(&format!("is not a SAML EntityDescriptor ({e})")))?;
    let entity_id = entity
        .entity_id
        .clone()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| bad("has no entityID"))?;
    let descriptors = entity
        .idp_sso_descriptors
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("has no IDPSSODescriptor (is it the IdP's metadata?)"))?;
    let sso_url = descriptors
        .iter()
        .flat_map(|d| &d.single_sign_on_services)
        .find(|s| s.binding == HTTP_REDIRECT_BINDING)
        .map(|s| s.location.clone())
        .ok_or_else(|| bad("names no SingleSignOnService with the HTTP-Redirect binding"))?;
    check_transport("the IdP's SingleSignOnService", &sso_url)?;
    let keys: Vec<_> = descriptors
        .iter()
        .flat_map(|d| &d.key_descriptors)
        .collect();
    let signing: Vec<_> = keys
        .iter()
        .filter(|k| matches!(k.key_use.as_deref(), None | Some("") | Some("signing")))
        .collect();
    let mut certificates = Vec::new();
    for key in signing {
        for text in key.key_info.x509_data.iter().flat_map(|d| &d.certificates) {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let der = STANDARD
                .decode(compact)
                .map_err(|_| bad("has a signing certificate that is not base64"))?;
            openssl::x509::X509::from_der(&der)
                .map_err(|_| bad("has a signing certificate that cannot be read"))?;
            certificates.push(CertificateDer::from(der));
        }
    }
    if certificates.is_empty() {
        return Err(bad("has no signing certificate"));
    }
    Ok(IdpInfo {
        entity_id,
        sso_url,
        certificates,
    })
}

impl SamlConnector {
    /// Builds the connector from its settings table. Errors name the setting.
    /// A metadata URL is fetched at first use, not here.
    pub fn from_settings(
        id: &str,
        display_name: Option<&str>,
        settings: &Map<String, Value>,
    ) -> Result<Self, ConnectorError> {
        Self::new(id, display_name, parse_settings(settings)?)
    }

    pub fn new(
        id: &str,
        display_name: Option<&str>,
        s: SamlSettings,
    ) -> Result<Self, ConnectorError> {
        if !(0..=MAX_CLOCK_SKEW_SECS).contains(&s.clock_skew_secs) {
            return Err(config(format!(
                "clock_skew_secs: must be between 0 and {MAX_CLOCK_SKEW_SECS}"
            )));
        }
        if !(60..=30 * 86400).contains(&s.max_session_lifetime) {
            return Err(config(
                "max_session_lifetime: must be between 60 and 2592000 seconds (30 days)",
            ));
        }
        if !(1..=120).contains(&s.timeout_secs) {
            return Err(config("timeout_secs: must be between 1 and 120"));
        }
        if let Some(e) = &s.sp_entity_id {
            if e.trim().is_empty() {
                return Err(config("sp_entity_id: must not be empty"));
            }
        }
        if s.name_id_format.trim().is_empty() {
            return Err(config("name_id_format: must not be empty"));
        }
        let timeout = Duration::from_secs(s.timeout_secs);
        let idp = idp_source(&s, timeout)?;
        Ok(Self {
            id: id.to_string(),
            display_name: display_name.unwrap_or(id).to_string(),
            sp_entity_id: s.sp_entity_id,
            name_id_format: s.name_id_format,
            attributes: s.attributes,
            skew: s.clock_skew_secs,
            max_session_lifetime: s.max_session_lifetime,
            timeout,
            idp,
        })
    }

    /// Our entity id: configured, or the SP metadata URL.
    pub fn sp_entity_id(&self, callback_url: &str) -> Result<String, ConnectorError> {
        match &self.sp_entity_id {
            Some(e) => Ok(e.clone()),
            None => metadata_url_for(callback_url, &self.id).ok_or_else(|| {
                config(format!(
                    "callback URL '{callback_url}' does not end in /callback/{}; set sp_entity_id",
                    self.id
                ))
            }),
        }
    }

    /// The SP metadata document (`EntityDescriptor` with an
    /// `SPSSODescriptor`) for the ACS URL `callback_url`.
    pub fn metadata_xml(&self, callback_url: &str) -> Result<String, ConnectorError> {
        let entity_id = self.sp_entity_id(callback_url)?;
        Ok(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{NS_METADATA}" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="{NS_PROTOCOL}">
    <md:NameIDFormat>{format}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{HTTP_POST_BINDING}" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = xml_escape(&entity_id),
            format = xml_escape(&self.name_id_format),
            acs = xml_escape(callback_url),
        ))
    }

    async fn idp(&self) -> Result<Arc<IdpInfo>, ConnectorError> {
        match &self.idp {
            IdpSource::Fixed(info) => Ok(info.clone()),
            IdpSource::Url { url, cached, http } => {
                let current = cached
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if let Some((info, at)) = &current {
                    if at.elapsed() < METADATA_TTL {
                        return Ok(info.clone());
                    }
                }
                let span = crate::trace::span("upstream.saml_metadata", &self.id);
                match crate::trace::traced(span, fetch_metadata(http, url, self.timeout)).await {
                    Ok(info) => {
                        let info = Arc::new(info);
                        *cached
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((info.clone(), Instant::now()));
                        Ok(info)
                    }
                    // A failed refresh keeps the previous copy.
                    Err(e) => match current {
                        Some((info, _)) => {
                            tracing::warn!(connector = %self.id, error = %e, "SAML IdP metadata refresh failed; keeping the previous copy");
                            Ok(info)
                        }
                        None => Err(e),
                    },
                }
            }
        }
    }

    /// Validates a SAML response for the sign-in `kept` describes, at `now`.
    fn verify(
        &self,
        idp: &IdpInfo,
        callback_url: &str,
        kept: &Kept,
        params: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Identity, ConnectorError> {
        check_relay_state(params, kept)?;
        let xml = decode_response(params)?;
        let expect = Expected {
            idp,
            acs_url: callback_url,
            sp_entity_id: &self.sp_entity_id(callback_url)?,
            request_id: &kept.request_id,
            skew: chrono::Duration::seconds(self.skew),
            now,
        };
        let assertion = validate(&xml, &expect)?;
        self.identity(&assertion, &expect)
    }

    /// Maps the validated assertion to the identity.
    fn identity(
        &self,
        assertion: &Assertion,
        expect: &Expected,
    ) -> Result<Identity, ConnectorError> {
        let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for attribute in assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| &s.attributes)
        {
            let Some(name) = attribute.name.clone() else {
                continue;
            };
            attributes.entry(name).or_default().extend(
                attribute
                    .values
                    .iter()
                    .filter_map(|v| v.value.clone())
                    .filter(|v| !v.is_empty()),
            );
        }
        let first = |name: &str| attributes.get(name).and_then(|v| v.first()).cloned();
        let subject = match &self.attributes.subject {
            Some(name) => first(name).ok_or_else(|| {
                ConnectorError::InvalidToken(format!(
                    "the assertion has no '{name}' attribute to identify the user"
                ))
            })?,
            None => name_id_subject(assertion)?,
        };
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
            return Err(ConnectorError::InvalidToken(format!(
                "the user's identifier is empty or longer than {MAX_SUBJECT_LEN} characters"
            )));
        }
        let mapped = [
            self.attributes.subject.as_deref(),
            Some(self.attributes.email.as_str()),
            Some(self.attributes.name.as_str()),
            Some(self.attributes.groups.as_str()),
        ];
        let claims = attributes
            .iter()
            .filter(|(k, _)| !mapped.contains(&Some(k.as_str())))
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        Ok(Identity {
            connector_id: self.id.clone(),
            upstream_subject: subject,
            email: first(&self.attributes.email),
            email_verified: false,
            name: first(&self.attributes.name),
            groups: attributes
                .get(&self.attributes.groups)
                .cloned()
                .unwrap_or_default(),
            claims,
            session: self.session(assertion, expect),
        })
    }

    /// The upstream session: it ends at the IdP's `SessionNotOnOrAfter` or
    /// after `max_session_lifetime`, whichever is first; the assertion ID
    /// is single-use until the assertion could no longer be accepted.
    fn session(&self, assertion: &Assertion, expect: &Expected) -> UpstreamSession {
        let now = expect.now.timestamp();
        let idp_end = assertion
            .authn_statements
            .iter()
            .flatten()
            .filter_map(|s| s.session_not_on_or_after)
            .map(|t| t.timestamp())
            .min();
        let cap = now + self.max_session_lifetime;
        let not_after = idp_end.map_or(cap, |end| end.min(cap));
        let expires = assertion_expiry(assertion).map_or(now, |t| t.timestamp()) + self.skew;
        UpstreamSession {
            refresh_token: None,
            not_after: Some(not_after),
            one_time_id: Some((assertion.id.clone(), expires.max(now + self.skew))),
        }
    }
}

fn idp_source(s: &SamlSettings, timeout: Duration) -> Result<IdpSource, ConnectorError> {
    let manual =
        s.idp_sso_url.is_some() || s.idp_certificate.is_some() || s.idp_entity_id.is_some();
    let given = [
        s.idp_metadata_url.is_some(),
        s.idp_metadata_file.is_some(),
        s.idp_metadata.is_some(),
        manual,
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(config(
            "give exactly one of idp_metadata_url, idp_metadata_file, idp_metadata, or idp_entity_id + idp_sso_url + idp_certificate",
        ));
    }
    if let Some(url) = &s.idp_metadata_url {
        check_transport("idp_metadata_url", url)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| config(format!("idp_metadata_url: no HTTP client ({e})")))?;
        return Ok(IdpSource::Url {
            url: url.clone(),
            cached: RwLock::new(None),
            http,
        });
    }
    let info = if let Some(path) = &s.idp_metadata_file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_METADATA_BYTES as u64).read_to_string(&mut text))
            .map_err(|e| config(format!("idp_metadata_file: '{path}' cannot be read ({e})")))?;
        idp_from_metadata(&text).map_err(|e| prefixed("idp_metadata_file", e))?
    } else if let Some(xml) = &s.idp_metadata {
        idp_from_metadata(xml).map_err(|e| prefixed("idp_metadata", e))?
    } else {
        let missing = |k: &str| config(format!("{k}: required with idp_sso_url/idp_certificate"));
        let entity_id = s
            .idp_entity_id
            .clone()
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| missing("idp_entity_id"))?;
        let sso_url = s
            .idp_sso_url
            .clone()
            .ok_or_else(|| missing("idp_sso_url"))?;
        check_transport("idp_sso_url", &sso_url)?;
        let pem = s
            .idp_certificate
            .as_deref()
            .ok_or_else(|| missing("idp_certificate"))?;
        IdpInfo {
            entity_id,
            sso_url,
            certificates: certificates_from_pem(pem)?,
        }
    };
    Ok(IdpSource::Fixed(Arc::new(info)))
}

fn prefixed(key: &str, e: ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::Config(m) => config(format!("{key}: {m}")),
        other => other,
    }
}

async fn fetch_metadata(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<IdpInfo, ConnectorError> {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let failed = |e: reqwest::Error| {
        ConnectorError::Unreachable(if e.is_timeout() {
            format!("{host} did not answer within {} seconds", timeout.as_secs())
        } else if e.is_connect() {
            format!("the connection to {host} failed")
        } else {
            format!("the request to {host} for the IdP metadata failed")
        })
    };
    let mut res = http
        .get(url)
        .headers(crate::trace::headers())
        .send()
        .await
        .map_err(failed)?;
    crate::trace::record_status(res.status().as_u16());
    if !res.status().is_success() {
        return Err(ConnectorError::Upstream(format!(
            "the IdP metadata URL answered HTTP {} (redirects are not followed)",
            res.status().as_u16()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_METADATA_BYTES {
            return Err(ConnectorError::Upstream(
                "the IdP metadata is larger than 1 MiB".into(),
            ));
        }
    }
    let text = String::from_utf8(body)
        .map_err(|_| ConnectorError::Upstream("the IdP metadata is not UTF-8".into()))?;
    idp_from_metadata(&text).map_err(|e| match e {
        ConnectorError::Config(m) => ConnectorError::Upstream(m),
        other => other,
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// 128 random bits, URL-safe.
fn random_token() -> Result<String, ConnectorError> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|_| ConnectorError::Upstream("no random numbers available".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

// ---------------------------------------------------------------------------
// Validation: the checks, each on its own.
// ---------------------------------------------------------------------------

/// What a response must match.
pub struct Expected<'a> {
    pub idp: &'a IdpInfo,
    pub acs_url: &'a str,
    pub sp_entity_id: &'a str,
    pub request_id: &'a str,
    pub skew: chrono::Duration,
    pub now: DateTime<Utc>,
}

fn invalid_token(m: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidToken(m.into())
}

fn invalid_callback(m: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidCallback(m.into())
}

/// The `RelayState` comes back unchanged: the response belongs to the
/// sign-in this browser started.
fn check_relay_state(params: &BTreeMap<String, String>, kept: &Kept) -> Result<(), ConnectorError> {
    let presented = params.get("RelayState").map(String::as_str).unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(kept.relay_state.as_bytes())) {
        Ok(())
    } else {
        Err(invalid_callback(
            "it does not belong to this sign-in (the RelayState does not match); start again from the application",
        ))
    }
}

/// The posted `SAMLResponse`, base64-decoded.
fn decode_response(params: &BTreeMap<String, String>) -> Result<String, ConnectorError> {
    let encoded = params
        .get("SAMLResponse")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid_callback("it carries no SAMLResponse"))?;
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.len() > MAX_RESPONSE_BYTES * 4 / 3 + 4 {
        return Err(invalid_callback("the SAMLResponse is too large"));
    }
    let bytes = STANDARD
        .decode(compact)
        .map_err(|_| invalid_callback("the SAMLResponse is not base64"))?;
    String::from_utf8(bytes).map_err(|_| invalid_callback("the SAMLResponse is not UTF-8 XML"))
}

/// What a walk over the (unverified) document found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Namespace and local name of the root element.
    pub root: Option<(String, String)>,
    pub assertions: usize,
    pub encrypted_assertions: usize,
    pub signatures: usize,
    pub doctype: bool,
}

/// Walks the document once, counting the elements the checks care about.
pub fn shape(xml: &str) -> Result<Shape, ConnectorError> {
    let mut reader = NsReader::from_str(xml);
    let mut out = Shape::default();
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|_| invalid_callback("the SAMLResponse is not well-formed XML"))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match (ns.as_str(), local.as_str()) {
                    (NS_ASSERTION, "Assertion") => out.assertions += 1,
                    (NS_ASSERTION, "EncryptedAssertion") => out.encrypted_assertions += 1,
                    (NS_XMLDSIG, "Signature") => out.signatures += 1,
                    _ => {}
                }
                if out.root.is_none() {
                    out.root = Some((ns, local));
                }
            }
            Event::DocType(_) => out.doctype = true,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn has_doctype(xml: &str) -> bool {
    shape(xml).map_or(true, |s| s.doctype)
}

/// Check 1: a SAML protocol `Response`, no DTD (no entity tricks reach the
/// XML parsers).
fn check_is_response(shape: &Shape) -> Result<(), ConnectorError> {
    if shape.doctype {
        return Err(invalid_callback("the SAMLResponse contains a DTD"));
    }
    match &shape.root {
        Some((ns, local)) if ns == NS_PROTOCOL && local == "Response" => Ok(()),
        _ => Err(invalid_callback("the SAMLResponse is not a SAML Response")),
    }
}

/// The unverified response, for the checks that can only refuse.
fn parse_response(xml: &str) -> Result<Response, ConnectorError> {
    Response::from_str(xml).map_err(|_| invalid_callback("the SAML Response cannot be read"))
}

/// Check 2: Success, or the IdP refused (the user cancelled, is not
/// allowed, ...). Read unverified: a refusal grants nothing.
fn check_status(response: &Response) -> Result<(), ConnectorError> {
    let Some(status) = &response.status else {
        return Err(invalid_callback("the SAML Response has no Status"));
    };
    let code = status.status_code.value.as_deref().unwrap_or("");
    if code == STATUS_SUCCESS {
        return Ok(());
    }
    let short = |s: &str| {
        s.rsplit(':')
            .next()
            .unwrap_or(s)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect::<String>()
    };
    let message = status
        .status_message
        .as_ref()
        .and_then(|m| m.value.as_deref())
        .map(|m| {
            m.chars()
                .filter(|c| matches!(*c, ' '..='~') && *c != '"' && *c != '\\')
                .take(200)
                .collect::<String>()
        })
        .filter(|m| !m.is_empty());
    let plain = match short(code).as_str() {
        "Requester" => "the identity provider did not accept the sign-in request",
        "VersionMismatch" => "the identity provider does not speak this SAML version",
        _ => "the sign-in was cancelled or not allowed",
    };
    Err(ConnectorError::Refused(match message {
        Some(m) => format!("{plain} (status {}: {m})", short(code)),
        None => format!("{plain} (status {})", short(code)),
    }))
}

/// Check 3: a `Destination` names our ACS URL.
fn check_destination(response: &Response, expect: &Expected) -> Result<(), ConnectorError> {
    match response.destination.as_deref() {
        None => Ok(()),
        Some(d) if d == expect.acs_url => Ok(()),
        Some(_) => Err(invalid_token(
            "the SAML Response was sent to another address (its Destination is not this connector's ACS URL)",
        )),
    }
}

fn not_ours() -> ConnectorError {
    invalid_callback(
        "it does not belong to this sign-in (InResponseTo does not name our request); start again from the application",
    )
}

/// Check 4: a response-level `InResponseTo` names our request.
fn check_response_in_response_to(
    response: &Response,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    match response.in_response_to.as_deref() {
        Some(id) if id != expect.request_id => Err(not_ours()),
        _ => Ok(()),
    }
}

/// Check 5a (before anything else is read): at most one assertion, none
/// encrypted. Two assertions (an unsigned one beside or around the signed
/// one, or the signed one moved elsewhere) is how signature wrapping
/// starts: refused outright.
fn check_no_second_assertion(shape: &Shape) -> Result<(), ConnectorError> {
    if shape.encrypted_assertions > 0 {
        return Err(invalid_token(
            "it holds an encrypted assertion, which this connector does not accept",
        ));
    }
    if shape.assertions > 1 {
        return Err(invalid_token(format!(
            "the SAML Response holds {} assertions; exactly one is accepted",
            shape.assertions
        )));
    }
    Ok(())
}

/// Check 5b (a successful response): one assertion, and a signature.
fn check_signed_assertion_present(shape: &Shape) -> Result<(), ConnectorError> {
    if shape.assertions == 0 {
        return Err(invalid_token("the SAML Response holds no assertion"));
    }
    if shape.signatures == 0 {
        return Err(invalid_token(
            "neither the SAML Response nor its assertion is signed",
        ));
    }
    Ok(())
}

/// Check 6: every signature verifies with the IdP's certificate; returns
/// the assertion as the signatures cover it, and nothing else.
fn verify_signature(xml: &str, idp: &IdpInfo) -> Result<Assertion, ConnectorError> {
    let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &idp.certificates,
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(&ALLOWED_ALGORITHMS),
    )
    .map_err(|_| {
        invalid_token(
            "its signature does not verify with the identity provider's certificate (or uses an algorithm weaker than SHA-256)",
        )
    })?;
    let signed = shape(&reduced)?;
    let unreadable = || invalid_token("the signed part of the SAML Response cannot be read");
    match signed.root.as_ref().map(|(n, l)| (n.as_str(), l.as_str())) {
        Some((NS_PROTOCOL, "Response")) if signed.assertions == 1 => Response::from_str(&reduced)
            .ok()
            .and_then(|r| r.assertion)
            .ok_or_else(unreadable),
        Some((NS_ASSERTION, "Assertion")) if signed.assertions == 1 => {
            Assertion::from_str(&reduced).map_err(|_| unreadable())
        }
        _ => Err(invalid_token(
            "the signature covers neither the SAML Response nor its assertion",
        )),
    }
}

fn issuer_is(issuer: &Issuer, expected: &str) -> bool {
    issuer.value.as_deref().map(str::trim) == Some(expected)
}

/// Check 7: the assertion, and the response when it names one, come from
/// the configured IdP.
fn check_issuer(
    response: &Response,
    assertion: &Assertion,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    let response_ok = response
        .issuer
        .as_ref()
        .is_none_or(|i| issuer_is(i, &expect.idp.entity_id));
    if response_ok && issuer_is(&assertion.issuer, &expect.idp.entity_id) {
        Ok(())
    } else {
        Err(invalid_token(
            "it was issued by someone else (the Issuer is not the IdP's entity id)",
        ))
    }
}

/// Check 8a: an `AudienceRestriction` names our SP entity id.
fn check_audience(assertion: &Assertion, expect: &Expected) -> Result<(), ConnectorError> {
    let ours = assertion
        .conditions
        .iter()
        .flat_map(|c| c.audience_restrictions.iter().flatten())
        .any(|r| r.audience.iter().any(|a| a.trim() == expect.sp_entity_id));
    if ours {
        Ok(())
    } else {
        Err(invalid_token(format!(
            "it is meant for another service provider (its Audience is not '{}')",
            expect.sp_entity_id
        )))
    }
}

/// `NotBefore`/`NotOnOrAfter` with the skew allowance.
fn check_window(
    not_before: Option<DateTime<Utc>>,
    not_on_or_after: Option<DateTime<Utc>>,
    expect: &Expected,
    what: &str,
) -> Result<(), ConnectorError> {
    if let Some(nb) = not_before {
        if expect.now + expect.skew < nb {
            return Err(invalid_token(format!(
                "{what} is not valid yet (check the clocks)"
            )));
        }
    }
    if let Some(end) = not_on_or_after {
        if expect.now - expect.skew >= end {
            return Err(invalid_token(format!(
                "{what} has expired (check the clocks)"
            )));
        }
    }
    Ok(())
}

/// Check 8b: the assertion's `Conditions` time window.
fn check_conditions_window(assertion: &Assertion, expect: &Expected) -> Result<(), ConnectorError> {
    let Some(c) = &assertion.conditions else {
        return Err(invalid_token("the assertion has no Conditions"));
    };
    check_window(c.not_before, c.not_on_or_after, expect, "the assertion")
}

/// Check 9a: the confirmation names our ACS URL.
fn check_recipient(
    data: &SubjectConfirmationData,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    if data.recipient.as_deref() == Some(expect.acs_url) {
        Ok(())
    } else {
        Err(invalid_token(
            "it was meant for another address (the Recipient is not this connector's ACS URL)",
        ))
    }
}

/// Check 9b: the confirmation answers our `AuthnRequest` (no IdP-initiated
/// sign-in).
fn check_in_response_to(
    data: &SubjectConfirmationData,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    if data.in_response_to.as_deref() == Some(expect.request_id) {
        Ok(())
    } else {
        Err(not_ours())
    }
}

/// Check 9c: the confirmation's window, which must be bounded.
fn check_confirmation_window(
    data: &SubjectConfirmationData,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    if data.not_on_or_after.is_none() {
        return Err(invalid_token(
            "its subject confirmation has no NotOnOrAfter",
        ));
    }
    check_window(
        data.not_before,
        data.not_on_or_after,
        expect,
        "the subject confirmation",
    )
}

type ConfirmationCheck = fn(&SubjectConfirmationData, &Expected) -> Result<(), ConnectorError>;
const CONFIRMATION_CHECKS: [ConfirmationCheck; 3] = [
    check_recipient,
    check_in_response_to,
    check_confirmation_window,
];

/// Check 9: one bearer `SubjectConfirmation` passes every confirmation
/// check; otherwise the first failure of the first one is reported.
fn check_subject_confirmation(
    assertion: &Assertion,
    expect: &Expected,
) -> Result<(), ConnectorError> {
    let mut first_error = None;
    for confirmation in assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter(|c| c.method.as_deref() == Some(BEARER))
    {
        let Some(data) = &confirmation.subject_confirmation_data else {
            continue;
        };
        match CONFIRMATION_CHECKS
            .iter()
            .try_for_each(|check| check(data, expect))
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| invalid_token("the assertion has no bearer subject confirmation")))
}

/// Check 10: the assertion says the user authenticated.
fn check_authn_statement(assertion: &Assertion, _: &Expected) -> Result<(), ConnectorError> {
    if assertion
        .authn_statements
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        Ok(())
    } else {
        Err(invalid_token("the assertion has no AuthnStatement"))
    }
}

type AssertionCheck = fn(&Assertion, &Expected) -> Result<(), ConnectorError>;
/// The checks on the signed assertion, in order.
const ASSERTION_CHECKS: [AssertionCheck; 4] = [
    check_audience,
    check_conditions_window,
    check_subject_confirmation,
    check_authn_statement,
];

/// All checks, in order; returns the signed assertion.
pub fn validate(xml: &str, expect: &Expected) -> Result<Assertion, ConnectorError> {
    let found = shape(xml)?;
    check_is_response(&found)?;
    check_no_second_assertion(&found)?;
    let response = parse_response(xml)?;
    check_status(&response)?;
    check_destination(&response, expect)?;
    check_response_in_response_to(&response, expect)?;
    check_signed_assertion_present(&found)?;
    let assertion = verify_signature(xml, expect.idp)?;
    check_issuer(&response, &assertion, expect)?;
    ASSERTION_CHECKS
        .iter()
        .try_for_each(|check| check(&assertion, expect))?;
    Ok(assertion)
}

/// The user's `NameID`, refused when transient (it changes every sign-in).
fn name_id_subject(assertion: &Assertion) -> Result<String, ConnectorError> {
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .ok_or_else(|| invalid_token("the assertion has no NameID"))?;
    if name_id.format.as_deref() == Some(NAME_ID_TRANSIENT) {
        return Err(invalid_token(
            "its NameID is transient (different at every sign-in); configure a persistent NameID at the IdP or set attributes.subject",
        ));
    }
    Ok(name_id.value.trim().to_string())
}

/// The latest moment the assertion could be accepted (before skew).
fn assertion_expiry(assertion: &Assertion) -> Option<DateTime<Utc>> {
    let conditions = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.not_on_or_after);
    let confirmations = assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter_map(|c| c.subject_confirmation_data.as_ref())
        .filter_map(|d| d.not_on_or_after);
    confirmations.chain(conditions).max()
}

#[async_trait]
impl Connector for SamlConnector {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "saml"
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn login_method(&self) -> LoginMethod {
        LoginMethod::Redirect
    }

    async fn begin(&self, redirect_uri: &str) -> Result<RedirectLogin, ConnectorError> {
        let idp = self.idp().await?;
        let kept = Kept {
            // An xsd:ID must not start with a digit.
            request_id: format!("_{}", random_token()?),
            relay_state: random_token()?,
        };
        let request = AuthnRequest {
            id: kept.request_id.clone(),
            version: "2.0".into(),
            issue_instant: Utc::now(),
            destination: Some(idp.sso_url.clone()),
            issuer: Some(Issuer {
                value: Some(self.sp_entity_id(redirect_uri)?),
                ..Issuer::default()
            }),
            name_id_policy: Some(NameIdPolicy {
                format: Some(self.name_id_format.clone()),
                allow_create: Some(true),
                ..NameIdPolicy::default()
            }),
            assertion_consumer_service_url: Some(redirect_uri.to_string()),
            protocol_binding: Some(HTTP_POST_BINDING.into()),
            ..AuthnRequest::default()
        };
        let url = request
            .redirect(&kept.relay_state)
            .ok()
            .flatten()
            .ok_or_else(|| {
                ConnectorError::Upstream("the SAML AuthnRequest could not be encoded".into())
            })?;
        let kept = serde_json::to_value(kept)
            .map_err(|e| ConnectorError::Upstream(format!("could not keep sign-in state: {e}")))?;
        Ok(RedirectLogin {
            authorize_url: url.to_string(),
            kept,
        })
    }

    async fn complete(
        &self,
        redirect_uri: &str,
        kept: &Value,
        params: &BTreeMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        let kept: Kept = serde_json::from_value(kept.clone())
            .map_err(|_| invalid_callback("this sign-in holds no SAML request"))?;
        let idp = self.idp().await?;
        self.verify(&idp, redirect_uri, &kept, params, Utc::now())
    }

    fn service_provider_metadata(
        &self,
        callback_url: &str,
    ) -> Option<Result<String, ConnectorError>> {
        Some(self.metadata_xml(callback_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml_test_idp::{without_declaration, ResponseSpec, TestIdp};
    use std::sync::OnceLock;

    const ACS: &str = "https://auth.example.com/callback/corp";
    const SP: &str = "https://auth.example.com/saml/corp/metadata";
    const IDP: &str = "https://idp.example.com/saml";
    const SSO: &str = "https://idp.example.com/saml/sso";
    const REQUEST: &str = "_request-1";
    const RELAY: &str = "relay-1";

    /// Key generation is slow in debug builds: one IdP and one impostor.
    fn idp() -> &'static TestIdp {
        static IDP_KEY: OnceLock<TestIdp> = OnceLock::new();
        IDP_KEY.get_or_init(|| TestIdp::generate(IDP))
    }
    fn impostor() -> &'static TestIdp {
        static OTHER: OnceLock<TestIdp> = OnceLock::new();
        OTHER.get_or_init(|| TestIdp::generate(IDP))
    }

    fn settings(extra: Value) -> Map<String, Value> {
        let mut s = json!({
            "idp_entity_id": IDP,
            "idp_sso_url": SSO,
            "idp_certificate": idp().certificate_pem(),
        });
        if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), extra) {
            s.extend(extra);
        }
        match s {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    use serde_json::json;

    fn connector(extra: Value) -> SamlConnector {
        SamlConnector::from_settings("corp", Some("Corp"), &settings(extra)).expect("connector")
    }

    fn spec() -> ResponseSpec {
        ResponseSpec::new(idp(), ACS, SP, REQUEST)
    }

    fn post(xml: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("SAMLResponse".to_string(), STANDARD.encode(xml)),
            ("RelayState".to_string(), RELAY.to_string()),
        ])
    }

    fn kept() -> Kept {
        Kept {
            request_id: REQUEST.into(),
            relay_state: RELAY.into(),
        }
    }

    fn verify_xml(c: &SamlConnector, xml: &str) -> Result<Identity, ConnectorError> {
        let info = match &c.idp {
            IdpSource::Fixed(info) => info.clone(),
            IdpSource::Url { .. } => panic!("fixed IdP expected"),
        };
        c.verify(&info, ACS, &kept(), &post(xml), Utc::now())
    }

    fn verify(spec: &ResponseSpec) -> Result<Identity, ConnectorError> {
        verify_xml(&connector(json!({})), &idp().response(spec))
    }

    #[track_caller]
    fn refused_as(r: Result<Identity, ConnectorError>, kind: &str, words: &str) {
        match r {
            Ok(i) => panic!("accepted ({i:?}), expected {kind}: {words}"),
            Err(e) => {
                assert_eq!(e.reason(), kind, "{e}");
                assert!(e.to_string().contains(words), "'{e}' lacks '{words}'");
            }
        }
    }

    #[test]
    fn valid_response_maps_the_user_and_the_session() {
        let s = spec();
        let identity = verify(&s).expect("valid");
        assert_eq!(identity.connector_id, "corp");
        assert_eq!(identity.upstream_subject, "alice");
        assert_eq!(identity.email.as_deref(), Some("alice@saml.example"));
        assert!(!identity.email_verified);
        assert_eq!(identity.name.as_deref(), Some("Alice SAML"));
        assert_eq!(identity.groups, vec!["staff", "admins"]);
        // The IdP session (8 h) is cut at max_session_lifetime (8 h) from now.
        let not_after = identity.session.not_after.expect("not_after");
        let now = Utc::now().timestamp();
        assert!(
            (now + DEFAULT_MAX_SESSION_LIFETIME - 5..=now + DEFAULT_MAX_SESSION_LIFETIME)
                .contains(&not_after)
        );
        let (id, until) = identity.session.one_time_id.expect("one-time id");
        assert_eq!(id, s.assertion_id);
        let expiry = s.confirmation_not_on_or_after.expect("end").timestamp();
        assert_eq!(until, expiry + DEFAULT_CLOCK_SKEW_SECS);
    }

    #[test]
    fn session_ends_at_the_idp_session_end_when_it_is_sooner() {
        let mut s = spec();
        let end = Utc::now() + chrono::Duration::minutes(30);
        s.session_not_on_or_after = Some(end);
        let identity = verify(&s).expect("valid");
        assert_eq!(identity.session.not_after, Some(end.timestamp()));
        // And a shorter configured cap wins over the IdP's.
        let c = connector(json!({"max_session_lifetime": 600}));
        let identity = verify_xml(&c, &idp().response(&s)).expect("valid");
        let now = Utc::now().timestamp();
        assert!(identity.session.not_after.expect("end") <= now + 600);
    }

    #[test]
    fn further_attributes_become_claims_and_the_subject_can_be_an_attribute() {
        let mut s = spec();
        s.attributes
            .push(("department".into(), vec!["Research".into()]));
        s.attributes.push(("uid".into(), vec!["alice-uid".into()]));
        let c = connector(
            json!({"attributes": {"subject": "uid", "email": "email", "name": "name", "groups": "groups"}}),
        );
        let identity = verify_xml(&c, &idp().response(&s)).expect("valid");
        assert_eq!(identity.upstream_subject, "alice-uid");
        assert_eq!(
            identity.claims.get("department"),
            Some(&json!(["Research"]))
        );
        assert!(!identity.claims.contains_key("uid"));
        assert!(!identity.claims.contains_key("email"));
    }

    #[test]
    fn a_signed_response_around_an_unsigned_assertion_is_accepted() {
        let mut s = spec();
        s.sign_assertion = false;
        s.sign_response = true;
        assert_eq!(verify(&s).expect("valid").upstream_subject, "alice");
        // Both signed is fine too.
        s.sign_assertion = true;
        assert_eq!(verify(&s).expect("valid").upstream_subject, "alice");
    }

    #[test]
    fn an_unsigned_response_is_rejected() {
        let mut s = spec();
        s.sign_assertion = false;
        refused_as(verify(&s), "invalid_id_token", "is signed");
    }

    #[test]
    fn a_response_signed_by_another_key_is_rejected() {
        let s = spec();
        let forged = impostor().response(&s);
        refused_as(
            verify_xml(&connector(json!({})), &forged),
            "invalid_id_token",
            "does not verify with the identity provider's certificate",
        );
    }

    #[test]
    fn an_assertion_changed_after_signing_is_rejected() {
        let genuine = idp().response(&spec());
        let tampered = genuine.replace(">alice</saml:NameID>", ">mallory</saml:NameID>");
        assert_ne!(genuine, tampered);
        refused_as(
            verify_xml(&connector(json!({})), &tampered),
            "invalid_id_token",
            "does not verify",
        );
    }

    /// An evil assertion for "mallory".
    fn evil_assertion() -> String {
        let mut evil = spec();
        evil.name_id = "mallory".into();
        evil.assertion_id = "_evil".into();
        evil.sign_assertion = false;
        evil.assertion_xml()
    }

    #[test]
    fn an_unsigned_assertion_beside_the_signed_one_is_rejected() {
        let s = spec();
        let signed = idp().sign(&s.assertion_xml());
        for both in [
            format!("{}{signed}", evil_assertion()),
            format!("{signed}{}", evil_assertion()),
        ] {
            let xml = s.response_around(&both);
            refused_as(
                verify_xml(&connector(json!({})), &xml),
                "invalid_id_token",
                "2 assertions",
            );
        }
    }

    #[test]
    fn a_signed_assertion_moved_inside_an_evil_one_is_rejected() {
        let s = spec();
        let signed = idp().sign(&s.assertion_xml());
        // The genuine signed assertion hidden in the evil one's Advice.
        let evil = evil_assertion().replace(
            "<saml:AttributeStatement>",
            &format!("<saml:Advice>{signed}</saml:Advice><saml:AttributeStatement>"),
        );
        let xml = s.response_around(&evil);
        refused_as(
            verify_xml(&connector(json!({})), &xml),
            "invalid_id_token",
            "2 assertions",
        );
        // Or in the response's Extensions, with the evil one in its place.
        let xml = s.response_around(&evil_assertion()).replace(
            "<samlp:Status>",
            &format!("<samlp:Extensions>{signed}</samlp:Extensions><samlp:Status>"),
        );
        refused_as(
            verify_xml(&connector(json!({})), &xml),
            "invalid_id_token",
            "2 assertions",
        );
    }

    #[test]
    fn only_the_signed_part_is_read() {
        // A signed response is reduced to what its signature covers; the
        // reduced document is what the identity comes from.
        let mut s = spec();
        s.sign_response = true;
        let xml = idp().response(&s);
        let assertion = verify_signature(
            &xml,
            &IdpInfo {
                entity_id: IDP.into(),
                sso_url: SSO.into(),
                certificates: certificates_from_pem(&idp().certificate_pem()).expect("cert"),
            },
        )
        .expect("verifies");
        assert_eq!(assertion.id, s.assertion_id);
    }

    #[test]
    fn a_response_for_another_service_provider_is_rejected() {
        let mut s = spec();
        s.audience = Some("https://other-sp.example.com".into());
        refused_as(
            verify(&s),
            "invalid_id_token",
            "meant for another service provider",
        );
        s.audience = None;
        refused_as(
            verify(&s),
            "invalid_id_token",
            "meant for another service provider",
        );
    }

    #[test]
    fn a_wrong_recipient_is_rejected() {
        let mut s = spec();
        s.recipient = Some("https://other-sp.example.com/acs".into());
        refused_as(verify(&s), "invalid_id_token", "Recipient");
    }

    #[test]
    fn a_wrong_destination_is_rejected() {
        let mut s = spec();
        s.destination = Some("https://other-sp.example.com/acs".into());
        refused_as(verify(&s), "invalid_id_token", "Destination");
        // Absent is allowed (the Recipient is checked regardless).
        s.destination = None;
        assert!(verify(&s).is_ok());
    }

    #[test]
    fn a_response_to_another_request_does_not_belong_to_this_sign_in() {
        let mut s = spec();
        s.in_response_to = Some("_another-request".into());
        s.response_in_response_to = None;
        refused_as(verify(&s), "invalid_callback", "InResponseTo");
        // Unsolicited (IdP-initiated) responses are not accepted.
        s.in_response_to = None;
        refused_as(verify(&s), "invalid_callback", "InResponseTo");
        // Nor a response that answers another request at the response level.
        let mut s = spec();
        s.response_in_response_to = Some("_another-request".into());
        refused_as(verify(&s), "invalid_callback", "InResponseTo");
    }

    #[test]
    fn a_wrong_relay_state_does_not_belong_to_this_sign_in() {
        let c = connector(json!({}));
        let info = match &c.idp {
            IdpSource::Fixed(info) => info.clone(),
            IdpSource::Url { .. } => panic!("fixed IdP expected"),
        };
        let mut params = post(&idp().response(&spec()));
        params.insert("RelayState".into(), "another".into());
        refused_as(
            c.verify(&info, ACS, &kept(), &params, Utc::now()),
            "invalid_callback",
            "RelayState",
        );
    }

    #[test]
    fn an_expired_assertion_is_rejected_beyond_the_skew() {
        let now = Utc::now();
        let mut s = spec();
        s.not_before = Some(now - chrono::Duration::seconds(600));
        s.not_on_or_after = Some(now - chrono::Duration::seconds(120));
        refused_as(verify(&s), "invalid_id_token", "the assertion has expired");
        // Expired 30 s ago is within the default 60 s skew.
        s.not_on_or_after = Some(now - chrono::Duration::seconds(30));
        assert!(verify(&s).is_ok());
        // With no skew allowed it is not.
        let c = connector(json!({"clock_skew_secs": 0}));
        refused_as(
            verify_xml(&c, &idp().response(&s)),
            "invalid_id_token",
            "has expired",
        );
    }

    #[test]
    fn an_expired_subject_confirmation_is_rejected() {
        let mut s = spec();
        s.confirmation_not_on_or_after = Some(Utc::now() - chrono::Duration::seconds(120));
        refused_as(
            verify(&s),
            "invalid_id_token",
            "the subject confirmation has expired",
        );
        s.confirmation_not_on_or_after = None;
        refused_as(verify(&s), "invalid_id_token", "NotOnOrAfter");
    }

    #[test]
    fn an_assertion_not_yet_valid_is_rejected() {
        let mut s = spec();
        s.not_before = Some(Utc::now() + chrono::Duration::seconds(300));
        refused_as(verify(&s), "invalid_id_token", "not valid yet");
    }

    #[test]
    fn an_assertion_from_another_issuer_is_rejected_even_when_signed_by_the_key() {
        let mut s = spec();
        s.issuer = "https://other-idp.example.com".into();
        refused_as(verify(&s), "invalid_id_token", "issued by someone else");
        let mut s = spec();
        s.response_issuer = Some("https://other-idp.example.com".into());
        refused_as(verify(&s), "invalid_id_token", "issued by someone else");
    }

    #[test]
    fn a_non_success_status_is_a_refusal() {
        let mut s = spec();
        s.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into();
        s.status_message = Some("User cancelled".into());
        s.sign_assertion = false;
        refused_as(
            verify(&s),
            "upstream_refused",
            "cancelled or not allowed (status Responder: User cancelled)",
        );
    }

    #[test]
    fn an_assertion_without_authn_statement_is_rejected() {
        let mut s = spec();
        s.authn_statement = false;
        refused_as(verify(&s), "invalid_id_token", "AuthnStatement");
    }

    #[test]
    fn a_transient_name_id_is_not_a_subject() {
        let mut s = spec();
        s.name_id_format = NAME_ID_TRANSIENT.into();
        refused_as(verify(&s), "invalid_id_token", "transient");
    }

    #[test]
    fn documents_that_are_not_plain_responses_are_refused() {
        let c = connector(json!({}));
        let signed = idp().response(&spec());
        let with_dtd = format!("<!DOCTYPE r [<!ENTITY x \"y\">]>{signed}");
        refused_as(verify_xml(&c, &with_dtd), "invalid_callback", "DTD");
        // A bare (signed) assertion is not a Response.
        let bare = idp().sign(&spec().assertion_xml());
        refused_as(
            verify_xml(&c, &bare),
            "invalid_callback",
            "not a SAML Response",
        );
        refused_as(verify_xml(&c, "not xml"), "invalid_callback", "");
        let mut params = post("x");
        params.insert("SAMLResponse".into(), "***".into());
        let info = match &c.idp {
            IdpSource::Fixed(info) => info.clone(),
            IdpSource::Url { .. } => panic!("fixed IdP expected"),
        };
        refused_as(
            c.verify(&info, ACS, &kept(), &params, Utc::now()),
            "invalid_callback",
            "base64",
        );
    }

    #[tokio::test]
    async fn begin_sends_a_deflated_authn_request_and_keeps_its_id() {
        let c = connector(json!({}));
        let login = c.begin(ACS).await.expect("begin");
        let url = url::Url::parse(&login.authorize_url).expect("url");
        assert!(login.authorize_url.starts_with(SSO));
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let kept: Kept = serde_json::from_value(login.kept.clone()).expect("kept");
        assert_eq!(q.get("RelayState"), Some(&kept.relay_state));
        let deflated = STANDARD.decode(&q["SAMLRequest"]).expect("base64");
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(&deflated[..])
            .read_to_string(&mut xml)
            .expect("inflate");
        assert!(
            xml.contains(&format!("ID=\"{}\"", kept.request_id)),
            "{xml}"
        );
        assert!(
            xml.contains(&format!("AssertionConsumerServiceURL=\"{ACS}\"")),
            "{xml}"
        );
        assert!(xml.contains(SP), "issuer is the SP entity id: {xml}");
        assert!(xml.contains(NAME_ID_PERSISTENT), "{xml}");
        // 128 random bits each, and a fresh pair per sign-in.
        assert!(kept.request_id.len() >= 22 && kept.relay_state.len() >= 22);
        let again: Kept =
            serde_json::from_value(c.begin(ACS).await.expect("begin").kept).expect("kept");
        assert_ne!(again.request_id, kept.request_id);
    }

    #[test]
    fn sp_metadata_names_the_acs_and_entity_id() {
        let c = connector(json!({}));
        let xml = c.metadata_xml(ACS).expect("metadata");
        assert!(xml.contains(&format!("entityID=\"{SP}\"")), "{xml}");
        assert!(xml.contains(&format!("Location=\"{ACS}\"")), "{xml}");
        assert!(xml.contains(HTTP_POST_BINDING), "{xml}");
        assert!(xml.contains(NAME_ID_PERSISTENT), "{xml}");
        let c = connector(json!({"sp_entity_id": "urn:example:gatehouse"}));
        assert!(c
            .metadata_xml(ACS)
            .expect("metadata")
            .contains("entityID=\"urn:example:gatehouse\""));
        assert_eq!(
            metadata_url_for("https://h/t/acme/callback/x", "x").as_deref(),
            Some("https://h/t/acme/saml/x/metadata")
        );
    }

    #[test]
    fn idp_metadata_is_read_for_entity_id_sso_url_and_certificate() {
        let xml = idp().metadata(SSO);
        let info = idp_from_metadata(&xml).expect("metadata");
        assert_eq!(info.entity_id, IDP);
        assert_eq!(info.sso_url, SSO);
        assert_eq!(info.certificates.len(), 1);
        let c = SamlConnector::from_settings(
            "corp",
            None,
            &match json!({"idp_metadata": xml}) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        )
        .expect("connector");
        assert!(verify_xml(&c, &idp().response(&spec())).is_ok());
    }

    fn config_error(extra: Value, without: &[&str]) -> String {
        let mut s = settings(extra);
        for k in without {
            s.remove(*k);
        }
        match SamlConnector::from_settings("corp", None, &s) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn configuration_errors_name_the_setting() {
        assert!(config_error(
            json!({"idp_metadata_url": "https://idp.example.com/md"}),
            &[]
        )
        .contains("exactly one of"));
        assert!(config_error(
            json!({}),
            &["idp_sso_url", "idp_certificate", "idp_entity_id"]
        )
        .contains("exactly one of"));
        assert!(config_error(json!({}), &["idp_entity_id"]).contains("idp_entity_id"));
        assert!(config_error(json!({"idp_certificate": "nope"}), &[]).contains("idp_certificate"));
        assert!(
            config_error(json!({"idp_sso_url": "http://idp.example.com/sso"}), &[])
                .contains("must be an https URL")
        );
        assert!(config_error(json!({"clock_skew_secs": 3600}), &[]).contains("clock_skew_secs"));
        assert!(
            config_error(json!({"max_session_lifetime": 10}), &[]).contains("max_session_lifetime")
        );
        assert!(config_error(json!({"unknown": 1}), &[]).contains("unknown"));
        assert!(config_error(
            json!({"idp_metadata": "<x/>"}),
            &["idp_sso_url", "idp_certificate", "idp_entity_id"]
        )
        .contains("idp_metadata: the IdP metadata"));
        // without_declaration keeps what follows the declaration.
        assert_eq!(without_declaration("<?xml version=\"1.0\"?>\n<a/>"), "<a/>");
    }
}
