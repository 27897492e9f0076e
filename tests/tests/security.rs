//! Who may connect, and what they may call: shared-key authentication
//! (including raw attacks on its handshake), TLS and mutual TLS, the
//! authorization rule, and Unix socket permissions. In every refused case
//! the handler never runs, and other connections keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use ipc_core::{Access, AuthKey, CallContext, Client, Error, Server, TlsClient, TlsServer, expose};
use ipc_tests::pki::Ca;
use ipc_tests::*;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts the calls that reached it, and says who called.
#[expose]
pub trait Vault {
    /// Who the caller is, as the handler sees it.
    async fn whoami(&self) -> (bool, Option<String>);
    /// A call a rule may refuse.
    async fn open(&self) -> u32;
}

#[derive(Clone, Default)]
struct VaultImpl {
    calls: Arc<AtomicU64>,
}

impl Vault for VaultImpl {
    async fn whoami(&self) -> (bool, Option<String>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let context = CallContext::current().expect("a call context");
        (
            context.peer().key_authenticated(),
            context
                .peer_certificate()
                .and_then(|c| c.common_name().map(str::to_owned)),
        )
    }

    async fn open(&self) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        7
    }
}

fn key(s: &str) -> AuthKey {
    AuthKey::new(s).unwrap()
}

const KEY: &str = "the shared key of these tests";

async fn keyed_server(vault: &VaultImpl) -> ipc_core::ServerHandle {
    start(|b| {
        b.auth_key(key(KEY))
            .expose(VaultServer::new(vault.clone()))
            .expose(CalculatorServer::new(Calc))
    })
    .await
}

async fn keyed_client(server: &ipc_core::ServerHandle, k: Option<&str>) -> Result<Client, Error> {
    let mut builder = Client::builder().addr(server.local_addr());
    if let Some(k) = k {
        builder = builder.auth_key(key(k));
    }
    builder.connect().await
}

#[tokio::test]
async fn matching_keys_connect_and_handlers_see_a_key_holder() {
    within(10, async {
        let vault = VaultImpl::default();
        let server = keyed_server(&vault).await;
        let client = keyed_client(&server, Some(KEY)).await.unwrap();
        let proxy: VaultProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(proxy.whoami().await.unwrap(), (true, None));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn no_key_a_wrong_key_or_a_key_the_server_lacks_fail_typed_and_nothing_runs() {
    within(10, async {
        let vault = VaultImpl::default();
        let server = keyed_server(&vault).await;
        match keyed_client(&server, None).await {
            Err(Error::AuthFailed { reason }) => {
                assert!(reason.contains("requires a key"), "{reason}")
            }
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        match keyed_client(&server, Some("another key, as long as the first")).await {
            Err(Error::AuthFailed { reason }) => {
                assert!(reason.contains("does not match"), "{reason}")
            }
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        // A client with a key, a server without: no silent downgrade.
        let plain = start(|b| b.expose(VaultServer::new(vault.clone()))).await;
        match keyed_client(&plain, Some(KEY)).await {
            Err(Error::AuthFailed { reason }) => {
                assert!(reason.contains("does not use a key"), "{reason}")
            }
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        // The server still serves its key holders.
        let good = keyed_client(&server, Some(KEY)).await.unwrap();
        let calc: CalculatorProxy = good.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(2, 3).await.unwrap(), 5);
        plain.stop().await;
        server.stop().await;
    })
    .await;
}

/// A hand-driven client of the authenticated handshake, per the README.
struct RawAuth {
    stream: tokio::net::TcpStream,
}

const VERSION: u16 = 2;

fn proof(k: &str, role: u8, client: &[u8; 32], server: &[u8; 32]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(k.as_bytes()).unwrap();
    mac.update(b"ipc-auth");
    mac.update(&VERSION.to_le_bytes());
    mac.update(&[role]);
    mac.update(client);
    mac.update(server);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn hello_with(fields: &[u8]) -> Vec<u8> {
    let mut p = b"IPCR".to_vec();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&(1u32 << 20).to_le_bytes());
    p.extend_from_slice(fields);
    raw::frame(0, 0, &p)
}

impl RawAuth {
    async fn connect(server: &ipc_core::ServerHandle) -> Self {
        let addr = server.local_addr().as_socket_addr().unwrap();
        Self {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// Sends a hello offering a key with `nonce`; the server's nonce and proof.
    async fn offer(&mut self, nonce: [u8; 32]) -> ([u8; 32], [u8; 32]) {
        let mut fields = vec![1u8];
        fields.extend_from_slice(&nonce);
        self.stream.write_all(&hello_with(&fields)).await.unwrap();
        let (kind, _, payload) = raw::read_frame(&mut self.stream).await.unwrap().unwrap();
        assert_eq!(kind, 0, "expected the server's hello");
        assert_eq!(payload.len(), 10 + 1 + 64, "{payload:?}");
        assert_eq!(payload[10], 1);
        let mut server = [0u8; 32];
        server.copy_from_slice(&payload[11..43]);
        let mut server_proof = [0u8; 32];
        server_proof.copy_from_slice(&payload[43..75]);
        (server, server_proof)
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads until the server closes; the frames' kinds and ids before.
    async fn until_closed(&mut self) -> Vec<(u8, u64)> {
        let mut frames = Vec::new();
        while let Ok(Some((kind, id, _))) = raw::read_frame(&mut self.stream).await {
            frames.push((kind, id));
        }
        frames
    }
}

#[tokio::test]
async fn the_servers_proof_is_valid_and_a_correct_client_proof_is_accepted() {
    within(10, async {
        let vault = VaultImpl::default();
        let server = keyed_server(&vault).await;
        let mut raw = RawAuth::connect(&server).await;
        let client = [7u8; 32];
        let (nonce, server_proof) = raw.offer(client).await;
        assert_eq!(server_proof, proof(KEY, b'S', &client, &nonce));
        raw.send(&raw::frame(10, 0, &proof(KEY, b'C', &client, &nonce)))
            .await;
        let (kind, _, _) = raw::read_frame(&mut raw.stream).await.unwrap().unwrap();
        assert_eq!(kind, 11, "expected AuthOk");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn handshake_attacks_close_the_connection_and_run_nothing() {
    within(30, async {
        let vault = VaultImpl::default();
        let server = keyed_server(&vault).await;
        // A truncated handshake: half a nonce.
        let mut raw = RawAuth::connect(&server).await;
        raw.send(&hello_with(&[1; 17])).await;
        assert!(raw.until_closed().await.is_empty());
        // Garbage for a proof: refused with go-away reason 2.
        let mut raw = RawAuth::connect(&server).await;
        raw.offer([1; 32]).await;
        raw.send(&raw::frame(10, 0, &[0xAA; 32])).await;
        assert_eq!(raw.until_closed().await, [(4, 2)]);
        // A proof that is not 32 bytes.
        let mut raw = RawAuth::connect(&server).await;
        raw.offer([1; 32]).await;
        raw.send(&raw::frame(10, 0, &[0xAA; 31])).await;
        assert!(raw.until_closed().await.is_empty());
        // Reflection: the server's own proof sent back as the client's.
        let mut raw = RawAuth::connect(&server).await;
        let (_, server_proof) = raw.offer([2; 32]).await;
        raw.send(&raw::frame(10, 0, &server_proof)).await;
        assert_eq!(raw.until_closed().await, [(4, 2)]);
        // Replay: a valid handshake recorded, played again on another
        // connection (same client nonce; the server's nonce is fresh).
        let client = [3u8; 32];
        let mut first = RawAuth::connect(&server).await;
        let (nonce, _) = first.offer(client).await;
        let recorded = proof(KEY, b'C', &client, &nonce);
        first.send(&raw::frame(10, 0, &recorded)).await;
        assert_eq!(
            raw::read_frame(&mut first.stream).await.unwrap().unwrap().0,
            11
        );
        let mut replay = RawAuth::connect(&server).await;
        let (fresh, _) = replay.offer(client).await;
        assert_ne!(fresh, nonce, "the server's nonce must be fresh");
        replay.send(&raw::frame(10, 0, &recorded)).await;
        assert_eq!(replay.until_closed().await, [(4, 2)]);
        // A request instead of the proof.
        let mut raw = RawAuth::connect(&server).await;
        raw.offer([4; 32]).await;
        raw.send(&raw::request(1, 1, 1, &[])).await;
        assert!(raw.until_closed().await.is_empty());
        // A valid proof with requests sent before the server's acceptance.
        let mut raw = RawAuth::connect(&server).await;
        let client = [5u8; 32];
        let (nonce, _) = raw.offer(client).await;
        let mut both = raw::frame(10, 0, &proof(KEY, b'C', &client, &nonce));
        both.extend(raw::request(1, 1, 1, &[]));
        raw.send(&both).await;
        assert!(raw.until_closed().await.is_empty());
        // Nothing ran; key holders are still served.
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        let good = keyed_client(&server, Some(KEY)).await.unwrap();
        let proxy: VaultProxy = good.get_exposed_object().await.unwrap();
        assert_eq!(proxy.open().await.unwrap(), 7);
        server.stop().await;
    })
    .await;
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_of_1000_unauthenticated_connections_is_closed_at_the_handshake_timeout() {
    within(60, async {
        let vault = VaultImpl::default();
        let server = start(|b| {
            b.auth_key(key(KEY))
                .handshake_timeout(Duration::from_millis(500))
                .expose(VaultServer::new(vault.clone()))
        })
        .await;
        let before = open_descriptors();
        let addr = server.local_addr().as_socket_addr().unwrap();
        let mut holders = Vec::new();
        for i in 0..1000 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Half of them say half a hello, the rest nothing at all.
            if i % 2 == 0 {
                s.write_all(&hello_with(&[1; 10])[..12]).await.unwrap();
            }
            holders.push(s);
        }
        // (Not "1000 open at once": on a loaded machine opening them takes
        // longer than the timeout, and the first are closed already.)
        // Each is closed by the server at its handshake timeout.
        for mut s in holders {
            let mut buf = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "a slow connection was kept open");
        }
        eventually(10, "no connection left", || server.stats().connections == 0).await;
        eventually(10, "descriptors back to where they were", || {
            open_descriptors() <= before + 5
        })
        .await;
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        server.stop().await;
    })
    .await;
}

/// A TLS server for `name`, signed by `ca`, with `build` applied.
async fn tls_server(
    tls: TlsServer,
    vault: &VaultImpl,
    build: impl FnOnce(ipc_core::ServerBuilder) -> ipc_core::ServerBuilder,
) -> ipc_core::ServerHandle {
    Server::builder()
        .addr("tls://127.0.0.1:0")
        .tls(tls)
        .expose(VaultServer::new(vault.clone()))
        .apply(build)
        .start()
        .await
        .unwrap()
}

trait Apply: Sized {
    fn apply(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}

impl Apply for ipc_core::ServerBuilder {}

async fn tls_client(server: &ipc_core::ServerHandle, tls: TlsClient) -> Result<Client, Error> {
    Client::builder()
        .addr(server.local_addr())
        .tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test]
async fn calls_work_over_tls_and_the_address_says_tls() {
    within(20, async {
        let ca = Ca::new("test CA");
        let cert = ca.server("localhost");
        let vault = VaultImpl::default();
        let server = tls_server(
            TlsServer::from_pem_files(&cert.cert, &cert.key).unwrap(),
            &vault,
            |b| b,
        )
        .await;
        assert!(
            server
                .local_addr()
                .to_string()
                .starts_with("tls://127.0.0.1:")
        );
        let tls = TlsClient::from_ca_file(&ca.cert)
            .unwrap()
            .server_name("localhost");
        let client = tls_client(&server, tls).await.unwrap();
        let proxy: VaultProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(proxy.whoami().await.unwrap(), (false, None));
        // And with the shared key as well.
        let both = Server::builder()
            .addr("tls://127.0.0.1:0")
            .tls(TlsServer::from_pem_files(&cert.cert, &cert.key).unwrap())
            .auth_key(key(KEY))
            .expose(VaultServer::new(vault.clone()))
            .start()
            .await
            .unwrap();
        let client = Client::builder()
            .addr(both.local_addr())
            .tls(
                TlsClient::from_ca_file(&ca.cert)
                    .unwrap()
                    .server_name("localhost"),
            )
            .auth_key(key(KEY))
            .connect()
            .await
            .unwrap();
        let proxy: VaultProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(proxy.whoami().await.unwrap(), (true, None));
        both.stop().await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn plaintext_and_tls_peers_that_disagree_fail_fast_naming_tls() {
    within(20, async {
        let ca = Ca::new("test CA");
        let cert = ca.server("localhost");
        let vault = VaultImpl::default();
        let tls = tls_server(
            TlsServer::from_pem_files(&cert.cert, &cert.key).unwrap(),
            &vault,
            |b| b,
        )
        .await;
        let plain = start(|b| b.expose(VaultServer::new(vault.clone()))).await;
        // A plaintext client to the TLS server.
        let port = tls.local_addr().as_socket_addr().unwrap();
        let began = std::time::Instant::now();
        match Client::connect(port).await {
            Err(e @ (Error::Tls { .. } | Error::ProtocolMismatch { .. })) => {
                assert!(e.to_string().contains("TLS"), "{e}")
            }
            other => panic!("expected a TLS mismatch, got {other:?}"),
        }
        // A TLS client to the plaintext server.
        let addr = format!("tls://{}", plain.local_addr());
        let result = Client::builder()
            .addr(addr.as_str())
            .tls(
                TlsClient::from_ca_file(&ca.cert)
                    .unwrap()
                    .server_name("localhost"),
            )
            .connect()
            .await;
        match result {
            Err(Error::Tls { detail }) => assert!(!detail.is_empty()),
            other => panic!("expected Error::Tls, got {other:?}"),
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
        // A tls:// address without TLS settings, and the reverse.
        assert!(matches!(
            Client::builder().addr(tls.local_addr()).connect().await,
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            Server::builder().addr("tls://127.0.0.1:0").start().await,
            Err(Error::Config { .. })
        ));
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        tls.stop().await;
        plain.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_ca_an_expired_certificate_or_a_wrong_name_fail_with_a_tls_error() {
    within(20, async {
        let ca = Ca::new("test CA");
        let other = Ca::new("another CA");
        let vault = VaultImpl::default();
        let good = ca.server("localhost");
        let server = tls_server(
            TlsServer::from_pem_files(&good.cert, &good.key).unwrap(),
            &vault,
            |b| b,
        )
        .await;
        // Trusting another CA.
        let wrong_ca = TlsClient::from_ca_file(&other.cert)
            .unwrap()
            .server_name("localhost");
        assert!(matches!(
            tls_client(&server, wrong_ca).await,
            Err(Error::Tls { .. })
        ));
        // Expecting another name.
        let wrong_name = TlsClient::from_ca_file(&ca.cert)
            .unwrap()
            .server_name("elsewhere");
        assert!(matches!(
            tls_client(&server, wrong_name).await,
            Err(Error::Tls { .. })
        ));
        // An expired certificate.
        let expired = ca.expired_server("localhost");
        let old = tls_server(
            TlsServer::from_pem_files(&expired.cert, &expired.key).unwrap(),
            &vault,
            |b| b,
        )
        .await;
        let tls = TlsClient::from_ca_file(&ca.cert)
            .unwrap()
            .server_name("localhost");
        match tls_client(&old, tls).await {
            Err(Error::Tls { detail }) => {
                assert!(detail.to_lowercase().contains("expired"), "{detail}")
            }
            other => panic!("expected Error::Tls, got {other:?}"),
        }
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        old.stop().await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca_and_names_those_it_accepts() {
    within(20, async {
        let ca = Ca::new("test CA");
        let other = Ca::new("another CA");
        let vault = VaultImpl::default();
        let cert = ca.server("localhost");
        let server_tls = TlsServer::from_pem_files(&cert.cert, &cert.key)
            .unwrap()
            .require_client_certificates(&ca.cert)
            .unwrap();
        let server = tls_server(server_tls, &vault, |b| b).await;
        let trust = || {
            TlsClient::from_ca_file(&ca.cert)
                .unwrap()
                .server_name("localhost")
        };
        // No client certificate.
        match tls_client(&server, trust()).await {
            Err(Error::Tls { .. }) => {}
            other => panic!("expected Error::Tls, got {other:?}"),
        }
        // A certificate from another CA.
        let stranger = other.client("mallory");
        let tls = trust().identity(&stranger.cert, &stranger.key).unwrap();
        assert!(matches!(
            tls_client(&server, tls).await,
            Err(Error::Tls { .. })
        ));
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        // A certificate of the CA: accepted, and the handler knows who.
        let alice = ca.client("alice");
        let tls = trust().identity(&alice.cert, &alice.key).unwrap();
        let client = tls_client(&server, tls).await.unwrap();
        let proxy: VaultProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(
            proxy.whoami().await.unwrap(),
            (false, Some("alice".to_owned()))
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_authorization_rule_refuses_a_method_hides_an_object_and_refuses_connections() {
    within(10, async {
        let vault = VaultImpl::default();
        let server = start(|b| {
            b.expose(VaultServer::new(vault.clone()))
                .expose(CalculatorServer::new(Calc))
                .expose_as("Secret", GreeterServer::new(Hello))
                .authorize(|_peer, access| {
                    !matches!(
                        access,
                        Access::Call {
                            object: "Vault",
                            method: "open"
                        } | Access::Object { object: "Secret" }
                    )
                })
        })
        .await;
        let client = connect(&server).await;
        let proxy: VaultProxy = client.get_exposed_object().await.unwrap();
        match proxy.open().await {
            Err(Error::PermissionDenied { detail }) => {
                assert!(detail.contains("Vault"), "{detail}")
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        // The handler never ran; an allowed method on the same connection works.
        assert_eq!(vault.calls.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.whoami().await.unwrap(), (false, None));
        // The directory lists only what the peer may see, and a lookup of
        // a hidden object finds nothing.
        let names: Vec<String> = client
            .objects()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["Vault", "Calculator"]);
        assert!(matches!(
            client
                .get_exposed_object_named::<GreeterProxy>("Secret")
                .await,
            Err(Error::UnknownObject { .. })
        ));
        server.stop().await;

        let closed = start(|b| {
            b.expose(CalculatorServer::new(Calc))
                .authorize(|_peer, access| access != Access::Connect)
        })
        .await;
        match Client::connect(closed.local_addr()).await {
            Err(Error::PermissionDenied { .. }) => {}
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        closed.stop().await;
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_is_owner_only_and_a_rule_on_peer_credentials_refuses_other_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    within(10, async {
        let path = fresh_socket_path();
        let addr = ipc_core::Address::Unix(path.clone());
        // "Another user" is played by a rule that admits only a uid that is
        // not ours: the test runs as whoever it runs as, root included.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap();
        let server = Server::builder()
            .addr(&addr)
            .expose(CalculatorServer::new(Calc))
            .authorize(move |peer, access| match access {
                Access::Connect => peer.credentials().is_some_and(|c| c.uid != me),
                _ => true,
            })
            .start()
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket file mode {mode:o}");
        match Client::connect(&addr).await {
            Err(Error::PermissionDenied { .. }) => {}
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        server.stop().await;
        // With the rule admitting our uid, the credentials reach handlers.
        let server = Server::builder()
            .addr(&addr)
            .unix_mode(0o660)
            .expose(CalculatorServer::new(Calc))
            .authorize(move |peer, access| match access {
                Access::Connect => peer.credentials().is_some_and(|c| c.uid == me),
                _ => true,
            })
            .start()
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        let calc: CalculatorProxy = connect(&server).await.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}
