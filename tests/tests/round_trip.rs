//! Calls that go there and back: values, typed application errors, panics,
//! big payloads.

use ipc_core::{CallError, Error};
use ipc_tests::*;

each_transport! {
    #[tokio::test]
    async fn add_and_typed_divide_by_zero_round_trip(transport) {
        within(10, async {
            let server = transport.start(|b| b.expose(CalculatorServer::new(Calc))).await;
            let client = connect(&server).await;
            let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
            assert_eq!(calc.add(2, 3).await.unwrap(), 5);
            assert_eq!(calc.add(-7, 3).await.unwrap(), -4);
            assert_eq!(calc.div(7, 2).await.unwrap(), 3);
            match calc.div(1, 0).await {
                Err(CallError::App(MathError::DivideByZero)) => {}
                other => panic!("expected DivideByZero, got {other:?}"),
            }
            // The convenience comparisons work as documented.
            let err = calc.div(1, 0).await.unwrap_err();
            assert!(err == MathError::DivideByZero);
            assert_eq!(err.app(), Some(&MathError::DivideByZero));
            assert!(err.rpc().is_none());
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn handler_panic_reaches_client_and_next_call_works(transport) {
        within(10, async {
            let (gate, _started) = GateImpl::new();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            match proxy.boom("kaboom 42".into()).await {
                Err(Error::RemotePanic { message }) => assert_eq!(message, "kaboom 42"),
                other => panic!("expected a remote panic, got {other:?}"),
            }
            assert_eq!(proxy.fast().await.unwrap(), 2);
            // And a fresh connection is served too.
            let other: GateProxy = connect(&server).await.get_exposed_object().await.unwrap();
            assert_eq!(other.fast().await.unwrap(), 2);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn one_mib_argument_and_return_value_round_trip(transport) {
        within(30, async {
            let (gate, _started) = GateImpl::new();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
            let back = proxy.echo(big.clone()).await.unwrap();
            assert_eq!(back.len(), big.len());
            assert!(back == big);
            let back = proxy
                .echo_bytes(ipc_core::Bytes::from(big.clone()))
                .await
                .unwrap();
            assert!(back[..] == big[..]);
            let made = proxy.make(1024 * 1024).await.unwrap();
            assert_eq!(made.len(), 1024 * 1024);
            assert!(made.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn reply_over_the_clients_frame_limit_is_a_typed_error_and_connection_survives(
        transport
    ) {
        within(10, async {
            let (gate, _started) = GateImpl::new();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let client = ipc_core::Client::builder()
                .addr(server.local_addr())
                .max_frame_size(64 * 1024)
                .connect()
                .await
                .unwrap();
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            match proxy.make(100 * 1024).await {
                Err(Error::FrameTooLarge { size, limit }) => {
                    assert_eq!(limit, 64 * 1024);
                    // Encoding stopped at the limit: the size is where it stopped.
                    assert!(size > limit, "size {size}");
                }
                other => panic!("expected FrameTooLarge, got {other:?}"),
            }
            // A request over the server's limit is refused before it is sent.
            assert_eq!(proxy.make(1000).await.unwrap().len(), 1000);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn request_over_the_servers_frame_limit_is_refused_before_sending(transport) {
        within(10, async {
            let (gate, _started) = GateImpl::new();
            let server = transport
                .start(|b| b.max_frame_size(16 * 1024).expose(GateServer::new(gate)))
                .await;
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            match proxy.echo(vec![1; 20 * 1024]).await {
                Err(Error::FrameTooLarge { size, limit }) => {
                    assert_eq!(limit, 16 * 1024);
                    assert!(size > limit, "size {size}");
                }
                other => panic!("expected FrameTooLarge, got {other:?}"),
            }
            assert_eq!(proxy.echo(vec![1; 1000]).await.unwrap().len(), 1000);
            server.stop().await;
        })
        .await;
    }
}

#[tokio::test]
async fn in_memory_pipe_carries_calls() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let (a, b) = tokio::io::duplex(64 * 1024);
        server.serve_io(a);
        let client = ipc_core::Client::builder().connect_io(b).await.unwrap();
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(20, 22).await.unwrap(), 42);
        server.stop().await;
    })
    .await;
}
