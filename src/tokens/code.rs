//! What an authorization code stands for, kept (as JSON) with its hash until
//! it is redeemed once.

use serde::{Deserialize, Serialize};

use super::GrantData;

/// Data kept with an authorization code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodeData {
    pub redirect_uri: String,
    pub redirect_uri_sent: bool,
    pub code_challenge: String,
    #[serde(default)]
    pub nonce: Option<String>,
    pub subject: String,
    pub grant: GrantData,
}
