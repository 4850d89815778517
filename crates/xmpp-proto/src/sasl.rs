//! SASL for client streams (RFC 6120 §6): SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802,
//! RFC 7677), their -PLUS variants with channel binding (RFC 5802 §6, RFC 9266
//! `tls-exporter`, RFC 5929 `tls-server-end-point`), and PLAIN (RFC 4616) over TLS.
//!
//! One [`SaslServer`] per authentication attempt, no I/O, no clock: the core creates it
//! when `<auth mechanism=...>` arrives and feeds it the base64-decoded payloads.
//!
//! ```text
//! <auth> (initial response) -> start()     -> NeedSecrets { username }
//!     core loads the account  -> secrets() -> Challenge(server-first)    (SCRAM)
//!                                          -> Success / Err              (PLAIN)
//! <response> (client-final)  -> response() -> Success { additional: server-final } / Err
//! ```
//!
//! An `<auth>` without initial response (or with an empty one) gets an empty
//! `Challenge`, and the client-first message then comes through [`SaslServer::response`].
//!
//! Decisions worth knowing:
//! - **No user enumeration.** An unknown user (`secrets(None)`), or an account without
//!   secrets for the mechanism's hash, continues with fake secrets: a salt derived from
//!   the user name (stable across attempts with [`SaslServer::with_fake_account`]) and the
//!   usual iteration count. The exchange fails at the same step (the client-final
//!   message), with the same error, as a wrong password does. PLAIN runs the same PBKDF2
//!   work on fake secrets, so the answer also takes the same time.
//! - **Channel binding and downgrades.** -PLUS is meant to be advertised exactly when the
//!   connection's [`TlsInfo`] has binding data ([`Mechanism::offered`]). A client that
//!   says `y` ("I support channel binding but think you do not") while we have binding
//!   data was shown a mechanism list without -PLUS by someone in the middle: refused
//!   (RFC 5802 §6, RFC 9266 §3). `p=` must go with a -PLUS mechanism and the reverse;
//!   the binding data (`c=`) is compared with what our TLS stack exported.
//! - **Proofs** are checked by `rtc_auth::scram::verify_client_proof` in constant time;
//!   PLAIN recomputes StoredKey from the password with the account's salt and iteration
//!   count (no clear text is stored anywhere).
//! - **Names.** SCRAM's `saslname` escapes (`=2C` for `,`, `=3D` for `=`) are undone, then
//!   user names and passwords go through SASLprep in the practical subset of
//!   `rtc_auth::scram::saslprep` (mapping and prohibited characters; no NFKC). The user
//!   name is then case-folded (RFC 7622 UsernameCaseMapped: lower case) so that it is the
//!   JID localpart accounts are stored under; a name with characters no localpart may
//!   hold is refused at once (no such account can exist, so this reveals nothing).
//! - **authzid** (RFC 6120 §6.3.8): absent, empty, or the user's own bare JID. Another
//!   identity gets [`SaslError::InvalidAuthzid`] (`<invalid-authzid/>`): we do not let
//!   one user act as another. Without [`SaslServer::with_domain`] only the localpart can
//!   be compared; the core then checks the domain part of [`Step::Success`]'s `authzid`.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rtc_auth::scram::{self, ScramHash};
use sha2::{Digest as _, Sha256};

use crate::server::{AccountSecrets, ScramSecrets, TlsInfo};

/// Longest SASL message accepted (after base64 decoding). A localpart is at most 1023
/// bytes (RFC 7622 §3.3.1), tripled at worst by escaping, plus nonces and the binding.
pub const MAX_MESSAGE_LEN: usize = 8192;

/// Iteration count of fake secrets when none is configured: Prosody's default
/// `scram_iteration_count` (and xmppd's `scram-iterations`).
pub const DEFAULT_FAKE_ITERATIONS: u32 = 10_000;

/// Longest PLAIN user name or password. RFC 4616 §2 says 255 octets; longer passwords
/// exist in password managers' output, and other servers accept them.
const MAX_PLAIN_FIELD: usize = 1023;

/// Bytes of entropy in the server's part of a SCRAM nonce (24 base64 characters).
const SERVER_NONCE_BYTES: usize = 18;

/// Salt length of fake secrets: that of real ones (`rtc-admin xmpp adduser` uses 16).
const FAKE_SALT_LEN: usize = 16;

/// A SASL mechanism xmppd offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha1,
    ScramSha1Plus,
    ScramSha256,
    ScramSha256Plus,
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order of `<mechanisms/>` (clients pick the
    /// first they know, RFC 6120 §6.3.3 leaves the order as a preference).
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered name (IANA SASL mechanisms registry).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism of an `<auth mechanism='...'>` value. Names are compared exactly:
    /// SASL mechanism names are upper case (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a -PLUS (channel binding) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }

    /// The SCRAM hash, `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::Plain => None,
        }
    }

    /// What to advertise on a connection, strongest first: -PLUS only when TLS gave us
    /// binding data (see the module documentation on downgrades), PLAIN only over TLS and
    /// when `allow_plain` (Prosody's `allow_unencrypted_plain_auth` is off by default and
    /// has no equivalent here).
    pub fn offered(tls: Option<&TlsInfo>, allow_plain: bool) -> Vec<Mechanism> {
        let plus = tls.is_some_and(has_channel_binding);
        Mechanism::ALL
            .into_iter()
            .filter(|m| match m {
                Mechanism::Plain => allow_plain && tls.is_some(),
                m if m.is_plus() => plus,
                _ => true,
            })
            .collect()
    }
}

/// Channel-binding types we can verify on this connection, for XEP-0440's
/// `<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>` stream feature: `tls-exporter`
/// first (RFC 9266, the one to prefer), then `tls-server-end-point` (RFC 5929 §4).
pub fn channel_binding_types(tls: Option<&TlsInfo>) -> Vec<&'static str> {
    let mut types = Vec::new();
    if let Some(tls) = tls {
        if tls.tls_exporter.is_some() {
            types.push("tls-exporter");
        }
        if tls.tls_server_end_point.is_some() {
            types.push("tls-server-end-point");
        }
    }
    types
}

fn has_channel_binding(tls: &TlsInfo) -> bool {
    tls.tls_exporter.is_some() || tls.tls_server_end_point.is_some()
}

/// Why an exchange failed, one variant per `<failure/>` condition we send (RFC 6120
/// §6.5). What went wrong in detail is deliberately not told to the client: for
/// credentials it would help an attacker, for syntax it helps no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Syntax: not UTF-8, a missing or misplaced attribute, a bad escape, a message out
    /// of order, `m=` (a mandatory extension we do not know, RFC 5802 §5.1).
    #[error("malformed SASL request")]
    MalformedRequest,
    /// Wrong password, unknown user, channel binding mismatch, or a downgrade attempt.
    #[error("authentication failed")]
    NotAuthorized,
    /// A mechanism we do not offer here.
    #[error("mechanism not offered")]
    InvalidMechanism,
    /// PLAIN before TLS.
    #[error("mechanism requires encryption")]
    EncryptionRequired,
    /// The client aborted (`<abort/>`).
    #[error("aborted by the client")]
    Aborted,
    /// An authorization identity other than the user's own bare JID (RFC 6120 §6.3.8).
    #[error("authorization identity not allowed")]
    InvalidAuthzid,
}

impl SaslError {
    /// The element name of the `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` child.
    pub fn condition(self) -> &'static str {
        match self {
            SaslError::MalformedRequest => "malformed-request",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::Aborted => "aborted",
            SaslError::InvalidAuthzid => "invalid-authzid",
        }
    }
}

/// What the core does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load the account `username` (a JID localpart) of the stream's host and call
    /// [`SaslServer::secrets`].
    NeedSecrets { username: String },
    /// Send `<challenge>` with these bytes (base64), wait for `<response>`.
    Challenge(Vec<u8>),
    /// Authenticated. `additional` goes into `<success>` (SCRAM's server-final message
    /// `v=...`, which the client checks; empty for PLAIN). `authzid` is what the client
    /// asked to act as, already checked (see the module documentation).
    Success {
        username: String,
        authzid: Option<String>,
        additional: Vec<u8>,
    },
}

/// The server side of one SASL exchange.
#[derive(Debug)]
pub struct SaslServer {
    mech: Mechanism,
    tls: Option<TlsInfo>,
    nonce_seed: u64,
    fake_key: Option<u64>,
    fake_iterations: u32,
    domain: Option<String>,
    #[cfg(test)]
    server_nonce: Option<String>,
    state: State,
}

/// The SCRAM exchange between client-first and client-final.
#[derive(Debug)]
struct ScramExchange {
    hash: ScramHash,
    /// `gs2-header` as received, with its trailing comma: part of `c=`.
    gs2_header: String,
    /// Binding data the gs2 header asked for (`p=`), from our TLS stack.
    cbind_data: Vec<u8>,
    authzid: Option<String>,
    username: String,
    client_first_bare: String,
    client_nonce: String,
}

#[derive(Debug)]
enum State {
    /// Nothing received yet.
    Start,
    /// An empty challenge went out; the initial message comes as a response.
    AwaitingInitial,
    ScramNeedSecrets(ScramExchange),
    ScramAwaitingFinal {
        exchange: ScramExchange,
        server_first: String,
        nonce: String,
        secrets: ScramSecrets,
        /// The secrets are made up (unknown user): fail at the end whatever the proof.
        fake: bool,
    },
    PlainNeedSecrets {
        authzid: Option<String>,
        username: String,
        password: String,
    },
    /// Succeeded or failed: nothing more is accepted.
    Done,
}

impl SaslServer {
    /// An exchange for `mech` on a connection with `tls` (`None`: not encrypted).
    /// `nonce_seed` must differ for every exchange (the core draws it from its seeded
    /// generator): the server nonce comes from it, and a repeated server nonce would let
    /// a recorded exchange be replayed.
    pub fn new(mech: Mechanism, tls: Option<&TlsInfo>, nonce_seed: u64) -> Self {
        SaslServer {
            mech,
            tls: tls.cloned(),
            nonce_seed,
            fake_key: None,
            fake_iterations: DEFAULT_FAKE_ITERATIONS,
            domain: None,
            #[cfg(test)]
            server_nonce: None,
            state: State::Start,
        }
    }

    /// Fake secrets for unknown users derive from `key` (a per-server secret that does not
    /// change between exchanges) instead of the per-exchange `nonce_seed`: asking twice
    /// for the same unknown user then gets the same salt, as for a real account. Their
    /// iteration count is `iterations` (the server's `scram-iterations`).
    pub fn with_fake_account(mut self, key: u64, iterations: u32) -> Self {
        self.fake_key = Some(key);
        self.fake_iterations = iterations.max(1);
        self
    }

    /// The stream's domain, so that an authzid is compared as a whole bare JID.
    pub fn with_domain(mut self, domain: &str) -> Self {
        self.domain = Some(domain.trim_end_matches('.').to_lowercase());
        self
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The initial response: SCRAM's client-first message or PLAIN's message. Empty:
    /// the client sent none; answers an empty challenge.
    pub fn start(&mut self, initial: &[u8]) -> Result<Step, SaslError> {
        if !matches!(self.state, State::Start) {
            return self.fail(SaslError::MalformedRequest);
        }
        if self.mech == Mechanism::Plain && self.tls.is_none() {
            return self.fail(SaslError::EncryptionRequired);
        }
        if initial.is_empty() {
            self.state = State::AwaitingInitial;
            return Ok(Step::Challenge(Vec::new()));
        }
        self.initial(initial)
    }

    /// The account of the user named in [`Step::NeedSecrets`]; `None` when there is no
    /// such account (continues with fake secrets, see the module documentation).
    pub fn secrets(&mut self, s: Option<&AccountSecrets>) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramNeedSecrets(exchange) => {
                let stored = s.and_then(|s| match exchange.hash {
                    ScramHash::Sha1 => s.sha1.as_ref(),
                    ScramHash::Sha256 => s.sha256.as_ref(),
                });
                let (secrets, fake) = match stored {
                    Some(sec) if usable(exchange.hash, sec) => (sec.clone(), false),
                    _ => (self.fake_secrets(exchange.hash, &exchange.username), true),
                };
                let nonce = format!("{}{}", exchange.client_nonce, self.server_nonce());
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    B64.encode(&secrets.salt),
                    secrets.iterations
                );
                let challenge = server_first.clone().into_bytes();
                self.state = State::ScramAwaitingFinal {
                    exchange,
                    server_first,
                    nonce,
                    secrets,
                    fake,
                };
                Ok(Step::Challenge(challenge))
            }
            State::PlainNeedSecrets {
                authzid,
                username,
                password,
            } => {
                // SHA-256 when the account has it; any hash proves the password.
                let stored = s.and_then(|s| {
                    [(ScramHash::Sha256, &s.sha256), (ScramHash::Sha1, &s.sha1)]
                        .into_iter()
                        .find_map(|(h, sec)| sec.as_ref().filter(|x| usable(h, x)).map(|x| (h, x)))
                });
                let (hash, secrets, fake) = match stored {
                    Some((h, sec)) => (h, sec.clone(), false),
                    None => (
                        ScramHash::Sha256,
                        self.fake_secrets(ScramHash::Sha256, &username),
                        true,
                    ),
                };
                // The same PBKDF2 work either way, so timing does not tell.
                let (stored_key, _) =
                    scram::derive_keys(hash, &password, &secrets.salt, secrets.iterations);
                if rtc_auth::ct_eq(&stored_key, &secrets.stored_key) && !fake {
                    Ok(Step::Success {
                        username,
                        authzid,
                        additional: Vec::new(),
                    })
                } else {
                    Err(SaslError::NotAuthorized)
                }
            }
            _ => Err(SaslError::MalformedRequest),
        }
    }

    /// A `<response>`: SCRAM's client-final message (or the initial message after an
    /// empty challenge).
    pub fn response(&mut self, data: &[u8]) -> Result<Step, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingInitial => {
                if data.is_empty() {
                    return Err(SaslError::MalformedRequest);
                }
                self.initial(data)
            }
            State::ScramAwaitingFinal {
                exchange,
                server_first,
                nonce,
                secrets,
                fake,
            } => self.client_final(data, exchange, &server_first, &nonce, &secrets, fake),
            _ => Err(SaslError::MalformedRequest),
        }
    }

    fn fail(&mut self, e: SaslError) -> Result<Step, SaslError> {
        self.state = State::Done;
        Err(e)
    }

    fn initial(&mut self, data: &[u8]) -> Result<Step, SaslError> {
        let result = if data.len() > MAX_MESSAGE_LEN {
            Err(SaslError::MalformedRequest)
        } else {
            match self.mech.scram_hash() {
                Some(hash) => self.client_first(hash, data),
                None => self.plain(data),
            }
        };
        match result {
            Ok(step) => Ok(step),
            Err(e) => self.fail(e),
        }
    }

    /// RFC 5802 §7: `gs2-header client-first-message-bare`.
    fn client_first(&mut self, hash: ScramHash, data: &[u8]) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(data).map_err(|_| SaslError::MalformedRequest)?;
        let (flag, rest) = text.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let (authzid, bare) = rest.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let gs2_header = &text[..flag.len() + authzid.len() + 2];

        let cbind_data = self.channel_binding(flag)?;
        let authzid = match authzid {
            "" => None,
            a => Some(
                unescape_saslname(a.strip_prefix("a=").ok_or(SaslError::MalformedRequest)?)?
                    .into_owned(),
            ),
        };

        let mut attrs = bare.split(',');
        // `m=` is reserved for mandatory extensions: none is defined, so fail.
        let username = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(SaslError::MalformedRequest)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::MalformedRequest)?;
        // Optional extensions may follow; they are ignored (RFC 5802 §5.1).
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SaslError::MalformedRequest);
        }
        let username = normalize_username(&unescape_saslname(username)?)?;
        let authzid = self.check_authzid(&username, authzid)?;
        self.state = State::ScramNeedSecrets(ScramExchange {
            hash,
            gs2_header: gs2_header.to_owned(),
            cbind_data,
            authzid,
            username: username.clone(),
            client_first_bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        });
        Ok(Step::NeedSecrets { username })
    }

    /// The gs2-cbind-flag against the mechanism and our TLS facts (RFC 5802 §6, §7;
    /// RFC 9266 §3); returns the binding data `c=` must carry after the header.
    fn channel_binding(&self, flag: &str) -> Result<Vec<u8>, SaslError> {
        let ours = self.tls.as_ref();
        match flag {
            "n" if !self.mech.is_plus() => Ok(Vec::new()),
            // The client supports binding but saw no -PLUS: fine only if we really
            // offered none. Otherwise the list was tampered with on the way.
            "y" if !self.mech.is_plus() => {
                if ours.is_some_and(has_channel_binding) {
                    Err(SaslError::NotAuthorized)
                } else {
                    Ok(Vec::new())
                }
            }
            "n" | "y" => Err(SaslError::MalformedRequest),
            _ => {
                let cb_type = flag.strip_prefix("p=").ok_or(SaslError::MalformedRequest)?;
                if !self.mech.is_plus() {
                    return Err(SaslError::MalformedRequest);
                }
                let data = match cb_type {
                    "tls-exporter" => ours.and_then(|t| t.tls_exporter.as_ref()),
                    "tls-server-end-point" => ours.and_then(|t| t.tls_server_end_point.as_ref()),
                    // tls-unique is unsafe without EMS and absent from TLS 1.3 (RFC 9266
                    // §1); other names are unknown to us.
                    _ => None,
                };
                data.cloned().ok_or(SaslError::NotAuthorized)
            }
        }
    }

    /// RFC 5802 §7: `channel-binding "," nonce ["," extensions] "," proof`.
    fn client_final(
        &mut self,
        data: &[u8],
        exchange: ScramExchange,
        server_first: &str,
        nonce: &str,
        secrets: &ScramSecrets,
        fake: bool,
    ) -> Result<Step, SaslError> {
        if data.len() > MAX_MESSAGE_LEN {
            return Err(SaslError::MalformedRequest);
        }
        let text = std::str::from_utf8(data).map_err(|_| SaslError::MalformedRequest)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslError::MalformedRequest)?;
        let proof = B64.decode(proof).map_err(|_| SaslError::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslError::MalformedRequest)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::MalformedRequest)?;
        let cbind = B64.decode(cbind).map_err(|_| SaslError::MalformedRequest)?;

        let mut expected = exchange.gs2_header.as_bytes().to_vec();
        expected.extend_from_slice(&exchange.cbind_data);
        let binding_ok = rtc_auth::ct_eq(&cbind, &expected);
        let nonce_ok = client_nonce == nonce;

        let auth_message = format!(
            "{},{server_first},{without_proof}",
            exchange.client_first_bare
        );
        let proof_ok = scram::verify_client_proof(
            exchange.hash,
            &secrets.stored_key,
            auth_message.as_bytes(),
            &proof,
        );
        if !(binding_ok && nonce_ok && proof_ok) || fake {
            return Err(SaslError::NotAuthorized);
        }
        let signature =
            scram::server_signature(exchange.hash, &secrets.server_key, auth_message.as_bytes());
        Ok(Step::Success {
            username: exchange.username,
            authzid: exchange.authzid,
            additional: format!("v={}", B64.encode(signature)).into_bytes(),
        })
    }

    /// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`.
    fn plain(&mut self, data: &[u8]) -> Result<Step, SaslError> {
        let text = std::str::from_utf8(data).map_err(|_| SaslError::MalformedRequest)?;
        let mut parts = text.split('\0');
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError::MalformedRequest);
        };
        if authcid.is_empty()
            || password.is_empty()
            || authcid.len() > MAX_PLAIN_FIELD
            || password.len() > MAX_PLAIN_FIELD
        {
            return Err(SaslError::MalformedRequest);
        }
        let username = normalize_username(authcid)?;
        // A password with prohibited characters cannot be anyone's (accounts are created
        // through the same SASLprep), whoever the user is: no enumeration here.
        let password = scram::saslprep(password)
            .map_err(|_| SaslError::NotAuthorized)?
            .into_owned();
        let authzid = (!authzid.is_empty()).then(|| authzid.to_owned());
        let authzid = self.check_authzid(&username, authzid)?;
        self.state = State::PlainNeedSecrets {
            authzid,
            username: username.clone(),
            password,
        };
        Ok(Step::NeedSecrets { username })
    }

    /// Accepts an authzid equal to the user's own bare JID (RFC 6120 §6.3.8); see the
    /// module documentation for what is compared without [`SaslServer::with_domain`].
    fn check_authzid(
        &self,
        username: &str,
        authzid: Option<String>,
    ) -> Result<Option<String>, SaslError> {
        let Some(a) = authzid else { return Ok(None) };
        if a.is_empty() {
            return Ok(None);
        }
        let (node, domain) = a.split_once('@').ok_or(SaslError::InvalidAuthzid)?;
        if domain.contains('/') || domain.contains('@') {
            return Err(SaslError::InvalidAuthzid);
        }
        let domain = domain.trim_end_matches('.').to_lowercase();
        let same_node = node.to_lowercase() == username;
        let same_domain = self.domain.as_ref().is_none_or(|d| *d == domain);
        if same_node && same_domain && !domain.is_empty() {
            Ok(Some(a))
        } else {
            Err(SaslError::InvalidAuthzid)
        }
    }

    fn server_nonce(&self) -> String {
        #[cfg(test)]
        if let Some(n) = &self.server_nonce {
            return n.clone();
        }
        let digest = Sha256::new()
            .chain_update(b"xmpp-proto sasl server nonce\0")
            .chain_update(self.nonce_seed.to_be_bytes())
            .finalize();
        B64.encode(&digest[..SERVER_NONCE_BYTES])
    }

    /// Secrets for a user that does not exist: a salt stable per user name (per key),
    /// keys that match no password.
    fn fake_secrets(&self, hash: ScramHash, username: &str) -> ScramSecrets {
        let key = self.fake_key.unwrap_or(self.nonce_seed);
        let derive = |label: &[u8]| {
            Sha256::new()
                .chain_update(b"xmpp-proto sasl fake ")
                .chain_update(label)
                .chain_update(key.to_be_bytes())
                .chain_update(username.as_bytes())
                .finalize()
        };
        let len = hash.output_len();
        ScramSecrets {
            salt: derive(b"salt")[..FAKE_SALT_LEN].to_vec(),
            iterations: self.fake_iterations,
            stored_key: derive(b"stored")[..len].to_vec(),
            server_key: derive(b"server")[..len].to_vec(),
        }
    }
}

/// Stored secrets that a proof can be checked against; anything else is treated as no
/// account (an operator's half-written row must not make a login pass or crash).
fn usable(hash: ScramHash, s: &ScramSecrets) -> bool {
    s.iterations > 0
        && s.stored_key.len() == hash.output_len()
        && s.server_key.len() == hash.output_len()
}

/// Undoes RFC 5802 §5.1's escapes in a `saslname`: `=2C` is `,` and `=3D` is `=`; any
/// other `=` is an error, as is a raw `,` (it would have split the attribute).
fn unescape_saslname(s: &str) -> Result<Cow<'_, str>, SaslError> {
    if !s.contains('=') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).ok_or(SaslError::MalformedRequest)?;
        out.push(match escape {
            "=2C" | "=2c" => ',',
            "=3D" | "=3d" => '=',
            _ => return Err(SaslError::MalformedRequest),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Escapes a name for SCRAM's `n=`/`a=` (RFC 5802 §5.1): the inverse of the server's
/// unescaping, for clients built on this crate (tests, load generators).
pub fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// SASLprep, then RFC 7622's UsernameCaseMapped essentials: lower case, and none of the
/// characters a localpart cannot hold.
fn normalize_username(name: &str) -> Result<String, SaslError> {
    let prepped = scram::saslprep(name).map_err(|_| SaslError::NotAuthorized)?;
    let lower = prepped.to_lowercase();
    if lower.len() > 1023
        || lower.chars().any(|c| {
            c.is_whitespace() || matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
        })
    {
        return Err(SaslError::NotAuthorized);
    }
    Ok(lower)
}

/// SCRAM secrets for both hashes from one password, salt and iteration count: what an
/// account stores (registration, password change, `rtc-admin xmpp adduser`). The
/// password goes through SASLprep as clients apply it; a password SASLprep refuses
/// (control characters) is used as given, and callers that take passwords from users
/// should refuse it first (`rtc_auth::scram::saslprep`).
pub fn scram_secrets(password: &str, salt: &[u8], iterations: u32) -> AccountSecrets {
    let password = scram::saslprep(password).unwrap_or(Cow::Borrowed(password));
    let one = |hash| {
        let (stored_key, server_key) = scram::derive_keys(hash, &password, salt, iterations);
        ScramSecrets {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    };
    AccountSecrets {
        sha1: Some(one(ScramHash::Sha1)),
        sha256: Some(one(ScramHash::Sha256)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORTER: [u8; 32] = [7; 32];
    const END_POINT: [u8; 32] = [9; 32];

    fn tls(exporter: bool, end_point: bool) -> TlsInfo {
        TlsInfo {
            tls_exporter: exporter.then(|| EXPORTER.to_vec()),
            tls_server_end_point: end_point.then(|| END_POINT.to_vec()),
            sni: Some("example.org".into()),
            version: "TLSv1.3".into(),
        }
    }

    fn account(password: &str) -> AccountSecrets {
        scram_secrets(password, b"0123456789abcdef", 4096)
    }

    /// A SCRAM client as RFC 5802 §3 describes it, with a chosen gs2 header and binding.
    struct Client {
        hash: ScramHash,
        gs2_header: String,
        cbind_data: Vec<u8>,
        client_first_bare: String,
        password: String,
    }

    impl Client {
        fn new(mech: Mechanism, flag: &str, authzid: &str, user: &str, password: &str) -> Client {
            let authzid = if authzid.is_empty() {
                String::new()
            } else {
                format!("a={}", escape_saslname(authzid))
            };
            Client {
                hash: mech.scram_hash().unwrap(),
                gs2_header: format!("{flag},{authzid},"),
                cbind_data: Vec::new(),
                client_first_bare: format!("n={},r=clientNONCE123", escape_saslname(user)),
                password: password.into(),
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
        }

        /// client-final for a server-first, and the `v=` expected back.
        fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut nonce = "";
            let mut salt = Vec::new();
            let mut iterations = 0;
            for a in server_first.split(',') {
                if let Some(v) = a.strip_prefix("r=") {
                    nonce = v;
                } else if let Some(v) = a.strip_prefix("s=") {
                    salt = B64.decode(v).unwrap();
                } else if let Some(v) = a.strip_prefix("i=") {
                    iterations = v.parse().unwrap();
                }
            }
            assert!(nonce.starts_with("clientNONCE123") && nonce.len() > 14);
            let mut c = self.gs2_header.as_bytes().to_vec();
            c.extend_from_slice(&self.cbind_data);
            let without_proof = format!("c={},r={nonce}", B64.encode(c));
            let auth = format!("{},{server_first},{without_proof}", self.client_first_bare);
            let salted = scram::salted_password(self.hash, &self.password, &salt, iterations);
            let proof = scram::client_proof(
                self.hash,
                &scram::client_key(self.hash, &salted),
                auth.as_bytes(),
            );
            let v = scram::server_signature(
                self.hash,
                &scram::server_key(self.hash, &salted),
                auth.as_bytes(),
            );
            (
                format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
                format!("v={}", B64.encode(v)).into_bytes(),
            )
        }
    }

    /// Runs a whole exchange; `stored` is what the account lookup returns.
    fn run(
        server: &mut SaslServer,
        client: &Client,
        stored: Option<&AccountSecrets>,
    ) -> Result<Step, SaslError> {
        let step = server.start(&client.first())?;
        let Step::NeedSecrets { .. } = step else {
            panic!("{step:?}")
        };
        let Step::Challenge(server_first) = server.secrets(stored)? else {
            panic!("no challenge")
        };
        let (last, v) = client.last(&server_first);
        let step = server.response(&last)?;
        if let Step::Success { additional, .. } = &step {
            assert_eq!(*additional, v, "the client accepts the server signature");
        }
        Ok(step)
    }

    #[test]
    fn names_and_conditions() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(SaslError::MalformedRequest.condition(), "malformed-request");
        assert_eq!(
            SaslError::EncryptionRequired.condition(),
            "encryption-required"
        );
    }

    #[test]
    fn offered_mechanisms_follow_tls() {
        let names = |v: Vec<Mechanism>| v.iter().map(|m| m.name()).collect::<Vec<_>>();
        assert_eq!(
            names(Mechanism::offered(None, true)),
            ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        );
        assert_eq!(
            names(Mechanism::offered(Some(&tls(false, false)), true)),
            ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
        );
        assert_eq!(
            names(Mechanism::offered(Some(&tls(true, false)), false)),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1"
            ]
        );
        assert_eq!(
            channel_binding_types(Some(&tls(true, true))),
            ["tls-exporter", "tls-server-end-point"]
        );
        assert!(channel_binding_types(None).is_empty());
    }

    /// RFC 5802 §5 and RFC 7677 §3 byte for byte through the server, with the RFCs'
    /// server nonces and salts.
    #[test]
    fn rfc_examples_through_the_server() {
        for (mech, client_first, server_nonce, salt, server_first, client_final, server_final) in [
            (
                Mechanism::ScramSha1,
                "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "3rfcNHYJY1ZVvWVs7j",
                "QSXCR+Q6sek8bf92",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ),
            (
                Mechanism::ScramSha256,
                "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                "W22ZaJ0SNY7soEsUEjb6gQ==",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ),
        ] {
            let stored = scram_secrets("pencil", &B64.decode(salt).unwrap(), 4096);
            let mut server = SaslServer::new(mech, None, 1);
            server.server_nonce = Some(server_nonce.into());
            assert_eq!(
                server.start(client_first.as_bytes()),
                Ok(Step::NeedSecrets {
                    username: "user".into()
                })
            );
            assert_eq!(
                server.secrets(Some(&stored)),
                Ok(Step::Challenge(server_first.as_bytes().to_vec()))
            );
            assert_eq!(
                server.response(client_final.as_bytes()),
                Ok(Step::Success {
                    username: "user".into(),
                    authzid: None,
                    additional: server_final.as_bytes().to_vec()
                })
            );
            // Nothing more is accepted.
            assert_eq!(server.response(b"x"), Err(SaslError::MalformedRequest));
        }
    }

    #[test]
    fn every_scram_mechanism_end_to_end() {
        let stored = account("pencil");
        let t = tls(true, true);
        for (mech, flag, cbind) in [
            (Mechanism::ScramSha1, "n", &[][..]),
            (Mechanism::ScramSha256, "n", &[][..]),
            (Mechanism::ScramSha1Plus, "p=tls-exporter", &EXPORTER[..]),
            (Mechanism::ScramSha256Plus, "p=tls-exporter", &EXPORTER[..]),
            (
                Mechanism::ScramSha256Plus,
                "p=tls-server-end-point",
                &END_POINT[..],
            ),
        ] {
            let mut client = Client::new(mech, flag, "", "Juliet", "pencil");
            client.cbind_data = cbind.to_vec();
            let mut server = SaslServer::new(mech, Some(&t), 42);
            assert_eq!(
                run(&mut server, &client, Some(&stored)).map(|s| matches!(
                    s,
                    Step::Success { ref username, authzid: None, .. } if username == "juliet"
                )),
                Ok(true),
                "{mech:?} {flag}"
            );
            // Wrong password: refused at the last step.
            let client = Client {
                password: "pen".into(),
                ..client
            };
            let mut server = SaslServer::new(mech, Some(&t), 43);
            assert_eq!(
                run(&mut server, &client, Some(&stored)),
                Err(SaslError::NotAuthorized)
            );
        }
    }

    #[test]
    fn channel_binding_mismatch_and_downgrade() {
        let stored = account("pencil");
        let t = tls(true, false);
        // Binding data of another TLS connection (a man in the middle).
        let mut client = Client::new(
            Mechanism::ScramSha256Plus,
            "p=tls-exporter",
            "",
            "u",
            "pencil",
        );
        client.cbind_data = vec![8; 32];
        let mut server = SaslServer::new(Mechanism::ScramSha256Plus, Some(&t), 1);
        assert_eq!(
            run(&mut server, &client, Some(&stored)),
            Err(SaslError::NotAuthorized)
        );
        // A binding type this connection does not have.
        let client = Client::new(
            Mechanism::ScramSha256Plus,
            "p=tls-server-end-point",
            "",
            "u",
            "pencil",
        );
        let mut server = SaslServer::new(Mechanism::ScramSha256Plus, Some(&t), 1);
        assert_eq!(server.start(&client.first()), Err(SaslError::NotAuthorized));
        let client = Client::new(
            Mechanism::ScramSha256Plus,
            "p=tls-unique",
            "",
            "u",
            "pencil",
        );
        let mut server = SaslServer::new(Mechanism::ScramSha256Plus, Some(&t), 1);
        assert_eq!(server.start(&client.first()), Err(SaslError::NotAuthorized));
        // `y` while we offer -PLUS: a downgrade (RFC 9266 §3).
        let client = Client::new(Mechanism::ScramSha256, "y", "", "u", "pencil");
        let mut server = SaslServer::new(Mechanism::ScramSha256, Some(&t), 1);
        assert_eq!(server.start(&client.first()), Err(SaslError::NotAuthorized));
        // `y` where we have no binding (no TLS, or TLS without exportable data) is honest.
        for tls_info in [None, Some(tls(false, false))] {
            let mut server = SaslServer::new(Mechanism::ScramSha256, tls_info.as_ref(), 1);
            assert!(matches!(
                run(&mut server, &client, Some(&stored)),
                Ok(Step::Success { .. })
            ));
        }
        // `p=` with a non-PLUS mechanism, `n` with a PLUS one.
        let client = Client::new(Mechanism::ScramSha256, "p=tls-exporter", "", "u", "pencil");
        let mut server = SaslServer::new(Mechanism::ScramSha256, Some(&t), 1);
        assert_eq!(
            server.start(&client.first()),
            Err(SaslError::MalformedRequest)
        );
        let client = Client::new(Mechanism::ScramSha256Plus, "n", "", "u", "pencil");
        let mut server = SaslServer::new(Mechanism::ScramSha256Plus, Some(&t), 1);
        assert_eq!(
            server.start(&client.first()),
            Err(SaslError::MalformedRequest)
        );
        // The gs2 header in c= must be the one sent first (here: y instead of n).
        let client = Client::new(Mechanism::ScramSha1, "n", "", "u", "pencil");
        let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
        server.start(&client.first()).unwrap();
        let Ok(Step::Challenge(sf)) = server.secrets(Some(&stored)) else {
            panic!()
        };
        let lying = Client {
            gs2_header: "y,,".into(),
            ..client
        };
        assert_eq!(
            server.response(&lying.last(&sf).0),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let stored = account("pencil");
        let client = Client::new(Mechanism::ScramSha256, "n", "", "nobody", "pencil");
        let mut server =
            SaslServer::new(Mechanism::ScramSha256, None, 5).with_fake_account(77, 4096);
        server.start(&client.first()).unwrap();
        let Ok(Step::Challenge(fake_first)) = server.secrets(None) else {
            panic!()
        };
        assert_eq!(
            server.response(&client.last(&fake_first).0),
            Err(SaslError::NotAuthorized)
        );
        // Same shape as a real server-first: nonce, 16-byte salt, the iteration count.
        let mut real = SaslServer::new(Mechanism::ScramSha256, None, 5);
        real.start(&client.first()).unwrap();
        let Ok(Step::Challenge(real_first)) = real.secrets(Some(&stored)) else {
            panic!()
        };
        assert_eq!(fake_first.len(), real_first.len());
        // The fake salt is the same on the next attempt (fresh nonce seed), and differs
        // between users.
        let salt = |first: &[u8]| {
            String::from_utf8(first.to_vec())
                .unwrap()
                .split(',')
                .nth(1)
                .unwrap()
                .to_owned()
        };
        let mut again =
            SaslServer::new(Mechanism::ScramSha256, None, 6).with_fake_account(77, 4096);
        again.start(&client.first()).unwrap();
        let Ok(Step::Challenge(second)) = again.secrets(None) else {
            panic!()
        };
        assert_eq!(salt(&second), salt(&fake_first));
        assert_ne!(second, fake_first, "a fresh server nonce");
        let other = Client::new(Mechanism::ScramSha256, "n", "", "someone", "pencil");
        let mut s = SaslServer::new(Mechanism::ScramSha256, None, 6).with_fake_account(77, 4096);
        s.start(&other.first()).unwrap();
        let Ok(Step::Challenge(third)) = s.secrets(None) else {
            panic!()
        };
        assert_ne!(salt(&third), salt(&fake_first));
        // An account with SHA-1 secrets only, asked for SHA-256: also fake.
        let sha1_only = AccountSecrets {
            sha1: stored.sha1.clone(),
            sha256: None,
        };
        let mut server = SaslServer::new(Mechanism::ScramSha256, None, 5);
        assert_eq!(
            run(&mut server, &client, Some(&sha1_only)),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn escaped_names_and_authzid() {
        let stored = account("pencil");
        // `=2C` and `=3D` in n= are a comma and an equals sign in the name (which no
        // localpart holds... but `=` does: RFC 7622 allows it).
        let client = Client::new(Mechanism::ScramSha1, "n", "", "a=b", "pencil");
        assert!(client.first().windows(5).any(|w| w == b"a=3Db"));
        let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
        assert_eq!(
            server.start(&client.first()),
            Ok(Step::NeedSecrets {
                username: "a=b".into()
            })
        );
        for bad in [&b"n,,n=a=2Xb,r=x"[..], b"n,,n=a=2,r=x", b"n,,n=a=,r=x"] {
            let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
            assert_eq!(
                server.start(bad),
                Err(SaslError::MalformedRequest),
                "{bad:?}"
            );
        }
        // The own bare JID as authzid is accepted (and returned), case aside.
        let client = Client::new(
            Mechanism::ScramSha256,
            "n",
            "Juliet@Example.org",
            "juliet",
            "pencil",
        );
        let mut server =
            SaslServer::new(Mechanism::ScramSha256, None, 1).with_domain("example.org");
        assert!(matches!(
            run(&mut server, &client, Some(&stored)),
            Ok(Step::Success { authzid: Some(ref a), .. }) if a == "Juliet@Example.org"
        ));
        // Someone else, another domain, a full JID, a bare domain: refused at once.
        for authzid in [
            "romeo@example.org",
            "juliet@example.net",
            "juliet@example.org/r",
            "example.org",
        ] {
            let client = Client::new(Mechanism::ScramSha256, "n", authzid, "juliet", "pencil");
            let mut server =
                SaslServer::new(Mechanism::ScramSha256, None, 1).with_domain("example.org");
            assert_eq!(
                server.start(&client.first()),
                Err(SaslError::InvalidAuthzid),
                "{authzid}"
            );
        }
        // Without the domain, only the localpart can be compared.
        let client = Client::new(
            Mechanism::ScramSha256,
            "n",
            "juliet@example.net",
            "juliet",
            "pencil",
        );
        let mut server = SaslServer::new(Mechanism::ScramSha256, None, 1);
        assert!(matches!(
            server.start(&client.first()),
            Ok(Step::NeedSecrets { .. })
        ));
    }

    #[test]
    fn malformed_client_messages() {
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"x,,n=u,r=abc",
            b"n,,r=abc,n=u",
            b"n,,m=ext,n=u,r=abc",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=u,r=a b",
            b"n,b=x,n=u,r=abc",
            b"n,,n=\xff,r=abc",
        ] {
            let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
            let first = if bad.is_empty() {
                // An empty initial response is a request for an empty challenge.
                assert_eq!(server.start(bad), Ok(Step::Challenge(Vec::new())));
                server.response(bad)
            } else {
                server.start(bad)
            };
            assert_eq!(
                first,
                Err(SaslError::MalformedRequest),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Control characters in a name: no such user can exist.
        let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
        assert_eq!(
            server.start(b"n,,n=a\x01b,r=abc"),
            Err(SaslError::NotAuthorized)
        );
        // Client-final with a wrong nonce, no proof, bad base64.
        let stored = account("pencil");
        let client = Client::new(Mechanism::ScramSha1, "n", "", "u", "pencil");
        for tweak in [
            |m: String| m.replace("r=clientNONCE123", "r=clientNONCE124"),
            |m: String| m.split(",p=").next().unwrap().to_owned(),
            |m: String| format!("{m}!"),
        ] {
            let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
            server.start(&client.first()).unwrap();
            let Ok(Step::Challenge(sf)) = server.secrets(Some(&stored)) else {
                panic!()
            };
            let last = tweak(String::from_utf8(client.last(&sf).0).unwrap());
            assert!(server.response(last.as_bytes()).is_err(), "{last}");
        }
        // Out of order calls.
        let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
        assert_eq!(server.response(b"c=biws"), Err(SaslError::MalformedRequest));
        let mut server = SaslServer::new(Mechanism::ScramSha1, None, 1);
        assert_eq!(server.secrets(None), Err(SaslError::MalformedRequest));
    }

    #[test]
    fn empty_initial_response_then_client_first() {
        let stored = account("pencil");
        let client = Client::new(Mechanism::ScramSha256, "n", "", "u", "pencil");
        let mut server = SaslServer::new(Mechanism::ScramSha256, None, 3);
        assert_eq!(server.start(b""), Ok(Step::Challenge(Vec::new())));
        assert!(matches!(
            server.response(&client.first()),
            Ok(Step::NeedSecrets { .. })
        ));
        let Ok(Step::Challenge(sf)) = server.secrets(Some(&stored)) else {
            panic!()
        };
        assert!(matches!(
            server.response(&client.last(&sf).0),
            Ok(Step::Success { .. })
        ));
    }

    #[test]
    fn plain_over_tls_only() {
        let stored = account("pencil");
        let t = tls(true, false);
        let login = |msg: &[u8], stored: Option<&AccountSecrets>| {
            let mut server =
                SaslServer::new(Mechanism::Plain, Some(&t), 1).with_domain("example.org");
            match server.start(msg)? {
                Step::NeedSecrets { .. } => server.secrets(stored),
                other => Ok(other),
            }
        };
        assert_eq!(
            login(b"\0Juliet\0pencil", Some(&stored)),
            Ok(Step::Success {
                username: "juliet".into(),
                authzid: None,
                additional: vec![]
            })
        );
        assert_eq!(
            login(b"juliet@example.org\0juliet\0pencil", Some(&stored)),
            Ok(Step::Success {
                username: "juliet".into(),
                authzid: Some("juliet@example.org".into()),
                additional: vec![]
            })
        );
        assert_eq!(
            login(b"\0juliet\0pen", Some(&stored)),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            login(b"\0nobody\0pencil", None),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            login(b"romeo@example.org\0juliet\0pencil", Some(&stored)),
            Err(SaslError::InvalidAuthzid)
        );
        for bad in [
            &b"juliet\0pencil"[..],
            b"\0\0pencil",
            b"\0juliet\0",
            b"\0a\0b\0c",
        ] {
            assert_eq!(login(bad, Some(&stored)), Err(SaslError::MalformedRequest));
        }
        // Only the SHA-1 secrets stored: PLAIN still checks the password.
        let sha1_only = AccountSecrets {
            sha1: stored.sha1.clone(),
            sha256: None,
        };
        assert!(matches!(
            login(b"\0juliet\0pencil", Some(&sha1_only)),
            Ok(Step::Success { .. })
        ));
        // Without TLS: refused before anything is read.
        let mut server = SaslServer::new(Mechanism::Plain, None, 1);
        assert_eq!(
            server.start(b"\0juliet\0pencil"),
            Err(SaslError::EncryptionRequired)
        );
    }

    #[test]
    fn secrets_match_rtc_auth_and_saslprep() {
        let s = scram_secrets("pencil", b"salt", 4096);
        let sha1 = s.sha1.unwrap();
        assert_eq!(
            (sha1.stored_key, sha1.server_key),
            scram::derive_keys(ScramHash::Sha1, "pencil", b"salt", 4096)
        );
        assert_eq!(s.sha256.unwrap().stored_key.len(), 32);
        // A non-ASCII space is mapped as the client maps it.
        assert_eq!(
            scram_secrets("a\u{00A0}b", b"salt", 1),
            scram_secrets("a b", b"salt", 1)
        );
    }
}
