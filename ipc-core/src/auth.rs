//! Shared-key authentication: [`AuthKey`], and the HMAC-SHA256
//! challenge–response the handshake runs with it.
//!
//! Each side sends a fresh 32-byte random nonce; each proves it knows the
//! key with `HMAC-SHA256(key, "ipc-auth" ‖ version ‖ role ‖ client nonce ‖
//! server nonce)`, the role being `S` for the server's proof and `C` for the
//! client's. Both nonces make a recorded handshake useless on another
//! connection (no replay, no relay); the role keeps one side's proof from
//! being reflected back as the other's. The key never crosses the wire, and
//! proofs are compared in constant time (`hmac`'s `verify_slice`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;
use crate::wire::{AUTH_LEN, PROTOCOL_VERSION};

/// A shared secret that server and client prove to each other they hold
/// (see `ServerBuilder::auth_key`, `ClientBuilder::auth_key`).
///
/// Its `Debug` output never shows the key, and it is never logged.
///
/// ```
/// let key = ipc_core::AuthKey::new("correct horse battery staple")?;
/// assert_eq!(format!("{key:?}"), "AuthKey(<redacted>)");
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Clone)]
pub struct AuthKey(Arc<[u8]>);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl AuthKey {
    /// The fewest bytes a key may have.
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if it is shorter than [`AuthKey::MIN_LEN`] bytes (a
    /// short secret is guessed easily; use a long random one).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, Error> {
        let bytes = bytes.as_ref();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::Config {
                detail: format!(
                    "an authentication key needs at least {} bytes, this one has {}",
                    Self::MIN_LEN,
                    bytes.len()
                ),
            });
        }
        Ok(Self(Arc::from(bytes)))
    }

    /// The key stored in the file at `path`, as its bytes, without one final
    /// line ending (`\n` or `\r\n`), so `echo secret > key` works.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the file cannot be read (naming it, not its
    /// content) or the key is too short.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let mut bytes = std::fs::read(path).map_err(|e| Error::Config {
            detail: format!("cannot read the key file {}: {e}", path.display()),
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Self::new(bytes).map_err(|e| match e {
            Error::Config { detail } => Error::Config {
                detail: format!("{}: {detail}", path.display()),
            },
            other => other,
        })
    }
}

/// Which side a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// A fresh random nonce.
pub(crate) fn nonce() -> Result<[u8; AUTH_LEN], Error> {
    let mut n = [0u8; AUTH_LEN];
    getrandom::fill(&mut n).map_err(|e| Error::Config {
        detail: format!("no randomness for an authentication nonce: {e}"),
    })?;
    Ok(n)
}

fn mac(
    key: &AuthKey,
    role: Role,
    client: &[u8; AUTH_LEN],
    server: &[u8; AUTH_LEN],
) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable_hmac());
    mac.update(b"ipc-auth");
    mac.update(&PROTOCOL_VERSION.to_le_bytes());
    mac.update(match role {
        Role::Client => b"C",
        Role::Server => b"S",
    });
    mac.update(client);
    mac.update(server);
    mac
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // `new_from_slice` only fails for MACs with a fixed key size, which
    // HMAC is not. Should that change, a key of zeros still authenticates
    // nothing an attacker could use: both sides would disagree.
    <Hmac<Sha256> as KeyInit>::new(&Default::default())
}

/// `role`'s proof of `key` for this handshake.
pub(crate) fn proof(
    key: &AuthKey,
    role: Role,
    client: &[u8; AUTH_LEN],
    server: &[u8; AUTH_LEN],
) -> [u8; AUTH_LEN] {
    let tag = mac(key, role, client, server).finalize().into_bytes();
    let mut out = [0u8; AUTH_LEN];
    out.copy_from_slice(&tag);
    out
}

/// Whether `claimed` is `role`'s proof of `key`, compared in constant time.
pub(crate) fn verify(
    key: &AuthKey,
    role: Role,
    client: &[u8; AUTH_LEN],
    server: &[u8; AUTH_LEN],
    claimed: &[u8],
) -> bool {
    mac(key, role, client, server).verify_slice(claimed).is_ok()
}

/// Most failed-authentication warnings logged per second; the rest are
/// counted and reported with the next one.
const WARNINGS_PER_SECOND: u32 = 5;

struct WarnState {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

static WARN: Mutex<WarnState> = Mutex::new(WarnState {
    window: None,
    logged: 0,
    suppressed: 0,
});

/// Logs a failed authentication at warn, at most [`WARNINGS_PER_SECOND`]
/// times a second, so a flood of attempts cannot flood the log.
pub(crate) fn warn_failed(peer: &str, why: &str) {
    let mut w = WARN.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if w.window
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        w.window = Some(now);
        w.logged = 0;
    }
    if w.logged >= WARNINGS_PER_SECOND {
        w.suppressed += 1;
        return;
    }
    w.logged += 1;
    let suppressed = std::mem::take(&mut w.suppressed);
    drop(w);
    if suppressed > 0 {
        tracing::warn!(%peer, why, suppressed, "authentication failed (and {suppressed} more not logged)");
    } else {
        tracing::warn!(%peer, why, "authentication failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AuthKey {
        AuthKey::new(s).unwrap()
    }

    #[test]
    fn proofs_differ_by_role_nonce_and_key() {
        let k = key("0123456789abcdef");
        let (c, s) = ([1u8; 32], [2u8; 32]);
        let server = proof(&k, Role::Server, &c, &s);
        assert!(verify(&k, Role::Server, &c, &s, &server));
        // Reflected: a server proof is no client proof.
        assert!(!verify(&k, Role::Client, &c, &s, &server));
        // Replayed on another connection (another server nonce).
        assert!(!verify(&k, Role::Server, &c, &[3u8; 32], &server));
        // Another key.
        assert!(!verify(
            &key("0123456789abcdeX"),
            Role::Server,
            &c,
            &s,
            &server
        ));
        // Truncated.
        assert!(!verify(&k, Role::Server, &c, &s, &server[..31]));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!(matches!(AuthKey::new("short"), Err(Error::Config { .. })));
        let k = key("a secret that is long enough");
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
