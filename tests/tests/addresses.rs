//! One address type everywhere, checked before any I/O.

use ipc_core::{Address, CallContext, Client, Error, Server, expose};
use ipc_tests::*;

const INVALID: [&str; 6] = ["localhost:99999", "::1:80", "unix:", "tcp://x", "", "host:"];

#[tokio::test]
async fn an_invalid_address_fails_binding_and_connecting_naming_it() {
    within(10, async {
        for s in INVALID {
            match s.parse::<Address>() {
                Err(Error::InvalidAddress { addr, .. }) => assert_eq!(addr, s),
                other => panic!("{s:?}: expected InvalidAddress, got {other:?}"),
            }
            let started = Server::builder()
                .addr(s)
                .expose(CalculatorServer::new(Calc))
                .start()
                .await;
            match started {
                Err(Error::InvalidAddress { addr, reason }) => {
                    assert_eq!(addr, s);
                    assert!(!reason.is_empty());
                }
                Err(other) => panic!("{s:?}: expected InvalidAddress, got {other:?}"),
                Ok(server) => panic!("{s:?}: a server started on {}", server.local_addr()),
            }
            match Client::connect(s).await {
                Err(Error::InvalidAddress { addr, .. }) => assert_eq!(addr, s),
                Err(other) => panic!("{s:?}: expected InvalidAddress, got {other:?}"),
                Ok(_) => panic!("{s:?}: connected"),
            }
            // A lazy client checks it too, before it would open anything.
            match Client::builder().addr(s).connect_lazy().await {
                Err(Error::InvalidAddress { addr, .. }) => assert_eq!(addr, s),
                Err(other) => panic!("{s:?}: expected InvalidAddress, got {other:?}"),
                Ok(_) => panic!("{s:?}: connected lazily"),
            }
        }
    })
    .await;
}

#[expose]
pub trait Echo {
    /// The caller's address as the server sees it.
    async fn peer(&self) -> String;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn peer(&self) -> String {
        let ctx = CallContext::current().expect("inside a handler");
        // An `Address`, parsed back from its text to show the round trip.
        let peer: &Address = ctx.peer_addr();
        assert_eq!(
            peer.to_string().parse::<Address>().as_ref().ok(),
            Some(peer)
        );
        peer.to_string()
    }
}

#[tokio::test]
async fn the_servers_view_of_a_peer_equals_the_clients_own_address() {
    within(10, async {
        let server = start(|b| b.expose(EchoServer::new(EchoImpl))).await;
        let client = connect(&server).await;
        let echo: EchoProxy = client.get_exposed_object().await.unwrap();
        let seen: Address = echo.peer().await.unwrap().parse().unwrap();
        let mine: Address = client.local_addr();
        assert_eq!(seen, mine);
        let server_addr: &Address = server.local_addr();
        assert_eq!(client.addr(), server_addr);
        server.stop().await;
    })
    .await;
}
