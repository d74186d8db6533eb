//! OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! MCP authorization revision 2025-11-25): a `client_id` that is an `https`
//! URL names a JSON document, published by the client, that serves as its
//! registration.
//!
//! Fetching a URL an unknown party chose needs care (the draft's SSRF
//! section), so the fetch:
//! * takes only URLs that pass [`check_client_id_url`]: `https`, a path, no
//!   user information, fragment or dot segments, in normal form;
//! * resolves the host once, here, checks every address against the named
//!   ranges in [`V4_RANGES`] and [`V6_RANGES`] (IPv4-mapped IPv6 addresses by
//!   their embedded IPv4 address), and connects only to those checked
//!   addresses, so a second DNS answer (rebinding) is never used;
//! * follows no redirects, uses no proxy, reads at most
//!   [`MAX_DOCUMENT_BYTES`] (counted while reading) and takes at most
//!   [`FETCH_TIMEOUT`] in all.
//!
//! The document must name its own URL as `client_id` exactly, carry
//! `client_name` and `redirect_uris`, and use no shared secret; the rest is
//! checked by the dynamic client registration rules
//! ([`super::registration::validate`]). A usable document is kept in memory
//! for as long as its HTTP cache headers allow, within
//! [`MIN_CACHE_LIFETIME`]..[`MAX_CACHE_LIFETIME`]; failures are never
//! cached. These clients are never written to the store.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ACCEPT, AGE, CACHE_CONTROL};
use http::{HeaderMap, StatusCode};
use moka::future::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use url::{Host, Url};

use super::client_auth::Client;
use super::errors::OAuthError;
use super::registration::{self, Policy};
use crate::store::StoreError;
use crate::telemetry::metrics::metrics;
use crate::tenants::{
    CimdPolicy, ClientMetadata, Tenant, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN,
};

/// `Client::source` of a metadata-document client.
pub const SOURCE_CIMD: &str = "cimd";
/// Largest document accepted (the draft recommends 5 KB).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Time for the whole fetch: resolving, connecting and reading.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest client_id URL accepted (the limit every client id has here).
pub const MAX_CLIENT_ID_URL_LEN: usize = 255;
/// How long a document without caching headers is kept.
pub const DEFAULT_CACHE_LIFETIME: Duration = Duration::from_secs(300);
/// Shortest time a cacheable document is kept, whatever `max-age` says.
pub const MIN_CACHE_LIFETIME: Duration = Duration::from_secs(60);
/// Longest time a document is kept, whatever `max-age` says.
pub const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Documents fetched at once by one node.
const MAX_CONCURRENT_FETCHES: usize = 64;
/// Documents kept in memory per node.
const MAX_CACHED_DOCUMENTS: u64 = 10_000;
/// Grants a metadata-document client may use: it exists only through a
/// user's authorization, so never `client_credentials` or token exchange.
const ALLOWED_GRANTS: [&str; 2] = [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN];

/// Why a metadata document cannot be used; fit to show a person or to put
/// in `error_description`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

fn refuse(why: impl Into<String>) -> DocumentError {
    DocumentError(why.into())
}

/// A client lookup that may have fetched a metadata document.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Document(#[from] DocumentError),
}

impl From<LookupError> for OAuthError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Store(e) => e.into(),
            LookupError::Document(e) => OAuthError::invalid_client(format!(
                "the client_id names a client metadata document that cannot be used: {e}"
            )),
        }
    }
}

/// Whether a client_id is meant as a metadata document URL.
pub fn names_document(client_id: &str) -> bool {
    let lower = |n: usize| client_id.get(..n).map(str::to_ascii_lowercase);
    lower(8).as_deref() == Some("https://") || lower(7).as_deref() == Some("http://")
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/// What an address is, for deciding whether to fetch from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable: always fetched from.
    Public,
    /// This machine: only with `allow_loopback`.
    Loopback,
    /// Private-use networks: only with `allow_private_networks`.
    Private,
    /// Never: unspecified, link-local, multicast, documentation, reserved...
    SpecialUse,
}

/// One named address range.
pub struct Range<A> {
    pub network: A,
    pub prefix: u8,
    pub class: AddressClass,
    pub name: &'static str,
}

const fn v4(
    octets: [u8; 4],
    prefix: u8,
    class: AddressClass,
    name: &'static str,
) -> Range<Ipv4Addr> {
    let [a, b, c, d] = octets;
    Range {
        network: Ipv4Addr::new(a, b, c, d),
        prefix,
        class,
        name,
    }
}

const fn v6(
    segments: [u16; 8],
    prefix: u8,
    class: AddressClass,
    name: &'static str,
) -> Range<Ipv6Addr> {
    let [a, b, c, d, e, f, g, h] = segments;
    Range {
        network: Ipv6Addr::new(a, b, c, d, e, f, g, h),
        prefix,
        class,
        name,
    }
}

use AddressClass::{Loopback, Private, SpecialUse};

/// IPv4 ranges that are not public (RFC 6890 and its updates). The first
/// match wins; an address in none is public.
#[rustfmt::skip]
pub const V4_RANGES: [Range<Ipv4Addr>; 16] = [
    v4([0, 0, 0, 0],         8,  SpecialUse, "\"this network\""),
    v4([10, 0, 0, 0],        8,  Private,    "a private network"),
    v4([100, 64, 0, 0],      10, Private,    "shared address space"),
    v4([127, 0, 0, 0],       8,  Loopback,   "a loopback address"),
    v4([169, 254, 0, 0],     16, SpecialUse, "a link-local address"),
    v4([172, 16, 0, 0],      12, Private,    "a private network"),
    v4([192, 0, 0, 0],       24, SpecialUse, "IETF protocol assignments"),
    v4([192, 0, 2, 0],       24, SpecialUse, "documentation"),
    v4([192, 88, 99, 0],     24, SpecialUse, "6to4 relay anycast"),
    v4([192, 168, 0, 0],     16, Private,    "a private network"),
    v4([198, 18, 0, 0],      15, SpecialUse, "benchmarking"),
    v4([198, 51, 100, 0],    24, SpecialUse, "documentation"),
    v4([203, 0, 113, 0],     24, SpecialUse, "documentation"),
    v4([224, 0, 0, 0],       4,  SpecialUse, "multicast"),
    v4([255, 255, 255, 255], 32, SpecialUse, "the broadcast address"),
    v4([240, 0, 0, 0],       4,  SpecialUse, "reserved"),
];

/// IPv6 ranges that are not public. IPv4-mapped addresses (`::ffff:0:0/96`)
/// never reach this list: they are judged by their IPv4 address.
#[rustfmt::skip]
pub const V6_RANGES: [Range<Ipv6Addr>; 13] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0],          128, SpecialUse, "the unspecified address"),
    v6([0, 0, 0, 0, 0, 0, 0, 1],          128, Loopback,   "the loopback address"),
    v6([0, 0, 0, 0, 0, 0, 0, 0],          96,  SpecialUse, "IPv4-compatible (deprecated)"),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0],  96,  SpecialUse, "NAT64"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0],  48,  SpecialUse, "local-use NAT64"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0],      64,  SpecialUse, "discard-only"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32,  SpecialUse, "documentation"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0],     23,  SpecialUse, "IETF protocol assignments"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0],     16,  SpecialUse, "6to4"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0],     7,   Private,    "a unique local address"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0],     10,  SpecialUse, "a link-local address"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0],     10,  SpecialUse, "a site-local address"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0],     8,   SpecialUse, "multicast"),
];

fn v4_contains(range: &Range<Ipv4Addr>, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(range.prefix))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(range.network) & mask
}

fn v6_contains(range: &Range<Ipv6Addr>, ip: Ipv6Addr) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(range.prefix))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(range.network) & mask
}

/// The class of an address and a description naming its range.
pub fn classify(ip: IpAddr) -> (AddressClass, String) {
    let public = || (AddressClass::Public, "a public address".to_string());
    let describe = |class, name, network: &dyn std::fmt::Display, prefix| {
        (class, format!("{name} ({network}/{prefix})"))
    };
    let v4 = |ip: Ipv4Addr| {
        V4_RANGES
            .iter()
            .find(|r| v4_contains(r, ip))
            .map(|r| describe(r.class, r.name, &r.network, r.prefix))
    };
    match ip {
        IpAddr::V4(ip) => v4(ip).unwrap_or_else(public),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => v4(mapped).unwrap_or_else(public),
            None => V6_RANGES
                .iter()
                .find(|r| v6_contains(r, ip))
                .map(|r| describe(r.class, r.name, &r.network, r.prefix))
                .unwrap_or_else(public),
        },
    }
}

/// Whether the tenant lets documents be fetched from this address.
pub fn check_address(ip: IpAddr, policy: &CimdPolicy) -> Result<(), DocumentError> {
    let (class, name) = classify(ip);
    let allowed = match class {
        AddressClass::Public => true,
        AddressClass::Loopback => policy.allow_loopback,
        AddressClass::Private => policy.allow_private_networks,
        AddressClass::SpecialUse => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(refuse(format!(
            "the client_id URL's host resolves to {ip}, {name}; metadata documents are \
             fetched only from public addresses"
        )))
    }
}

// ---------------------------------------------------------------------------
// The URL
// ---------------------------------------------------------------------------

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST,
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// The authority and path of a URL as written (before any normalisation).
fn raw_parts(uri: &str) -> (&str, &str) {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// The rules for a client_id URL (draft §3): `https` (or `http` on a
/// loopback host when the tenant allows loopback, for tests), a host, a
/// path other than `/`, no user information, no fragment, no `.` or `..`
/// segments, and written in normal form so that the string compared with
/// the document's `client_id` is exactly the URL fetched.
pub fn check_client_id_url(client_id: &str, policy: &CimdPolicy) -> Result<Url, DocumentError> {
    if client_id.len() > MAX_CLIENT_ID_URL_LEN {
        return Err(refuse(format!(
            "a client_id URL may be at most {MAX_CLIENT_ID_URL_LEN} characters"
        )));
    }
    if !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "the client_id URL must be printable ASCII without spaces",
        ));
    }
    let url = Url::parse(client_id).map_err(|_| refuse("the client_id is not a valid URL"))?;
    if client_id.contains('#') {
        return Err(refuse("the client_id URL must not have a fragment"));
    }
    let (authority, path) = raw_parts(client_id);
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "the client_id URL must not contain a user name or password",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| refuse("the client_id URL has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_loopback && is_loopback_host(&host) => {}
        _ => return Err(refuse("the client_id URL must use https")),
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(refuse(
            "the client_id URL must have a path, such as https://app.example.com/client.json",
        ));
    }
    if has_dot_segment(path) {
        return Err(refuse(
            "the client_id URL must not contain '.' or '..' path segments",
        ));
    }
    if url.as_str() != client_id {
        return Err(refuse(format!(
            "the client_id URL is not in normal form; write it as {url}"
        )));
    }
    Ok(url)
}

/// Resolves the URL's host once and checks every address; returns them all
/// (the connection may use any, never another).
pub async fn resolve_checked(
    url: &Url,
    policy: &CimdPolicy,
) -> Result<Vec<SocketAddr>, DocumentError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refuse("the client_id URL has no port"))?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| refuse(format!("the client_id URL's host {name} does not resolve")))?
            .collect(),
        None => return Err(refuse("the client_id URL has no host")),
    };
    if addrs.is_empty() {
        return Err(refuse("the client_id URL's host has no address"));
    }
    for addr in &addrs {
        check_address(addr.ip(), policy)?;
    }
    Ok(addrs)
}

// ---------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------

/// How long a response may be kept, from `Cache-Control` (`no-store`,
/// `no-cache`, `max-age`) and `Age`; `None` means not at all. Without
/// `max-age` the document is kept [`DEFAULT_CACHE_LIFETIME`]; a positive
/// lifetime is held within [`MIN_CACHE_LIFETIME`]..[`MAX_CACHE_LIFETIME`].
pub fn cache_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age: Option<u64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let value = value.to_str().ok()?;
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                // RFC 9111 §4.2.1: an invalid max-age means stale.
                let seconds = argument?.parse::<u64>().ok()?;
                max_age = Some(max_age.map_or(seconds, |m| m.min(seconds)));
            }
        }
    }
    let seconds = match max_age {
        Some(max_age) => {
            let age = headers
                .get(AGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            max_age.saturating_sub(age)
        }
        None => DEFAULT_CACHE_LIFETIME.as_secs(),
    };
    (seconds > 0)
        .then(|| Duration::from_secs(seconds).clamp(MIN_CACHE_LIFETIME, MAX_CACHE_LIFETIME))
}

pub struct Downloaded {
    pub body: Vec<u8>,
    pub lifetime: Option<Duration>,
}

/// GETs the document from exactly the checked addresses.
async fn download(url: &Url, addrs: &[SocketAddr]) -> Result<Downloaded, DocumentError> {
    fetch_limited(url, addrs, MAX_DOCUMENT_BYTES, "the metadata document").await
}

/// GETs `url` from exactly the checked `addrs`: no redirects, no proxy, a
/// bounded time, at most `max_bytes` (enforced while reading). `what` names
/// the thing in error messages. Also used for clients' `jwks_uri`.
pub async fn fetch_limited(
    url: &Url,
    addrs: &[SocketAddr],
    max_bytes: usize,
    what: &str,
) -> Result<Downloaded, DocumentError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(url.scheme() == "https")
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("Gatehouse/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(name)) = url.host() {
        builder = builder.resolve_to_addrs(name, addrs);
    }
    let http = builder
        .build()
        .map_err(|_| refuse(format!("{what} could not be fetched")))?;
    let mut res = http
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            refuse(if e.is_timeout() {
                format!("fetching {what} timed out")
            } else if e.is_connect() {
                format!("could not connect to the host of {what}")
            } else {
                format!("{what} could not be fetched")
            })
        })?;
    let status = res.status();
    if status.is_redirection() {
        return Err(refuse(format!(
            "the URL of {what} answered with a redirect (HTTP {}); redirects are not followed",
            status.as_u16()
        )));
    }
    if status != StatusCode::OK {
        return Err(refuse(format!(
            "the URL of {what} answered HTTP {}; it must be served with 200 OK",
            status.as_u16()
        )));
    }
    let too_large = || refuse(format!("{what} is larger than {max_bytes} bytes"));
    if res.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let lifetime = cache_lifetime(res.headers());
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(refuse(format!("fetching {what} timed out"))),
            Err(_) => return Err(refuse(format!("{what} could not be read"))),
        }
    }
    Ok(Downloaded { body, lifetime })
}

// ---------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------

/// A rule on the document as fetched, before the registration checks; it
/// may rewrite the document (a default, a filtered value).
pub type DocumentCheck = fn(&str, &mut Map<String, Value>, &[String]) -> Result<(), DocumentError>;

/// The rules of the draft and of MCP, in order.
pub const DOCUMENT_CHECKS: [DocumentCheck; 5] = [
    check_client_id_matches,
    check_required_fields,
    check_no_shared_secret,
    check_grant_types,
    keep_known_scopes,
];

fn present<'a>(doc: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    doc.get(name).filter(|v| !v.is_null())
}

/// `client_id` equals the document's URL, by simple string comparison.
pub fn check_client_id_matches(
    url: &str,
    doc: &mut Map<String, Value>,
    _: &[String],
) -> Result<(), DocumentError> {
    match present(doc, "client_id") {
        Some(Value::String(id)) if id == url => Ok(()),
        Some(Value::String(_)) => Err(refuse(
            "the document's client_id is not exactly the URL it was fetched from",
        )),
        _ => Err(refuse("the document has no client_id")),
    }
}

/// MCP requires `client_name` and `redirect_uris`.
pub fn check_required_fields(
    _: &str,
    doc: &mut Map<String, Value>,
    _: &[String],
) -> Result<(), DocumentError> {
    match present(doc, "client_name") {
        Some(Value::String(name)) if !name.trim().is_empty() => {}
        _ => return Err(refuse("the document has no client_name")),
    }
    match present(doc, "redirect_uris") {
        Some(Value::Array(uris)) if !uris.is_empty() => Ok(()),
        _ => Err(refuse("the document has no redirect_uris")),
    }
}

/// No shared secret can exist: no `client_secret`, and the token endpoint
/// method is `none` (the default here) or `private_key_jwt`.
pub fn check_no_shared_secret(
    _: &str,
    doc: &mut Map<String, Value>,
    _: &[String],
) -> Result<(), DocumentError> {
    for field in ["client_secret", "client_secret_expires_at"] {
        if present(doc, field).is_some() {
            return Err(refuse(format!(
                "the document must not contain {field}: a metadata document client has no shared secret"
            )));
        }
    }
    match present(doc, "token_endpoint_auth_method") {
        None => {
            doc.insert("token_endpoint_auth_method".into(), Value::from("none"));
            Ok(())
        }
        Some(Value::String(m)) if m == "none" || m == "private_key_jwt" => Ok(()),
        Some(Value::String(m)) => Err(refuse(format!(
            "token_endpoint_auth_method '{m}' is not allowed for a metadata document client; \
             use none or private_key_jwt with jwks"
        ))),
        // A wrong type is named by the registration checks.
        Some(_) => Ok(()),
    }
}

/// Only the grants a user's authorization starts.
pub fn check_grant_types(
    _: &str,
    doc: &mut Map<String, Value>,
    _: &[String],
) -> Result<(), DocumentError> {
    if let Some(Value::Array(grants)) = present(doc, "grant_types") {
        for grant in grants.iter().filter_map(Value::as_str) {
            if !ALLOWED_GRANTS.contains(&grant) {
                return Err(refuse(format!(
                    "grant_types: '{grant}' is not allowed for a metadata document client \
                     (allowed: {})",
                    ALLOWED_GRANTS.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// A document serves many authorization servers, so its `scope` may name
/// scopes this one does not have: those are dropped, not refused.
pub fn keep_known_scopes(
    _: &str,
    doc: &mut Map<String, Value>,
    tenant_scopes: &[String],
) -> Result<(), DocumentError> {
    if let Some(Value::String(scope)) = present(doc, "scope") {
        let known: Vec<&str> = scope
            .split(' ')
            .filter(|s| tenant_scopes.iter().any(|t| t == s))
            .collect();
        let known = known.join(" ");
        doc.insert("scope".into(), Value::from(known));
    }
    Ok(())
}

/// The client a document describes, or why it cannot be used. `client_id`
/// is the URL it was fetched from.
pub fn metadata_from_document(
    client_id: &str,
    body: &[u8],
    tenant_scopes: &[String],
) -> Result<ClientMetadata, DocumentError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| refuse("the metadata document is not valid JSON"))?;
    let Value::Object(mut doc) = value else {
        return Err(refuse("the metadata document must be a JSON object"));
    };
    for check in DOCUMENT_CHECKS {
        check(client_id, &mut doc, tenant_scopes)?;
    }
    let registered = registration::validate(&Value::Object(doc), &Policy { tenant_scopes })
        .map_err(|e| {
            refuse(format!(
                "the metadata document is invalid: {}",
                e.description
            ))
        })?;
    let mut meta = registered.client_metadata();
    // The draft asks that users see the client_id's host: it is the one
    // thing about this client that was verified (the document came from it).
    let host = Url::parse(client_id)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let name = meta.client_name.take().unwrap_or_default();
    meta.client_name = Some(format!("{name} ({host})"));
    crate::config::validate_client(client_id, &meta, false, &[])
        .map_err(|e| refuse(format!("the metadata document is invalid: {e}")))?;
    Ok(meta)
}

// ---------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Cached {
    client: Arc<Client>,
    /// Where it was fetched from, re-checked on every use (the tenant's
    /// policy may have changed since).
    addresses: Vec<IpAddr>,
    lifetime: Duration,
}

struct OwnLifetime;

impl Expiry<(String, String), Cached> for OwnLifetime {
    fn expire_after_create(
        &self,
        _: &(String, String),
        value: &Cached,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// Metadata-document clients by tenant and URL, each kept for its own
/// cache lifetime.
#[derive(Clone)]
pub struct DocumentCache {
    documents: Cache<(String, String), Cached>,
    fetches: Arc<Semaphore>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DocumentCache {
    pub fn new() -> Self {
        Self {
            documents: Cache::builder()
                .max_capacity(MAX_CACHED_DOCUMENTS)
                .expire_after(OwnLifetime)
                .build(),
            fetches: Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES)),
        }
    }

    /// The client a URL client_id names, when the tenant accepts metadata
    /// documents and `client_id` is meant as one; `Ok(None)` otherwise.
    pub async fn find(
        &self,
        tenant: &Tenant,
        client_id: &str,
    ) -> Result<Option<Arc<Client>>, DocumentError> {
        let policy = &tenant.settings.client_id_metadata;
        if !policy.enabled || !names_document(client_id) {
            return Ok(None);
        }
        let url = check_client_id_url(client_id, policy)?;
        let key = (tenant.id.clone(), client_id.to_string());
        let m = metrics();
        if let Some(hit) = self.documents.get(&key).await {
            if hit
                .addresses
                .iter()
                .all(|ip| check_address(*ip, policy).is_ok())
            {
                m.cache("client_metadata_document", true);
                return Ok(Some(hit.client));
            }
            self.documents.invalidate(&key).await;
        }
        m.cache("client_metadata_document", false);
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(&url, policy))
            .await
            .unwrap_or_else(|_| Err(refuse("fetching the metadata document timed out")))
            .and_then(|(fetched, addresses)| {
                let meta = metadata_from_document(client_id, &fetched.body, &tenant.all_scopes())?;
                Ok((meta, fetched.lifetime, addresses))
            });
        let (meta, lifetime, addresses) = match result {
            Ok(r) => r,
            Err(e) => {
                m.registration(&tenant.id, "metadata_document", "refused");
                // Per request (failures are not cached): debug, not info.
                tracing::debug!(tenant = %tenant.id, client_id, error = %e, "client metadata document refused");
                return Err(e);
            }
        };
        m.registration(&tenant.id, "metadata_document", "created");
        let client = Arc::new(Client {
            tenant_id: tenant.id.clone(),
            client_id: client_id.to_string(),
            secret_hash: None,
            meta,
            source: SOURCE_CIMD.into(),
        });
        if let Some(lifetime) = lifetime {
            let cached = Cached {
                client: client.clone(),
                addresses,
                lifetime,
            };
            self.documents.insert(key, cached).await;
        }
        Ok(Some(client))
    }

    async fn fetch(
        &self,
        url: &Url,
        policy: &CimdPolicy,
    ) -> Result<(Downloaded, Vec<IpAddr>), DocumentError> {
        let _permit = self
            .fetches
            .acquire()
            .await
            .map_err(|_| refuse("the metadata document could not be fetched"))?;
        let addrs = resolve_checked(url, policy).await?;
        let downloaded = download(url, &addrs).await?;
        Ok((downloaded, addrs.iter().map(SocketAddr::ip).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn strict() -> CimdPolicy {
        CimdPolicy::default()
    }

    fn loopback_ok() -> CimdPolicy {
        CimdPolicy {
            allow_loopback: true,
            ..CimdPolicy::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn class(s: &str) -> AddressClass {
        classify(ip(s)).0
    }

    #[test]
    fn ranges_are_well_formed() {
        for r in &V4_RANGES {
            assert!(r.prefix <= 32, "{}", r.name);
            assert_eq!(
                u32::from(r.network) & !u32::MAX.checked_shl(32 - u32::from(r.prefix)).unwrap_or(0),
                0,
                "host bits set in {}",
                r.name
            );
        }
        for r in &V6_RANGES {
            assert!(r.prefix <= 128, "{}", r.name);
            assert_eq!(
                u128::from(r.network)
                    & !u128::MAX
                        .checked_shl(128 - u32::from(r.prefix))
                        .unwrap_or(0),
                0,
                "host bits set in {}",
                r.name
            );
        }
    }

    #[test]
    fn ipv4_classes() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(class(public), AddressClass::Public, "{public}");
        }
        for loopback in ["127.0.0.1", "127.255.255.254"] {
            assert_eq!(class(loopback), AddressClass::Loopback, "{loopback}");
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
        ] {
            assert_eq!(class(private), AddressClass::Private, "{private}");
        }
        for special in [
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(class(special), AddressClass::SpecialUse, "{special}");
        }
    }

    #[test]
    fn ipv6_classes() {
        for public in ["2606:4700:4700::1111", "2a00:1450:4001::200e"] {
            assert_eq!(class(public), AddressClass::Public, "{public}");
        }
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("fd12:3456::1"), AddressClass::Private);
        assert_eq!(class("fc00::1"), AddressClass::Private);
        for special in [
            "::",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::7f00:1",
            "64:ff9b::808:808",
            "::7f00:1",
            "2002:7f00:1::1",
            "2001::1",
        ] {
            assert_eq!(class(special), AddressClass::SpecialUse, "{special}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_by_its_ipv4_address() {
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:10.0.0.1"), AddressClass::Private);
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::SpecialUse);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
        assert!(check_address(ip("::ffff:127.0.0.1"), &strict()).is_err());
        assert!(check_address(ip("::ffff:127.0.0.1"), &loopback_ok()).is_ok());
    }

    #[test]
    fn policy_switches() {
        let private_ok = CimdPolicy {
            allow_private_networks: true,
            ..CimdPolicy::default()
        };
        assert!(check_address(ip("8.8.8.8"), &strict()).is_ok());
        assert!(check_address(ip("127.0.0.1"), &strict()).is_err());
        assert!(check_address(ip("127.0.0.1"), &loopback_ok()).is_ok());
        assert!(check_address(ip("127.0.0.1"), &private_ok).is_err());
        assert!(check_address(ip("10.0.0.1"), &loopback_ok()).is_err());
        assert!(check_address(ip("10.0.0.1"), &private_ok).is_ok());
        // Never, whatever the policy.
        let everything = CimdPolicy {
            enabled: true,
            allow_loopback: true,
            allow_private_networks: true,
        };
        for never in ["169.254.169.254", "0.0.0.0", "::", "fe80::1", "224.0.0.1"] {
            assert!(check_address(ip(never), &everything).is_err(), "{never}");
        }
        let e = check_address(ip("127.0.0.1"), &strict()).unwrap_err();
        assert!(e.0.contains("loopback"), "{e}");
    }

    #[tokio::test]
    async fn localhost_is_refused_unless_loopback_is_allowed() {
        let url = Url::parse("https://localhost/client.json").unwrap();
        let e = resolve_checked(&url, &strict()).await.unwrap_err();
        assert!(e.0.contains("loopback"), "{e}");
        let addrs = resolve_checked(&url, &loopback_ok()).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn ip_literals_are_checked_without_dns() {
        for url in [
            "https://127.0.0.1/client.json",
            "https://[::1]/client.json",
            "https://[::ffff:7f00:1]/client.json",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/c",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(resolve_checked(&url, &strict()).await.is_err(), "{url}");
        }
    }

    #[test]
    fn client_id_url_rules() {
        let ok = |u: &str| check_client_id_url(u, &strict());
        assert!(ok("https://app.example.com/client.json").is_ok());
        assert!(ok("https://app.example.com:8443/oauth/client?v=1").is_ok());
        for (bad, why) in [
            ("http://app.example.com/client.json", "https"),
            ("https://app.example.com", "path"),
            ("https://app.example.com/", "path"),
            ("https://app.example.com/client.json#x", "fragment"),
            ("https://user@app.example.com/client.json", "user"),
            ("https://user:pw@app.example.com/client.json", "user"),
            ("https://app.example.com/a/../client.json", "'..'"),
            ("https://app.example.com/a/./client.json", "'.'"),
            ("https://app.example.com/a/%2E%2e/client.json", "'..'"),
            ("https://APP.example.com/client.json", "normal form"),
            ("https://app.example.com:443/client.json", "normal form"),
            ("https://app.example.com/client json", "ASCII"),
            ("ftp://app.example.com/client.json", "https"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.0.contains(why), "{bad}: {e}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(300));
        assert!(ok(&long).is_err());
    }

    #[test]
    fn http_only_on_loopback_and_only_when_allowed() {
        assert!(check_client_id_url("http://127.0.0.1:8080/c.json", &strict()).is_err());
        assert!(check_client_id_url("http://127.0.0.1:8080/c.json", &loopback_ok()).is_ok());
        assert!(check_client_id_url("http://localhost:8080/c.json", &loopback_ok()).is_ok());
        assert!(check_client_id_url("http://example.com/c.json", &loopback_ok()).is_err());
    }

    #[test]
    fn names_document_is_about_the_scheme() {
        assert!(names_document("https://app.example.com/c.json"));
        assert!(names_document("HTTPS://app.example.com/c.json"));
        assert!(names_document("http://127.0.0.1/c.json"));
        assert!(!names_document("dcr_abc"));
        assert!(!names_document("demo-public"));
        assert!(!names_document("https"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cache_lifetimes() {
        let secs = |pairs: &[(&'static str, &'static str)]| {
            cache_lifetime(&headers(pairs)).map(|d| d.as_secs())
        };
        assert_eq!(secs(&[]), Some(300));
        assert_eq!(secs(&[("cache-control", "public, max-age=600")]), Some(600));
        assert_eq!(secs(&[("cache-control", "max-age=5")]), Some(60));
        assert_eq!(secs(&[("cache-control", "max-age=9999999")]), Some(86_400));
        assert_eq!(secs(&[("cache-control", "max-age=0")]), None);
        assert_eq!(secs(&[("cache-control", "no-store")]), None);
        assert_eq!(secs(&[("cache-control", "max-age=600, No-Cache")]), None);
        assert_eq!(secs(&[("cache-control", "max-age=soon")]), None);
        assert_eq!(
            secs(&[("cache-control", "max-age=600"), ("age", "500")]),
            Some(100)
        );
        assert_eq!(
            secs(&[("cache-control", "max-age=600"), ("age", "700")]),
            None
        );
        assert_eq!(
            secs(&[
                ("cache-control", "max-age=600"),
                ("cache-control", "max-age=120")
            ]),
            Some(120)
        );
    }

    const URL: &str = "https://app.example.com/client.json";

    fn scopes() -> Vec<String> {
        ["openid", "mcp:read"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn doc(patch: Value) -> Vec<u8> {
        let mut d = json!({
            "client_id": URL,
            "client_name": "Example MCP Client",
            "redirect_uris": ["http://127.0.0.1:3000/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        });
        if let (Value::Object(d), Value::Object(p)) = (&mut d, patch) {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(&k);
                } else {
                    d.insert(k, v);
                }
            }
        }
        serde_json::to_vec(&d).unwrap()
    }

    fn refused(patch: Value) -> String {
        metadata_from_document(URL, &doc(patch), &scopes())
            .expect_err("should be refused")
            .0
    }

    #[test]
    fn a_good_document_is_a_dynamic_public_client() {
        let m = metadata_from_document(URL, &doc(json!({})), &scopes()).unwrap();
        assert!(m.dynamic && !m.skip_consent && m.is_public());
        assert_eq!(m.redirect_uris, vec!["http://127.0.0.1:3000/callback"]);
        assert_eq!(
            m.client_name.as_deref(),
            Some("Example MCP Client (app.example.com)")
        );
    }

    #[test]
    fn missing_auth_method_means_none() {
        let m = metadata_from_document(
            URL,
            &doc(json!({"token_endpoint_auth_method": null})),
            &scopes(),
        )
        .unwrap();
        assert!(m.is_public());
    }

    #[test]
    fn client_id_must_be_the_url_exactly() {
        assert!(
            refused(json!({"client_id": "https://app.example.com/other.json"}))
                .contains("client_id")
        );
        assert!(
            refused(json!({"client_id": "https://app.example.com/client.json/"}))
                .contains("client_id")
        );
        assert!(refused(json!({"client_id": null})).contains("no client_id"));
    }

    #[test]
    fn client_name_and_redirect_uris_are_required() {
        assert!(refused(json!({"client_name": null})).contains("client_name"));
        assert!(refused(json!({"client_name": "  "})).contains("client_name"));
        assert!(refused(json!({"redirect_uris": null})).contains("redirect_uris"));
        assert!(refused(json!({"redirect_uris": []})).contains("redirect_uris"));
    }

    #[test]
    fn shared_secrets_are_refused() {
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
        ] {
            let e = refused(json!({"token_endpoint_auth_method": method}));
            assert!(e.contains(method), "{e}");
        }
        assert!(refused(json!({"client_secret": "s3cret"})).contains("client_secret"));
    }

    #[test]
    fn private_key_jwt_needs_keys_inline_or_at_an_https_url() {
        let e = refused(json!({"token_endpoint_auth_method": "private_key_jwt"}));
        assert!(e.contains("jwks"), "{e}");
        let e = refused(json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "http://app.example.com/jwks.json"
        }));
        assert!(e.contains("https"), "{e}");
        let m = metadata_from_document(
            URL,
            &doc(json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": "https://app.example.com/jwks.json"
            })),
            &scopes(),
        )
        .unwrap();
        assert_eq!(
            m.jwks_uri.as_deref(),
            Some("https://app.example.com/jwks.json")
        );
        let m = metadata_from_document(
            URL,
            &doc(json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [{
                    "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
                }]}
            })),
            &scopes(),
        )
        .unwrap();
        assert!(m.jwks.is_some());
    }

    #[test]
    fn only_user_grants() {
        let e = refused(json!({"grant_types": ["client_credentials"]}));
        assert!(e.contains("client_credentials"), "{e}");
    }

    #[test]
    fn unknown_scopes_are_dropped() {
        let m = metadata_from_document(
            URL,
            &doc(json!({"scope": "mcp:read elsewhere:write openid"})),
            &scopes(),
        )
        .unwrap();
        assert_eq!(m.default_scopes, Some(vec!["mcp:read".to_string()]));
    }

    #[test]
    fn registration_rules_apply() {
        let e = refused(json!({"redirect_uris": ["http://evil.example.com/cb"]}));
        assert!(e.contains("redirect_uris[0]"), "{e}");
        assert!(metadata_from_document(URL, b"[1]", &scopes())
            .unwrap_err()
            .0
            .contains("object"));
        assert!(metadata_from_document(URL, b"{", &scopes())
            .unwrap_err()
            .0
            .contains("JSON"));
    }
}
