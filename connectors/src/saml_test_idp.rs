//! A SAML identity provider in a few functions, for tests only (feature
//! `test-idp`): a generated RSA key and self-signed certificate, IdP
//! metadata, and `Response` documents built from a [`ResponseSpec`] and
//! signed with xmlsec (the assertion, the response, both or neither). Tests
//! change one field of a valid spec to produce exactly the flaw they need.

use chrono::{DateTime, Duration, Utc};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use samael::crypto::{Crypto, CryptoProvider};

use super::saml::{NAME_ID_PERSISTENT, NS_ASSERTION, NS_METADATA, NS_PROTOCOL};

/// A signing identity: an RSA key and its self-signed certificate.
pub struct TestIdp {
    pub entity_id: String,
    key: PKey<Private>,
    cert: X509,
}

/// Everything a generated response says; `ResponseSpec::new` gives a valid
/// one for a request.
#[derive(Clone, Debug)]
pub struct ResponseSpec {
    pub response_id: String,
    pub assertion_id: String,
    pub issuer: String,
    pub response_issuer: Option<String>,
    pub destination: Option<String>,
    pub response_in_response_to: Option<String>,
    pub in_response_to: Option<String>,
    pub recipient: Option<String>,
    pub audience: Option<String>,
    pub issue_instant: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    pub confirmation_not_on_or_after: Option<DateTime<Utc>>,
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    pub status: String,
    pub status_message: Option<String>,
    pub name_id: String,
    pub name_id_format: String,
    pub attributes: Vec<(String, Vec<String>)>,
    pub authn_statement: bool,
    pub sign_assertion: bool,
    pub sign_response: bool,
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

fn attr(name: &str, value: &Option<String>) -> String {
    value
        .as_ref()
        .map(|v| format!(" {name}=\"{}\"", esc(v)))
        .unwrap_or_default()
}

/// An enveloped-signature template for the element with `id`.
fn signature_template(id: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##
    )
}

/// The document without its XML declaration (to embed it elsewhere).
pub fn without_declaration(xml: &str) -> &str {
    match xml.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or(xml, |(_, body)| body.trim_start()),
        None => xml,
    }
}

impl ResponseSpec {
    /// A valid response from `idp` to the request `request_id`, for the SP
    /// `audience` at `acs_url`, issued `now`, signed on the assertion.
    pub fn new(idp: &TestIdp, acs_url: &str, audience: &str, request_id: &str) -> Self {
        let now = Utc::now();
        Self {
            response_id: format!("_r{}", uuid_like()),
            assertion_id: format!("_a{}", uuid_like()),
            issuer: idp.entity_id.clone(),
            response_issuer: Some(idp.entity_id.clone()),
            destination: Some(acs_url.to_string()),
            response_in_response_to: Some(request_id.to_string()),
            in_response_to: Some(request_id.to_string()),
            recipient: Some(acs_url.to_string()),
            audience: Some(audience.to_string()),
            issue_instant: now,
            not_before: Some(now - Duration::seconds(30)),
            not_on_or_after: Some(now + Duration::seconds(300)),
            confirmation_not_on_or_after: Some(now + Duration::seconds(300)),
            session_not_on_or_after: Some(now + Duration::hours(8)),
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".into(),
            status_message: None,
            name_id: "alice".into(),
            name_id_format: NAME_ID_PERSISTENT.into(),
            attributes: vec![
                ("email".into(), vec!["alice@saml.example".into()]),
                ("name".into(), vec!["Alice SAML".into()]),
                ("groups".into(), vec!["staff".into(), "admins".into()]),
            ],
            authn_statement: true,
            sign_assertion: true,
            sign_response: false,
        }
    }

    /// Moves every instant of the response by `seconds` (negative: into the
    /// past), e.g. to produce an assertion that has expired.
    pub fn shift_times(&mut self, seconds: i64) {
        let by = Duration::seconds(seconds);
        self.issue_instant += by;
        for t in [
            &mut self.not_before,
            &mut self.not_on_or_after,
            &mut self.confirmation_not_on_or_after,
            &mut self.session_not_on_or_after,
        ] {
            *t = t.map(|t| t + by);
        }
    }

    /// The assertion element (unsigned, with a signature template when it
    /// is to be signed).
    pub fn assertion_xml(&self) -> String {
        let attributes: String = self
            .attributes
            .iter()
            .map(|(name, values)| {
                let values: String = values
                    .iter()
                    .map(|v| format!("<saml:AttributeValue>{}</saml:AttributeValue>", esc(v)))
                    .collect();
                format!(
                    "<saml:Attribute Name=\"{}\">{values}</saml:Attribute>",
                    esc(name)
                )
            })
            .collect();
        let audience = self
            .audience
            .as_ref()
            .map(|a| {
                format!(
                    "<saml:AudienceRestriction><saml:Audience>{}</saml:Audience></saml:AudienceRestriction>",
                    esc(a)
                )
            })
            .unwrap_or_default();
        let authn = if self.authn_statement {
            format!(
                r#"<saml:AuthnStatement AuthnInstant="{}"{} SessionIndex="_s1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"#,
                time(self.issue_instant),
                attr(
                    "SessionNotOnOrAfter",
                    &self.session_not_on_or_after.map(time)
                ),
            )
        } else {
            String::new()
        };
        let template = if self.sign_assertion {
            signature_template(&self.assertion_id)
        } else {
            String::new()
        };
        format!(
            r#"<saml:Assertion xmlns:saml="{NS_ASSERTION}" ID="{id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{template}<saml:Subject><saml:NameID Format="{format}">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{conf_end}{recipient}{irt}/></saml:SubjectConfirmation></saml:Subject><saml:Conditions{nb}{noa}>{audience}</saml:Conditions>{authn}<saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>"#,
            id = self.assertion_id,
            issued = time(self.issue_instant),
            issuer = esc(&self.issuer),
            format = esc(&self.name_id_format),
            name_id = esc(&self.name_id),
            conf_end = attr("NotOnOrAfter", &self.confirmation_not_on_or_after.map(time)),
            recipient = attr("Recipient", &self.recipient),
            irt = attr("InResponseTo", &self.in_response_to),
            nb = attr("NotBefore", &self.not_before.map(time)),
            noa = attr("NotOnOrAfter", &self.not_on_or_after.map(time)),
        )
    }

    /// The `Response` around `assertion` (already signed or not).
    pub fn response_around(&self, assertion: &str) -> String {
        let issuer = self
            .response_issuer
            .as_ref()
            .map(|i| {
                format!(
                    "<saml:Issuer xmlns:saml=\"{NS_ASSERTION}\">{}</saml:Issuer>",
                    esc(i)
                )
            })
            .unwrap_or_default();
        let template = if self.sign_response {
            signature_template(&self.response_id)
        } else {
            String::new()
        };
        let message = self
            .status_message
            .as_ref()
            .map(|m| format!("<samlp:StatusMessage>{}</samlp:StatusMessage>", esc(m)))
            .unwrap_or_default();
        let body = if self.status.ends_with(":Success") {
            assertion
        } else {
            ""
        };
        format!(
            r#"<samlp:Response xmlns:samlp="{NS_PROTOCOL}" ID="{id}" Version="2.0" IssueInstant="{issued}"{dest}{irt}>{issuer}{template}<samlp:Status><samlp:StatusCode Value="{status}"/>{message}</samlp:Status>{body}</samlp:Response>"#,
            id = self.response_id,
            issued = time(self.issue_instant),
            dest = attr("Destination", &self.destination),
            irt = attr("InResponseTo", &self.response_in_response_to),
            status = esc(&self.status),
        )
    }
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    let _ = openssl::rand::rand_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestIdp {
    /// A fresh RSA-2048 key and a self-signed certificate for it.
    pub fn generate(entity_id: &str) -> Self {
        let rsa = Rsa::generate(2048).expect("RSA key");
        let key = PKey::from_rsa(rsa).expect("key");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "gatehouse-test-idp")
            .expect("CN");
        let name = name.build();
        let mut cert = X509::builder().expect("cert");
        cert.set_version(2).expect("version");
        let serial = BigNum::from_u32(1)
            .and_then(|n| n.to_asn1_integer())
            .expect("serial");
        cert.set_serial_number(&serial).expect("serial");
        cert.set_subject_name(&name).expect("subject");
        cert.set_issuer_name(&name).expect("issuer");
        cert.set_pubkey(&key).expect("pubkey");
        cert.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        cert.set_not_after(&Asn1Time::days_from_now(3).expect("time"))
            .expect("not after");
        cert.sign(&key, MessageDigest::sha256()).expect("sign");
        Self {
            entity_id: entity_id.to_string(),
            key,
            cert: cert.build(),
        }
    }

    pub fn certificate_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().expect("pem")).expect("utf-8")
    }

    fn certificate_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.cert.to_der().expect("der"))
    }

    /// The private key, PEM (PKCS#8), e.g. for another IdP to sign with.
    pub fn private_key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().expect("pem")).expect("utf-8")
    }

    /// IdP metadata naming `sso_url` (HTTP-Redirect) and the certificate.
    pub fn metadata(&self, sso_url: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="{NS_METADATA}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
  <md:IDPSSODescriptor protocolSupportEnumeration="{NS_PROTOCOL}">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>{NAME_ID_PERSISTENT}</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = esc(&self.entity_id),
            cert = self.certificate_base64(),
            sso = esc(sso_url),
        )
    }

    /// Signs the template in `xml` (the first `ds:Signature`, over the
    /// root element or the element its reference names).
    pub fn sign(&self, xml: &str) -> String {
        let der = self.key.private_key_to_der().expect("der");
        let signed = Crypto::sign_xml(xml, &der).expect("xmlsec signs");
        without_declaration(&signed).to_string()
    }

    /// The response `spec` describes, signed as it says.
    pub fn response(&self, spec: &ResponseSpec) -> String {
        let mut assertion = spec.assertion_xml();
        if spec.sign_assertion {
            assertion = self.sign(&assertion);
        }
        let response = spec.response_around(&assertion);
        if spec.sign_response {
            // The response's own template comes first in document order.
            self.sign(&response)
        } else {
            response
        }
    }
}
